"""Figures with uncertainty: 95% bootstrap intervals per method and the paired comparison that matters.

From per-user target ranks (method, user_id, target_rank) each metric's per-user values are
resampled over users (evaluation/bootstrap.py). Then the best language-model method and the best
non-LLM method (each by NDCG@10, random excluded) are compared on the users both ranked: one extra
row per metric whose `method` is the model, `versus` the baseline, `value` the mean difference and
the interval its paired bootstrap interval. A difference whose interval excludes 0 is a real win
(or loss) on this sample of users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from instructrec_batch import contracts as C
from instructrec_batch.evaluation.bootstrap import bootstrap_mean, paired_difference
from instructrec_batch.ranking.metrics import METHOD, METRICS, TARGET_RANK, Metric, metric_values

METRICS_SCHEMA = (
    "run_id string, method string, metric string, k int, value double, ci_low double, ci_high double, "
    "n_users bigint, versus string, dataset string"
)
SELECTION = Metric("NDCG", 10)  # the figure that picks "best" on each side
NOT_A_CONTENDER = ("random",)
# The suffix of a control row: the method with every user's request swapped for another user's (how much of
# its gain comes from reading the request). Never a contender; paired like its method when both sides have one.
CONTROL = "shuffled-intents"


def control_of(method: str) -> str:
    return f"{method}/{CONTROL}"


def _is_llm(method: str, llm_methods: Sequence[str]) -> bool:
    return method.split("/")[0] in llm_methods


def best_pair(values: pd.DataFrame, llm_methods: Sequence[str]) -> tuple[str, str] | None:
    """(best LLM method, best non-LLM method) by NDCG@10, or None when either side is missing."""
    chosen = values[(values["metric"] == SELECTION.name) & (values["k"] == SELECTION.k)]
    chosen = chosen[~chosen[METHOD].isin(NOT_A_CONTENDER) & ~chosen[METHOD].str.endswith(CONTROL)]
    llm = chosen[chosen[METHOD].map(lambda m: _is_llm(m, llm_methods))]
    other = chosen[~chosen[METHOD].map(lambda m: _is_llm(m, llm_methods))]
    if llm.empty or other.empty:
        return None
    return llm.loc[llm["value"].idxmax(), METHOD], other.loc[other["value"].idxmax(), METHOD]


def with_intervals(
    values: pd.DataFrame, ranks: pd.DataFrame, resamples: int, seed: int, llm_methods: Sequence[str]
) -> pd.DataFrame:
    """`values` (method, metric, k, value, n_users) with ci_low/ci_high and `versus` (None), plus the
    paired-difference rows of the best LLM method against the best non-LLM method."""
    # By user id: resamples draw positions, so the same users in another row order (Spark returns
    # them in any) must give the same intervals.
    per_method = {m: g.set_index(C.USER_ID)[TARGET_RANK].sort_index() for m, g in ranks.groupby(METHOD)}
    rows = []
    for record in values.itertuples(index=False):
        metric = Metric(record.metric, None if pd.isna(record.k) else int(record.k))
        user_ranks = per_method.get(record.method)
        if user_ranks is None:
            low = high = float("nan")
        else:
            interval = bootstrap_mean(metric_values(user_ranks.to_numpy(), metric), resamples, seed)
            low, high = interval.low, interval.high
        rows.append((record.method, record.metric, metric.k, float(record.value), low, high, int(record.n_users), None))
    pair = best_pair(values, llm_methods)
    pairs = [] if pair is None else [pair]
    if pair is not None and control_of(pair[0]) in per_method and control_of(pair[1]) in per_method:
        pairs.append((control_of(pair[0]), control_of(pair[1])))  # does the gain survive swapped requests?
    for model, baseline in pairs:
        both = pd.concat([per_method[model].rename("a"), per_method[baseline].rename("b")], axis=1, join="inner")
        both = both.sort_index()
        for metric in METRICS:
            a = metric_values(both["a"].to_numpy(), metric)
            b = metric_values(both["b"].to_numpy(), metric)
            diff = paired_difference(a, b, resamples, seed)
            rows.append((model, metric.name, metric.k, diff.value, diff.low, diff.high, len(both), baseline))
    table = pd.DataFrame(rows, columns=[METHOD, "metric", "k", "value", "ci_low", "ci_high", "n_users", "versus"])
    table["k"] = table["k"].astype("Int64")
    return table


def plain_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The per-method rows (no paired differences)."""
    return table[table["versus"].isna()] if "versus" in table else table


def difference_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["versus"].notna()] if "versus" in table else table.iloc[0:0]


def significant(low: float, high: float) -> bool:
    return bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))
