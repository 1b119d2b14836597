"""Labelled lists from a retriever: the lists it handed over, and what each user chose from them next.

A production night re-ranks an upstream retriever's ordered lists. Rankers fitted on sampled lists (a
valid item and random negatives, `evidence.lists`) learn nothing about that order: every such list
has the same ev_retrieval. These lists are a retriever's own, so its order is a feature like any
other, and a ranker can be held to the floor of that order (training/fusion.py):

- kept: the `candidates_history` table, the lists past nights were handed (user_id, item_id,
  retrieval_rank, run_date): kept by the score job night after night (`night_lists`), or supplied
  by the team from its retriever's logs.
- replayed: where no kept night is at hand, an item-kNN retriever replayed at a moment from the
  interactions before it alone: each user's `top_n` unseen items by summed cosine co-occurrence with
  their `history` newest items (the evidence's similarity), in that order.

Two sets are built for train.split=time. The cut-off's lists (`retriever_lists`): for each user who
came back after the cut-off, the kept list in force when they did (a night dated at or after the
cut-off: its evidence, from the interactions before the cut-off, is then older than the night, never
newer), else a replay at the cut-off whose moment is their return; the tuned model scores these, as
it was tuned on what came before them. Earlier cut-offs (`earlier_lists`): the same lists at cut-offs
one horizon apart before the log's end, each from the interactions before it; the evidence blend
learns from these too, so that what it ships has learned from last week's lists, not only from
those at a cut-off weeks back.

A list's positive is the first of its items the user interacted with from the list's moment (a
night's date, a replayed list's user's return) on, within `horizon_days`, as `evaluate.night` judges a night
(evaluation/night.py); the other items they chose are left out (neither target nor negative) and a
list without any is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
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


def _night_seconds() -> Column:
    """A candidates_history row's night as epoch seconds of its date's midnight (UTC)."""
    return F.datediff(F.col(RUN_DATE), F.lit("1970-01-01").cast("date")).cast("long") * DAY


def kept_lists(history: DataFrame, valid: DataFrame, cutoff_seconds: int) -> DataFrame:
    """user_id, item_id, retrieval_rank, _from: each `valid` user's (user_id, event_ts: their first
    interaction after the cut-off) kept list in force when they came back: their latest night dated
    (midnight UTC, _from) at or after the cut-off (epoch seconds) and at or before that interaction, so
    that what labels it all happened after the cut-off. Users with no such night: no rows."""
    nights = history.select(C.USER_ID, C.ITEM_ID, C.RETRIEVAL_RANK, _night_seconds().alias(FROM))
    back = valid.select(C.USER_ID, event_seconds(valid).alias("_back"))
    in_force = (
        nights.where(F.col(FROM) >= F.lit(cutoff_seconds)).join(back, C.USER_ID).where(F.col(FROM) <= F.col("_back"))
    )
    latest = in_force.groupBy(C.USER_ID).agg(F.max(FROM).alias("_night"))
    return in_force.join(latest, C.USER_ID).where(F.col(FROM) == F.col("_night")).drop("_night", "_back")


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


@dataclass(frozen=True)
class CutoffLists:
    """One earlier cut-off's labelled lists (user_id, item_id, retrieval_rank, positive), the interactions
    before it (what their evidence may learn from) and where the lists come from (`retriever_lists`)."""

    source: DataFrame
    lists: DataFrame
    origin: str


def log_end(interactions: DataFrame) -> int:
    """Epoch seconds of the midnight (UTC) after the newest of `interactions`: the end of the log a
    training sees, from which its earlier cut-offs are counted back."""
    newest = interactions.select(F.max(event_seconds(interactions)).alias("_at")).first()
    if newest is None or newest["_at"] is None:
        raise ValueError("no interaction to end the log at")
    return (int(newest["_at"]) // DAY + 1) * DAY


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
    """The labelled retriever lists at the cut-off of the users with a `valid` row (their first
    interaction after it), and where they come from ("kept", "replayed" or "kept+replayed", module
    docstring): each user's kept list in force when they came back (`kept_lists`), else an item-kNN
    replay from before the cut-off whose moment is their return, so every user who came back has a
    list, labelled by the night's rule from then on.

    `interactions` are all of them (labels come from after the cut-off), `source` the training ones
    before it (the replay learns from them alone), `catalogue` the items a replay may offer."""
    users = valid.select(C.USER_ID).distinct()
    moments = valid.select(C.USER_ID, event_seconds(valid).alias(FROM))
    kept = None if history is None else kept_lists(history.join(users, C.USER_ID, "left_semi"), valid, cutoff_seconds)
    rest = users if kept is None else users.join(kept.select(C.USER_ID), C.USER_ID, "left_anti")
    replayed = itemknn_lists(source, rest, catalogue, ev, top_n).join(moments, C.USER_ID).drop(C.RETRIEVAL_SCORE)
    has_kept = kept is not None and bool(kept.limit(1).count())
    has_rest = bool(rest.count())  # users: small (and the local engine refuses limit over a DISTINCT)
    origin = "kept+replayed" if has_kept and has_rest else "kept" if has_kept else "replayed"
    lists = replayed.unionByName(kept) if has_kept else replayed
    return labelled(lists, interactions, horizon_days), origin


def earlier_lists(
    interactions: DataFrame,
    catalogue: DataFrame,
    history: DataFrame | None,
    end_seconds: int,
    ev: EvidenceConfig,
    top_n: int,
    horizon_days: int,
    n: int,
) -> list[CutoffLists]:
    """The labelled lists at `n` earlier cut-offs, one horizon apart before `end_seconds` (the log's end,
    `log_end`), newest first: at each, `retriever_lists` as at the training cut-off (each user who came
    back after it: the kept list in force then, else an item-kNN replay from before it), with the
    interactions before it as the lists' evidence source. Labels come from `interactions` (all a
    training sees); a user's lists at several cut-offs may share a target, so they are cross-fitted
    as one user's (training/fusion.py)."""
    out = []
    at = event_seconds(interactions)
    for j in range(1, n + 1):
        moment = end_seconds - j * horizon_days * DAY
        source = interactions.where(at < F.lit(moment))
        back = (
            interactions.where(at >= F.lit(moment))
            .join(source.select(C.USER_ID), C.USER_ID, "left_semi")
            .groupBy(C.USER_ID)
            .agg(F.min(C.EVENT_TS).alias(C.EVENT_TS))
        )
        lists, origin = retriever_lists(interactions, source, back, catalogue, history, moment, ev, top_n, horizon_days)
        out.append(CutoffLists(source, lists, origin))
    return out
