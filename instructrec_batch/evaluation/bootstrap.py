"""Bootstrap intervals over users: how much a figure would move with another sample of users.

Every method is ranked on the same users' lists, so intervals are computed from per-user metric
values by resampling users (with replacement, seeded), and two methods are compared *paired*: the
same resampled users for both, giving an interval for the difference of their means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    value: float  # the mean over the users actually evaluated
    low: float
    high: float


def _resample_index(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(values: np.ndarray, index: np.ndarray) -> Interval:
    means = values[index].mean(axis=1)
    tail = (1.0 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(values.mean()), float(low), float(high))


def bootstrap_mean(values: np.ndarray, resamples: int, seed: int) -> Interval:
    """Mean of per-user `values` with a 95% percentile interval from `resamples` user resamples."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    return _interval(values, _resample_index(len(values), resamples, seed))


def paired_difference(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> Interval:
    """mean(a) − mean(b) over the same users (aligned arrays), with its paired 95% interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must cover the same users: {a.shape} vs {b.shape}")
    if len(a) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    return _interval(a - b, _resample_index(len(a), resamples, seed))
