"""Ranking metrics: exact values on hand-computed cases, and pandas/Spark parity."""

import math

import numpy as np
import pandas as pd
import pytest

from instructrec_batch import contracts as C
from instructrec_batch.evaluation.spark_metrics import metrics_frame
from instructrec_batch.ranking.metrics import METRICS, metrics_table, target_ranks

SCORES_SCHEMA = "method STRING, user_id BIGINT, item_id BIGINT, score DOUBLE"


def _lists(ranks: dict[int, int], size: int = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users whose target (item 1000+u) sits at a chosen rank among `size` candidates."""
    rows, targets = [], []
    for user, rank in ranks.items():
        target = 1000 + user
        targets.append((user, target))
        others = [user * 100 + j for j in range(size - 1)]
        order = [*others[: rank - 1], target, *others[rank - 1 :]]
        rows += [("m", user, item, float(size - pos)) for pos, item in enumerate(order)]
    scores = pd.DataFrame(rows, columns=["method", "user_id", "item_id", "score"])
    return scores, pd.DataFrame(targets, columns=["user_id", "item_id"])


def _as_dict(table: pd.DataFrame) -> dict[str, float]:
    return {(r.metric if pd.isna(r.k) else f"{r.metric}@{int(r.k)}"): r.value for r in table.itertuples()}


def test_hand_computed_metrics_are_exact() -> None:
    scores, targets = _lists({1: 1, 2: 3, 3: 12})
    got = _as_dict(metrics_table(scores, targets))
    assert got == {
        "HR@1": 1 / 3,
        "HR@5": 2 / 3,
        "HR@10": 2 / 3,
        "NDCG@5": (1 + 1 / math.log2(4)) / 3,
        "NDCG@10": (1 + 1 / math.log2(4)) / 3,
        "MRR": (1 + 1 / 3 + 1 / 12) / 3,
    }
    assert set(metrics_table(scores, targets)["n_users"]) == {3}


def test_ties_rank_lower_item_id_first() -> None:
    scores = pd.DataFrame(
        {"method": "m", "user_id": 1, "item_id": [5, 7, 9, 3], "score": [0.5, 0.5, 0.5, 0.9]},
    )
    ranks = target_ranks(scores, pd.DataFrame({"user_id": [1], "item_id": [7]}))
    assert ranks.loc[1] == 3  # below item 3 (higher score) and item 5 (same score, lower id)
    ranks = target_ranks(scores, pd.DataFrame({"user_id": [1], "item_id": [5]}))
    assert ranks.loc[1] == 2


def test_user_without_scored_target_is_left_out() -> None:
    scores, targets = _lists({1: 2, 2: 4})
    targets.loc[1, "item_id"] = 999_999  # user 2's target was never scored
    table = metrics_table(scores, targets)
    assert set(table["n_users"]) == {1} and _as_dict(table)["MRR"] == 0.5


def test_spark_metrics_agree_with_the_pandas_reference(spark) -> None:
    rng = np.random.default_rng(3)
    lists = {user: rng.choice(np.arange(1, 500), size=20, replace=False) for user in range(1, 61)}
    rows = []
    for method in ("a", "b", "c"):
        for user, items in lists.items():
            scores = np.round(rng.normal(size=20), 1)  # coarse values: many ties to break by item_id
            rows += [(method, user, int(i), float(s)) for i, s in zip(items, scores, strict=True)]
    scores = pd.DataFrame(rows, columns=["method", "user_id", "item_id", "score"])
    targets = pd.DataFrame({"user_id": list(lists), "item_id": [int(items[7]) for items in lists.values()]})
    expected = metrics_table(scores, targets).sort_values(["method", "metric", "k"]).reset_index(drop=True)
    got = (
        metrics_frame(spark.createDataFrame(scores, SCORES_SCHEMA), spark.createDataFrame(targets))
        .toPandas()
        .sort_values(["method", "metric", "k"])
        .reset_index(drop=True)
    )
    assert len(got) == 3 * len(METRICS)
    assert set(got["n_users"]) == {60}
    assert list(got["k"].fillna(-1)) == list(expected["k"].fillna(-1))
    assert np.allclose(got["value"], expected["value"], rtol=0, atol=1e-12)
    assert got["value"].nunique() > 3  # the methods really differ, so agreement means something


@pytest.mark.parametrize("rank", [1, 5, 6, 10, 11, 20])
def test_cutoffs_are_inclusive(rank: int) -> None:
    got = _as_dict(metrics_table(*_lists({1: rank})))
    assert got["HR@5"] == float(rank <= 5) and got["HR@10"] == float(rank <= 10)
    assert got["NDCG@10"] == (1 / math.log2(rank + 1) if rank <= 10 else 0.0)
    assert got["MRR"] == 1 / rank


def _informed_lists(users: int = 300, size: int = 10, seed: int = 5) -> pd.DataFrame:
    """Lists whose target is the candidate with the highest a + b + noise: a and b both inform it."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            C.USER_ID: np.repeat(np.arange(users), size),
            C.ITEM_ID: np.tile(np.arange(size), users),
            "a": rng.normal(size=users * size),
            "b": rng.normal(size=users * size),
            "noise": rng.normal(size=users * size),
        }
    )
    latent = frame.a + frame.b + rng.gumbel(size=len(frame))
    frame["positive"] = latent.eq(latent.groupby(frame[C.USER_ID]).transform("max"))
    return frame


def test_cross_validated_gain_finds_what_a_score_adds_and_nothing_in_noise() -> None:
    from instructrec_batch.ranking.added import cross_validated_gain

    frame = _informed_lists()
    useful = cross_validated_gain(frame, ["a"], "b", splits=4, seed=1)
    noise = cross_validated_gain(frame, ["a"], "noise", splits=4, seed=1)
    copy = cross_validated_gain(frame.assign(a2=frame.a * 3 + 1), ["a"], "a2", splits=4, seed=1)
    assert useful.gain > 0.05 and useful.users == 300 and useful.splits == 4
    assert abs(noise.gain) < 0.01 and abs(copy.gain) < 1e-6
    assert cross_validated_gain(frame, ["a"], "b", splits=4, seed=1) == useful  # reproducible for a seed
    assert 0 < useful.se < useful.gain / 3 and noise.se > 0  # the noise score moves single users
    assert "NDCG@10 (standard error" in str(useful)


def test_cross_validated_gain_needs_lists_with_one_target() -> None:
    from instructrec_batch.ranking.added import cross_validated_gain

    frame = _informed_lists(users=5)
    assert cross_validated_gain(frame, ["a"], "b", splits=2, seed=0) is not None
    frame.loc[frame.user_id.isin([0, 1]), "positive"] = False  # two lists lose their target: 3 left
    assert cross_validated_gain(frame, ["a"], "b", splits=2, seed=0) is None
