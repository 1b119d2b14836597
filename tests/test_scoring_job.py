"""The score job: top-k, idempotent reruns, one model load per process, adapter checks, engine parity."""

import re
import shutil
from pathlib import Path

import deltalake
import pandas as pd
import pyarrow.parquet as pq
import pytest

from instructrec_batch import executor_cache
from instructrec_batch.config import DEFAULT_TEMPLATE_VERSION as DEFAULT_VERSION
from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.errors import ArtifactError, ConfigError, ContractError
from instructrec_batch.scoring.udf import ScoringSpec, model_cache_key, resolve_dtype
from instructrec_batch.spark import faults
from instructrec_batch.stages.evidence import evidence_job
from instructrec_batch.stages.prompts import prompts_job
from instructrec_batch.stages.score import score_job
from tests.helpers import ITEMS_SCHEMA, REPO, load_synthetic, run_cli, write_input


def _with(cfg: Config, **score: object) -> Config:
    return cfg.model_copy(
        update={
            "score": cfg.score.model_copy(update=score),
            "run": cfg.run.model_copy(update={"run_id": "score-test", "run_date": "2026-01-02"}),
        }
    )


@pytest.fixture
def prompted(spark, tiny_cfg: Config, adapter_dir: Path) -> Config:
    load_synthetic(spark, tiny_cfg, n_users=24, n_items=80, per_user=12)
    cfg = _with(tiny_cfg, adapter=str(adapter_dir), k=5, batch_size=7, partitions=6)
    run_stage(evidence_job, spark, cfg)
    run_stage(prompts_job, spark, cfg)
    return cfg


def _recs(cfg: Config) -> pd.DataFrame:
    return deltalake.DeltaTable(str(Path(cfg.tables_root) / "recommendations")).to_pandas()


def test_top_k_per_user_and_rerun_replaces_in_one_commit(spark, prompted: Config) -> None:
    counts = run_stage(score_job, spark, prompted)
    recs = _recs(prompted)
    assert (counts.users, counts.rows) == (24, 24 * 5) and len(recs) == 120
    for _, group in recs.groupby("user_id"):
        assert sorted(group["rank"]) == [1, 2, 3, 4, 5]
        assert group["item_id"].is_unique
        ordered = group.sort_values("rank")
        assert ordered["score"].is_monotonic_decreasing
    assert recs["model_id"].str.contains(r"\+lora@").all() and set(recs["ranked_by"]) == {"model"}
    assert str(recs["run_date"].iloc[0]) == "2026-01-02"

    table = deltalake.DeltaTable(str(Path(prompted.tables_root) / "recommendations"))
    version = table.version()
    run_stage(score_job, spark, prompted)
    table = deltalake.DeltaTable(str(Path(prompted.tables_root) / "recommendations"))
    assert table.version() == version + 1
    again = table.to_pandas()
    assert len(again) == 120 and again["run_id"].eq("score-test").all()
    pd.testing.assert_frame_equal(
        recs.drop(columns="scored_at").sort_values(["user_id", "rank"]).reset_index(drop=True),
        again.drop(columns="scored_at").sort_values(["user_id", "rank"]).reset_index(drop=True),
    )


def test_model_loaded_once_per_process_across_partitions(spark, prompted: Config, tiny_model_dir) -> None:
    executor_cache.clear()
    run_stage(score_job, spark, prompted)
    from instructrec_batch.models.adapter import verify_adapter

    sha = verify_adapter(prompted.score.adapter).sha256
    spec = ScoringSpec(
        model_path=str(tiny_model_dir),
        dtype="auto",
        device="auto",
        method="shared_prefix",
        batch_size=7,
        template_version=DEFAULT_VERSION,
        merge_adapter=True,
        adapter_sha256=sha,
    )
    key = model_cache_key(spec, "cpu", resolve_dtype("auto", "cpu"))
    assert executor_cache.request_count(key) >= 4  # many partitions/batches asked for the model...
    assert executor_cache.load_count(key) == 1  # ...and it was loaded once in this process


