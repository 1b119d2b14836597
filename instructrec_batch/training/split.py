"""The production split: train on what happened before a cut-off, validate on what came after.

A benchmark holds out each user's last two interactions (`data protocol`); a team retraining on its
logs has no such table, and the honest question is how a model trained on the past ranks what users
did next. With train.split=time the training job derives a holdout-shaped frame instead: each user's
first interaction at or after the cut-off is their `valid` row, and every later job step (examples,
validation lists, the fusion head's lists, their evidence) cuts that user's history before it, as it
does before a benchmark holdout. Users with nothing after the cut-off only train.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import TrainConfig
from instructrec_batch.errors import ConfigError


@dataclass(frozen=True)
class TimeSplit:
    holdout: DataFrame  # holdout-shaped: user_id, item_id, event_ts, split = 'valid'
    cutoff: str  # as the event_ts column reads it (a timestamp or a number), for the manifest and the log
    cutoff_at: int  # the same as a number: epoch seconds of a timestamp, else event_ts's own value


def time_split(interactions: DataFrame, train: TrainConfig) -> TimeSplit:
    """The holdout-shaped frame of train.split=time (module docstring) and the cut-off it used.

    The cut-off is train.cutoff when set, else the approximate (1 − train.valid_share) quantile of the
    interactions' times, so the newest share of the log is what validation is drawn from.
    """
    numeric = interactions.schema[C.EVENT_TS].dataType.simpleString() in ("bigint", "int")
    at = F.col(C.EVENT_TS) if numeric else F.col(C.EVENT_TS).cast("long")  # a number that orders like event_ts
    if train.cutoff is None:
        value = interactions.select(F.percentile_approx(at, 1.0 - train.valid_share).alias("q")).first()
        if value is None or value["q"] is None:
            raise ConfigError("train.split=time: the interactions table has no event_ts to cut; it is empty")
        cutoff = int(value["q"])
    else:
        try:
            cutoff = int(train.cutoff) if numeric else _timestamp_seconds(train.cutoff)
        except ValueError as exc:
            raise ConfigError(
                f"train.cutoff={train.cutoff!r} is not a {'number' if numeric else 'timestamp'} like event_ts"
            ) from exc
    first_after = Window.partitionBy(C.USER_ID).orderBy(F.col(C.EVENT_TS), F.col(C.ITEM_ID))
    holdout = (
        interactions.where(at >= F.lit(cutoff))
        .withColumn("_n", F.row_number().over(first_after))
        .where(F.col("_n") == 1)
        .select(C.USER_ID, C.ITEM_ID, C.EVENT_TS, F.lit(C.SPLIT_VALID).alias(C.SPLIT))
    )
    shown = str(cutoff) if numeric else _seconds_text(cutoff)
    return TimeSplit(holdout, shown, cutoff)


def _timestamp_seconds(text: str) -> int:
    """Epoch seconds of a timestamp's text, UTC unless the text names its zone (ValueError if not a time)."""
    import pandas as pd

    stamp = pd.Timestamp(text)
    if pd.isna(stamp):
        raise ValueError(text)
    return int((stamp if stamp.tzinfo else stamp.tz_localize("UTC")).timestamp())


def _seconds_text(seconds: int) -> str:
    import pandas as pd

    return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()
