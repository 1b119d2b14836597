"""MLflow tracking and model registry: training runs, registered adapters, evaluation figures.

`train` logs its parameters, loss history, manifest and adapter folder to an MLflow run and
registers the adapter as a model version with an alias; `score` and `evaluate` accept
`models:/<name>@<alias>`, `models:/<name>/<version>` or `runs:/<run_id>/<path>` wherever an adapter
folder is accepted: the reference is downloaded to a local folder and then verified (files,
sha256, base model) exactly like a folder. `evaluate` logs its metrics and report to the run that
trained the adapter. The store is a real MLflow store: by default a SQLite database and an
artifact folder under the workdir; on Databricks the workspace tracking server and the Unity
Catalog registry (mlflow.tracking_uri=databricks, mlflow.registry_uri=databricks-uc).
`mlflow.enabled=false` turns all of it off (a registry reference then fails with that fix).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from instructrec_batch.config import MlflowConfig, is_registry_ref
from instructrec_batch.errors import ArtifactError, ConfigError, EngineError

log = logging.getLogger(__name__)

ADAPTER_ARTIFACT = "adapter"
SHA_TAG = "instructrec.adapter_sha256"
RUN_TAG = "instructrec.run_id"
_MODEL_REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_RUN_REF = re.compile(r"^runs:/(?P<run_id>[0-9a-zA-Z_-]+)(?:/(?P<path>.+))?$")


def store_uri(m: MlflowConfig, workdir: str) -> str:
    """The tracking URI: configured, else a SQLite database in <workdir>/mlflow."""
    if m.tracking_uri:
        return m.tracking_uri
    return f"sqlite:///{(Path(workdir) / 'mlflow' / 'mlflow.db').resolve()}"


@contextmanager
def _mlflow(m: MlflowConfig, workdir: str) -> Iterator[Any]:
    """The mlflow module pointed at this config's tracking store and registry."""
    if not m.enabled:
        raise ConfigError("mlflow.enabled is false; set it to true to use MLflow runs and registered models")
    try:
        import mlflow
    except ImportError as exc:
        raise EngineError(
            "MLflow is not installed: pip install 'instructrec-batch[local]' (or mlflow-skinny with sqlalchemy "
            "and alembic), or set mlflow.enabled=false"
        ) from exc
    if m.tracking_uri is None:  # the local store
        (Path(workdir) / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(store_uri(m, workdir))
    mlflow.set_registry_uri(m.registry_uri or store_uri(m, workdir))
    yield mlflow


def _experiment_id(mlflow: Any, m: MlflowConfig, workdir: str) -> str:
    found = mlflow.get_experiment_by_name(m.experiment)
    if found is not None:
        return found.experiment_id
    local = m.tracking_uri is None
    location = (Path(workdir) / "mlflow" / "artifacts").resolve().as_uri() if local else None
    return mlflow.create_experiment(m.experiment, artifact_location=location)


@dataclass(frozen=True)
class TrainingRecord:
    """Where a trained adapter went in MLflow."""

    run_id: str
    model_uri: str  # models:/<name>/<version>
    alias_uri: str  # models:/<name>@<alias>


def _flat(prefix: str, values: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            out.update(_flat(name, value))
        else:
            out[name] = str(value)
    return out


def log_training(m: MlflowConfig, workdir: str, adapter_folder: Path, manifest: Mapping[str, Any]) -> TrainingRecord:
    """Log a finished training to MLflow and register its adapter; returns the run and model version."""
    with _mlflow(m, workdir) as mlflow:
        run_name = f"train {manifest.get('run_id')}"
        with mlflow.start_run(experiment_id=_experiment_id(mlflow, m, workdir), run_name=run_name) as run:
            params = _flat("train", manifest.get("hyperparameters", {}))
            params.update(_flat("evidence", manifest.get("evidence", {})))
            params.update(
                {
                    "base_model": str(manifest.get("base_model")),
                    "template_version": str(manifest.get("template_version")),
                    "prompt.item_attributes": ",".join(manifest.get("item_text", {}).get("item_attributes", [])),
                    "config_hash": str(manifest.get("config_hash")),
                }
            )
            mlflow.log_params(params)
            for point in manifest.get("loss_history", []):
                step = int(point["step"])
                mlflow.log_metrics({k: float(v) for k, v in point.items() if k != "step"}, step=step)
            # The history above is per step under val_loss / train_loss; the outcome gets names of its own.
            figures = {
                name: manifest[key]
                for name, key in (("final_val_loss", "val_loss"), ("zero_shot_val_loss", "zero_shot_val_loss"))
                if key in manifest
            }
            figures["steps"] = manifest.get("steps")
            fusion = {f"fusion.{k}": v for k, v in (manifest.get("fusion") or {}).items() if k != "head"}
            # Figures are metrics; the words among them (where the fusion lists came from, what was
            # shipped, the origins of the blend's windows as "kept,replayed,...") are tags.
            said = {
                k: v if isinstance(v, str) else ",".join(map(str, v))
                for k, v in fusion.items()
                if isinstance(v, (str, list))
            }
            numbers = {k: v for k, v in {**figures, **fusion}.items() if v is not None and k not in said}
            mlflow.log_metrics({k: float(v) for k, v in numbers.items()})
            mlflow.set_tags(
                {
                    SHA_TAG: str(manifest.get("adapter_sha256")),
                    RUN_TAG: str(manifest.get("run_id")),
                    "instructrec.stopped": str(manifest.get("stopped")),
                    **{f"instructrec.{k}": v for k, v in said.items()},
                }
            )
            mlflow.log_dict(dict(manifest), "manifest.json")
            mlflow.log_artifacts(str(adapter_folder), ADAPTER_ARTIFACT)
            version = _register(mlflow, m.model_name, run.info.run_id)
            mlflow.MlflowClient().set_registered_model_alias(m.model_name, m.alias, version.version)
    record = TrainingRecord(
        run.info.run_id, f"models:/{m.model_name}/{version.version}", f"models:/{m.model_name}@{m.alias}"
    )
    log.info("mlflow: run %s, registered %s (alias %s)", record.run_id, record.model_uri, m.alias)
    return record


def _register(mlflow: Any, name: str, run_id: str) -> Any:
    """A new version of `name` (created on first use) whose source is the run's adapter folder."""
    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="LoRA adapters of instructrec_batch (+ fusion head)")
    return client.create_model_version(name, f"runs:/{run_id}/{ADAPTER_ARTIFACT}", run_id=run_id)


def alias_version(m: MlflowConfig, workdir: str, alias: str) -> str | None:
    """The version of m.model_name that `alias` points at; None when the model or the alias does not exist yet."""
    with _mlflow(m, workdir) as mlflow:
        try:
            return str(mlflow.MlflowClient().get_model_version_by_alias(m.model_name, alias).version)
        except mlflow.exceptions.MlflowException:
            return None


def move_alias(m: MlflowConfig, workdir: str, alias: str, version: str) -> None:
    """Point `alias` of m.model_name at `version` (the nightly's models:/<name>@<alias> then resolves to it)."""
    with _mlflow(m, workdir) as mlflow:
        mlflow.MlflowClient().set_registered_model_alias(m.model_name, alias, version)
    log.info("mlflow: alias %s of %s now points at version %s", alias, m.model_name, version)


def tag_version(m: MlflowConfig, workdir: str, version: str, tags: Mapping[str, str]) -> None:
    """Set `tags` on `version` of m.model_name (what a promotion decided about it, and why)."""
    with _mlflow(m, workdir) as mlflow:
        client = mlflow.MlflowClient()
        for key, value in tags.items():
            client.set_model_version_tag(m.model_name, version, key, value)


@dataclass(frozen=True)
class ResolvedAdapter:
    """An adapter reference as a local folder, with the registry lineage it came from."""

    folder: str
    registered: str | None = None  # models:/<name>/<version> of a registry reference
    run_id: str | None = None  # the MLflow run that logged it


def resolve_adapter(m: MlflowConfig, workdir: str, ref: str) -> ResolvedAdapter:
    """A folder stays a folder; a models:/ or runs:/ URI is downloaded to <workdir>/mlflow/downloads.

    The download is verified by the caller like any folder: a tampered artifact fails its sha256.
    """
    if not is_registry_ref(ref):
        return ResolvedAdapter(ref)
    with _mlflow(m, workdir) as mlflow:
        client = mlflow.MlflowClient()
        model, run = _MODEL_REF.match(ref), _RUN_REF.match(ref)
        try:
            if model:
                name = model["name"]
                version = (
                    client.get_model_version_by_alias(name, model["alias"])
                    if model["alias"]
                    else client.get_model_version(name, model["version"])
                )
                registered, run_id = f"models:/{name}/{version.version}", version.run_id
                uri, slot = registered, f"{name}-v{version.version}"
            elif run:
                registered, run_id = None, run["run_id"]
                uri = f"runs:/{run_id}/{run['path'] or ADAPTER_ARTIFACT}"
                slot = f"run-{run_id}-{(run['path'] or ADAPTER_ARTIFACT).replace('/', '_')}"
            else:
                raise ConfigError(
                    f"adapter reference {ref!r} is not models:/<name>@<alias>, models:/<name>/<version> or "
                    "runs:/<run_id>/<path>"
                )
            folder = Path(workdir) / "mlflow" / "downloads" / slot
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder))
        except mlflow.exceptions.MlflowException as exc:
            raise ArtifactError(
                f"adapter {ref} could not be resolved in the MLflow store {store_uri(m, workdir)}: {exc.message}; "
                "check the model name, alias or version (`instructrec-batch train` registers one)"
            ) from None
    log.info("adapter %s resolved to %s (%s)", ref, local, registered or run_id)
    return ResolvedAdapter(str(local), registered, run_id)


