"""What the model's score adds to the collaborative evidence, cross-validated over users.

hybrid − blend mixes two things: what the model's score knows that the evidence does not, and how
well the fusion head weighed it on its few validation lists. This diagnostic measures the first
alone. On the evaluated lists, a linear ranker over the evidence and one over the evidence plus the
model's score are each fitted on one half of the users and rank the other half; the mean NDCG@10
difference over several random halvings, with its standard error over users, says whether the
score carries anything the evidence lacks, however the head was fitted. Each half is ranked by rankers
fitted on the other half only, yet the halves are test lists: on them, a diagnostic for the report,
never a method row or a way to choose settings. On the fusion lists (validation items) the training
job uses the same measure to decide whether the fusion head gives the model's score any weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from instructrec_batch import contracts as C
from instructrec_batch.ranking.blend import POSITIVE
from instructrec_batch.ranking.metrics import SCORE, Metric, metric_values, target_ranks
from instructrec_batch.ranking.ranker import fit_ranker

GAIN_METRIC = Metric("NDCG", 10)


@dataclass(frozen=True)
class AddedValue:
    """(evidence + extra) − (evidence alone): the mean over users, its standard error over users (each
    user's difference averaged over the halvings) and the standard deviation over halvings."""

    gain: float
    se: float
    sd: float
    splits: int
    users: int

    def __str__(self) -> str:
        return (
            f"{self.gain:+.4f} {GAIN_METRIC.label} (standard error {self.se:.4f} over {self.users} users; "
            f"sd {self.sd:.4f} over {self.splits} random halvings)"
        )


MIN_USERS = 4  # with fewer lists a half holds a single list: too little to fit or to rank


def cross_validated_gain(
    frame: pd.DataFrame, features: Sequence[str], extra: str, splits: int, seed: int
) -> AddedValue | None:
    """How much `extra` adds to a linear ranker over `features`, cross-validated over users.

    `frame` holds one row per candidate: user_id, item_id, `positive` (the list's target), the
    features and `extra`. Lists without exactly one target are left out; None when fewer than
    MIN_USERS remain. Ranks follow the evaluation's order (score descending, then item_id).
    """
    targets_per_user = frame.groupby(C.USER_ID)[POSITIVE].transform("sum")
    frame = frame[targets_per_user == 1]
    users = np.sort(frame[C.USER_ID].unique())
    if len(users) < MIN_USERS:
        return None
    targets = frame.loc[frame[POSITIVE], [C.USER_ID, C.ITEM_ID]]
    rng = np.random.default_rng(seed)
    per_user = pd.Series(0.0, index=pd.Index(users, name=C.USER_ID))
    gains = []
    for _ in range(splits):
        first = frame[C.USER_ID].isin(users[rng.permutation(len(users))[: len(users) // 2]]).to_numpy()
        base, added = (_held_out(frame, first, list(columns), targets) for columns in (features, [*features, extra]))
        difference = (added - base).reindex(per_user.index)
        gains.append(float(difference.mean()))
        per_user += difference / splits
    se = float(per_user.std(ddof=1) / np.sqrt(len(users)))
    return AddedValue(float(np.mean(gains)), se, float(np.std(gains)), splits, len(users))


def _held_out(frame: pd.DataFrame, first: np.ndarray, columns: list[str], targets: pd.DataFrame) -> pd.Series:
    """GAIN_METRIC per user, each half ranked by a ranker fitted on the other half."""
    values = []
    for fit, rank in ((first, ~first), (~first, first)):
        part = frame[fit]
        ranker = fit_ranker(part, columns, part[C.USER_ID].to_numpy(), part[POSITIVE].to_numpy())
        held = frame[rank]
        scored = held[[C.USER_ID, C.ITEM_ID]].assign(**{SCORE: ranker.apply(held)})
        ranks = target_ranks(scored, targets)
        values.append(pd.Series(metric_values(ranks.to_numpy(), GAIN_METRIC), index=ranks.index))
    return pd.concat(values)
