"""Bootstrap intervals: reproducible for a seed, paired difference = difference of the means, and the
intervals table picks the best LLM and non-LLM methods."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instructrec_batch.evaluation.bootstrap import bootstrap_mean, paired_difference
from instructrec_batch.evaluation.intervals import best_pair, with_intervals
from instructrec_batch.ranking.metrics import METRICS, metric_values


def test_intervals_are_reproducible_for_a_seed_and_cover_the_mean() -> None:
    values = np.random.default_rng(3).random(400)
    first, again = bootstrap_mean(values, 500, seed=7), bootstrap_mean(values, 500, seed=7)
    other = bootstrap_mean(values, 500, seed=8)
    assert first == again and first != other
    assert first.low < values.mean() < first.high
    assert first.value == values.mean()
    assert 0.02 < first.high - first.low < 0.1  # ~ 4 standard errors of a uniform mean over 400 users


def test_paired_difference_equals_difference_of_means_and_is_tighter() -> None:
    rng = np.random.default_rng(1)
    user_effect = rng.random(300)
    a = user_effect + 0.05 + 0.05 * rng.random(300)
    b = user_effect + 0.05 * rng.random(300)
    diff = paired_difference(a, b, 1000, seed=3)
    assert diff.value == pytest.approx(a.mean() - b.mean(), abs=1e-12)  # same users, same resamples
    assert diff.low > 0  # a real, consistent gain is significant when paired
    unpaired_width = (bootstrap_mean(a, 1000, 3).high - bootstrap_mean(a, 1000, 3).low) * 2
    assert diff.high - diff.low < unpaired_width / 4


def test_table_has_intervals_and_the_paired_row() -> None:
    rng = np.random.default_rng(0)
    users = np.arange(200)
    ranks = pd.concat(
        [
            pd.DataFrame({"method": m, "user_id": users, "target_rank": rng.integers(1, hi, size=200)})
            for m, hi in (("random", 21), ("itemknn", 8), ("hybrid/pointwise", 5), ("lora/pointwise", 12))
        ]
    )
    rows = []
    for method, group in ranks.groupby("method"):
        for metric in METRICS:
            value = metric_values(group["target_rank"].to_numpy(), metric).mean()
            rows.append((method, metric.name, metric.k, value, len(group)))
    values = pd.DataFrame(rows, columns=["method", "metric", "k", "value", "n_users"])
    assert best_pair(values, ("lora", "hybrid", "zero_shot")) == ("hybrid/pointwise", "itemknn")
    table = with_intervals(values, ranks, 200, 1, ("lora", "hybrid", "zero_shot"))
    plain = table[table.versus.isna()]
    assert len(plain) == len(values) and (plain.ci_low <= plain.value).all() and (plain.value <= plain.ci_high).all()
    paired = table[table.versus.notna()].set_index(["metric", "k"])
    assert set(paired.method) == {"hybrid/pointwise"} and set(paired.versus) == {"itemknn"}
    ndcg = values.set_index(["method", "metric", "k"])["value"]
    gap = ndcg[("hybrid/pointwise", "NDCG", 10)] - ndcg[("itemknn", "NDCG", 10)]
    assert paired.loc[("NDCG", 10), "value"] == pytest.approx(gap, abs=1e-12)
    # Spark hands the per-user ranks over in any order: the intervals must not depend on it.
    shuffled = ranks.sample(frac=1.0, random_state=5)
    again = with_intervals(values, shuffled, 200, 1, ("lora", "hybrid", "zero_shot"))
    pd.testing.assert_frame_equal(again, table)
