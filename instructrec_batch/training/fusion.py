"""The fusion head: after LoRA tuning, learn how to weigh the model's answer score against evidence.

The tuned model scores the fusion lists (users' `valid` items plus sampled negatives, never a test
item) and a linear listwise ranker is fitted on [model score, collaborative evidence]. The head is
saved with the adapter (hashed with it) and the score job applies it. Fitting on lists the adapter
was not tuned on keeps the model's score from looking more reliable than it is, and a score that
adds nothing to the evidence on those lists (cross-validated over their users) gets no weight.

With train.residual the adapter's ranking loss scores Yes−No plus an evidence prior (an evidence
blend fitted on the training examples), so tuning pushes the model towards what evidence misses.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import DataConfig, EvidenceConfig, ScoreConfig
from instructrec_batch.evidence.features import candidate_evidence, evidence_interactions
from instructrec_batch.evidence.lists import blend_lists, list_evidence
from instructrec_batch.evidence.replay import CutoffLists
from instructrec_batch.evidence.requests import Requests
from instructrec_batch.prompts.render import context_of
from instructrec_batch.prompts.templates import TemplateSet
from instructrec_batch.ranking.blend import OWNER, cross_fitted, fill_missing_evidence, fit_blend
from instructrec_batch.ranking.fusion import BLEND, mrr, retriever_floor, stack_head
from instructrec_batch.ranking.ranker import LinearRanker

log = logging.getLogger(__name__)


def model_scores(
    model: Any, tokenizer: Any, pad_id: int, lists: pd.DataFrame, templates: TemplateSet, score: ScoreConfig
) -> pd.DataFrame:
    """lm_score per (user_id, item_id) of the fusion lists, by the scoring job's own one-pass scorer."""
    import torch

    from instructrec_batch.hardware import fast_bf16
    from instructrec_batch.scoring.scorers import ModelHandle, ScoringPrompt, make_scorer

    handle = ModelHandle(model, tokenizer, pad_id)
    scorer = make_scorer("pointwise", "onepass", handle, score.batch_size, score.max_batch_tokens)
    prompts = [
        ScoringPrompt(templates.get(row.template_id), context_of(row), tuple(row.candidate_titles))
        for row in lists.itertuples(index=False)
    ]
    device = handle.device
    bf16 = fast_bf16(device.type)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    model.eval()
    with autocast:
        scores = scorer.score(prompts)
    rows = []
    for row, values in zip(lists.itertuples(index=False), scores, strict=True):
        rows += [
            (row.user_id, item, float(v), item == row.target_item_id)
            for item, v in zip(row.candidate_ids, values, strict=True)
        ]
    return pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, C.LM_SCORE, "positive"])


def fit_fusion_head(
    lists: DataFrame,
    model: Any,
    tokenizer: Any,
    pad_id: int,
    templates: TemplateSet,
    interactions: DataFrame,
    items: DataFrame,
    holdout: DataFrame,
    vectors: DataFrame | None,
    evidence: EvidenceConfig,
    data: DataConfig,
    score: ScoreConfig,
    seed: int,
    requests: Requests | None = None,
    labelled: DataFrame | None = None,
    earlier: list[CutoffLists] | None = None,
) -> tuple[LinearRanker, LinearRanker, dict[str, Any]]:
    """Fit the head; return it, the evidence blend it is built on (the run's blend, which the evaluation's
    blend baseline reuses), and what the head achieves on the fusion lists (mean reciprocal rank).

    The lists' evidence comes from the training interactions, items, the run's sequence `vectors`
    (None without sequential evidence) and the users' `requests` (None without intents), as the evidence
    job computes the candidates'.

    Two stages keep the few model-scored lists for the one thing only they can tell: first an
    evidence blend is fitted on up to BLEND_USERS users' validation lists (cheap: no model), then
    `stack_head` weighs [model score, blend score] on the fusion lists (a DataFrame from
    build_examples(fusion=True)). As in stacking, the second stage sees the blend's scores out of
    sample: cross-fitted, each fusion list scored by a blend fitted on the lists of the other folds of
    users (a blend fitted only on the non-fusion users would be fitted on a handful of lists when the
    fusion users are most of them: record 44's run 2). The head collapses its weights onto the blend
    fitted on every user, the blend the evaluation's baseline is.

    With `labelled` (a retriever's labelled lists, evidence/replay.py; `lists` are then built from
    them) the blend is fitted on those lists instead, their retrieval rank a feature like any other,
    and the head is held to the retriever's own order on them (`retriever_floor`). `earlier` adds the
    lists at cut-offs one horizon apart before the log's end (evidence/replay.earlier_lists: kept or
    replayed, each with the interactions before it) to the blend's, their evidence from those interactions alone
    (no sequential or request evidence: both were learned after them), each list its own group and
    every list of a user in that user's cross-fitting fold.
    """
    source = evidence_interactions(interactions, holdout)
    labels = blend_lists(interactions, items, holdout, data) if labelled is None else labelled
    fitted = list_evidence(source, labels, evidence, items, vectors, requests)
    if earlier:
        fitted = _with_earlier(fitted, earlier, evidence, items)
    # In one order whatever Spark's plan: the one-pass scorer packs lists into batches in this order, and
    # batches of other shapes give scores that differ in the last bits.
    local = lists.toPandas().sort_values([C.USER_ID, "target_item_id"], ignore_index=True)
    blend = fit_blend(fitted)

    scored = model_scores(model, tokenizer, pad_id, local, templates, score)
    rows = lists.select(C.USER_ID, F.explode("candidate_ids").alias(C.ITEM_ID))
    if labelled is not None:
        rows = rows.join(labelled.select(C.USER_ID, C.ITEM_ID, C.RETRIEVAL_RANK), [C.USER_ID, C.ITEM_ID], "left")
    listed = candidate_evidence(source, rows, evidence, items, vectors, requests).toPandas()
    frame = fill_missing_evidence(scored.merge(listed, on=[C.USER_ID, C.ITEM_ID], how="left"))
    frame = frame.sort_values([C.USER_ID, C.ITEM_ID], ignore_index=True)
    keyed = frame.assign(**{C.USER_ID: frame[C.USER_ID].astype(str)}) if earlier else frame
    head, figures = stack_head(frame, cross_fitted(fitted, keyed, seed), blend, seed)
    if labelled is not None:
        unweighted = head.weight(C.LM_SCORE) == 0.0  # the head ranks as the blend: judged on all its lists
        wider = fitted.assign(**{BLEND: cross_fitted(fitted, fitted, seed)}) if unweighted else None
        head, figures = retriever_floor(head, frame, figures, wider)
    figures = {"fusion_lists": len(local), "blend_lists": int(fitted[C.USER_ID].nunique()), **figures}
    log.info("fusion head fitted: %s", figures)
    return head, blend, figures


