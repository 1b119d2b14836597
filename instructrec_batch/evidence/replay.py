"""Labelled lists from a retriever: the lists it handed over, and what each user chose from them next.

A production night re-ranks an upstream retriever's ordered lists. Rankers fitted on sampled lists (a
valid item and random negatives, `evidence.lists`) learn nothing about that order: every such list
has the same ev_retrieval. These lists are a retriever's own, at the training cut-off of
train.split=time, so its order is a feature like any other, and a ranker can be held to the floor of
that order (training/fusion.py):

- kept: the `candidates_history` table, the lists past nights were handed (user_id, item_id,
  retrieval_rank, run_date): kept by the score job night after night (`night_lists`), or supplied
  by the team from its retriever's logs. Each user's list is that of their first night dated at or
  after the cut-off: its evidence, computed from the interactions before the cut-off, is then older
  than the night, never newer.
- replayed: where no kept night falls on or after the cut-off, an item-kNN retriever replayed at it
  from the training interactions alone: each user's `top_n` unseen items by summed cosine
  co-occurrence with their `history` newest items (the evidence's similarity), in that order.

A list's positive is the first of its items the user interacted with from the list's moment on
(their first interaction after the cut-off for a replayed list, the night's date for a kept one),
within `horizon_days`; the other items they chose are left out (neither target nor negative) and a
list without any is dropped, as `evaluate.night` judges a night (evaluation/night.py).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import EvidenceConfig
from instructrec_batch.data.protocol import event_seconds
from instructrec_batch.evidence.features import SEQUENCE, SIM, item_neighbours, user_sequences
from instructrec_batch.ranking.blend import POSITIVE

RUN_DATE = "run_date"  # candidates_history: the night a list was handed over
FROM = "_from"  # a list's moment: epoch seconds from which what the user did counts as its label
NEIGHBOURS = 100  # item-kNN replay: each history item's nearest items a user's candidates come from
DAY = 86400


def first_chosen(listed: DataFrame, following: DataFrame) -> DataFrame:
    """user_id, item_id: per user, the first item of `listed` (user_id, item_id) among their `following`
    interactions (user_id, item_id, event_ts), by event_ts then item_id; users who chose none: no row."""
    chosen = following.join(listed.select(C.USER_ID, C.ITEM_ID), [C.USER_ID, C.ITEM_ID], "left_semi")
    first = Window.partitionBy(C.USER_ID).orderBy(F.col(C.EVENT_TS), F.col(C.ITEM_ID))
    return chosen.withColumn("_n", F.row_number().over(first)).where(F.col("_n") == 1).select(C.USER_ID, C.ITEM_ID)


def itemknn_lists(
    source: DataFrame, users: DataFrame, catalogue: DataFrame, ev: EvidenceConfig, top_n: int
) -> DataFrame:
    """user_id, item_id, retrieval_rank, retrieval_score: an item-kNN retriever's top `top_n` for each of
    `users` from the interactions `source` alone: items of `catalogue` (item_id) the user has not
    interacted with, scored by their summed similarity to the user's ev.history newest items."""
    sequences = user_sequences(source, ev.max_items)
    near = item_neighbours(sequences, ev.window, NEIGHBOURS)
    recent = sequences.join(users.select(C.USER_ID), C.USER_ID, "left_semi").select(
        C.USER_ID, F.explode(F.slice(SEQUENCE, 1, ev.history)).alias("_a")
    )
    scored = (
        recent.join(near, "_a")
        .groupBy(C.USER_ID, F.col("_b").alias(C.ITEM_ID))
        .agg(F.sum(SIM).alias(C.RETRIEVAL_SCORE))
        .join(catalogue.select(C.ITEM_ID), C.ITEM_ID, "left_semi")
        .join(source.select(C.USER_ID, C.ITEM_ID), [C.USER_ID, C.ITEM_ID], "left_anti")
    )
    best = Window.partitionBy(C.USER_ID).orderBy(F.col(C.RETRIEVAL_SCORE).desc(), F.col(C.ITEM_ID))
    ranked = scored.withColumn(C.RETRIEVAL_RANK, F.row_number().over(best).cast("int"))
    return ranked.where(F.col(C.RETRIEVAL_RANK) <= top_n)


def night_lists(prompts: DataFrame, run_date: str, run_id: str) -> DataFrame:
    """candidates_history rows of a night: each user's list of `prompts` (candidate_ids in the order the
    retriever handed them over) as user_id, item_id, retrieval_rank (1 = first), run_date, run_id."""
    listed = prompts.select(C.USER_ID, F.posexplode("candidate_ids").alias("_pos", C.ITEM_ID))
    return listed.select(
        C.USER_ID,
        C.ITEM_ID,
        (F.col("_pos") + 1).cast("int").alias(C.RETRIEVAL_RANK),
        F.to_date(F.lit(run_date)).alias(RUN_DATE),
        F.lit(run_id).alias(C.RUN_ID),
    )


