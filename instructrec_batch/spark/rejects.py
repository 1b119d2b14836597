"""Row-level problems as rows of the `rejects` table: run_id, stage, source_table, user_id, item_id, reason.

Jobs never crash on a bad row: they keep the good rows and describe each bad one here,
so that what went in reconciles with what came out plus what was rejected.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from instructrec_batch import contracts as C

NULL_KEY = "null_key"
UNKNOWN_ITEM = "unknown_item"
EMPTY_TITLE = "empty_title"
INVALID_UTF8 = "invalid_utf8"


def null_keys(keys: list[str]) -> Column:
    """True where any of `keys` is null."""
    cond = F.lit(False)
    for key in keys:
        cond = cond | F.col(key).isNull()
    return cond


def utf8_text(column: str) -> Column:
    """True where `column` holds valid UTF-8 text, False for null or invalid bytes.

    Parquet strings are UTF-8 by spec but writers can break it; classic Spark reads such bytes as
    they are, and they would crash the Python side, so they never leave the JVM. (Sail refuses to read
    the file at all: see input_errors.)
    """
    return F.coalesce(F.is_valid_utf8(F.col(column)), F.lit(False))


def item_reason(known: Column, titled: Column) -> Column:
    """unknown_item where the item is not in `items`, empty_title where it has no usable title, else null."""
    return F.when(known.isNull(), UNKNOWN_ITEM).when(titled.isNull(), EMPTY_TITLE)


def reject_rows(
    df: DataFrame,
    run_id: str,
    stage: str,
    source: str,
    reason: str | Column,
    *,
    user: bool = True,
    item: bool = True,
) -> DataFrame:
    """`df`'s rows as rejects of `stage` reading `source`; ids as text, absent ones null."""
    return df.select(
        F.lit(run_id).alias("run_id"),
        F.lit(stage).alias("stage"),
        F.lit(source).alias("source_table"),
        (F.col(C.USER_ID).cast("string") if user else F.lit(None).cast("string")).alias("user_id"),
        (F.col(C.ITEM_ID).cast("string") if item else F.lit(None).cast("string")).alias("item_id"),
        (reason if isinstance(reason, Column) else F.lit(reason)).alias("reason"),
    )
