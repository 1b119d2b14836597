"""jobs/score.py under spark-submit (classic local Spark from the pip pyspark, Parquet), end to end."""

import os
import subprocess
import sys
from pathlib import Path

import deltalake
import pandas as pd
import pyarrow.parquet as pq
import pytest

from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.stages.prompts import prompts_job
from tests.helpers import REPO, load_synthetic

SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def _submit(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The driver and the workers run this venv's interpreter, as a cluster's image would provide.
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")}
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    command = [str(SPARK_SUBMIT), "--master", "local[2]", str(REPO / "jobs" / "score.py")]
    command += ["--engine", "spark", "--config", str(REPO / "conf" / "local-classic.yaml"), "--workdir", str(workdir)]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=900, cwd=REPO)


@pytest.mark.classic
def test_spark_submit_score_job_writes_parquet_and_fails_non_zero(
    spark, tiny_cfg: Config, tmp_path: Path, tiny_model_dir: Path
) -> None:
    load_synthetic(spark, tiny_cfg, n_users=8, n_items=50, per_user=10)
    cfg = tiny_cfg.model_copy(
        update={"run": tiny_cfg.run.model_copy(update={"run_id": "submit", "run_date": "2026-11-22"})}
    )
    run_stage(prompts_job, spark, cfg)
    prompts = deltalake.DeltaTable(str(Path(cfg.tables_root) / "prompts")).to_pyarrow_table()
    tables = tmp_path / "classic" / "tables"
    (tables / "prompts").mkdir(parents=True)
    pq.write_table(prompts, tables / "prompts" / "part-0.parquet", coerce_timestamps="us")

    common = ["--set", f"model.base={tiny_model_dir}", "--run-id", "submit", "--run-date", "2026-11-22"]
    ok = _submit(tmp_path / "classic", *common, "--adapter", "none", "--k", "3")
    assert ok.returncode == 0, ok.stderr[-3000:]
    recs = pd.read_parquet(tables / "recommendations")
    assert len(recs) == 8 * 3 and all(sorted(g) == [1, 2, 3] for _, g in recs.groupby("user_id")["rank"])

    failed = _submit(tmp_path / "classic", *common, "--adapter", str(tmp_path / "no-such-adapter"))
    assert failed.returncode != 0, failed.stderr[-2000:]
    # spark-submit's PythonRunner forwards the driver's stderr to its stdout.
    assert "ArtifactError: adapter folder" in failed.stdout + failed.stderr
    assert len(pd.read_parquet(tables / "recommendations")) == 24  # the failed run wrote nothing