def log_evaluation(
    m: MlflowConfig,
    workdir: str,
    adapter: ResolvedAdapter | None,
    sha256: str | None,
    metrics: pd.DataFrame,
    report_dir: Path,
) -> str:
    """Log evaluation figures and the report to the run that trained the adapter; returns that run id.

    The training run is the one a registry reference came from, else the run tagged with the
    adapter's sha256; without either (base model only, or an adapter trained with MLflow off) a run of
    its own is started.
    """
    with _mlflow(m, workdir) as mlflow:
        experiment = _experiment_id(mlflow, m, workdir)
        run_id = adapter.run_id if adapter else None
        if run_id is None and sha256:
            found = mlflow.search_runs(
                [experiment], filter_string=f"tags.`{SHA_TAG}` = '{sha256}'", max_results=1, output_format="list"
            )
            run_id = found[0].info.run_id if found else None
        started = (
            mlflow.start_run(run_id=run_id)
            if run_id
            else mlflow.start_run(experiment_id=experiment, run_name="evaluate")
        )
        with started as run:
            mlflow.log_metrics(_metric_values(metrics))
            mlflow.log_artifacts(str(report_dir), "report")
    return run.info.run_id


def _metric_values(metrics: pd.DataFrame) -> dict[str, float]:
    """eval/<method>/<metric>[_<k>] with _ci_low / _ci_high; paired differences as eval/diff/<model>-<baseline>/..."""
    out: dict[str, float] = {}
    for row in metrics.itertuples(index=False):
        versus = row.versus if isinstance(row.versus, str) and row.versus else None
        prefix = f"eval/diff/{row.method}-{versus}" if versus else f"eval/{row.method}"
        key = f"{prefix}/{row.metric.lower()}" + ("" if pd.isna(row.k) else f"_{int(row.k)}")
        for suffix, value in (("", row.value), ("_ci_low", row.ci_low), ("_ci_high", row.ci_high)):
            if not pd.isna(value):
                out[key + suffix] = float(value)
    return out
