"""A linear listwise ranker over named terms: the evidence blend and the model's fusion head.

score = Σ_t w_t · (x_t − mean_t) / scale_t over terms t. A term is a column (`ev_popularity`) or a
column's square (`ev_popularity^2`, see `quadratic`): with both, the ranker can bend a feature's
effect (a floor, a saturation) and still be one expression over the columns. It is fitted by
maximising the softmax likelihood of each list's one positive (a conditional logit, the listwise
counterpart of logistic regression), with a small L2 penalty, by L-BFGS. The same class serves two
roles:

- the *blend* baseline: the collaborative evidence alone, fitted on validation lists;
- the *fusion head*: the language model's answer score next to the same evidence, fitted on
  validation lists after LoRA tuning, saved with the adapter and applied by the score job.

Because the head is linear in its terms, applying it is one Spark column expression (`column`) or
one numpy product (`apply`), and its weights say how much the model adds over the evidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from instructrec_batch.errors import ArtifactError

SQUARE = "^2"  # the suffix of a squared term


def squared(feature: str) -> str:
    """The name of `feature`'s squared term."""
    return feature + SQUARE


def quadratic(features: Sequence[str]) -> tuple[str, ...]:
    """`features` and their squares: the terms of a ranker that is quadratic in each feature."""
    return (*features, *(squared(f) for f in features))


def _column_of(term: str) -> tuple[str, int]:
    """(column, power) of a term."""
    return (term[: -len(SQUARE)], 2) if term.endswith(SQUARE) else (term, 1)


def term_matrix(frame: Mapping[str, Any], terms: Sequence[str]) -> np.ndarray:
    """One float64 column per term from a pandas frame (or dict of arrays) holding the terms' columns."""
    columns = []
    for term in terms:
        column, power = _column_of(term)
        values = np.asarray(frame[column], dtype=np.float64)
        columns.append(values * values if power == 2 else values)
    return np.column_stack(columns)


@dataclass(frozen=True)
class LinearRanker:
    features: tuple[str, ...]  # its terms: columns, or squares of columns (`quadratic`)
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]

    def apply(self, frame: Mapping[str, Any]) -> np.ndarray:
        """Scores for the rows of a pandas frame (or dict of arrays) holding every term's column."""
        x = term_matrix(frame, self.features)
        return ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.weights)

    def weight(self, feature: str) -> float | None:
        """The weight of `feature`, None when the ranker has no such feature."""
        return dict(zip(self.features, self.weights, strict=True)).get(feature)

    def column(self) -> Any:
        """The same score as a Spark column over the terms' columns.

        Terms of weight 0 are left out, so their columns may be null or absent (a fusion head that
        gives the model no weight ranks rows that were never scored by the model).
        """
        from pyspark.sql import functions as F

        def value(term: str) -> Any:
            column, power = _column_of(term)
            x = F.col(column).cast("double")
            return x * x if power == 2 else x  # a product, as numpy squares: the same doubles

        terms = [
            (value(f) - F.lit(m)) * F.lit(w / s)
            for f, m, s, w in zip(self.features, self.mean, self.scale, self.weights, strict=True)
            if w != 0.0
        ]
        total = terms[0] if terms else F.lit(0.0)
        for term in terms[1:]:
            total = total + term
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "weights": list(self.weights),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> LinearRanker:
        try:
            ranker = cls(*(tuple(data[k]) for k in ("features", "mean", "scale", "weights")))
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"{source}: not a linear ranker ({exc}); re-run training") from exc
        if not (len(ranker.features) == len(ranker.mean) == len(ranker.scale) == len(ranker.weights)):
            raise ArtifactError(f"{source}: features, mean, scale and weights differ in length; re-run training")
        return ranker


def fit_ranker(
    frame: Mapping[str, Any], features: Sequence[str], groups: np.ndarray, positive: np.ndarray, l2: float = 1e-3
) -> LinearRanker:
    """Fit weights so that each group's positive row scores above the others (softmax over the group).

    `groups` holds a list id per row, `positive` marks each list's target (lists without exactly one
    positive are dropped). Features are standardised first; a constant feature gets weight 0.
    """
    import torch

    x = term_matrix(frame, features)
    groups = np.asarray(groups)
    positive = np.asarray(positive, dtype=bool)
    codes, group_index = np.unique(groups, return_inverse=True)
    per_group = np.bincount(group_index, weights=positive.astype(np.float64), minlength=len(codes))
    keep = per_group[group_index] == 1
    if not keep.any():
        raise ValueError("fit_ranker needs lists with exactly one positive row each; got none")
    x, positive = x[keep], positive[keep]
    _, group_index = np.unique(group_index[keep], return_inverse=True)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    xt = torch.tensor((x - mean) / scale, dtype=torch.float64)
    g = torch.tensor(group_index)
    n_groups = int(g.max()) + 1
    pos = torch.tensor(positive)
    w = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        s = xt @ w
        top = torch.full((n_groups,), -torch.inf, dtype=torch.float64).scatter_reduce(0, g, s, "amax")
        top = top.detach()
        norm = torch.zeros(n_groups, dtype=torch.float64).index_add(0, g, torch.exp(s - top[g]))
        loss = (torch.log(norm) + top).sum() - s[pos].sum()
        loss = loss / n_groups + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weights = w.detach().numpy()
    return LinearRanker(tuple(features), tuple(map(float, mean)), tuple(map(float, scale)), tuple(map(float, weights)))
