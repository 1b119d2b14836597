"""The Databricks Asset Bundle: paths resolved as the Databricks CLI resolves them, resources valid for
Databricks' own typed definitions, targets as a platform team expects, and every task's parameters parse."""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from instructrec_batch.cli import build_parser
from instructrec_batch.config import load_config
from tests.helpers import REPO

BUNDLE = REPO / "conf" / "databricks"


def _files() -> list[tuple[Path, dict]]:
    """Every file the bundle's `include` patterns name, with its path: the CLI resolves a relative path
    against the directory of the file that defines it, not the bundle root."""
    root = yaml.safe_load((BUNDLE / "databricks.yml").read_text())
    return [
        (path, yaml.safe_load(path.read_text())) for pattern in root["include"] for path in sorted(BUNDLE.glob(pattern))
    ]


def _jobs() -> dict:
    return {name: job for _, doc in _files() for name, job in doc["resources"].get("jobs", {}).items()}


def _tasks(only: str | None = None) -> list[tuple[Path, dict]]:
    """(defining file, task) of every job task (of job `only`, when given) that runs an entry point
    (condition tasks run none)."""
    return [
        (path, task)
        for path, doc in _files()
        for name, job in doc["resources"].get("jobs", {}).items()
        for task in job["tasks"]
        if "spark_python_task" in task and only in (None, name)
    ]


def test_paths_resolve_against_the_file_that_defines_them() -> None:
    """Each task's entry point exists where the CLI looks for it (relative to its resources/ file), lies
    in a synced folder, and its wheel is the one the bundle's artifact builds."""
    root = yaml.safe_load((BUNDLE / "databricks.yml").read_text())
    synced = [(BUNDLE / p).resolve() for p in root["sync"]["paths"]]
    assert all(folder.is_dir() for folder in synced) and REPO / "jobs" in synced
    artifact = root["artifacts"]["wheel"]
    project = (BUNDLE / artifact["path"]).resolve()
    assert project == REPO and (project / "pyproject.toml").is_file() and "--wheel-dir dist" in artifact["build"]
    tasks = _tasks()
    assert tasks
    for path, task in tasks:
        script = (path.parent / task["spark_python_task"]["python_file"]).resolve()
        assert script.is_file() and script.parent == REPO / "jobs", f"{path.name}: {task['task_key']} -> {script}"
        assert any(script.is_relative_to(folder) for folder in synced)
        wheels = [library["whl"] for library in task["libraries"]]
        assert wheels and all((path.parent / w).parent.resolve() == project / "dist" for w in wheels), wheels


def test_job_and_volume_resources_are_valid_for_databricks_own_definitions() -> None:
    """databricks-bundles' typed resources refuse an unknown field or a wrong type: each job and volume
    loads (a misspelt key is refused, as shown)."""
    from databricks.bundles.jobs import Job
    from databricks.bundles.volumes import Volume

    jobs = _jobs()
    volumes = {name: v for _, doc in _files() for name, v in doc["resources"].get("volumes", {}).items()}
    for job in jobs.values():
        Job.from_dict(job)
    for volume in volumes.values():
        Volume.from_dict(volume)
    misspelt = {**jobs["nightly"], "tasks": [{**jobs["nightly"]["tasks"][0], "max_retry": 2}]}
    with pytest.raises(ValueError, match="max_retry"):
        Job.from_dict(misspelt)


def test_targets_dev_is_paused_prod_runs_as_a_service_principal_with_retries_and_alerts() -> None:
    root = yaml.safe_load((BUNDLE / "databricks.yml").read_text())
    dev, prod = root["targets"]["dev"], root["targets"]["prod"]
    assert dev["mode"] == "development" and dev["presets"]["trigger_pause_status"] == "PAUSED"
    assert prod["mode"] == "production" and prod["workspace"]["root_path"].startswith("/Workspace/")
    assert prod["run_as"] == {"service_principal_name": "${var.service_principal}"}
    assert {p["level"] for p in prod["permissions"]} >= {"CAN_MANAGE", "CAN_VIEW"}
    jobs = _jobs()
    assert set(jobs) == {"nightly", "training"}
    for job in jobs.values():
        assert job["schedule"]["quartz_cron_expression"] and job["email_notifications"]["on_failure"]
        assert job["tags"] and job["timeout_seconds"] > 0 and job["max_concurrent_runs"] == 1
        runs = [t for t in job["tasks"] if "spark_python_task" in t]
        assert all(t["max_retries"] >= 1 and t["timeout_seconds"] > 0 for t in runs)
    job = jobs["nightly"]
    # The volumes the tasks write to are declared by the bundle, in the configured catalog and schema.
    volumes = {v["name"] for _, doc in _files() for v in doc["resources"].get("volumes", {}).values()}
    settings = job["tasks"][0]["spark_python_task"]["parameters"]
    used = {m.group(1) for a in settings for m in re.finditer(r"/Volumes/\$\{var.catalog\}/\$\{var.schema\}/(\w+)", a)}
    used |= {
        m.group(1)
        for m in re.finditer(
            r"/Volumes/\$\{var.catalog\}/\$\{var.schema\}/(\w+)", root["variables"]["base_model"]["default"]
        )
    }
    assert used and used <= volumes, (used, volumes)
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    assert (
        clusters["cpu"]["node_type_id"] == "${var.cpu_node_type}"
        and clusters["gpu"]["node_type_id"] == "${var.gpu_node_type}"
    )


