"""Sequential evidence: what a SASRec trained on the training interactions expects a user to take next.

The co-occurrence features count which items appear near each other; a sequential model learns the
order of a user's history and generalises across items that never co-occurred, which counts most
where histories are short and co-occurrence is sparse. The evidence job trains the model once per
run on the driver and stores it, reduced to vectors, in the `sequence_vectors` table:
a candidate's `ev_sequence` is log p(item | history) = vector_user · vector_item - log_norm_user, a
join and a dot product in Spark (`sequence_scores`), so every reader of evidence (the fusion lists in
training, the blend's validation lists in evaluation) scores its own candidates from the same model
without training it again.

The leakage rule of the other features holds by construction for list candidates: the model learns
from training interactions only, so a held-out row never feeds it. It cannot be applied as of a
training example's target (the model has learned from that very interaction), so such rows, like
candidates of users or items the model never saw, get `SEQUENCE_FLOOR`: no sequential evidence.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import SasrecConfig

log = logging.getLogger(__name__)

# log p of a candidate the model cannot score (unseen user or item, a training example's row), and the
# lowest value the evidence takes: below the catalogue's least likely items on any realistic model,
# close enough not to swamp a standardised linear ranker.
SEQUENCE_FLOOR = -30.0
USER_ROW, ITEM_ROW = "_u", "_v"


def sequence_vectors(spark: SparkSession, train: DataFrame, cfg: SasrecConfig, seed: int) -> DataFrame:
    """SASRec trained on `train` (user_id, item_id, event_ts; collected to the driver), as the rows of
    the sequence_vectors contract (without run_id): one per user with a history, one per item."""
    from instructrec_batch.evidence.sasrec import train_sasrec

    local = train.select(C.USER_ID, C.ITEM_ID, C.EVENT_TS).toPandas()
    users, items = train_sasrec(local, cfg, seed).vectors()
    log.info("sequential evidence: SASRec vectors for %d users and %d items", len(users), len(items))
    types = {f.name: f.dataType.simpleString() for f in train.schema.fields}
    schema = (
        f"{C.USER_ID} {types[C.USER_ID]}, {C.ITEM_ID} {types[C.ITEM_ID]}, {C.VECTOR} array<float>, {C.LOG_NORM} double"
    )
    rows = pd.DataFrame(
        {
            C.USER_ID: [*users[C.USER_ID], *[None] * len(items)],
            C.ITEM_ID: [*[None] * len(users), *items[C.ITEM_ID]],
            C.VECTOR: [[float(x) for x in v] for v in (*users[C.VECTOR], *items[C.VECTOR])],
            C.LOG_NORM: [*map(float, users[C.LOG_NORM]), *[None] * len(items)],
        },
        dtype=object,
    )
    return spark.createDataFrame(rows, schema)


def _dot(users: pd.Series, items: pd.Series) -> pd.Series:
    return pd.Series(
        [None if u is None or v is None else float(np.dot(u, v)) for u, v in zip(users, items, strict=True)],
        dtype="float64",
    )


def _dot_column(users: Column, items: Column) -> Column:
    """Dot product of two array<float> columns (null when either is): a pandas UDF, as not every
    engine has Spark's higher-order array functions; made per call, since it needs a session."""
    return F.pandas_udf(_dot, "double")(users, items)


def sequence_scores(rows: DataFrame, vectors: DataFrame, keys: list[str]) -> DataFrame:
    """keys with ev_sequence for the distinct `rows` (carrying user_id, item_id): the log-probability,
    floored at SEQUENCE_FLOOR, that the user's next item is the candidate; SEQUENCE_FLOOR where the
    model knows the user or the item not."""
    users = vectors.where(F.col(C.USER_ID).isNotNull()).select(C.USER_ID, F.col(C.VECTOR).alias(USER_ROW), C.LOG_NORM)
    items = vectors.where(F.col(C.ITEM_ID).isNotNull()).select(C.ITEM_ID, F.col(C.VECTOR).alias(ITEM_ROW))
    joined = rows.select(*keys).distinct().join(users, C.USER_ID, "left").join(items, C.ITEM_ID, "left")
    log_p = _dot_column(F.col(USER_ROW), F.col(ITEM_ROW)) - F.col(C.LOG_NORM)
    value = F.greatest(F.coalesce(log_p, F.lit(SEQUENCE_FLOOR)), F.lit(SEQUENCE_FLOOR))
    return joined.select(*keys, value.alias(C.EV_SEQUENCE))
