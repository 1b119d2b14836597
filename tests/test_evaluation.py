"""Baselines on toy tables, and the evaluate job end to end on the tiny model."""

import math
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import deltalake
import pandas as pd
import pytest
from pyspark.sql import functions as F

from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.errors import ConfigError, ContractError
from instructrec_batch.evaluation.baselines import (
    itemknn_scores,
    popularity_scores,
    random_scores,
    training_interactions,
)
from instructrec_batch.evidence.lists import blend_lists
from instructrec_batch.models.base import resolve_base
from instructrec_batch.ranking.metrics import metrics_table, target_ranks
from instructrec_batch.stages.evaluate import GAIN_LABEL, GAIN_SPLITS, evaluate_job
from instructrec_batch.stages.evidence import evidence_job
from instructrec_batch.stages.prompts import prompts_job
from instructrec_batch.tracking import ResolvedAdapter
from tests.helpers import load_synthetic

T0 = datetime(2024, 1, 1)
# user → items in time order; the last one is held out (test) below.
HISTORIES = {1: [1, 2, 3, 9], 2: [1, 2, 4, 9], 3: [2, 3, 4, 8], 4: [1, 5, 7]}


def _toy(spark):
    inter = spark.createDataFrame(
        [(u, i, T0 + timedelta(hours=n)) for u, items in HISTORIES.items() for n, i in enumerate(items)],
        "user_id BIGINT, item_id BIGINT, event_ts TIMESTAMP",
    )
    holdout = spark.createDataFrame(
        [(u, items[-1], T0, "test") for u, items in HISTORIES.items()],
        "user_id BIGINT, item_id BIGINT, event_ts TIMESTAMP, split STRING",
    )
    cands = spark.createDataFrame(
        [(4, 2), (4, 3), (4, 4), (4, 6), (1, 4), (1, 5), (1, 6)], "user_id BIGINT, item_id BIGINT"
    )
    return training_interactions(inter, holdout), cands


def _by_pair(df) -> dict[tuple[int, int], float]:
    return {(r.user_id, r.item_id): r.score for r in df.collect()}


def test_popularity_counts_training_rows_only(spark) -> None:
    train, cands = _toy(spark)
    got = _by_pair(popularity_scores(cands, train))
    # item 9 is held out for users 1 and 2; item 4 is trained on by users 2 and 3 only.
    assert got == {(4, 2): 3.0, (4, 3): 2.0, (4, 4): 2.0, (4, 6): 0.0, (1, 4): 2.0, (1, 5): 1.0, (1, 6): 0.0}


def test_itemknn_is_the_cosine_cooccurrence_sum(spark) -> None:
    train, cands = _toy(spark)
    users_of: dict[int, set[int]] = {}
    for user, items in HISTORIES.items():
        for item in items[:-1]:
            users_of.setdefault(item, set()).add(user)

    def cosine(a: int, b: int) -> float:
        if a == b or a not in users_of or b not in users_of:
            return 0.0
        return len(users_of[a] & users_of[b]) / math.sqrt(len(users_of[a]) * len(users_of[b]))

    got = _by_pair(itemknn_scores(cands, train))
    for (user, item), value in got.items():
        expected = sum(cosine(h, item) for h in HISTORIES[user][:-1])
        assert value == pytest.approx(expected, abs=1e-12), (user, item)
    assert got[(4, 2)] > 0 and got[(4, 6)] == 0.0  # item 6 was never trained on


def test_random_is_seeded_and_engine_stable(spark) -> None:
    _, cands = _toy(spark)
    first, again, other = (_by_pair(random_scores(cands, s)) for s in (1, 1, 2))
    assert first == again and first != other and len(set(first.values())) == len(first)


def test_retriever_row_ranks_each_list_in_the_order_it_arrived(spark) -> None:
    from instructrec_batch.evaluation.baselines import retriever_scores

    prompts = spark.createDataFrame(
        pd.DataFrame({"user_id": [1, 2], "candidate_ids": [[30, 10, 20], [5, 7]]}),
        "user_id BIGINT, candidate_ids ARRAY<BIGINT>",
    )
    scores = retriever_scores(prompts).toPandas()
    order = scores.sort_values(["user_id", "score"], ascending=[True, False]).groupby("user_id")["item_id"].apply(list)
    assert order.to_dict() == {1: [30, 10, 20], 2: [5, 7]}


@pytest.fixture
def evaluated_inputs(spark, tiny_cfg: Config, adapter_dir: Path) -> Config:
    load_synthetic(spark, tiny_cfg, n_users=20, n_items=70, per_user=12)
    cfg = tiny_cfg.model_copy(
        update={
            "score": tiny_cfg.score.model_copy(update={"adapter": str(adapter_dir), "batch_size": 16}),
            "evaluate": tiny_cfg.evaluate.model_copy(update={"tasks": ["pointwise", "listwise"], "max_users": 15}),
            "run": tiny_cfg.run.model_copy(update={"run_id": "eval-test", "run_date": "2026-01-03"}),
        }
    )
    run_stage(evidence_job, spark, cfg)
    run_stage(prompts_job, spark, cfg)
    return cfg