def kept_lists(history: DataFrame, cutoff_seconds: int) -> DataFrame:
    """user_id, item_id, retrieval_rank, _from: each user's list of their first kept night whose date
    (midnight UTC, _from) is at or after the cut-off (epoch seconds), so that what labels it all
    happened after the cut-off."""
    night = F.datediff(F.col(RUN_DATE), F.lit("1970-01-01").cast("date")).cast("long") * DAY
    nights = history.select(C.USER_ID, C.ITEM_ID, C.RETRIEVAL_RANK, night.alias(FROM))
    after = nights.where(F.col(FROM) >= F.lit(cutoff_seconds))
    first = after.groupBy(C.USER_ID).agg(F.min(FROM).alias("_first"))
    return after.join(first, C.USER_ID).where(F.col(FROM) == F.col("_first")).drop("_first")


def labelled(lists: DataFrame, interactions: DataFrame, horizon_days: int) -> DataFrame:
    """`lists` (user_id, item_id, retrieval_rank, _from: one list per user) with `positive`: the first
    of its items the user interacted with in [_from, _from + horizon_days); the user's other chosen items
    leave the list and lists without a positive are dropped."""
    starts = lists.select(C.USER_ID, FROM).distinct()
    at = event_seconds(interactions)
    following = (
        interactions.select(C.USER_ID, C.ITEM_ID, C.EVENT_TS, at.alias("_at"))
        .join(starts, C.USER_ID)
        .where((F.col("_at") >= F.col(FROM)) & (F.col("_at") < F.col(FROM) + F.lit(horizon_days * DAY)))
        .select(C.USER_ID, C.ITEM_ID, C.EVENT_TS)
    )
    first = first_chosen(lists, following).withColumn(POSITIVE, F.lit(True))
    chosen = following.select(C.USER_ID, C.ITEM_ID).distinct().withColumn("_chosen", F.lit(True))
    marked = lists.join(first, [C.USER_ID, C.ITEM_ID], "left").join(chosen, [C.USER_ID, C.ITEM_ID], "left")
    positive = F.coalesce(F.col(POSITIVE), F.lit(False))
    kept = marked.where(positive | F.col("_chosen").isNull())
    return kept.select(C.USER_ID, C.ITEM_ID, C.RETRIEVAL_RANK, positive.alias(POSITIVE)).join(
        first.select(C.USER_ID), C.USER_ID, "left_semi"
    )


def earlier_lists(
    interactions: DataFrame,
    catalogue: DataFrame,
    cutoff_seconds: int,
    ev: EvidenceConfig,
    top_n: int,
    horizon_days: int,
    n: int,
) -> list[tuple[DataFrame, DataFrame]]:
    """(interactions before it, labelled lists) of an item-kNN replay at each of `n` cut-offs before the
    training cut-off, a horizon apart: more labelled lists than one cut-off's users give. At each, the
    retriever and the lists' evidence learn from the interactions before it alone, its users are those
    with history before it and an interaction in the horizon after it, and labels come from before
    the training cut-off (what follows it is validation's)."""
    at = event_seconds(interactions)
    seen = interactions.where(at < F.lit(cutoff_seconds))
    out = []
    for j in range(1, n + 1):
        moment = cutoff_seconds - j * horizon_days * DAY
        source = seen.where(event_seconds(seen) < F.lit(moment))
        after = seen.where(event_seconds(seen) >= F.lit(moment))
        first = after.groupBy(C.USER_ID).agg(F.min(event_seconds(after)).alias(FROM))
        users = first.join(source.select(C.USER_ID).distinct(), C.USER_ID, "left_semi")
        replayed = itemknn_lists(source, users, catalogue, ev, top_n).join(users, C.USER_ID)
        out.append((source, labelled(replayed.drop(C.RETRIEVAL_SCORE), seen, horizon_days)))
    return out


def retriever_lists(
    interactions: DataFrame,
    source: DataFrame,
    valid: DataFrame,
    catalogue: DataFrame,
    history: DataFrame | None,
    cutoff_seconds: int,
    ev: EvidenceConfig,
    top_n: int,
    horizon_days: int,
) -> tuple[DataFrame, str]:
    """The labelled retriever lists of the users with a `valid` row (user_id, event_ts: their first
    interaction after the cut-off), and where they come from ("kept" or "replayed", module docstring).

    `interactions` are all of them (labels come from after the cut-off), `source` the training ones
    before it (the replay learns from them alone), `catalogue` the items a replay may offer."""
    users = valid.select(C.USER_ID).distinct()
    kept = None
    if history is not None:
        kept = kept_lists(history.join(users, C.USER_ID, "left_semi"), cutoff_seconds)
        kept = kept if kept.limit(1).count() else None
    if kept is not None:
        return labelled(kept, interactions, horizon_days), "kept"
    moments = valid.select(C.USER_ID, event_seconds(valid).alias(FROM))
    replayed = itemknn_lists(source, users, catalogue, ev, top_n).join(moments, C.USER_ID)
    return labelled(replayed.drop(C.RETRIEVAL_SCORE), interactions, horizon_days), "replayed"
