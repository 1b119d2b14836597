"""Judge a past night by what users did next: no benchmark split, only the interactions that followed.

A production night scores a retriever's lists and ships the top-k of each (`recommendations`). Whether
it did better than the lists it was given is answered by the days after it: each user's target is the
first item of their night's list that they interacted with from the night's date on (within the
horizon); users who chose nothing from their list have no target and are counted in the coverage,
not in the ranking metrics, which every method then shares (the same users, the same lists). Two
orders of each list are compared: `shipped` (the night's recommendations, their rank; the list's
other candidates below the top-k in their arrival order) and `retriever` (the arrival order itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.data.protocol import event_seconds
from instructrec_batch.errors import ContractError
from instructrec_batch.evaluation.baselines import retriever_scores
from instructrec_batch.evidence.replay import first_chosen
from instructrec_batch.ranking.metrics import METHOD, SCORE

SHIPPED = "shipped"  # the method name of the night's recommendations
PREVIOUS = "previous"  # evaluate.night: the latest night whose following days have all passed


def previous_night(recommendations: DataFrame, today: date, horizon_days: int) -> str | None:
    """The run_id of the latest night (by run_date, then run_id) dated `horizon_days` or more before
    `today`, whose window of what followed has closed; None when there is none yet."""
    closed = recommendations.where(F.col("run_date") <= F.lit(today - timedelta(days=horizon_days)))
    row = closed.select("run_date", C.RUN_ID).distinct().orderBy(F.desc("run_date"), F.desc(C.RUN_ID)).first()
    return None if row is None else str(row[C.RUN_ID])


def chosen_night(recommendations: DataFrame, night: str, today: date, horizon_days: int) -> tuple[str, date] | None:
    """(run_id, run_date) of `night`: a run_id of `recommendations`, or PREVIOUS (`previous_night`); None
    when PREVIOUS finds none yet. A run_id without recommendations is an error naming the table."""
    run_id = previous_night(recommendations, today, horizon_days) if night == PREVIOUS else night
    if run_id is None:
        return None
    first = recommendations.where(F.col(C.RUN_ID) == run_id).select("run_date").first()
    if first is None:
        raise ContractError(
            f"table 'recommendations' has no rows for run_id '{run_id}': name a night whose score job wrote "
            "recommendations, or previous"
        )
    return run_id, first["run_date"]


def prompts_run_of(recommendations: DataFrame, run_id: str) -> str:
    """The run_id of the prompts night `run_id` scored: its recommendations' prompts_run_id lineage
    (a night scored with an earlier run's prompts), else the night's own."""
    night = recommendations.where(F.col(C.RUN_ID) == run_id)
    first = night.select("prompts_run_id").first() if "prompts_run_id" in night.columns else None
    return (first["prompts_run_id"] if first else None) or run_id


@dataclass(frozen=True)
class FollowingDays:
    """[start, end): the interactions that count as what followed the night."""

    start: datetime
    end: datetime


def midnight(day: date) -> datetime:
    """00:00 UTC of `day`: where a night's (or a training's as-of) day starts."""
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def following(run_date: date, horizon_days: int) -> FollowingDays:
    """From the night's date (00:00 UTC) for `horizon_days` days."""
    start = midnight(run_date)
    return FollowingDays(start, start + timedelta(days=horizon_days))


def _in_window(interactions: DataFrame, window: FollowingDays) -> DataFrame:
    at = event_seconds(interactions)
    start, end = int(window.start.timestamp()), int(window.end.timestamp())
    return interactions.where((at >= F.lit(start)) & (at < F.lit(end)))


def followed_targets(prompts: DataFrame, interactions: DataFrame, window: FollowingDays) -> DataFrame:
    """user_id, item_id: per user of the night, the first candidate of their list they interacted with
    in `window` (by event_ts, then item_id); users who chose none of them have no row."""
    listed = prompts.select(C.USER_ID, F.explode("candidate_ids").alias(C.ITEM_ID))
    return first_chosen(listed, _in_window(interactions, window))


def shipped_scores(recommendations: DataFrame, prompts: DataFrame) -> DataFrame:
    """user_id, item_id, score of the night's order: its top-k by rank first, then the rest of each list
    in arrival order (so ranks within the top-k are exact and later ranks read as the list below it)."""
    arrived = prompts.select(C.USER_ID, F.posexplode("candidate_ids").alias("_pos", C.ITEM_ID))
    top = recommendations.select(C.USER_ID, C.ITEM_ID, F.col("rank").alias("_rank"))
    joined = arrived.join(top, [C.USER_ID, C.ITEM_ID], "left")
    # Shipped items outrank every other candidate: a big offset keeps the two groups apart.
    score = F.when(F.col("_rank").isNotNull(), F.lit(1e9) - F.col("_rank")).otherwise(-F.col("_pos").cast("double"))
    return joined.select(C.USER_ID, C.ITEM_ID, score.cast("double").alias(SCORE))


def night_scores(recommendations: DataFrame, prompts: DataFrame) -> DataFrame:
    """method, user_id, item_id, score of the two orders a night is judged by: SHIPPED (`shipped_scores`)
    and "retriever" (the lists' arrival order), over the same lists."""
    shipped = shipped_scores(recommendations, prompts).withColumn(METHOD, F.lit(SHIPPED))
    return shipped.unionByName(retriever_scores(prompts).withColumn(METHOD, F.lit("retriever")))
