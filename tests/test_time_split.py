"""train.split=time: validation is each user's first interaction after the cut-off, and nothing after it
reaches training (the production split; leakage tests)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from instructrec_batch import contracts as C
from instructrec_batch.config import TrainConfig
from instructrec_batch.data.protocol import history_cut
from instructrec_batch.errors import ConfigError
from instructrec_batch.training.split import time_split

START = datetime(2026, 1, 1)


def _log(spark, numeric: bool):
    rows = []
    for u in range(5):
        for j in range(10):
            at = START + timedelta(days=j, hours=u)
            rows.append((u, 100 * u + j, int(at.timestamp()) if numeric else at))
    rows.append((9, 900, int(START.timestamp()) if numeric else START))  # a user with nothing after any cut-off
    schema = f"{C.USER_ID} BIGINT, {C.ITEM_ID} BIGINT, {C.EVENT_TS} {'BIGINT' if numeric else 'TIMESTAMP'}"
    return spark.createDataFrame(pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, C.EVENT_TS]), schema)


@pytest.mark.parametrize("numeric", [False, True])
def test_validation_is_each_users_first_interaction_after_the_cut_off(spark, numeric: bool) -> None:
    interactions = _log(spark, numeric)
    cut = START + timedelta(days=7)
    cutoff = str(int(cut.timestamp())) if numeric else cut.isoformat(sep=" ")
    split = time_split(interactions, TrainConfig(split="time", cutoff=cutoff))
    valid = split.holdout.toPandas().set_index(C.USER_ID).sort_index()
    assert (valid[C.SPLIT] == C.SPLIT_VALID).all()
    assert sorted(valid.index) == [0, 1, 2, 3, 4]  # user 9 did nothing after the cut-off: training only
    assert list(valid[C.ITEM_ID]) == [100 * u + 7 for u in range(5)]  # the first one at or after it
    # What training sees: every user's history ends before the cut-off.
    kept = history_cut(interactions, split.holdout).toPandas()
    at = kept[C.EVENT_TS] if numeric else kept[C.EVENT_TS].map(lambda t: int(pd.Timestamp(t).timestamp()))
    assert (at < int(cut.timestamp())).all() and len(kept) == 5 * 7 + 1


def test_the_default_cut_off_leaves_the_newest_share_of_the_log_after_it(spark) -> None:
    interactions = _log(spark, numeric=True)
    split = time_split(interactions, TrainConfig(split="time", valid_share=0.3))
    cutoff = int(split.cutoff)
    after = interactions.where(f"{C.EVENT_TS} >= {cutoff}").count()
    assert 0.2 <= after / interactions.count() <= 0.4


def test_a_cut_off_that_is_not_a_time_is_named(spark) -> None:
    with pytest.raises(ConfigError, match=r"train.cutoff='next tuesday' is not a timestamp"):
        time_split(_log(spark, numeric=False), TrainConfig(split="time", cutoff="next tuesday"))
