"""Helpers shared by tests: synthetic input tables, writing them, running the CLI in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import SparkSession

from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.stages.data import protocol_job

REPO = Path(__file__).resolve().parents[1]
INTERACTIONS_SCHEMA = "user_id BIGINT, item_id BIGINT, event_ts TIMESTAMP, rating DOUBLE"
ITEMS_SCHEMA = "item_id BIGINT, title STRING"


def synthetic(n_users: int = 12, n_items: int = 60, per_user: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Small tables with deliberate timestamp ties (as MovieLens has) to exercise the tie-break."""
    t0 = datetime(2024, 1, 1)
    rows = []
    for u in range(1, n_users + 1):
        for j in range(per_user):
            item = (u * 7 + j * 5) % n_items + 1
            rows.append((u, item, t0 + timedelta(minutes=(j // 2)), float(j % 5 + 1)))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "event_ts", "rating"])
    items = pd.DataFrame({"item_id": range(1, n_items + 1), "title": [f"Item {i}" for i in range(1, n_items + 1)]})
    return inter, items


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


def load_synthetic(
    spark: SparkSession, cfg: Config, n_users: int, n_items: int, per_user: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write synthetic interactions and items where `cfg` expects them, run the protocol job; return them."""
    inter, items = synthetic(n_users=n_users, n_items=n_items, per_user=per_user)
    write_input(spark, cfg, "interactions", inter, INTERACTIONS_SCHEMA)
    write_input(spark, cfg, "items", items, ITEMS_SCHEMA)
    run_stage(protocol_job, spark, cfg)
    return inter, items


def write_parquet_inputs(root: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Write input tables as one Parquet file each under `root/<name>/` (what the classic engine reads)."""
    import pyarrow.parquet as pq

    for name, frame in tables.items():
        (root / name).mkdir(parents=True)
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False), root / name / "part-0.parquet", coerce_timestamps="us"
        )


def raw_utf8_column(values: Sequence[bytes | None]) -> pa.Array:
    """An Arrow STRING array holding `values` byte for byte, invalid UTF-8 included (no validation).

    Parquet and Delta writers pass such arrays through unchecked, which is how broken text reaches
    real tables; tests use it to build that input.
    """
    data = [v or b"" for v in values]
    offsets = np.cumsum([0] + [len(v) for v in data]).astype(np.int32)
    validity = pa.array([v is not None for v in values]).buffers()[1]
    return pa.Array.from_buffers(
        pa.string(), len(values), [validity, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(data))]
    )
