"""The ranking metrics of metrics.py as Spark aggregations, for evaluation at table scale.

Same definitions and tie-break as the pandas reference (a parity test holds them together): the
target's rank is 1 + the candidates above it by score descending, then item_id ascending.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.ranking.metrics import METHOD, METRICS, SCORE, TARGET_RANK, Metric


def target_ranks(scores: DataFrame, targets: DataFrame) -> DataFrame:
    """method, user_id, target_rank; users whose target has no score for a method drop out of it."""
    scored_targets = scores.select(
        METHOD, C.USER_ID, F.col(C.ITEM_ID).alias("_t_item"), F.col(SCORE).alias("_t_score")
    ).join(targets.select(C.USER_ID, F.col(C.ITEM_ID).alias("_t_item")), [C.USER_ID, "_t_item"])
    joined = scores.join(scored_targets, [METHOD, C.USER_ID])
    above = (F.col(SCORE) > F.col("_t_score")) | (
        (F.col(SCORE) == F.col("_t_score")) & (F.col(C.ITEM_ID) < F.col("_t_item"))
    )
    return joined.groupBy(METHOD, C.USER_ID).agg((F.sum(above.cast("int")) + 1).alias(TARGET_RANK))


def _value(metric: Metric) -> Column:
    rank = F.col(TARGET_RANK).cast("double")
    if metric.name == "HR":
        return (rank <= metric.k).cast("double")
    if metric.name == "NDCG":
        return F.when(rank <= metric.k, 1.0 / F.log2(rank + 1.0)).otherwise(F.lit(0.0))
    return 1.0 / rank


def metrics_frame(scores: DataFrame, targets: DataFrame) -> DataFrame:
    """Long frame method, metric, k, value, n_users (one row per method and metric)."""
    per_method = (
        target_ranks(scores, targets)
        .groupBy(METHOD)
        .agg(
            F.count(F.lit(1)).alias("n_users"),
            *[F.avg(_value(m)).alias(f"_m{i}") for i, m in enumerate(METRICS)],
        )
    )
    entries = F.array(
        *[
            F.struct(
                F.lit(m.name).alias("metric"),
                F.lit(m.k).cast("int").alias("k"),
                F.col(f"_m{i}").alias("value"),
            )
            for i, m in enumerate(METRICS)
        ]
    )
    return per_method.select(METHOD, "n_users", F.explode(entries).alias("_e")).select(
        METHOD, "_e.metric", "_e.k", "_e.value", F.col("n_users").cast("bigint").alias("n_users")
    )