def _fill(argument: str, job: dict, variables: dict) -> str:
    """Substitute ${var.x} and {{job.parameters.x}} (which may name variables) the way the bundle would."""
    defaults = {p["name"]: p["default"] for p in job["parameters"]}
    defaults["run_date"] = "2026-11-22"  # {{job.start_time.iso_date}} at run time
    previous = None
    while argument != previous:
        previous = argument
        argument = re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m: str(defaults[m.group(1)]), argument)
        argument = re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]["default"]), argument)
    return argument


ENTRY_POINTS = {
    "build_evidence.py": "evidence",
    "build_prompts.py": "prompts",
    "score.py": "score",
    "evaluate.py": "evaluate",
    "plan.py": "plan",
    "train_lora.py": "train",
    "promote.py": "promote",
}


def test_every_task_runs_an_existing_entry_point_with_parsable_parameters() -> None:
    variables = yaml.safe_load((BUNDLE / "databricks.yml").read_text())["variables"]
    jobs = _jobs()
    order = {
        name: {t["task_key"]: [d["task_key"] for d in t.get("depends_on", [])] for t in job["tasks"]}
        for name, job in jobs.items()
    }
    assert order["nightly"] == {
        "evidence": [],
        "prompts": ["evidence"],
        "plan": [],
        "needs_gpu": ["plan"],
        "score": ["prompts", "needs_gpu"],
        "score_without_model": ["prompts", "needs_gpu"],
        "evaluate": ["score", "score_without_model"],
    }
    assert order["training"] == {"train": [], "promote": ["train"]}
    parser = build_parser()
    for name, job in jobs.items():
        for path, task in _tasks(name):
            _parses(parser, path, task, job, variables)


def _parses(parser: argparse.ArgumentParser, path: Path, task: dict, job: dict, variables: dict) -> None:
    """The task's entry point exists, its parameters parse as its subcommand's and its --help runs."""
    script = (path.parent / task["spark_python_task"]["python_file"]).resolve()
    assert script.is_file() and script.parent == REPO / "jobs", script
    subcommand = ENTRY_POINTS[script.name]
    args = [_fill(a, job, variables) for a in task["spark_python_task"]["parameters"]]
    parsed = parser.parse_args([subcommand, *args])  # exits (fails the test) on a bad parameter
    assert parsed.engine == "spark" and parsed.run_date == "2026-11-22"
    load_config(overrides=parsed.overrides)  # every --set names a key and a valid value
    help_text = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert help_text.returncode == 0 and "--config" in help_text.stdout


def test_gpu_cluster_carries_gpu_scheduling() -> None:
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in _jobs()["nightly"]["job_clusters"]}
    gpu = clusters["gpu"]
    assert "gpu" in gpu["spark_version"] and gpu["node_type_id"]
    conf = gpu["spark_conf"]
    assert conf["spark.executor.resource.gpu.amount"] == "1" and conf["spark.task.resource.gpu.amount"] == "1"
    assert conf["spark.python.worker.reuse"] == "true"
    assert gpu["spark_env_vars"]["TOKENIZERS_PARALLELISM"] == "false"
    score = next(t for t in _jobs()["nightly"]["tasks"] if t["task_key"] == "score")
    assert score["job_cluster_key"] == "gpu"


def test_bundle_settings_resolve_catalog_tables(tmp_path: Path) -> None:
    from instructrec_batch.config import load_config
    from instructrec_batch.spark.tables import resolve

    cfg = load_config(overrides=["tables.root=main.recsys", "tables.items=/data/items", "tables.staging=/tmp/s"])
    assert (resolve(cfg.catalog, "prompts").location, resolve(cfg.catalog, "prompts").is_catalog) == (
        "main.recsys.prompts",
        True,
    )
    assert (resolve(cfg.catalog, "items").location, resolve(cfg.catalog, "items").is_catalog) == ("/data/items", False)
    assert resolve(load_config(overrides=["tables.root=folder"]).catalog, "items").location == "folder/items"


def _runtime(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)\.", version).groups()
    return int(major), int(minor)


def test_every_cluster_runs_a_spark_4_ml_runtime() -> None:
    """Databricks Runtime 17.3 LTS is the first with Spark 4 (Scala 2.13), which the package needs; its ML
    flavour ships torch and transformers, which the wheel then uses instead of installing its own
    (tests/test_runtime_fit.py checks the wheel's requirements against those versions)."""
    clusters = [c["new_cluster"] for job in _jobs().values() for c in job["job_clusters"]]
    assert len(clusters) == 3
    for cluster in clusters:
        version = cluster["spark_version"]
        assert _runtime(version) >= (17, 3), version
        assert "scala2.12" not in version and "-ml-" in version, version