def test_evaluate_writes_metrics_for_every_method_and_a_report(spark, evaluated_inputs: Config) -> None:
    cfg = evaluated_inputs
    result = run_stage(evaluate_job, spark, cfg)
    table = deltalake.DeltaTable(str(Path(cfg.tables_root) / "metrics")).to_pandas()
    methods = {"random", "popularity", "itemknn", "blend", "sasrec", "zero_shot/pointwise", "lora/pointwise"}
    methods |= {"zero_shot/listwise", "lora/listwise"}  # no hybrid: this adapter has no fusion head
    assert set(table["method"]) == methods and set(table["run_id"]) == {"eval-test"}
    plain, paired = table[table.versus.isna()], table[table.versus.notna()]
    assert len(plain) == len(methods) * 6 and set(table["n_users"]) == {15}
    assert plain["value"].between(0, 1).all()
    assert ((plain.ci_low <= plain.value + 1e-12) & (plain.value <= plain.ci_high + 1e-12)).all()
    # One paired comparison per metric: the best model method against the best non-LLM method.
    assert len(paired) == 6 and paired.method.nunique() == 1 and paired.versus.nunique() == 1
    assert paired.method.iloc[0].split("/")[0] in {"lora", "zero_shot"}
    assert paired.versus.iloc[0] in {"popularity", "itemknn", "blend", "sasrec"}
    mrr = plain[plain.metric == "MRR"].set_index("method")["value"]
    assert mrr["lora/pointwise"] != mrr["zero_shot/pointwise"]  # the adapter changes the ranking
    markdown = result.report.markdown.read_text()
    assert all(f"| {m} |" in markdown for m in methods) and "HR@1" in markdown
    assert "Paired difference" in markdown and "95% interval" in markdown
    assert result.report.chart.stat().st_size > 10_000 and result.report.chart.read_bytes()[:4] == b"\x89PNG"
    # What the tuned model's score adds to the evidence, cross-validated over the evaluated users (on these
    # synthetic lists co-occurrence puts every target in the top 5, so the random adapter's score may add
    # exactly nothing; tests/test_evidence.py checks the measure on scores that do and do not add).
    gain = result.model_gain
    assert gain is not None and gain.users == 15 and gain.splits == GAIN_SPLITS
    assert -1 <= gain.gain <= 1 and gain.se >= 0 and gain.sd >= 0
    assert f"{GAIN_LABEL}: {gain}" in result.table() and f"**{GAIN_LABEL}**: {gain}" in markdown

    rerun = run_stage(evaluate_job, spark, cfg)  # a rerun replaces the run's figures
    assert rerun.model_gain == gain
    again = deltalake.DeltaTable(str(Path(cfg.tables_root) / "metrics")).to_pandas()
    assert len(again) == len(table)
    pd.testing.assert_frame_equal(
        again.sort_values(["method", "metric", "k"]).reset_index(drop=True)[["method", "metric", "value"]],
        table.sort_values(["method", "metric", "k"]).reset_index(drop=True)[["method", "metric", "value"]],
    )


def test_evidence_is_required_only_by_methods_that_read_it(spark, evaluated_inputs: Config) -> None:
    """hybrid needs evidence only when the adapter has a fusion head (this one has none); blend always;
    sasrec unless it is asked to train its own model."""
    shutil.rmtree(Path(evaluated_inputs.tables_root) / "candidate_evidence")

    def methods(*names: str) -> Config:
        update = {"methods": list(names), "tasks": ["pointwise"]}
        return evaluated_inputs.model_copy(update={"evaluate": evaluated_inputs.evaluate.model_copy(update=update)})

    run_stage(evaluate_job, spark, methods("random", "lora", "hybrid"))
    table = deltalake.DeltaTable(str(Path(evaluated_inputs.tables_root) / "metrics")).to_pandas()
    assert set(table["method"]) == {"random", "lora/pointwise"}
    with pytest.raises(ContractError, match=r"candidate_evidence.*eval-test.*blend"):
        run_stage(evaluate_job, spark, methods("random", "blend"))
    # The sasrec row reads the evidence job's model by default; the error says how to train one instead.
    with pytest.raises(ContractError, match=r"candidate_evidence.*sasrec method.*sasrec_source=train"):
        run_stage(evaluate_job, spark, methods("random", "sasrec"))
    trains = methods("random", "sasrec")
    trains = trains.model_copy(update={"evaluate": trains.evaluate.model_copy(update={"sasrec_source": "train"})})
    run_stage(evaluate_job, spark, trains)
    table = deltalake.DeltaTable(str(Path(evaluated_inputs.tables_root) / "metrics")).to_pandas()
    assert set(table["method"]) == {"random", "sasrec"}


