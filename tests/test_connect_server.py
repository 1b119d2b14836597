"""engine.kind=connect against a real JVM Spark Connect server (the one pyspark ships), not Sail.

The server is started with pyspark's own spark-submit on a free local port, with Parquet tables (no
Delta jars here) and this interpreter for its Python workers; prompts → score with a tiny model must
give the same rows as the embedded local engine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import deltalake
import pandas as pd
import pyarrow.parquet as pq
import pytest

from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.stages.prompts import prompts_job
from instructrec_batch.stages.score import score_job
from tests.helpers import REPO, load_synthetic, run_cli, write_parquet_inputs

pytestmark = pytest.mark.classic  # a JVM in its own process, like the classic-engine tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import pyspark

    home = Path(pyspark.__file__).parent
    if not list((home / "jars").glob("spark-connect_*.jar")):
        pytest.fail(f"pyspark at {home} ships no spark-connect jar; the Connect test needs pyspark>=4")
    port = _free_port()
    log = tmp_path_factory.mktemp("connect") / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")}
    env.update(SPARK_HOME=str(home), PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    command = [
        str(home / "bin" / "spark-submit"),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--master",
        "local[2]",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf",
        "spark.sql.shuffle.partitions=4",
        "spark-internal",
    ]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"the Spark Connect server exited: {log.read_text()[-3000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        else:
            pytest.fail(f"the Spark Connect server did not listen on {port}: {log.read_text()[-3000:]}")
        yield f"sc://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_prompts_and_score_through_a_jvm_connect_server_match_the_local_engine(
    spark, tiny_cfg: Config, adapter_dir: Path, tmp_path: Path, connect_server: str
) -> None:
    inter, items = load_synthetic(spark, tiny_cfg, n_users=10, n_items=50, per_user=9)
    local = tiny_cfg.model_copy(
        update={
            "score": tiny_cfg.score.model_copy(update={"adapter": str(adapter_dir), "k": 5}),
            "run": tiny_cfg.run.model_copy(update={"run_id": "connect-night", "run_date": "2026-01-01"}),
        }
    )
    run_stage(prompts_job, spark, local)
    run_stage(score_job, spark, local)

    remote_root = tmp_path / "remote" / "tables"
    holdout = deltalake.DeltaTable(str(Path(local.tables_root) / "holdout")).to_pandas()
    candidates = deltalake.DeltaTable(str(Path(local.tables_root) / "candidates")).to_pandas()
    write_parquet_inputs(
        remote_root, {"interactions": inter, "items": items, "holdout": holdout, "candidates": candidates}
    )
    options = [
        "--engine",
        "connect",
        "--workdir",
        str(tmp_path / "remote"),
        "--run-id",
        "connect-night",
        "--run-date",
        "2026-01-01",
        *("--set", f"engine.remote={connect_server}"),
        *("--set", "tables.format=parquet"),
        *("--set", f"model.base={tiny_cfg.model.base}"),
    ]
    for command in (["prompts"], ["score", "--adapter", str(adapter_dir), "--k", "5"]):
        proc = run_cli([*command, *options], timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]

    keys = ["user_id", "rank"]
    mine = deltalake.DeltaTable(str(Path(local.tables_root) / "recommendations")).to_pandas()
    theirs = pq.read_table(remote_root / "recommendations").to_pandas()
    columns = ["user_id", "rank", "item_id", "score", "model_id", "ranked_by"]
    mine = mine[columns].sort_values(keys).reset_index(drop=True)
    theirs = theirs[columns].sort_values(keys).reset_index(drop=True)
    assert len(mine) == 10 * 5
    pd.testing.assert_frame_equal(mine, theirs, check_dtype=False, atol=1e-4)
