"""The Databricks Asset Bundle: every task points at an entry point whose parameters parse."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

from instructrec_batch.cli import build_parser
from tests.helpers import REPO

BUNDLE = REPO / "conf" / "databricks"


def _jobs() -> dict:
    root = yaml.safe_load((BUNDLE / "databricks.yml").read_text())
    jobs: dict = {}
    for pattern in root["include"]:
        for path in sorted(BUNDLE.glob(pattern)):
            jobs.update(yaml.safe_load(path.read_text())["resources"]["jobs"])
    return jobs


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


def test_every_task_runs_an_existing_entry_point_with_parsable_parameters() -> None:
    variables = yaml.safe_load((BUNDLE / "databricks.yml").read_text())["variables"]
    jobs = _jobs()
    tasks = jobs["nightly"]["tasks"]
    assert [t["task_key"] for t in tasks] == ["evidence", "prompts", "score", "evaluate"]
    assert [t.get("depends_on") for t in tasks] == [
        None,
        *([{"task_key": k}] for k in ("evidence", "prompts", "score")),
    ]
    parser = build_parser()
    for task in tasks:
        script = (BUNDLE / task["spark_python_task"]["python_file"]).resolve()
        assert script.is_file() and script.parent == REPO / "jobs", script
        entry_points = {"build_evidence.py": "evidence", "build_prompts.py": "prompts"}
        subcommand = (entry_points | {"score.py": "score", "evaluate.py": "evaluate"})[script.name]
        args = [_fill(a, jobs["nightly"], variables) for a in task["spark_python_task"]["parameters"]]
        parsed = parser.parse_args([subcommand, *args])  # exits (fails the test) on a bad parameter
        assert parsed.engine == "spark" and parsed.run_date == "2026-11-22"
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

    cfg = load_config(overrides=["tables.root=main.recsys", "tables.items=/mnt/items", "tables.staging=/tmp/s"])
    assert (resolve(cfg.catalog, "prompts").location, resolve(cfg.catalog, "prompts").is_catalog) == (
        "main.recsys.prompts",
        True,
    )
    assert (resolve(cfg.catalog, "items").location, resolve(cfg.catalog, "items").is_catalog) == ("/mnt/items", False)
    assert resolve(load_config(overrides=["tables.root=folder"]).catalog, "items").location == "folder/items"


def _runtime(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)\.", version).groups()
    return int(major), int(minor)


def test_every_cluster_runs_a_spark_4_runtime() -> None:
    """Databricks Runtime 17.3 LTS is the first with Spark 4 (Scala 2.13), which the package needs."""
    clusters = [c["new_cluster"] for c in _jobs()["nightly"]["job_clusters"]]
    assert clusters
    for cluster in clusters:
        version = cluster["spark_version"]
        assert _runtime(version) >= (17, 3), version
        assert "scala2.12" not in version, version


def test_a_bare_wheel_requires_no_spark_stack() -> None:
    """The installed metadata: pyspark, delta-spark and pysail come only with the `local` extra."""
    from importlib.metadata import requires

    requirements = requires("instructrec-batch") or []
    spark_stack = ("pyspark", "delta-spark", "pysail")
    bare = [r for r in requirements if "extra ==" not in r]
    local = [r for r in requirements if re.search(r"extra\s*==\s*['\"]local['\"]", r)]
    assert bare and not [r for r in bare if r.split(";")[0].strip().lower().startswith(spark_stack)]
    assert {name for name in spark_stack if any(r.lower().startswith(name) for r in local)} == set(spark_stack)


def test_tasks_share_one_settings_overlay_and_score_the_registered_champion() -> None:
    """Each task carries only its entry point, cluster and dependencies; settings come from one list."""
    variables = yaml.safe_load((BUNDLE / "databricks.yml").read_text())["variables"]
    job = _jobs()["nightly"]
    lists = [t["spark_python_task"]["parameters"] for t in job["tasks"]]
    assert all(params == lists[0] for params in lists[1:])
    settings = [_fill(a, job, variables) for a in lists[0]]
    assert "score.adapter=models:/main.instructrec.instructrec_adapter@champion" in settings
    assert {"mlflow.tracking_uri=databricks", "mlflow.registry_uri=databricks-uc"} <= set(settings)
    assert "mlflow.model_name=main.instructrec.instructrec_adapter" in settings