def test_sasrec_row_is_the_evidence_jobs_model_unless_asked_to_train(
    spark, evaluated_inputs: Config, monkeypatch
) -> None:
    """By default the sasrec row ranks by the run's ev_sequence (the SASRec the evidence job trained):
    no second training, and exactly the ranks that column gives. sasrec_source=train trains one here."""
    from instructrec_batch.evidence import sasrec

    trainings = []
    real = sasrec.train_sasrec
    monkeypatch.setattr(sasrec, "train_sasrec", lambda *a, **k: trainings.append(1) or real(*a, **k))

    def sasrec_row(source: str) -> pd.Series:
        update = {"methods": ["random", "sasrec"], "tasks": ["pointwise"], "max_users": None, "sasrec_source": source}
        run_stage(
            evaluate_job,
            spark,
            evaluated_inputs.model_copy(update={"evaluate": evaluated_inputs.evaluate.model_copy(update=update)}),
        )
        table = deltalake.DeltaTable(str(Path(evaluated_inputs.tables_root) / "metrics")).to_pandas()
        plain = table[(table.method == "sasrec") & table.versus.isna()]
        return plain.set_index(plain.metric + plain.k.fillna(0).astype(int).astype(str))["value"].sort_index()

    stored = sasrec_row("evidence")
    assert trainings == []
    tables = Path(evaluated_inputs.tables_root)
    prompts = deltalake.DeltaTable(str(tables / "prompts")).to_pandas()
    lists = prompts[["user_id", "candidate_ids"]].explode("candidate_ids").rename(columns={"candidate_ids": "item_id"})
    evidence = deltalake.DeltaTable(str(tables / "candidate_evidence")).to_pandas()
    scores = lists.astype({"item_id": evidence.item_id.dtype}).merge(evidence, on=["user_id", "item_id"])
    holdout = deltalake.DeltaTable(str(tables / "holdout")).to_pandas()
    expected = metrics_table(scores.assign(score=scores.ev_sequence, method="sasrec"), holdout[holdout.split == "test"])
    expected = expected.set_index(expected.metric + expected.k.fillna(0).astype(int).astype(str))["value"].sort_index()
    assert len(scores) == 20 * 20 and scores.ev_sequence.nunique() > 20  # a model's scores, not the floor
    pd.testing.assert_series_equal(stored, expected, check_names=False, atol=1e-12)

    trained = sasrec_row("train")
    assert trainings == [1] and len(trained) == len(stored)


def test_lora_without_an_adapter_fails_before_reading_data(spark, tiny_cfg: Config) -> None:
    with pytest.raises(ConfigError, match=r"evaluate\.methods includes 'lora'.*--adapter"):
        run_stage(evaluate_job, spark, tiny_cfg)
    assert not (Path(tiny_cfg.tables_root) / "metrics").exists()


def test_blend_lists_cover_every_users_validation_item(spark, cfg: Config) -> None:
    """The blend learns from all users' validation lists (a sampled evaluation does not shrink them,
    and the fusion head's blend is the same); never from a test item."""
    load_synthetic(spark, cfg, n_users=12, n_items=60, per_user=8)
    holdout = spark.read.format("delta").load(f"{cfg.tables_root}/holdout")
    interactions = spark.read.format("delta").load(f"{cfg.tables_root}/interactions")
    items = spark.read.format("delta").load(f"{cfg.tables_root}/items")
    every = blend_lists(interactions, items, holdout, cfg.data).toPandas()
    held = holdout.toPandas()
    valid, test = held[held.split == "valid"], held[held.split == "test"]
    assert set(every.user_id) == set(valid.user_id) and len(valid) == 12
    pairs = every.set_index(["user_id", "item_id"]).index
    assert set(pairs[every.positive.to_numpy()]) == set(valid.set_index(["user_id", "item_id"]).index)
    assert every.groupby("user_id").size().eq(1 + cfg.data.negatives).all()
    assert not set(pairs) & set(test.set_index(["user_id", "item_id"]).index)


def test_random_baseline_is_independent_of_the_negative_sampling(spark, cfg: Config) -> None:
    """Targets must sit at a uniformly random rank (mean 10.5 of 20), not first (the sampling hash)."""
    load_synthetic(spark, cfg, n_users=300, n_items=120, per_user=6)
    tables = Path(cfg.tables_root)
    cands = spark.createDataFrame(deltalake.DeltaTable(str(tables / "candidates")).to_pandas()[["user_id", "item_id"]])
    holdout = deltalake.DeltaTable(str(tables / "holdout")).to_pandas()
    targets = holdout[holdout.split == "test"][["user_id", "item_id"]]
    scores = random_scores(cands, cfg.data.seed).toPandas()
    ranks = target_ranks(scores, targets)
    assert len(ranks) == 300 and 8.5 < ranks.mean() < 12.5
    assert 0.01 < (ranks == 1).mean() < 0.12


