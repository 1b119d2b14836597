"""Labelled retriever lists (evidence/replay.py) and the floor they hold a head to (ranking/fusion.py).

The lists are what a production night's rankers are fitted on: a retriever's order at the training
cut-off, labelled by what each user chose next. Leakage tests: a replayed list is computed from the
interactions before the cut-off alone, and only what a user did after a list's moment labels it.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
from pyspark.sql import Window
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import EvidenceConfig
from instructrec_batch.evidence.features import evidence_interactions
from instructrec_batch.evidence.replay import FROM, earlier_lists, labelled, log_end, retriever_lists
from instructrec_batch.ranking.fusion import BLEND, RETRIEVER_ORDER, ranks_by_retriever, retriever_floor
from instructrec_batch.ranking.ranker import LinearRanker

DAY = 86400
CUT = 100 * DAY  # the cut-off, in epoch seconds (event_ts is BIGINT here)
SCHEMA = f"{C.USER_ID} BIGINT, {C.ITEM_ID} BIGINT, {C.EVENT_TS} BIGINT"


def _frame(spark, rows, schema=SCHEMA):
    return spark.createDataFrame(pd.DataFrame(rows, columns=[f.split()[0] for f in schema.split(", ")]), schema)


def test_a_lists_positive_is_the_first_item_its_user_chose_after_its_moment(spark) -> None:
    lists = _frame(
        spark,
        [(u, i, r, CUT) for u in (1, 2, 3) for r, i in enumerate((10, 11, 12, 13), start=1)],
        f"{C.USER_ID} BIGINT, {C.ITEM_ID} BIGINT, {C.RETRIEVAL_RANK} INT, {FROM} BIGINT",
    )
    interactions = _frame(
        spark,
        [
            (1, 12, CUT - 5),  # before the list's moment: not what followed it
            (1, 13, CUT + 10),  # the first listed item user 1 chose: the positive
            (1, 11, CUT + 20),  # chosen later: neither target nor negative, it leaves the list
            (1, 10, CUT + 9 * DAY),  # after the horizon: a negative
            (2, 99, CUT + 10),  # user 2 chose nothing from the list: no labelled list
            (3, 10, CUT + 8 * DAY),  # user 3 chose from it only after the horizon: none either
        ],
    )
    out = labelled(lists, interactions, horizon_days=7).toPandas().sort_values(C.RETRIEVAL_RANK)
    assert set(out[C.USER_ID]) == {1}
    assert list(out[C.ITEM_ID]) == [10, 12, 13] and list(out["positive"]) == [False, False, True]


def _log(spark, extra=()):
    """Users 1-4 before the cut-off (items 10-15 in pairs that co-occur), then what they did after it."""
    before = [
        (1, 10, 1), (1, 11, 2), (1, 12, 3),
        (2, 10, 1), (2, 11, 2), (2, 13, 3),
        (3, 11, 1), (3, 12, 2), (3, 14, 3),
        (4, 13, 1), (4, 14, 2), (4, 15, 3),
    ]  # fmt: skip
    after = [(1, 13, CUT + 10), (2, 12, CUT + 10), (3, 15, CUT + 10), (4, 10, CUT + 10), *extra]
    return _frame(spark, [*before, *after])


def _replayed(spark, interactions, history=None):
    """retriever_lists at CUT (each user's first interaction after it their valid row), top 3 per user."""
    first_after = Window.partitionBy(C.USER_ID).orderBy(C.EVENT_TS, C.ITEM_ID)
    valid = (
        interactions.where(F.col(C.EVENT_TS) >= CUT)
        .withColumn("_n", F.row_number().over(first_after))
        .where("_n = 1")
        .select(C.USER_ID, C.ITEM_ID, C.EVENT_TS, F.lit(C.SPLIT_VALID).alias(C.SPLIT))
    )
    catalogue = spark.createDataFrame([(i,) for i in range(10, 20)], f"{C.ITEM_ID} BIGINT")
    lists, origin = retriever_lists(
        interactions,
        evidence_interactions(interactions, valid),
        valid,
        catalogue,
        history,
        CUT,
        EvidenceConfig(),
        top_n=3,
        horizon_days=7,
    )
    return lists.toPandas().sort_values([C.USER_ID, C.RETRIEVAL_RANK], ignore_index=True), origin


def test_a_replayed_list_is_an_item_knn_top_n_from_before_the_cut_off_alone(spark) -> None:
    lists, origin = _replayed(spark, _log(spark))
    assert origin == "replayed"
    by_user = {u: list(g[C.ITEM_ID]) for u, g in lists.groupby(C.USER_ID)}
    # Each user's unseen items that co-occur with their history (user 1: 13 with 10 and 11 in user 2's
    # sequence, 14 with 11 and 12 in user 3's), and what they chose next is each list's positive.
    assert {u: set(items) for u, items in by_user.items()} == {
        1: {13, 14},
        2: {12, 14, 15},
        3: {10, 13, 15},
        4: {10, 11, 12},
    }
    assert all(list(g[C.RETRIEVAL_RANK]) == list(range(1, len(g) + 1)) for _, g in lists.groupby(C.USER_ID))
    chosen = lists[lists.positive].set_index(C.USER_ID)[C.ITEM_ID].to_dict()
    assert chosen == {1: 13, 2: 12, 3: 15, 4: 10}
    # Leakage: what anyone did after the cut-off (here a new user linking 13, 15 and 10) changes no list.
    leaky = [(5, 13, CUT + 1), (5, 15, CUT + 2), (5, 10, CUT + 3), (1, 15, CUT + 30)]
    again, _ = _replayed(spark, _log(spark, leaky))
    pd.testing.assert_frame_equal(again, lists)


def test_earlier_cut_offs_give_the_lists_in_force_then_from_before_each_alone(spark) -> None:
    """Cut-offs one horizon apart before the log's end (CUT + 14 days): at CUT + 7 days user 1's kept night
    was in force when they came back, user 2 had none (a replay); at CUT nobody had a kept night in force,
    and the lists are the replay at CUT that the training cut-off's would be."""
    day = pd.Timestamp(0, unit="s").date()
    night = [(1, i, r, day + timedelta(seconds=CUT + 7 * DAY)) for r, i in enumerate((14, 13, 15), start=1)]
    history = spark.createDataFrame(
        pd.DataFrame(night, columns=[C.USER_ID, C.ITEM_ID, C.RETRIEVAL_RANK, "run_date"]),
        f"{C.USER_ID} BIGINT, {C.ITEM_ID} BIGINT, {C.RETRIEVAL_RANK} INT, run_date DATE",
    )
    extra = [
        (1, 14, CUT + 7 * DAY + 100),  # user 1 comes back after the night and chooses from its list
        (2, 15, CUT + 8 * DAY),  # user 2 comes back with no kept night in force
        (9, 10, CUT + 14 * DAY - 1),  # the newest interaction (user 9 has no history): the log's end
    ]
    interactions = _log(spark, extra)
    catalogue = spark.createDataFrame([(i,) for i in range(10, 20)], f"{C.ITEM_ID} BIGINT")
    end = log_end(interactions)
    assert end == CUT + 14 * DAY
    cutoffs = earlier_lists(interactions, catalogue, history, end, EvidenceConfig(), 3, horizon_days=7, n=2)
    assert [w.origin for w in cutoffs] == ["kept+replayed", "replayed"]
    assert cutoffs[0].source.agg(F.max(C.EVENT_TS)).first()[0] < CUT + 7 * DAY  # evidence from before it
    assert cutoffs[1].source.agg(F.max(C.EVENT_TS)).first()[0] < CUT
    newest = cutoffs[0].lists.toPandas().sort_values([C.USER_ID, C.RETRIEVAL_RANK])
    ones = newest[newest[C.USER_ID] == 1]
    assert list(ones[C.ITEM_ID]) == [14, 13, 15] and list(ones.positive) == [True, False, False]
    assert set(newest[C.USER_ID]) <= {1, 2}
    same, _ = _replayed(spark, _log(spark))
    earlier = cutoffs[1].lists.toPandas().sort_values([C.USER_ID, C.RETRIEVAL_RANK], ignore_index=True)
    pd.testing.assert_frame_equal(earlier, same)


def test_the_kept_list_at_the_cut_off_is_the_one_in_force_when_its_user_came_back(spark) -> None:
    cut_day = pd.Timestamp(CUT, unit="s").date()
    nights = [
        (1, 15, 1, cut_day - timedelta(days=1)),  # before the cut-off: its labels would be training data
        (1, 14, 1, cut_day),
        (1, 13, 2, cut_day),
        (1, 12, 1, cut_day + timedelta(days=3)),  # after user 1 came back (CUT + 10 s): not in force then
        (6, 13, 1, cut_day),
        (6, 14, 2, cut_day),
        (6, 12, 1, cut_day + timedelta(days=3)),  # user 6 came back on day 4: this list was in force
        (6, 15, 2, cut_day + timedelta(days=3)),
    ]
    history = spark.createDataFrame(
        pd.DataFrame(nights, columns=[C.USER_ID, C.ITEM_ID, C.RETRIEVAL_RANK, "run_date"]),
        f"{C.USER_ID} BIGINT, {C.ITEM_ID} BIGINT, {C.RETRIEVAL_RANK} INT, run_date DATE",
    )
    six = [(6, 10, 1), (6, 11, 2), (6, 12, CUT + 4 * DAY)]
    lists, origin = _replayed(spark, _log(spark, six), history)
    assert origin == "kept+replayed"
    by_user = {u: (list(g[C.ITEM_ID]), list(g.positive)) for u, g in lists.groupby(C.USER_ID)}
    assert by_user[1] == ([14, 13], [False, True]) and by_user[6] == ([12, 15], [True, False])  # 1 chose 13
    # Users 2-4 had no kept night in force when they came back: their lists are the replay's.
    replayed, _ = _replayed(spark, _log(spark, six))
    others = replayed[replayed[C.USER_ID].isin([2, 3, 4])].reset_index(drop=True)
    pd.testing.assert_frame_equal(lists[lists[C.USER_ID].isin([2, 3, 4])].reset_index(drop=True), others)


def _lists(retrieval: np.ndarray, model: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """Four-item lists with the positive first, the given ev_retrieval and model score per position."""
    n = 40
    frame = pd.DataFrame(
        {
            C.USER_ID: np.repeat(np.arange(n), 4),
            C.ITEM_ID: np.tile(np.arange(4), n),
            "positive": np.tile([True, False, False, False], n),
            C.EV_RETRIEVAL: np.tile(retrieval, n),
            C.LM_SCORE: np.tile(model, n),
        }
    )
    return frame, {"fusion_mrr_head": 0.0}


def test_the_floor_ships_the_retrievers_order_when_the_head_does_not_beat_it() -> None:
    head = LinearRanker((C.LM_SCORE,), (0.0,), (1.0,), (1.0,))
    perfect, figures = _lists(np.array([1.0, 1 / 2, 1 / 3, 1 / 4]), np.array([0.0, 1.0, 2.0, 3.0]))
    figures["fusion_mrr_head"] = 0.25 + 1e-3  # what the head achieved on these lists
    shipped, out = retriever_floor(head, perfect, figures)
    assert shipped == RETRIEVER_ORDER and ranks_by_retriever(shipped) and shipped.weight(C.LM_SCORE) == 0.0
    assert out["shipped"] == "retriever" and out["fusion_mrr_retriever"] == 1.0
    # A head that does beat the retriever's order on its lists is shipped.
    worst, figures = _lists(np.array([1 / 4, 1 / 3, 1 / 2, 1.0]), np.array([3.0, 2.0, 1.0, 0.0]))
    figures["fusion_mrr_head"] = 1.0
    shipped, out = retriever_floor(head, worst, figures)
    assert shipped == head and not ranks_by_retriever(shipped)
    assert out["shipped"] == "head" and out["fusion_mrr_retriever"] == 0.25


def test_a_head_without_model_weight_is_held_to_the_floor_on_every_list_the_blend_was_fitted_on() -> None:
    """On the few fusion lists the retriever's order looks better; on the many lists the blend was fitted on
    (scored out of sample) the blend is better: the head, which ranks as the blend, ships."""
    head = LinearRanker((C.LM_SCORE, C.EV_POPULARITY), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0))  # no model weight
    few, figures = _lists(np.array([1.0, 1 / 2, 1 / 3, 1 / 4]), np.zeros(4))
    figures["fusion_mrr_head"] = 0.5  # below the retriever's 1.0 on these lists
    many, _ = _lists(np.array([1 / 4, 1 / 3, 1 / 2, 1.0]), np.zeros(4))  # the retriever ranks the positive last
    many = many.assign(**{BLEND: np.tile([1.0, 0.0, 0.0, 0.0], 40)})  # the held-out blend ranks it first
    assert retriever_floor(head, few, figures)[0] == RETRIEVER_ORDER  # judged on the fusion lists alone
    shipped, out = retriever_floor(head, few, figures, many)
    assert shipped == head and out["shipped"] == "head"
    assert (out["floor_mrr_head"], out["fusion_mrr_retriever"], out["floor_lists"]) == (1.0, 0.25, 40)
