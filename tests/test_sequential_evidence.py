"""Sequential evidence (ev_sequence): the SASRec's next-item log-probability as Spark computes it from the
stored vectors, learned from training interactions only, never as of a training example's target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from instructrec_batch import contracts as C
from instructrec_batch.config import EvidenceConfig, SasrecConfig
from instructrec_batch.errors import ContractError
from instructrec_batch.evidence.features import candidate_evidence, evidence_interactions
from instructrec_batch.evidence.sasrec import train_sasrec
from instructrec_batch.evidence.sequential import SEQUENCE_FLOOR, sequence_vectors
from instructrec_batch.evidence.stored import read_run_vectors
from tests.test_sasrec import ITEMS, _cycles

SCHEMA = "user_id BIGINT, item_id BIGINT, event_ts TIMESTAMP"
SMALL = SasrecConfig(epochs=60, min_steps=0, dim=32, dropout=0.0, batch_size=16, lr=5e-3)


def _sequence_evidence(spark, train: pd.DataFrame, candidates: pd.DataFrame, holdout=None) -> pd.DataFrame:
    frame = spark.createDataFrame(train, SCHEMA)
    held = None if holdout is None else spark.createDataFrame(holdout, SCHEMA + ", split STRING")
    source = evidence_interactions(frame, held)
    vectors = sequence_vectors(spark, source, SMALL, seed=0)
    schema = "user_id BIGINT, item_id BIGINT" + (", as_of_item_id BIGINT" if "as_of_item_id" in candidates else "")
    ev = candidate_evidence(source, spark.createDataFrame(candidates, schema), EvidenceConfig(), None, vectors)
    keys = [c for c in ("user_id", "item_id", "as_of_item_id") if c in candidates]
    return ev.toPandas().sort_values(keys).set_index(keys)[C.EV_SEQUENCE]


def test_ev_sequence_is_the_models_next_item_log_probability(spark) -> None:
    """Spark's join and dot product over the stored vectors give the model's own log-softmax over the
    catalogue, and the model has learned the order: the true next item is the most likely."""
    train, nxt = _cycles(users=40)
    users = sorted(nxt)
    candidates = pd.DataFrame([(u, i) for u in users for i in range(1, ITEMS + 1)], columns=["user_id", "item_id"])
    ev = _sequence_evidence(spark, train, candidates)
    model = train_sasrec(train, SMALL, seed=0)  # the same data and seed: the same weights
    scores = torch.tensor(model.score(candidates).reshape(len(users), ITEMS))
    expected = np.maximum(torch.log_softmax(scores, dim=1).numpy(), SEQUENCE_FLOOR)  # floored: p < 1e-13
    got = ev.to_numpy().reshape(len(users), ITEMS)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(np.exp(got).sum(axis=1), 1.0, atol=1e-4)  # a distribution over the catalogue
    top = got.argmax(axis=1) + 1
    assert np.mean([top[n] == nxt[u] for n, u in enumerate(users)]) > 0.8  # chance: 1/30


def test_held_out_rows_never_feed_the_sequential_model(spark) -> None:
    """Holding out each user's newest item gives exactly the values of a model trained without those rows,
    and values that differ from a model that saw them (so the check can fail)."""
    train, _ = _cycles(users=30)
    newest = train.groupby("user_id").tail(1)
    held = newest.assign(split="valid")
    candidates = pd.DataFrame([(u, i) for u in range(30) for i in range(1, ITEMS + 1)], columns=["user_id", "item_id"])
    with_holdout = _sequence_evidence(spark, train, candidates, holdout=held)
    rows_removed = _sequence_evidence(spark, train.drop(newest.index), candidates)
    pd.testing.assert_series_equal(with_holdout, rows_removed)
    leaky = _sequence_evidence(spark, train, candidates)
    assert np.abs(leaky.to_numpy() - with_holdout.to_numpy()).max() > 0.1


def test_no_sequential_evidence_as_of_a_target_or_for_unknown_users_and_items(spark) -> None:
    """The model learned from every training interaction, a training example's target included, so rows
    with an as_of item get the floor, as do users and items the model never saw; list candidates do not."""
    train, _ = _cycles(users=20)
    target = int(train[train.user_id == 0].item_id.iloc[-1])
    examples = pd.DataFrame({"user_id": [0, 0], "item_id": [target, 5], "as_of_item_id": [target, target]})
    assert (_sequence_evidence(spark, train, examples) == SEQUENCE_FLOOR).all()
    lists = pd.DataFrame({"user_id": [0, 0, 999], "item_id": [target, 10_000, target]})
    listed = _sequence_evidence(spark, train, lists)
    assert listed.loc[(0, target)] > SEQUENCE_FLOOR
    assert listed.loc[(0, 10_000)] == SEQUENCE_FLOOR and listed.loc[(999, target)] == SEQUENCE_FLOOR


def test_readers_refuse_a_run_without_stored_vectors(spark, cfg) -> None:
    """With evidence.sequential on, a job reading a run's evidence for lists of its own needs the run's
    model: without it the error names the table, the run and what to do; with it off there is nothing to read."""
    with pytest.raises(ContractError, match=r"sequence_vectors.*run_id 'nope'.*instructrec-batch evidence"):
        read_run_vectors(spark, cfg.catalog, cfg.evidence.sequential, "nope", "a test")
    off = cfg.model_copy(update={"evidence": cfg.evidence.model_copy(update={"sequential": False})})
    assert read_run_vectors(spark, off.catalog, off.evidence.sequential, "nope", "a test") is None
