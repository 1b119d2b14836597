"""The embedded engine keeps a job's session alive past the server's idle timeout.

Each scenario runs in its own process: it starts (and stops) its own embedded server, which must
not disturb the session the rest of the test suite shares.
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO

SCENARIO = """
import sys, time
from instructrec_batch.config import EngineConfig
from instructrec_batch.spark.engine import spark_session

cfg = EngineConfig(kind="local", shuffle_partitions=1, session_timeout_secs=2, keep_alive=sys.argv[1] == "on")
with spark_session(cfg) as spark:
    assert spark.range(3).count() == 3
    time.sleep(6)  # driver-side work (as training does) three times longer than the timeout
    try:
        print("count", spark.range(5).count())
    except Exception as exc:
        print("lost", type(exc).__name__, exc)
"""


def _run(keep_alive: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", SCENARIO, keep_alive], capture_output=True, text=True, cwd=REPO, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_a_job_outlives_the_session_timeout_with_the_keep_alive() -> None:
    assert "count 5" in _run("on")


def test_without_the_keep_alive_the_same_job_loses_its_session() -> None:
    out = _run("off")
    assert "lost" in out and "not running" in out, out
