"""Fault injection for tests of the score job: fail after N scored batches, or while writing its output.

Both hooks are off unless configured (score.fail_after_batches, score.fail_during_write) and exist so
tests can show what a crash leaves behind: the published tables at their previous version, and a
rerun that lands exactly once.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

_batches_scored = 0  # batches scored by this process; read by the fault-injection hook


class InjectedFault(RuntimeError):
    """Raised by score.fail_after_batches, so tests can kill a score job mid-run."""


def note_batch(fail_after: int | None) -> None:
    """Count a scored batch in this process; raise InjectedFault once `fail_after` were counted.

    A module-level function (pickled by reference), so the count lives in the executor's module,
    not in a copy of it inside the pickled UDF closure.
    """
    global _batches_scored
    if fail_after is not None and _batches_scored >= fail_after:
        raise InjectedFault(f"injected fault after {_batches_scored} scored batches (score.fail_after_batches)")
    _batches_scored += 1


def batches_scored() -> int:
    """How many batches this process has scored (tests aim fail_after_batches past it)."""
    return _batches_scored


def failing_write(df: DataFrame, column: str, enabled: bool) -> DataFrame:
    """`df` whose `column` raises inside the tasks of the write that consumes it, when `enabled`.

    The error is a Spark expression (raise_error), so it fires on executors while output files are
    being produced, after the job's own checks passed: the write starts and never commits.
    """
    if not enabled:
        return df
    fault = F.raise_error(F.lit("injected fault during the write (score.fail_during_write)"))
    return df.withColumn(column, F.when(F.col(column).isNotNull(), fault).otherwise(F.col(column)))