def test_tampered_adapter_fails_on_the_driver_before_any_task(spark, prompted: Config, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(prompted.score.adapter, tampered)
    weights = tampered / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    executor_cache.clear()
    with pytest.raises(ArtifactError, match="changed or corrupted"):
        run_stage(score_job, spark, _with(prompted, adapter=str(tampered)))
    assert not (Path(prompted.tables_root) / "recommendations").exists()
    assert executor_cache.request_count(("anything",)) == 0
    runs_path = Path(prompted.tables_root) / "runs"
    runs = deltalake.DeltaTable(str(runs_path)).to_pandas()
    assert "score" not in set(runs["job"])  # refused before the run even started


def test_cold_start_users_keep_retrieval_order(spark, prompted: Config, tmp_path: Path) -> None:
    path = str(Path(prompted.tables_root) / "prompts")
    frame = spark.read.format("delta").load(path)
    from pyspark.sql import functions as F

    frame.withColumn("cold_start", F.col("user_id") == 1).write.format("delta").mode("overwrite").save(path + "_c")
    shutil.rmtree(path)
    Path(path + "_c").rename(path)
    run_stage(score_job, spark, prompted)
    recs = _recs(prompted)
    prompts = deltalake.DeltaTable(path).to_pandas().set_index("user_id")
    cold = recs[recs.user_id == 1].sort_values("rank")
    assert set(cold["ranked_by"]) == {"retrieval_order"}
    assert list(cold["item_id"]) == list(prompts.loc[1, "candidate_ids"])[:5]
    assert set(recs[recs.user_id != 1]["ranked_by"]) == {"model"}

    # Without a model pass (a fusion head that gives the model no weight) they keep it too.
    evidence_only = _with_head(Path(prompted.score.adapter), tmp_path / "evidence-only", weights=(0.0, 1.0))
    run_stage(score_job, spark, _with(prompted, adapter=str(evidence_only)))
    recs = _recs(prompted)
    cold = recs[recs.user_id == 1].sort_values("rank")
    assert set(cold["ranked_by"]) == {"retrieval_order"}
    assert list(cold["item_id"]) == list(prompts.loc[1, "candidate_ids"])[:5]
    assert set(recs[recs.user_id != 1]["ranked_by"]) == {"evidence"}


@pytest.mark.classic
def test_same_top_k_on_local_delta_and_classic_parquet(spark, prompted: Config, tmp_path: Path, tiny_model_dir) -> None:
    run_stage(score_job, spark, prompted)
    local = _recs(prompted)
    classic_tables = tmp_path / "classic" / "tables"
    prompts = deltalake.DeltaTable(str(Path(prompted.tables_root) / "prompts")).to_pyarrow_table()
    (classic_tables / "prompts").mkdir(parents=True)
    pq.write_table(prompts, classic_tables / "prompts" / "part-0.parquet", coerce_timestamps="us")
    proc = run_cli(
        [
            "score",
            "--config",
            str(REPO / "conf" / "local-classic.yaml"),
            "--workdir",
            str(tmp_path / "classic"),
            "--set",
            "engine.master=local[2]",
            "--set",
            f"model.base={tiny_model_dir}",
            "--adapter",
            prompted.score.adapter,
            "--k",
            "5",
            "--run-id",
            "score-test",
            "--run-date",
            "2026-01-02",
            "--set",
            "score.batch_size=7",
        ],
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    classic = pq.read_table(classic_tables / "recommendations").to_pandas()
    keys = ["user_id", "rank"]
    local = local.sort_values(keys).reset_index(drop=True)
    classic = classic.sort_values(keys).reset_index(drop=True)
    assert len(local) == len(classic) == 120
    assert local["item_id"].tolist() == classic["item_id"].tolist()
    pd.testing.assert_series_equal(local["score"], classic["score"], atol=1e-5, check_names=False)
    assert (local["model_id"] == classic["model_id"]).all()


def test_a_run_killed_mid_scoring_leaves_the_table_and_a_rerun_lands_once(
    spark, prompted: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_stage(score_job, spark, prompted)
    table = deltalake.DeltaTable(str(Path(prompted.tables_root) / "recommendations"))
    version, before = table.version(), _recs(prompted)

    faulty = _with(prompted, users_per_slice=8)
    with monkeypatch.context() as armed:
        armed.setenv(faults.AFTER_BATCHES_ENV, str(faults.batches_scored() + 3))
        with pytest.raises(Exception, match="injected fault"):
            run_stage(score_job, spark, faulty)
    table = deltalake.DeltaTable(str(Path(prompted.tables_root) / "recommendations"))
    assert table.version() == version  # nothing published: slices only ever reached staging
    pd.testing.assert_frame_equal(_recs(prompted), before)
    runs = deltalake.DeltaTable(str(Path(prompted.tables_root) / "runs")).to_pandas()
    assert runs.query("job == 'score'").status.tolist().count("failed") == 1

    run_stage(score_job, spark, _with(prompted, users_per_slice=8))
    after = _recs(prompted)
    assert len(after) == 24 * 5 and not after.duplicated(["run_id", "user_id", "rank"]).any()
    assert deltalake.DeltaTable(str(Path(prompted.tables_root) / "recommendations")).version() == version + 1


def test_a_failure_inside_the_write_leaves_the_table_and_a_rerun_lands_once(
    spark, prompted: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The armed write fault raises in the tasks producing the recommendations files: no commit."""
    run_stage(score_job, spark, prompted)
    path = Path(prompted.tables_root) / "recommendations"
    version, before = deltalake.DeltaTable(str(path)).version(), _recs(prompted)
    files_before = deltalake.DeltaTable(str(path)).file_uris()

    with monkeypatch.context() as armed:
        armed.setenv(faults.DURING_WRITE_ENV, "1")
        with pytest.raises(Exception, match="injected fault during the write"):
            run_stage(score_job, spark, _with(prompted, k=3))
    table = deltalake.DeltaTable(str(path))
    assert table.version() == version and table.file_uris() == files_before
    pd.testing.assert_frame_equal(_recs(prompted), before)  # still k=5, the failed k=3 run is invisible

    run_stage(score_job, spark, _with(prompted, k=3))
    after = _recs(prompted)
    assert len(after) == 24 * 3 and not after.duplicated(["run_id", "user_id", "rank"]).any()
    assert deltalake.DeltaTable(str(path)).version() == version + 1


def test_template_version_mismatches_are_refused_before_scoring(spark, prompted: Config) -> None:
    """Prompts built with v2 are not re-rendered with v1, and a v2 adapter is not used on v1 prompts."""
    assert prompted.prompt.template_version == "v2"
    v1 = prompted.model_copy(update={"prompt": prompted.prompt.model_copy(update={"template_version": "v1"})})
    with pytest.raises(ConfigError, match=r"trained on template version v2 but prompt.template_version=v1"):
        run_stage(score_job, spark, v1)
    base_only = _with(v1, adapter=None)
    with pytest.raises(ContractError, match=r"built with template version v2 but prompt.template_version=v1"):
        run_stage(score_job, spark, base_only)
    assert not (Path(prompted.tables_root) / "recommendations").exists()


def test_an_adapter_is_refused_on_item_text_it_was_not_trained_on(spark, prompted: Config) -> None:
    """Ratings in history lines, other item attributes or a taste line change what the model reads: an
    adapter tuned without them is refused before any task runs, naming the settings to restore."""
    p = prompted.prompt
    for change in ({"show_ratings": not p.show_ratings}, {"item_attributes": ["brand"]}, {"taste_categories": 3}):
        other = prompted.model_copy(update={"prompt": p.model_copy(update=change)})
        with pytest.raises(
            ConfigError,
            match=r"trained on item text .* set prompt.item_attributes, prompt.show_ratings and prompt.taste",
        ):
            run_stage(score_job, spark, other)
    assert not (Path(prompted.tables_root) / "recommendations").exists()


def test_prompts_and_scoring_must_agree_on_the_taste_line(spark, prompted: Config) -> None:
    """Scoring re-renders instructions from the prompts table: taste lines the configuration does not
    ask for, or none where it does, are refused before any task runs."""
    base_only = _with(prompted, adapter=None)
    tasted = base_only.model_copy(update={"prompt": base_only.prompt.model_copy(update={"taste_categories": 3})})
    with pytest.raises(ContractError, match=r"built without a taste_text column but prompt.taste_categories=3"):
        run_stage(score_job, spark, tasted)
    ids = range(1, 81)
    items = pd.DataFrame({"item_id": ids, "title": [f"Item {i}" for i in ids], "category": [f"G{i % 3}" for i in ids]})
    write_input(spark, prompted, "items", items, ITEMS_SCHEMA + ", category STRING")
    tasted = tasted.model_copy(update={"tables": tasted.tables.model_copy(update={"prompts": "prompts_taste"})})
    run_stage(prompts_job, spark, tasted)
    untasted = tasted.model_copy(update={"prompt": tasted.prompt.model_copy(update={"taste_categories": 0})})
    with pytest.raises(ContractError, match=r"built with taste lines but prompt.taste_categories=0"):
        run_stage(score_job, spark, untasted)
    assert not (Path(prompted.tables_root) / "recommendations").exists()
    assert run_stage(score_job, spark, tasted).users == 24


def test_scoring_reports_progress_with_an_eta(spark, prompted: Config, caplog: pytest.LogCaptureFixture) -> None:
    """On the local engine the UDFs run in the driver's process: it logs users done, rate and ETA."""
    import logging

    from instructrec_batch.scoring.progress import progress_line

    assert progress_line("score", 30, 120, 600, 60.0) == "score: 30/120 users (25%), 10.0 candidates/s, ETA 3m 00s"
    with caplog.at_level(logging.INFO, logger="instructrec_batch.scoring.progress"):
        run_stage(score_job, spark, _with(prompted, progress_secs=0.2, partitions=24))
    lines = [r.getMessage() for r in caplog.records if r.name == "instructrec_batch.scoring.progress"]
    assert any(re.match(r"score: \d+/24 users \(\d+%\), [\d.]+ candidates/s, ETA \d+m \d\ds", line) for line in lines)
    # The last line, logged when the pass completes, however short it was.
    assert re.fullmatch(r"score: 24/24 users \(100%\), [\d.]+ candidates/s, ETA 0m 00s", lines[-1])


def _with_head(adapter: Path, folder: Path, weights: tuple[float, float], evidence: str = "ev_popularity") -> Path:
    """A copy of `adapter` with a fusion head over (lm_score, `evidence`) of these weights, its
    manifest's sha256 updated so the copy passes the adapter checks."""
    import json

    from instructrec_batch import contracts as C
    from instructrec_batch.models.adapter import FUSION_HEAD, MANIFEST, adapter_sha256
    from instructrec_batch.ranking.ranker import LinearRanker

    shutil.copytree(adapter, folder)
    head = LinearRanker((C.LM_SCORE, evidence), (0.0, 0.0), (1.0, 1.0), weights)
    (folder / FUSION_HEAD).write_text(json.dumps(head.to_dict()))
    manifest = json.loads((folder / MANIFEST).read_text()) | {"adapter_sha256": adapter_sha256(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_a_fusion_head_without_evidence_is_refused_before_scoring(spark, prompted: Config, tmp_path: Path) -> None:
    """An adapter whose fusion head ranks needs the run's candidate_evidence: checked before any task."""
    fused = _with_head(Path(prompted.score.adapter), tmp_path / "fused", weights=(1.0, 0.5))
    other = _with(prompted, adapter=str(fused))
    other = other.model_copy(update={"run": other.run.model_copy(update={"run_id": "no-evidence"})})
    run_stage(prompts_job, spark, other)  # a v2 template: prompts need no evidence, the fusion head does
    with pytest.raises(ContractError, match=r"candidate_evidence.*'no-evidence'.*fusion head"):
        run_stage(score_job, spark, other)
    runs = deltalake.DeltaTable(str(Path(prompted.tables_root) / "runs")).to_pandas()
    assert not ((runs.run_id == "no-evidence") & (runs.job == "score")).any()  # nothing written, not even 'running'


def _model_pass(cfg: Config) -> int:
    """The `model_pass` count of the run's score row in `runs` (1 when the model scored)."""
    import json

    runs = deltalake.DeltaTable(str(Path(cfg.tables_root) / "runs")).to_pandas()
    (counts,) = runs[(runs.job == "score") & (runs.run_id == cfg.run.run_id)].counts
    return json.loads(counts)["model_pass"]


def test_a_fusion_head_without_model_weight_ranks_by_the_evidence_without_the_model_and_says_so(
    spark, prompted: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training drops the model's score from the head when it adds nothing: the job then ranks by the
    head's evidence alone, logs why, and (score.skip_unused_model, the default) runs no model pass,
    with exactly the lists a model pass would have given."""
    import logging

    from instructrec_batch import contracts as C

    fused = _with_head(Path(prompted.score.adapter), tmp_path / "evidence-only", weights=(0.0, 1.0))
    run_stage(score_job, spark, _with(prompted, adapter=str(fused), k=20, skip_unused_model=False))
    with_model = _recs(prompted)
    assert set(with_model.ranked_by) == {"hybrid"} and _model_pass(prompted) == 1
    # Any scored batch would raise: the model pass must not run at all.
    skipping = _with(prompted, adapter=str(fused), k=20, write_scores=True)
    with monkeypatch.context() as armed, caplog.at_level(logging.INFO, logger="instructrec_batch.stages.score"):
        armed.setenv(faults.AFTER_BATCHES_ENV, str(faults.batches_scored()))
        run_stage(score_job, spark, skipping)
    assert "gives the model's score no weight" in caplog.text and "model pass is skipped" in caplog.text
    recs = _recs(prompted)
    assert set(recs.ranked_by) == {"evidence"}
    keys = ["user_id", "rank", "item_id", "score", "model_id"]
    pd.testing.assert_frame_equal(
        recs.sort_values(keys)[keys].reset_index(drop=True), with_model.sort_values(keys)[keys].reset_index(drop=True)
    )
    evidence = deltalake.DeltaTable(str(Path(prompted.tables_root) / "candidate_evidence")).to_pandas()
    for _, user in recs.merge(evidence, on=["user_id", "item_id"]).groupby("user_id"):
        ordered = user.sort_values("rank")[C.EV_POPULARITY].to_numpy()
        assert (ordered[:-1] >= ordered[1:]).all()  # ranked by popularity alone, the model's score ignored
    scores = deltalake.DeltaTable(str(Path(prompted.tables_root) / "candidate_scores")).to_pandas()
    assert scores[C.LM_SCORE].isna().all() and scores["score"].notna().all()
    assert _model_pass(prompted) == 0


def test_the_plan_says_whether_tonight_needs_the_model_and_sets_the_databricks_task_value(
    spark, tiny_cfg: Config, adapter_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan_job decides from the adapter's head alone what the score job will do. The Databricks task value
    is checked through a stand-in for `pyspark.dbutils` (a mock: that module exists only on Databricks
    runtimes); without it nothing is set."""
    import sys
    import types

    from instructrec_batch.stages.score import plan_job

    calls: list[dict] = []

    class FakeDBUtils:  # pyspark.dbutils.DBUtils(spark).jobs.taskValues.set(key=..., value=...)
        def __init__(self, session) -> None:
            self.jobs = types.SimpleNamespace(taskValues=types.SimpleNamespace(set=lambda **kw: calls.append(kw)))

    def plan(adapter: Path, **score):
        cfg = tiny_cfg.model_copy(
            update={"score": tiny_cfg.score.model_copy(update={"adapter": str(adapter), **score})}
        )
        return run_stage(plan_job, spark, cfg)

    dropped = _with_head(adapter_dir, tmp_path / "dropped", weights=(0.0, 1.0))
    kept = _with_head(adapter_dir, tmp_path / "kept", weights=(0.7, 1.0))
    assert plan(dropped).model_pass is False and not calls  # off Databricks: no task value
    monkeypatch.setitem(sys.modules, "pyspark.dbutils", types.SimpleNamespace(DBUtils=FakeDBUtils))
    assert str(plan(dropped)).startswith("model_pass=false")
    assert plan(kept).model_pass is True
    assert plan(adapter_dir).model_pass is True  # no head: the model's score is the ranking
    assert plan(dropped, skip_unused_model=False).model_pass is True
    assert plan(dropped, fusion=False).model_pass is True
    floor = _with_head(adapter_dir, tmp_path / "floor", weights=(0.0, 1.0), evidence="ev_retrieval")
    planned = plan(floor)  # the head training ships when it cannot beat the retriever's order
    assert planned.model_pass is False and "ships the retriever's order (the floor" in planned.reason
    assert calls == [{"key": "model_pass", "value": v} for v in (False, True, True, True, True, False)]
