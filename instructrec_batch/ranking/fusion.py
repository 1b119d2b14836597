"""The fusion head: the language model's answer score weighed next to the evidence blend.

After LoRA tuning the model scores the fusion lists (users' `valid` items plus sampled negatives, never
a test item) and `stack_head` decides, from those lists alone, whether and how much the model's score
adds to the evidence blend. The head is one linear ranker over [model score, evidence terms]
(`collapse`), saved with the adapter and applied by the score job; pure numpy and pandas here, the
model scoring lives with training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from instructrec_batch import contracts as C
from instructrec_batch.ranking.added import cross_validated_gain
from instructrec_batch.ranking.blend import POSITIVE
from instructrec_batch.ranking.ranker import LinearRanker, fit_ranker

FUSION_HALVINGS = 20  # random halvings of the fusion lists that decide whether the model's score is kept


def stack_head(
    frame: pd.DataFrame, held_out: np.ndarray, blend: LinearRanker, seed: int
) -> tuple[LinearRanker, dict[str, Any]]:
    """The head over [model score, evidence] from the fusion lists' rows, and what it achieves there.

    `frame` holds one row per candidate: user_id, item_id, lm_score, the evidence columns and
    `positive`; `held_out` is each row's score by an evidence blend fitted without its user
    (`blend.cross_fitted`), `blend` the one the head is built on. The weights of [model score,
    held-out blend score] are fitted on these lists only if the model's score adds to that blend
    when cross-validated over their users (rankers fitted on random halves rank the other half) by
    more than one standard error over users: on a few lists a weight fitted to noise reorders the
    blend's lists for nothing (a score that is pure noise passes about one time in six), so a score
    without that evidence gets weight 0 and the head ranks exactly as `blend` does. The two linear
    stages collapse into one linear head
    over [model score, evidence].
    """
    frame = frame.assign(**{BLEND: held_out})
    groups, positive = frame[C.USER_ID].to_numpy(), frame[POSITIVE].to_numpy(dtype=bool)
    added = cross_validated_gain(frame, (BLEND,), C.LM_SCORE, FUSION_HALVINGS, seed)
    kept = added is None or added.gain > added.se  # too few lists to tell: keep the fitted weights
    stack = fit_ranker(frame, (C.LM_SCORE, BLEND), groups, positive) if kept else BLEND_ONLY
    head = collapse(stack, blend)
    figures = {
        "fusion_mrr_model": mrr(frame[C.LM_SCORE].to_numpy(), groups, positive),
        "fusion_mrr_evidence": mrr(frame[BLEND].to_numpy(), groups, positive),
        "fusion_mrr_head": mrr(stack.apply(frame), groups, positive),  # with the held-out blend
        "fusion_gain": None if added is None else round(added.gain, 4),
        "fusion_gain_se": None if added is None else round(added.se, 4),
        "model_kept": kept,
        "weight_model": round(stack.weights[0], 4),
        "weight_evidence": round(stack.weights[1], 4),
    }
    return head, figures


RETRIEVER_ORDER = LinearRanker((C.LM_SCORE, C.EV_RETRIEVAL), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0))  # 1 / rank
SHIPPED_HEAD, SHIPPED_RETRIEVER = "head", "retriever"  # what a head fitted on a retriever's lists ships


def retriever_floor(
    head: LinearRanker, frame: pd.DataFrame, figures: dict[str, Any], blend_lists: pd.DataFrame | None = None
) -> tuple[LinearRanker, dict]:
    """`head`, or the retriever's own order when `head` ranks the retriever's lists no better than it.

    `frame` holds the fusion lists' rows as `stack_head` took them, with ev_retrieval from the
    retriever's rank, and `figures` what `stack_head` reported on them. A re-ranker that cannot beat the
    order it was handed on the lists it was fitted on has no business reordering them: the floor ships
    RETRIEVER_ORDER instead (no model weight, so no model pass), and the figures say which was shipped
    and why (MRR of the head against the retriever's order on the same lists).

    A head that gives the model's score no weight ranks as the blend does, so it is judged where the
    blend can be: on `blend_lists` when given (every labelled list the blend was fitted on, ev_retrieval
    and BLEND = each row's score by a blend fitted without its list's user, so out of sample), many more
    lists than the model scored, whose MRRs a few lists' noise would otherwise decide.
    """
    judged_on = frame if blend_lists is None else blend_lists
    groups, positive = judged_on[C.USER_ID].to_numpy(), judged_on[POSITIVE].to_numpy(dtype=bool)
    retriever = mrr(judged_on[C.EV_RETRIEVAL].to_numpy(), groups, positive)
    ranked = figures["fusion_mrr_head"] if blend_lists is None else mrr(blend_lists[BLEND].to_numpy(), groups, positive)
    shipped = SHIPPED_HEAD if ranked > retriever else SHIPPED_RETRIEVER
    return (head if shipped == SHIPPED_HEAD else RETRIEVER_ORDER), {
        **figures,
        "floor_lists": int(pd.unique(groups).size),
        "floor_mrr_head": ranked,
        "fusion_mrr_retriever": retriever,
        "shipped": shipped,
    }


def ranks_by_retriever(head: LinearRanker | None) -> bool:
    """Whether `head` is the floor (`retriever_floor`): it ranks every list in the retriever's order."""
    return head == RETRIEVER_ORDER


BLEND = "_blend"
BLEND_ONLY = LinearRanker((C.LM_SCORE, BLEND), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0))  # the blend's own order


def collapse(stack: LinearRanker, blend: LinearRanker) -> LinearRanker:
    """One linear head over [model score, evidence] that ranks exactly like `stack` over
    [model score, blend score] (they differ by a constant, which no ranking sees)."""
    (m_lm, _), (s_lm, s_blend), (w_lm, w_blend) = stack.mean, stack.scale, stack.weights
    return LinearRanker(
        (C.LM_SCORE, *blend.features),
        (m_lm, *blend.mean),
        (s_lm, *blend.scale),
        (w_lm, *(w_blend / s_blend * w for w in blend.weights)),
    )


def mrr(scores: np.ndarray, groups: np.ndarray, positive: np.ndarray) -> float:
    frame = pd.DataFrame({"g": groups, "s": scores, "p": positive})
    frame["rank"] = frame.groupby("g")["s"].rank(ascending=False, method="first")
    return round(float((1.0 / frame.loc[frame.p, "rank"]).mean()), 4)
