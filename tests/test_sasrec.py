"""The SASRec baseline learns a sequential pattern, with either loss and either way of cutting sequences."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from instructrec_batch.config import SasrecConfig
from instructrec_batch.evidence.sasrec import _windows, train_sasrec

ITEMS = 30


def _cycles(users: int = 60, length: int = 12, seed: int = 0) -> tuple[pd.DataFrame, dict[int, int]]:
    """Each user walks the cycle 1 → 2 → … → ITEMS → 1 from a random start: the next item is always
    the current one + 1, which no popularity or co-occurrence count without order can tell. Returns
    the interactions and each user's next (unseen) item."""
    rng = np.random.default_rng(seed)
    rows, nxt = [], {}
    t0 = datetime(2024, 1, 1)
    for user in range(users):
        start = int(rng.integers(ITEMS))
        walk = [(start + step) % ITEMS + 1 for step in range(length + 1)]
        rows += [(user, item, t0 + timedelta(hours=n)) for n, item in enumerate(walk[:-1])]
        nxt[user] = walk[-1]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_ts"]), nxt


@pytest.mark.parametrize(
    "settings",
    [
        {"loss": "ce"},
        {"loss": "ce", "ce_negatives": 8},  # sampled softmax: the catalogue is larger than 8
        {"loss": "bce"},
        {"loss": "ce", "sequences": "all", "max_len": 4},
    ],
)
def test_sasrec_learns_which_item_comes_next(settings: dict) -> None:
    train, nxt = _cycles()
    model = train_sasrec(
        train, SasrecConfig(epochs=100, min_steps=0, dim=32, dropout=0.0, batch_size=16, lr=5e-3, **settings), seed=0
    )
    users = sorted(nxt)
    candidates = pd.DataFrame([(u, i) for u in users for i in range(1, ITEMS + 1)], columns=["user_id", "item_id"])
    scores = model.score(candidates).reshape(len(users), ITEMS)
    top = scores.argmax(axis=1) + 1
    hits = np.mean([top[n] == nxt[u] for n, u in enumerate(users)])
    assert hits > 0.8  # chance: 1/30


def test_items_never_seen_in_training_score_lowest_on_the_same_scale() -> None:
    train, _ = _cycles(users=10)
    model = train_sasrec(train, SasrecConfig(epochs=2, min_steps=0, dim=16), seed=0)
    candidates = pd.DataFrame({"user_id": [0] * ITEMS + [0, 1], "item_id": [*range(1, ITEMS + 1), 10_000, 10_001]})
    scores = model.score(candidates)
    seen, unseen = scores[:ITEMS], scores[ITEMS:]
    assert (unseen == seen.min() - 1.0).all()  # last, but not a sentinel that swamps a standardised feature


def test_windows_make_every_next_item_a_target_once() -> None:
    history = list(range(1, 12))  # 11 items, 10 transitions
    for window in (2, 3, 5, 11, 20):
        cuts = _windows(history, window, every=True)
        targets = [item for cut in cuts for item in cut[1:]]
        assert sorted(targets) == history[1:] and all(2 <= len(c) <= window for c in cuts)
        assert all(c == history[history.index(c[0]) : history.index(c[0]) + len(c)] for c in cuts)  # contiguous
    assert _windows(history, 5, every=False) == [history[-5:]]


def test_training_stops_after_the_epoch_that_spends_its_budget(caplog) -> None:
    train, _ = _cycles(users=10)
    with caplog.at_level("INFO", "instructrec_batch.evidence.sasrec"):
        train_sasrec(train, SasrecConfig(epochs=50, min_steps=0, dim=16, max_minutes=1e-9), seed=0)
    assert any("stopped after epoch 1/50" in message for message in caplog.messages)
    caplog.clear()
    with caplog.at_level("INFO", "instructrec_batch.evidence.sasrec"):
        train_sasrec(train, SasrecConfig(epochs=3, min_steps=0, dim=16), seed=0)  # no budget: every epoch runs
    assert any("epoch 3/3" in message for message in caplog.messages)
    assert not any("stopped" in message for message in caplog.messages)


def test_short_epochs_get_more_of_them_until_min_steps(caplog) -> None:
    """Few or short histories make an epoch a few optimiser steps; min_steps adds epochs (never removes)."""
    train, _ = _cycles(users=10)  # 10 windows: 2 batches of 8 an epoch
    with caplog.at_level("INFO", "instructrec_batch.evidence.sasrec"):
        train_sasrec(train, SasrecConfig(epochs=2, min_steps=9, batch_size=8, dim=16), seed=0)
    assert any("5 epochs instead of 2" in m and "2 step(s)" in m for m in caplog.messages)
    assert any("epoch 5/5" in m for m in caplog.messages)
    caplog.clear()
    with caplog.at_level("INFO", "instructrec_batch.evidence.sasrec"):
        train_sasrec(train, SasrecConfig(epochs=3, min_steps=4, batch_size=8, dim=16), seed=0)
    assert any("epoch 3/3" in m for m in caplog.messages) and not any("instead of" in m for m in caplog.messages)
