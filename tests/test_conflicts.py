"""A lost Delta commit race is recognised by the engine's exception type, one test per engine.

The embedded engine (Sail) races for real here. Classic Spark with the Delta jars and a
Databricks Connect server cannot run on these machines (no Maven, no workspace), so for them the
test raises delta-spark's own classes, the ones its Python package converts the JVM's
io.delta.exceptions into on the classic and the Connect client, and deltalake's commit error.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from delta.connect import exceptions as connect_delta
from delta.exceptions import base as delta_spark
from pyspark.errors.exceptions.connect import SparkRuntimeException

from instructrec_batch.spark.conflicts import is_commit_race


def test_sail_reports_a_lost_race_that_is_recognised_and_other_errors_are_not(spark, tmp_path: Path) -> None:
    table = str(tmp_path / "raced")
    spark.range(4).selectExpr("cast(id as string) run_id", "id").write.format("delta").save(table)
    errors: list[BaseException] = []

    def replace(run: int) -> None:
        for _ in range(4):
            try:
                frame = spark.range(200).selectExpr(f"'{run}' run_id", "id")
                frame.write.format("delta").mode("overwrite").option("replaceWhere", f"run_id = '{run}'").save(table)
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=replace, args=(run,)) for run in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors, "four writers committing to one table at once never collided"
    assert all(is_commit_race(exc) for exc in errors), [f"{type(exc).__name__}: {exc}" for exc in errors]

    with pytest.raises(Exception) as other:
        spark.range(1).selectExpr("raise_error('Failed to commit transaction: not a race')").collect()
    assert not is_commit_race(other.value)  # same words, but raised by a query, not by a commit


@pytest.mark.parametrize(
    "name",
    [
        "DeltaConcurrentModificationException",
        "ConcurrentWriteException",
        "MetadataChangedException",
        "ProtocolChangedException",
        "ConcurrentAppendException",
        "ConcurrentDeleteReadException",
        "ConcurrentDeleteDeleteException",
        "ConcurrentTransactionException",
    ],
)
def test_delta_spark_conflicts_are_recognised_on_the_classic_and_the_connect_client(name: str) -> None:
    assert is_commit_race(getattr(delta_spark, name)(message="concurrent commit"))
    assert is_commit_race(getattr(connect_delta, name)(message="concurrent commit"))


def test_deltalake_commit_failures_are_recognised() -> None:
    from deltalake.exceptions import CommitFailedError, DeltaError

    assert is_commit_race(CommitFailedError("version 1 already exists"))
    assert not is_commit_race(DeltaError("not a delta table"))


def test_text_that_reads_like_a_race_is_not_one() -> None:
    assert not is_commit_race(RuntimeError("io.delta.exceptions.ConcurrentAppendException: Files were added"))
    assert not is_commit_race(SparkRuntimeException(message="disk full"))
