"""MLflow on a real local store: training runs, registered adapters scored by alias, evaluation figures."""

from pathlib import Path

import deltalake
import mlflow
import pytest
from mlflow import MlflowClient

from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.errors import ArtifactError, ConfigError
from instructrec_batch.stages.evaluate import evaluate_job
from instructrec_batch.stages.evidence import evidence_job
from instructrec_batch.stages.prompts import prompts_job
from instructrec_batch.stages.score import score_job
from instructrec_batch.stages.train import train_job
from instructrec_batch.tracking import store_uri
from tests.helpers import load_synthetic


def _with(cfg: Config, **sections: dict) -> Config:
    return cfg.model_copy(update={k: getattr(cfg, k).model_copy(update=v) for k, v in sections.items()})


@pytest.fixture
def tracked(spark, tiny_cfg: Config) -> Config:
    load_synthetic(spark, tiny_cfg, n_users=20, n_items=60, per_user=12)
    cfg = _with(
        tiny_cfg,
        mlflow={"enabled": True},
        train={"max_steps": 4, "eval_every": 2, "val_users": 10, "fusion_users": 10, "batch_size": 4},
        prompt={"max_history": 8, "max_tokens": 1024},
        run={"run_id": "mlflow-test", "run_date": "2026-01-01"},
        evaluate={"methods": ["popularity", "lora", "hybrid"], "bootstrap": 50},
    )
    run_stage(evidence_job, spark, cfg)
    run_stage(prompts_job, spark, cfg)
    return cfg


def _read(cfg: Config, table: str):
    return deltalake.DeltaTable(str(Path(cfg.tables_root) / table)).to_pandas()


def test_training_is_logged_registered_and_scored_by_alias(spark, tracked: Config) -> None:
    trained = run_stage(train_job, spark, tracked)
    record = trained.mlflow
    assert record is not None and record.model_uri == "models:/instructrec_adapter/1"
    assert (
        store_uri(tracked.mlflow, tracked.workdir).startswith("sqlite:///")
        and (Path(tracked.workdir) / "mlflow" / "mlflow.db").is_file()
    )
    client = MlflowClient(store_uri(tracked.mlflow, tracked.workdir), store_uri(tracked.mlflow, tracked.workdir))
    run = client.get_run(record.run_id)
    assert run.data.params["train.max_steps"] == "4" and run.data.params["base_model"]
    assert run.data.tags["instructrec.adapter_sha256"] == trained.adapter_sha256
    history = client.get_metric_history(record.run_id, "val_loss")
    assert [m.step for m in history] == [2, 4] and run.data.metrics["steps"] == 4
    artifacts = {a.path for a in client.list_artifacts(record.run_id, "adapter")}
    assert {"adapter/adapter_model.safetensors", "adapter/manifest.json", "adapter/fusion_head.json"} <= artifacts
    assert "manifest.json" in {a.path for a in client.list_artifacts(record.run_id)}
    version = client.get_model_version_by_alias("instructrec_adapter", "challenger")
    assert str(version.version) == "1" and version.run_id == record.run_id

    scored = _with(tracked, score={"adapter": "models:/instructrec_adapter@challenger"})
    counts = run_stage(score_job, spark, scored)
    assert counts.model_id.endswith("+fusion (models:/instructrec_adapter/1)")
    assert f"+lora@{trained.adapter_sha256[:12]}" in counts.model_id
    recs = _read(scored, "recommendations")
    assert set(recs.model_id) == {counts.model_id} and recs.user_id.nunique() == 20

    result = run_stage(evaluate_job, spark, scored)
    assert result.mlflow_run_id == record.run_id  # figures go to the run that trained the adapter
    run = client.get_run(record.run_id)
    assert run.data.metrics["eval/hybrid/pointwise/ndcg_10"] == pytest.approx(
        result.metrics.query("method == 'hybrid/pointwise' and metric == 'NDCG' and k == 10 and versus.isna()")[
            "value"
        ].item()
    )
    assert "eval/popularity/mrr_ci_low" in run.data.metrics
    assert "report/report.md" in {a.path for a in client.list_artifacts(record.run_id, "report")}
    # Evaluated from the adapter folder instead, the figures still find the run through its sha256 tag.
    assert (
        run_stage(evaluate_job, spark, _with(tracked, score={"adapter": trained.adapter})).mlflow_run_id
        == record.run_id
    )


def test_a_tampered_registered_artifact_is_refused_before_writing(spark, tracked: Config) -> None:
    record = run_stage(train_job, spark, tracked).mlflow
    assert record is not None
    stored = mlflow.MlflowClient(store_uri(tracked.mlflow, tracked.workdir)).get_run(record.run_id).info.artifact_uri
    weights = Path(stored.removeprefix("file://")) / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    with pytest.raises(ArtifactError, match="sha256"):
        run_stage(score_job, spark, _with(tracked, score={"adapter": record.alias_uri}))
    assert not (Path(tracked.tables_root) / "recommendations").exists()
    with pytest.raises(ArtifactError, match=r"could not be resolved.*no_such_model"):
        run_stage(score_job, spark, _with(tracked, score={"adapter": "models:/no_such_model@champion"}))


def test_switched_off_nothing_is_logged_and_references_say_so(spark, tracked: Config) -> None:
    off = _with(tracked, mlflow={"enabled": False})
    assert run_stage(train_job, spark, off).mlflow is None
    assert not (Path(off.workdir) / "mlflow").exists()
    with pytest.raises(ConfigError, match=r"mlflow\.enabled is false"):
        run_stage(score_job, spark, _with(off, score={"adapter": "models:/instructrec_adapter@challenger"}))
