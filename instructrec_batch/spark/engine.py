"""The one place that knows how a SparkSession is made.

`local` starts an embedded Sail Spark Connect server in this process (127.0.0.1, a free port) and
stops it at exit; `spark` is classic `getOrCreate()` as under spark-submit or on Databricks;
`connect` attaches to a remote Spark Connect URL. Everything else only sees the SparkSession.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from instructrec_batch.config import EngineConfig
from instructrec_batch.errors import EngineError
from instructrec_batch.periodic import every

log = logging.getLogger(__name__)

# Settings every engine gets, so that the same job gives the same rows everywhere: timestamps are
# read and written in UTC, and Arrow is used between the JVM/engine and Python.
_COMMON_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def _session_conf(cfg: EngineConfig) -> dict[str, str]:
    return {**_COMMON_CONF, "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions), **cfg.conf}


SESSION_TIMEOUT_ENV = "SAIL_SPARK__SESSION_TIMEOUT_SECS"


@contextmanager
def _keep_alive(spark: SparkSession, every_s: float) -> Iterator[None]:
    """Touch the session every `every_s` seconds from a daemon thread while the block runs.

    The embedded server expires a session that sends no request for its session timeout; a job's
    driver-side work (training, fitting) can outlast it, and the job would then fail at its next
    write. A cheap config read is a request, so the session never looks idle.
    """

    def ping() -> bool:
        try:
            spark.conf.get("spark.sql.session.timeZone")
        except Exception as exc:  # the session is closing or gone: nothing left to keep alive
            log.debug("keep-alive stopped: %s", exc)
            return False
        return True

    with every(every_s, ping, "sail-keep-alive"):
        yield


@contextmanager
def _local_sail(cfg: EngineConfig) -> Iterator[SparkSession]:
    try:
        from pysail.spark import SparkConnectServer
    except ImportError as exc:  # pragma: no cover - pysail is a core dependency
        raise EngineError("engine.kind=local needs the 'pysail' package: pip install pysail") from exc
    # The server reads its session timeout from the environment when it starts.
    previous = os.environ.get(SESSION_TIMEOUT_ENV)
    os.environ[SESSION_TIMEOUT_ENV] = str(cfg.session_timeout_secs)
    try:
        server = SparkConnectServer(ip="127.0.0.1", port=0)
        server.start(background=True)
    finally:
        if previous is None:
            os.environ.pop(SESSION_TIMEOUT_ENV, None)
        else:
            os.environ[SESSION_TIMEOUT_ENV] = previous
    host, port = server.listening_address
    log.info("started embedded Sail Spark Connect server on %s:%s", host, port)
    spark = SparkSession.builder.remote(f"sc://{host}:{port}").getOrCreate()
    try:
        for key, value in _session_conf(cfg).items():
            spark.conf.set(key, value)
        if cfg.keep_alive:
            with _keep_alive(spark, max(0.5, min(60.0, cfg.session_timeout_secs / 3))):
                yield spark
        else:
            yield spark
    finally:
        spark.stop()
        server.stop()
        log.info("stopped embedded Sail server")


@contextmanager
def _classic(cfg: EngineConfig) -> Iterator[SparkSession]:
    if os.environ.get("SPARK_CONNECT_MODE_ENABLED") == "1":
        raise EngineError(
            "engine.kind=spark cannot start: SPARK_CONNECT_MODE_ENABLED=1 is set (this process, or the one "
            "that started it, opened a Spark Connect session); run the classic engine in its own process "
            "without that variable (spark-submit or a separate command)"
        )
    builder = SparkSession.builder.appName("instructrec_batch")
    if cfg.master:
        builder = builder.master(cfg.master)
    if (cfg.master or "").startswith("local"):
        # A local master runs its Python workers on this machine: give them this interpreter (and so
        # this venv's pandas/torch), not whatever `python3` is first on PATH. PySpark reads the
        # worker interpreter from this variable when the SparkContext starts; an explicit one wins.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in _session_conf(cfg).items():
        builder = builder.config(key, value)
    # Under spark-submit/Databricks the platform owns the session; we neither create nor stop it
    # when one is active, so a notebook or a workflow task keeps its session after the job.
    owned = SparkSession.getActiveSession() is None
    spark = builder.getOrCreate()
    try:
        yield spark
    finally:
        if owned:
            spark.stop()


@contextmanager
def _connect(cfg: EngineConfig) -> Iterator[SparkSession]:
    if not cfg.remote:
        raise EngineError("engine.kind=connect needs engine.remote, e.g. --set engine.remote=sc://host:15002")
    spark = SparkSession.builder.remote(cfg.remote).getOrCreate()
    for key, value in _session_conf(cfg).items():
        spark.conf.set(key, value)
    yield spark


@contextmanager
def spark_session(cfg: EngineConfig) -> Iterator[SparkSession]:
    """Yield a SparkSession for `cfg.kind`, and release what this function started at exit."""
    factory = {"local": _local_sail, "spark": _classic, "connect": _connect}[cfg.kind]
    with factory(cfg) as spark:
        yield spark


def is_connect(spark: SparkSession) -> bool:
    """True for Spark Connect sessions (Sail, Databricks Connect), False for classic ones."""
    return type(spark).__module__.startswith("pyspark.sql.connect")
