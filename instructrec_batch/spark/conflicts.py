"""Recognise a Delta commit that lost a race with another writer, by the engine's exception type.

Each engine reports a lost race with a type of its own:
- classic Spark with delta-spark, and Spark Connect to a Delta server (Databricks): the classes of
  `delta.exceptions` (ConcurrentAppendException, MetadataChangedException, ...), which delta-spark's
  Python package converts the JVM's io.delta.exceptions into, on both clients;
- the embedded Sail engine: a Spark Connect `SparkRuntimeException` raised by its Delta writer (delta-rs)
  with the commit error "Failed to commit transaction: <version>"; Sail sends no error class, so the type
  is checked together with that message's prefix;
- deltalake (delta-rs in Python): `deltalake.exceptions.CommitFailedError`.

A failed commit wrote nothing, so such an error is safe to retry; any other error is not.
"""

from __future__ import annotations

from functools import cache

# The error delta-rs raises when its commit finds a newer table version (Sail's Delta writer).
SAIL_COMMIT_FAILED = "Failed to commit transaction"


@cache
def _delta_spark_races() -> tuple[type[BaseException], ...]:
    """delta-spark's conflict classes (the bases of both its classic and its Connect variants)."""
    try:
        from delta.exceptions import base
    except ImportError:  # a platform without delta-spark's Python package
        return ()
    return (
        base.DeltaConcurrentModificationException,
        base.ConcurrentWriteException,
        base.MetadataChangedException,
        base.ProtocolChangedException,
        base.ConcurrentAppendException,
        base.ConcurrentDeleteReadException,
        base.ConcurrentDeleteDeleteException,
        base.ConcurrentTransactionException,
    )


@cache
def _deltalake_races() -> tuple[type[BaseException], ...]:
    try:
        from deltalake.exceptions import CommitFailedError
    except ImportError:
        return ()
    return (CommitFailedError,)


def _sail_race(exc: BaseException) -> bool:
    try:
        from pyspark.errors.exceptions.connect import SparkRuntimeException
    except ImportError:  # pyspark without the Connect client
        return False
    return isinstance(exc, SparkRuntimeException) and str(exc).startswith(SAIL_COMMIT_FAILED)


def is_commit_race(exc: BaseException) -> bool:
    """True when `exc` says a Delta commit lost a race with another writer (nothing was committed)."""
    return isinstance(exc, _delta_spark_races() + _deltalake_races()) or _sail_race(exc)
