"""Users' stated intentions (the intents table) as of a moment: one rule for scoring prompts, training
examples and the request evidence, so each reads the same request for the same user and moment."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.errors import ContractError
from instructrec_batch.spark.rejects import INVALID_UTF8, utf8_text

STATED_BY = "_stated_by"  # latest_intents: the moment an intent must have been stated by (null = any time)


def intent_problem() -> Column:
    """Why an intents row cannot be shown (empty, not UTF-8), or null for a usable one."""
    empty = F.col(C.INTENT).isNull() | (F.length(F.trim(F.col(C.INTENT))) == 0)
    return F.when(empty, "empty_intent").when(~utf8_text(C.INTENT), INVALID_UTF8)


def latest_intents(intents: DataFrame, moments: DataFrame, keys: Sequence[str]) -> DataFrame:
    """keys + intent: for each row of `moments` (keys, with user_id among them, and STATED_BY) its user's latest
    usable intent stated at or before STATED_BY, never a later one; a null STATED_BY takes the latest of all.

    One rule for scoring prompts (STATED_BY: the user's first held-out row, or null on a night without a
    holdout) and training examples (STATED_BY: the example's target time). Intents without an intent_ts cannot
    be placed in time: they count only where STATED_BY is null. Ties on the time take the largest text, so
    every engine picks the same one.
    """
    usable = intents.where(F.col(C.USER_ID).isNotNull() & intent_problem().isNull())
    as_of = F.col(STATED_BY)
    if C.INTENT_TS in intents.columns:
        stated_type = intents.schema[C.INTENT_TS].dataType
        moment_type = moments.schema[STATED_BY].dataType
        if moment_type.simpleString() not in ("void", stated_type.simpleString()):
            raise ContractError(
                f"table 'intents' column '{C.INTENT_TS}' is {stated_type.simpleString()} but the times it is "
                f"compared with (interactions.{C.EVENT_TS}, holdout.{C.EVENT_TS}) are {moment_type.simpleString()}: "
                "write both with one type"
            )
        stated, as_of = F.col(C.INTENT_TS), as_of.cast(stated_type)
    else:
        stated = F.lit(None)
    usable = usable.select(C.USER_ID, C.INTENT, stated.alias("_stated"))
    joined = moments.select(*keys, as_of.alias(STATED_BY)).join(usable, C.USER_ID)
    in_time = F.col(STATED_BY).isNull() | (F.col("_stated") <= F.col(STATED_BY))
    latest = Window.partitionBy(*keys).orderBy(F.col("_stated").desc_nulls_last(), F.col(C.INTENT).desc())
    ranked = joined.where(in_time).withColumn("_n", F.row_number().over(latest))
    return ranked.where(F.col("_n") == 1).select(*keys, C.INTENT)


def latest_by_holdout(
    intents: DataFrame, users: DataFrame, holdout: DataFrame | None, split: str = C.SPLIT_TEST
) -> DataFrame:
    """user_id, intent: each of `users`' latest intent stated by the time of their held-out row of `split`
    (the target their list is ranked for: `test` for the scoring prompts, `valid` for validation lists);
    without such a row (a night without a holdout) their latest."""
    moments = users.select(C.USER_ID).distinct()
    if holdout is not None and C.INTENT_TS in intents.columns:
        target = holdout.where(F.col(C.SPLIT) == split).groupBy(C.USER_ID).agg(F.min(C.EVENT_TS).alias(STATED_BY))
        moments = moments.join(target, C.USER_ID, "left")
    else:
        moments = moments.select(C.USER_ID, F.lit(None).alias(STATED_BY))
    return latest_intents(intents, moments, [C.USER_ID])
