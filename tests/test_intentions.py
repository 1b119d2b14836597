"""Intentions in training: each example carries the intent its user had stated by its target's time,
in InstructRec's instruction forms, rendered as scoring renders it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import deltalake
import pandas as pd
import pytest

from instructrec_batch import contracts as C
from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.models.base import resolve_base
from instructrec_batch.prompts.render import context_of, render_pointwise
from instructrec_batch.prompts.templates import load_templates
from instructrec_batch.spark.tables import read_input
from instructrec_batch.stages.prompts import prompts_job
from instructrec_batch.stages.train import train_job
from instructrec_batch.training.examples import FORM, build_examples
from tests.helpers import load_synthetic, write_input

T0 = datetime(2024, 1, 1)  # tests.helpers.synthetic: a user's j-th interaction is at T0 + j // 2 minutes
INTENTS_SCHEMA = "user_id BIGINT, intent STRING, intent_ts TIMESTAMP"


def _with(cfg: Config, **sections: dict) -> Config:
    return cfg.model_copy(update={k: getattr(cfg, k).model_copy(update=v) for k, v in sections.items()})


@pytest.fixture
def stated(spark, tiny_cfg: Config) -> Config:
    """30 users with 14 interactions over minutes 0..6, and an intent at every minute 0..7 naming its minute
    (so an example's intent says when it was stated), plus one intent stated far later than anything."""
    load_synthetic(spark, tiny_cfg, n_users=30, n_items=80, per_user=14)
    rows = [(u, f"user {u} wants minute {m}", T0 + timedelta(minutes=m)) for u in range(1, 31) for m in range(8)]
    rows += [(u, "a wish from next year", T0 + timedelta(days=365)) for u in range(1, 31)]
    write_input(
        spark, tiny_cfg, "intents", pd.DataFrame(rows, columns=["user_id", "intent", "intent_ts"]), INTENTS_SCHEMA
    )
    return _with(
        tiny_cfg,
        train={"val_users": 30, "max_steps": 2, "eval_every": 2, "batch_size": 4, "fusion_users": 0},
        prompt={"max_history": 10, "max_tokens": 1024},
        run={"run_id": "intent-test", "run_date": "2026-01-01"},
    )


def _examples(spark, cfg: Config) -> pd.DataFrame:
    tables = cfg.catalog
    return build_examples(
        read_input(spark, tables, C.INTERACTIONS),
        read_input(spark, tables, C.ITEMS),
        read_input(spark, tables, C.HOLDOUT),
        cfg.train,
        cfg.prompt,
        cfg.evidence,
        str(resolve_base(cfg.model, cfg.cache_path).path),
        intents=read_input(spark, tables, C.INTENTS),
    ).toPandas()


def _expected_intents(spark, cfg: Config) -> dict[tuple[int, int], str]:
    """(user, target item) → the latest intent stated at or before the user's interaction with it, from the
    tables as read back (synthetic items are unique per user)."""
    rows = read_input(spark, cfg.catalog, C.INTERACTIONS).toPandas()
    intents = read_input(spark, cfg.catalog, C.INTENTS).toPandas()
    expected = {}
    for row in rows.itertuples():
        mine = intents[(intents.user_id == row.user_id) & (intents.intent_ts <= row.event_ts)]
        expected[(row.user_id, row.item_id)] = mine.sort_values("intent_ts").intent.iloc[-1]
    return expected


def test_each_example_carries_the_latest_intent_stated_by_its_target_never_a_later_one(spark, stated: Config) -> None:
    cfg = _with(stated, train={"forms": {"preference": 0.0, "intention": 0.0, "both": 1.0}})
    examples = _examples(spark, cfg)
    expected = _expected_intents(spark, cfg)
    assert len(examples) > 60 and set(examples.kind) == {"train", "valid"}
    for row in examples.itertuples():
        # the intent of the target's own minute counts (at or before); the next minute's and next year's never
        assert row.intention_text == expected[(row.user_id, row.target_item_id)], row
        assert "next year" not in row.intention_text
        assert getattr(row, FORM) == "both" and row.history_len > 0
    stated_minutes = {int(text.rsplit(" ", 1)[1]) for text in examples.intention_text}
    assert len(stated_minutes) >= 2  # targets at different times read different intents


def test_intents_without_a_time_are_left_out_of_training(spark, stated: Config) -> None:
    rows = [(u, f"user {u} says something") for u in range(1, 31)]
    write_input(
        spark, stated, "intents", pd.DataFrame(rows, columns=["user_id", "intent"]), "user_id BIGINT, intent STRING"
    )
    examples = _examples(spark, stated)
    assert examples.intention_text.isna().all() and (examples[FORM] == "preference").all()


@pytest.mark.parametrize(
    ("forms", "expected"),
    [
        ({"preference": 1.0, "intention": 0.0, "both": 0.0}, {"preference"}),
        ({"preference": 0.0, "intention": 1.0, "both": 0.0}, {"intention"}),
        ({"preference": 0.25, "intention": 0.25, "both": 0.5}, {"preference", "intention", "both"}),
    ],
)
def test_training_examples_take_the_configured_instruction_forms(
    spark, stated: Config, forms: dict, expected: set
) -> None:
    examples = _examples(spark, _with(stated, train={"forms": forms}))
    with_intent = examples[examples.kind == "train"]  # every training target here has an intent by its time
    assert set(with_intent[FORM]) == expected
    shown = {
        "preference": (with_intent.intention_text.isna() & (with_intent.history_len > 0)),
        "intention": (with_intent.intention_text.notna() & (with_intent.history_len == 0)),
        "both": (with_intent.intention_text.notna() & (with_intent.history_len > 0)),
    }
    for form in expected:
        rows = with_intent[FORM] == form
        assert shown[form][rows].all(), form
    if len(expected) == 3:  # a seeded draw: every form, roughly in its share
        share = (with_intent[FORM] == "both").mean()
        assert 0.3 < share < 0.7
    valid = examples[examples.kind == "valid"]
    assert (valid[FORM] == "both").all() and valid.intention_text.notna().all()


def test_a_validation_example_and_the_scoring_prompt_of_a_user_read_the_same_with_an_intent(
    spark, stated: Config
) -> None:
    """Scoring shows the latest intent before the user's first held-out row; the validation example, the
    latest by its target (that row): the same intent, and byte-identical instructions."""
    run_stage(prompts_job, spark, stated)
    prompts = deltalake.DeltaTable(str(Path(stated.tables_root) / "prompts")).to_pandas().set_index("user_id")
    valid = _examples(spark, stated).query("kind == 'valid'").set_index("user_id")
    template = load_templates(stated.prompt.template_version).get("pointwise-0")
    assert len(valid) == 30
    for user, example in valid.iterrows():
        scoring = prompts.loc[user]
        assert scoring.intention_text == example.intention_text and "next year" not in scoring.intention_text
        train_prefix = render_pointwise(template, context_of(example), ["x"]).prefix
        assert train_prefix.encode() == render_pointwise(template, context_of(scoring), ["x"]).prefix.encode()
        assert example.intention_text in train_prefix


def test_the_manifest_records_the_instruction_forms(spark, stated: Config) -> None:
    summary = run_stage(train_job, spark, stated)
    manifest = json.loads((Path(summary.adapter) / "manifest.json").read_text())
    forms = manifest["instruction_forms"]
    assert forms["shares"] == {"preference": 0.25, "intention": 0.25, "both": 0.5}
    counts = forms["train_examples"]
    assert set(counts) == {"preference", "intention", "both"} and all(n > 0 for n in counts.values())


def test_genre_intents_name_each_interacted_films_genres_at_its_time() -> None:
    from instructrec_batch.data.movielens import genre_intents

    interactions = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10], "event_ts": [T0, T0, T0]})
    items = pd.DataFrame({"item_id": [10, 11], "title": ["A", "B"], "category": ["Comedy, Romance", None]})
    intents = genre_intents(interactions, items)
    assert intents.intent.tolist() == ["I am looking for a Comedy or Romance movie"] * 2  # film 11 has no genre
    assert intents.user_id.tolist() == [1, 2] and (intents.intent_ts == T0).all()


def test_the_control_gives_every_user_another_users_request(spark) -> None:
    from instructrec_batch.stages.evaluate import swapped_requests

    prompts = spark.createDataFrame(
        [(u, f"request of {u}" if u != 5 else None) for u in range(1, 9)], "user_id BIGINT, intention_text STRING"
    )
    swapped = swapped_requests(prompts, seed=3).toPandas().set_index("user_id").intent
    assert sorted(swapped.index) == [1, 2, 3, 4, 6, 7, 8]  # user 5 asked nothing: nothing to swap
    assert all(text != f"request of {user}" for user, text in swapped.items())
    assert sorted(swapped) == sorted(f"request of {u}" for u in (1, 2, 3, 4, 6, 7, 8))  # a permutation
