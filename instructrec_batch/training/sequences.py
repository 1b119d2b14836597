"""Training sequences from rendered examples: input ids and the answer token to predict after them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from instructrec_batch.prompts.encoding import label_ids, listwise_inputs, pointwise_inputs, yes_no_ids
from instructrec_batch.prompts.render import context_of, render_listwise, render_pointwise
from instructrec_batch.prompts.templates import TemplateSet


@dataclass(frozen=True)
class TrainSequence:
    """Input ids and the answer token after them; pointwise sequences also carry their example.

    The sequences of one pointwise example (the target and its sampled negatives for one user
    history) share a `group`, so the trainer can rank the target above the negatives.
    """

    input_ids: list[int]
    answer_id: int
    group: int = -1  # pointwise example index; -1 for listwise sequences
    positive: bool = True
    yes_no: tuple[int, int] | None = None  # pointwise answer token ids
    prefix_len: int = 0  # pointwise: input_ids[:prefix_len] is the user prefix its example shares
    prior: float = 0.0  # pointwise: the evidence score the model's answer score is added to in ranking


def sequences(frame: pd.DataFrame, tokenizer: Any, templates: TemplateSet, max_length: int) -> list[TrainSequence]:
    """Pointwise rows give one sequence per candidate (Yes for the target, No otherwise); listwise rows
    one sequence whose answer is the target's label. Sequences longer than `max_length` are dropped.

    A `candidate_priors` column (one number per candidate) sets each pointwise sequence's prior."""
    out: list[TrainSequence] = []
    has_priors = "candidate_priors" in frame.columns
    for group, row in enumerate(frame.itertuples(index=False)):
        template = templates.get(row.template_id)
        ctx, titles, ids = context_of(row), list(row.candidate_titles), list(row.candidate_ids)
        if template.task == "pointwise":
            yes, no = yes_no_ids(tokenizer, template)
            prefix, suffixes = pointwise_inputs(tokenizer, render_pointwise(template, ctx, titles))
            priors = list(row.candidate_priors) if has_priors else [0.0] * len(ids)
            out += [
                TrainSequence(
                    prefix + s,
                    yes if c == row.target_item_id else no,
                    group,
                    c == row.target_item_id,
                    (yes, no),
                    len(prefix),
                    float(p),
                )
                for c, s, p in zip(ids, suffixes, priors, strict=True)
            ]
        else:
            prompt = render_listwise(template, ctx, titles)
            answers = label_ids(tokenizer, prompt.labels)
            out.append(TrainSequence(listwise_inputs(tokenizer, prompt), answers[ids.index(row.target_item_id)]))
    return [s for s in out if len(s.input_ids) <= max_length]