def test_a_bare_wheel_requires_no_spark_stack() -> None:
    """The installed metadata: pyspark, delta-spark and pysail come only with the `local` extra."""
    from importlib.metadata import requires

    requirements = requires("instructrec-batch") or []
    spark_stack = ("pyspark", "delta-spark", "pysail")
    bare = [r for r in requirements if "extra ==" not in r]
    local = [r for r in requirements if re.search(r"extra\s*==\s*['\"]local['\"]", r)]
    assert bare and not [r for r in bare if r.split(";")[0].strip().lower().startswith(spark_stack)]
    assert {name for name in spark_stack if any(r.lower().startswith(name) for r in local)} == set(spark_stack)


def test_the_gpu_score_task_runs_only_when_the_champions_head_weighs_the_model() -> None:
    """plan sets the task value model_pass (tests/test_scoring_job.py checks the value); the condition
    sends the night to the GPU score task on "true" and to the CPU one, without the model, on "false";
    evaluate runs after whichever ran."""
    tasks = {t["task_key"]: t for t in _jobs()["nightly"]["tasks"]}
    condition = tasks["needs_gpu"]["condition_task"]
    assert condition == {"op": "EQUAL_TO", "left": "{{tasks.plan.values.model_pass}}", "right": "true"}
    outcome = {k: {d["task_key"]: d.get("outcome") for d in tasks[k].get("depends_on", [])} for k in tasks}
    assert outcome["score"]["needs_gpu"] == "true" and tasks["score"]["job_cluster_key"] == "gpu"
    assert outcome["score_without_model"]["needs_gpu"] == "false"
    assert tasks["score_without_model"]["job_cluster_key"] == "cpu"
    assert tasks["score"]["spark_python_task"] == tasks["score_without_model"]["spark_python_task"]
    assert tasks["evaluate"]["run_if"] == "NONE_FAILED"
    from instructrec_batch.stages.score import MODEL_PASS

    assert f"values.{MODEL_PASS}}}" in condition["left"]


def test_tasks_share_one_settings_overlay_and_score_the_registered_champion() -> None:
    """Each task carries only its entry point, cluster and dependencies; settings come from one list."""
    variables = yaml.safe_load((BUNDLE / "databricks.yml").read_text())["variables"]
    job = _jobs()["nightly"]
    lists = [t["spark_python_task"]["parameters"] for _, t in _tasks("nightly")]
    assert all(params == lists[0] for params in lists[1:])
    settings = [_fill(a, job, variables) for a in lists[0]]
    assert "score.adapter=models:/main.instructrec.instructrec_adapter@champion" in settings
    assert {"mlflow.tracking_uri=databricks", "mlflow.registry_uri=databricks-uc"} <= set(settings)
    assert "mlflow.model_name=main.instructrec.instructrec_adapter" in settings


def test_training_trains_before_the_judged_night_and_promotes_to_the_alias_the_nightly_scores_with() -> None:
    """The weekly training registers a challenger trained on what was known before the night promote judges
    (train.as_of=previous, the same horizon), on the retriever's lists; promote moves the alias the
    nightly's adapter names, from the same tables, and runs on the training's GPU cluster."""
    from instructrec_batch.config import Config

    variables = yaml.safe_load((BUNDLE / "databricks.yml").read_text())["variables"]
    jobs = _jobs()
    training, nightly = jobs["training"], jobs["nightly"]
    tasks = {t["task_key"]: t for t in training["tasks"]}
    settings = [_fill(a, training, variables) for a in tasks["train"]["spark_python_task"]["parameters"]]
    assert tasks["promote"]["spark_python_task"]["parameters"] == tasks["train"]["spark_python_task"]["parameters"]
    assert {"train.split=time", "train.lists=retriever", "train.as_of=previous"} <= set(settings)
    assert not [a for a in settings if a.startswith(("promote.", "train.horizon_days"))]  # the defaults, shared
    champion = _fill(variables["adapter"]["default"], nightly, variables)
    assert champion.endswith(f"@{Config().promote.champion_alias}")
    assert f"mlflow.model_name={champion.split('models:/')[1].split('@')[0]}" in settings
    assert {t["job_cluster_key"] for t in training["tasks"]} == {"gpu"}
    (cluster,) = training["job_clusters"]
    assert "gpu-ml" in cluster["new_cluster"]["spark_version"]
    nightly_tables = {a for _, t in _tasks("nightly") for a in t["spark_python_task"]["parameters"] if "tables." in a}
    assert {a for a in tasks["train"]["spark_python_task"]["parameters"] if "tables." in a} <= nightly_tables
