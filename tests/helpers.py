"""Helpers shared by tests: writing small input tables, running the CLI in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession

from instructrec_batch.config import Config

REPO = Path(__file__).resolve().parents[1]


def write_input(spark: SparkSession, cfg: Config, name: str, frame: pd.DataFrame, schema: str) -> None:
    """Write a small input table where `cfg` expects table `name` (Delta through the local engine)."""
    path = Path(cfg.tables_root) / getattr(cfg.tables, name)
    spark.createDataFrame(frame, schema).write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(
        str(path)
    )


def run_cli(args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the console script in a fresh process (the classic engine needs its own JVM process)."""
    # A Connect session in this test process sets SPARK_CONNECT_MODE_ENABLED; a child that runs the
    # classic engine must not inherit it.
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")}
    return subprocess.run(
        [sys.executable, "-m", "instructrec_batch.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=REPO,
        **kwargs,
    )
