"""The embedded engine keeps a job's session alive past the server's idle timeout."""

from __future__ import annotations

import time

import pytest
from pyspark.errors.exceptions.connect import SparkConnectGrpcException

from instructrec_batch.config import EngineConfig
from instructrec_batch.engine import spark_session


def test_a_job_outlives_the_session_timeout_with_the_keep_alive() -> None:
    """Timeout 2 s, 6 s of driver-side work between two Spark calls (as training does)."""
    cfg = EngineConfig(kind="local", shuffle_partitions=1, session_timeout_secs=2)
    with spark_session(cfg) as spark:
        assert spark.range(3).count() == 3
        time.sleep(6)
        assert spark.range(5).count() == 5


def test_without_the_keep_alive_the_same_job_loses_its_session() -> None:
    cfg = EngineConfig(kind="local", shuffle_partitions=1, session_timeout_secs=2, keep_alive=False)
    with spark_session(cfg) as spark:
        assert spark.range(3).count() == 3
        time.sleep(6)
        with pytest.raises(SparkConnectGrpcException, match=r"not running|session"):
            spark.range(5).count()