def _with_earlier(
    fitted: pd.DataFrame, earlier: list[CutoffLists], ev: EvidenceConfig, items: DataFrame
) -> pd.DataFrame:
    """`fitted` and the evidence of the `earlier` cut-offs' lists, each list keyed by its own user_id ("<j>:<user>",
    as text like every other key then; the cut-off's lists keep their user's own id) and every row
    carrying its user as OWNER, so a user's lists at two moments stay two lists and cross-fitting
    keeps them all in that user's fold (a list at an earlier cut-off may hold the very target of the user's list
    at the cut-off)."""
    own = fitted[C.USER_ID].astype(str)
    frames = [fitted.assign(**{C.USER_ID: own, OWNER: own})]
    for j, at in enumerate(earlier, start=1):
        part = list_evidence(at.source, at.lists, ev, items, None)
        user = part[C.USER_ID].astype(str)
        frames.append(part.assign(**{C.USER_ID: f"{j}:" + user, OWNER: user}))
    return pd.concat(frames, ignore_index=True)


def evidence_priors(
    examples: DataFrame,
    frame: pd.DataFrame,
    interactions: DataFrame,
    items: DataFrame,
    holdout: DataFrame,
    ev: EvidenceConfig,
) -> tuple[pd.DataFrame, LinearRanker]:
    """`frame` (the collected `examples`) with a `candidate_priors` column for its pointwise rows.

    The prior of a candidate is an evidence blend's score: a linear ranker over the candidate's
    evidence, fitted on the training examples themselves. Evidence for an example is computed as of
    its target (history before it, the user's own interaction with it left out), so it carries
    nothing the model will not have at scoring time. Listwise rows get no priors.
    """
    from instructrec_batch.evidence.features import AS_OF
    from instructrec_batch.training.examples import TRAIN

    pointwise = examples.where(F.col("task_form") == "pointwise")
    rows = pointwise.select(
        C.USER_ID, F.col("target_item_id").alias(AS_OF), F.explode("candidate_ids").alias(C.ITEM_ID)
    )
    source = evidence_interactions(interactions, holdout)
    evidence = candidate_evidence(source, rows, ev, items).toPandas()
    keys = [C.USER_ID, AS_OF, C.ITEM_ID]
    long = frame.loc[frame.task_form == "pointwise", [C.USER_ID, "target_item_id", "kind", "candidate_ids"]]
    long = (
        long.rename(columns={"target_item_id": AS_OF})
        .explode("candidate_ids")
        .rename(columns={"candidate_ids": C.ITEM_ID})
    )
    long[C.ITEM_ID] = long[C.ITEM_ID].astype(evidence[C.ITEM_ID].dtype)
    long = fill_missing_evidence(long.merge(evidence, on=keys, how="left"))
    long = long.sort_values(keys, ignore_index=True)  # row order from Spark varies
    train = long[long.kind == TRAIN]
    groups = train[C.USER_ID].astype(str) + "\0" + train[AS_OF].astype(str)
    blend = fit_blend(train, groups.to_numpy(), (train[C.ITEM_ID] == train[AS_OF]).to_numpy())
    long["_prior"] = blend.apply(long)
    where = zip(long[C.USER_ID], long[AS_OF], long["kind"], long[C.ITEM_ID], strict=True)
    prior_of = dict(zip(where, long["_prior"], strict=True))
    out = frame.copy()
    out["candidate_priors"] = [
        [prior_of[(row.user_id, row.target_item_id, row.kind, item)] for item in row.candidate_ids]
        if row.task_form == "pointwise"
        else None
        for row in out.itertuples(index=False)
    ]
    positive = (train[C.ITEM_ID] == train[AS_OF]).to_numpy()
    prior_mrr = mrr(long.loc[long.kind == TRAIN, "_prior"].to_numpy(), groups.to_numpy(), positive)
    log.info(
        "evidence priors: blend fitted on %d training examples (MRR of the prior alone %.4f)",
        groups.nunique(),
        prior_mrr,
    )
    return out, blend