def test_evaluate_reuses_the_score_jobs_candidate_scores(spark, evaluated_inputs: Config) -> None:
    from instructrec_batch import executor_cache
    from instructrec_batch.scoring.model import prepare_model_scoring
    from instructrec_batch.scoring.udf import model_cache_key, resolve_dtype
    from instructrec_batch.stages.score import score_job

    cfg = evaluated_inputs.model_copy(
        update={
            "score": evaluated_inputs.score.model_copy(update={"write_scores": True}),
            "evaluate": evaluated_inputs.evaluate.model_copy(update={"tasks": ["pointwise"]}),
        }
    )
    run_stage(score_job, spark, cfg)
    stored = deltalake.DeltaTable(str(Path(cfg.tables_root) / "candidate_scores")).to_pandas()
    assert stored["user_id"].nunique() == 20 and set(stored["run_id"]) == {"eval-test"}

    def requests(adapter: str | None) -> int:
        source = ResolvedAdapter(adapter) if adapter else None
        base = resolve_base(cfg.model, cfg.cache_path)
        spec = prepare_model_scoring(spark, cfg.score, cfg.prompt, base, source, "pointwise-0").spec
        return executor_cache.request_count(model_cache_key(spec, "cpu", resolve_dtype("auto", "cpu")))

    lora_before, zero_before = requests(cfg.score.adapter), requests(None)
    result = run_stage(evaluate_job, spark, cfg)
    assert requests(cfg.score.adapter) == lora_before  # LoRA scores were read back, not recomputed
    assert requests(None) > zero_before  # the zero-shot model had none stored, so it scored

    holdout = deltalake.DeltaTable(str(Path(cfg.tables_root) / "holdout")).to_pandas()
    targets = holdout[holdout.split == "test"][["user_id", "item_id"]]
    evaluated = stored[stored.user_id.isin(_evaluated_users(spark, cfg))].assign(method="lora/pointwise")
    expected = metrics_table(evaluated, targets).set_index(["metric", "k"])["value"]
    plain = result.metrics[result.metrics.versus.isna()]
    got = plain[plain.method == "lora/pointwise"].set_index(["metric", "k"])["value"]
    assert len(got) == 6 and set(result.metrics["n_users"]) == {15}
    assert got.sort_index().to_numpy() == pytest.approx(expected.sort_index().to_numpy(), abs=1e-12)

    # Scores written under the adapter's registered version are the same adapter's: still read back.
    table = str(Path(cfg.tables_root) / "candidate_scores")
    registered = (
        spark.read.format("delta")
        .load(table)
        .withColumn("model_id", F.concat("model_id", F.lit(" (models:/instructrec_adapter/1)")))
    )
    registered.write.format("delta").mode("overwrite").save(f"{table}_registered")
    shutil.rmtree(table)
    shutil.copytree(f"{table}_registered", table)
    lora_before = requests(cfg.score.adapter)
    again = run_stage(evaluate_job, spark, cfg)
    assert requests(cfg.score.adapter) == lora_before
    assert again.metrics.sort_values(["method", "metric", "k"]).value.tolist() == pytest.approx(
        result.metrics.sort_values(["method", "metric", "k"]).value.tolist(), abs=1e-12
    )

    # A night whose fusion head ranked by evidence alone skipped the model: nothing to read back.
    unscored = (
        spark.read.format("delta")
        .load(table)
        .withColumn("ranked_by", F.lit("evidence"))
        .withColumn("lm_score", F.lit(None).cast("double"))
    )
    unscored.write.format("delta").mode("overwrite").save(f"{table}_unscored")
    shutil.rmtree(table)
    shutil.copytree(f"{table}_unscored", table)
    lora_before = requests(cfg.score.adapter)
    rescored = run_stage(evaluate_job, spark, cfg)
    assert requests(cfg.score.adapter) > lora_before  # the LoRA row was scored, not read from null scores
    assert rescored.metrics.sort_values(["method", "metric", "k"]).value.tolist() == pytest.approx(
        result.metrics.sort_values(["method", "metric", "k"]).value.tolist(), abs=1e-5
    )


def _evaluated_users(spark, cfg: Config) -> list[int]:
    from instructrec_batch.data.protocol import sample_users

    frame = spark.createDataFrame(deltalake.DeltaTable(str(Path(cfg.tables_root) / "prompts")).to_pandas()[["user_id"]])
    return [r.user_id for r in sample_users(frame, cfg.evaluate.max_users, cfg.evaluate.seed).collect()]
