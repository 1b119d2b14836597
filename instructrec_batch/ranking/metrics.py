"""Ranking metrics over each user's candidate list: the pure pandas/numpy reference.

A user's list holds exactly one target. Its rank is 1 + the number of candidates ranked above it
under the system's order (score descending, then item_id ascending), so ties are resolved the same
way as in `recommendations`. From the rank:
HR@k = [rank <= k], NDCG@k = [rank <= k] / log2(rank + 1) (one relevant item, so IDCG = 1),
MRR = 1 / rank. The Spark implementation (spark_metrics.py) must agree with this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from instructrec_batch import contracts as C

SCORE = "score"
METHOD = "method"
TARGET_RANK = "target_rank"


@dataclass(frozen=True)
class Metric:
    """One reported figure: its family (HR, NDCG, MRR) and cut-off (None = whole list)."""

    name: str
    k: int | None

    @property
    def label(self) -> str:
        return self.name if self.k is None else f"{self.name}@{self.k}"


METRICS: tuple[Metric, ...] = (
    Metric("HR", 1),
    Metric("HR", 5),
    Metric("HR", 10),
    Metric("NDCG", 5),
    Metric("NDCG", 10),
    Metric("MRR", None),
)


def metric_values(ranks: np.ndarray, metric: Metric) -> np.ndarray:
    """Per-user values of `metric` for 1-based target ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if metric.name == "HR":
        return (ranks <= metric.k).astype(np.float64)
    if metric.name == "NDCG":
        return np.where(ranks <= metric.k, 1.0 / np.log2(ranks + 1.0), 0.0)
    if metric.name == "MRR":
        return 1.0 / ranks
    raise ValueError(f"unknown metric {metric.name!r}; known: HR, NDCG, MRR")


def target_ranks(scores: pd.DataFrame, targets: pd.DataFrame) -> pd.Series:
    """Rank of each user's target among their scored candidates (users without a scored target drop out).

    `scores` has user_id, item_id, score (one row per candidate); `targets` has user_id, item_id.
    """
    target = targets[[C.USER_ID, C.ITEM_ID]].merge(scores[[C.USER_ID, C.ITEM_ID, SCORE]], on=[C.USER_ID, C.ITEM_ID])
    target = target.rename(columns={C.ITEM_ID: "_target_item", SCORE: "_target_score"})
    joined = scores[[C.USER_ID, C.ITEM_ID, SCORE]].merge(target, on=C.USER_ID)
    above = (joined[SCORE] > joined["_target_score"]) | (
        (joined[SCORE] == joined["_target_score"]) & (joined[C.ITEM_ID] < joined["_target_item"])
    )
    return (above.groupby(joined[C.USER_ID]).sum() + 1).rename(TARGET_RANK)


def metrics_table(scores: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Long table method, metric, k, value, n_users from per-method candidate scores.

    `scores` carries a `method` column; each method is ranked and averaged on its own.
    """
    rows = []
    for method, group in scores.groupby(METHOD, sort=True):
        ranks = target_ranks(group, targets).to_numpy()
        for metric in METRICS:
            value = float(metric_values(ranks, metric).mean()) if len(ranks) else float("nan")
            rows.append((method, metric.name, metric.k, value, len(ranks)))
    return pd.DataFrame(rows, columns=[METHOD, "metric", "k", "value", "n_users"])
