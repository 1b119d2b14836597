"""Fault injection for tests of the score job: fail after N scored batches, or while writing its output.

Not configuration: a test arms a fault through the environment of the driver process
(`INSTRUCTREC_BATCH_FAULT_AFTER_BATCHES=N`, `INSTRUCTREC_BATCH_FAULT_DURING_WRITE=1`; `armed` below
reads them once per job), so no user config can carry one by mistake. The hooks exist so tests can
show what a crash leaves behind: the published tables at their previous version, and a rerun that
lands exactly once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

AFTER_BATCHES_ENV = "INSTRUCTREC_BATCH_FAULT_AFTER_BATCHES"
DURING_WRITE_ENV = "INSTRUCTREC_BATCH_FAULT_DURING_WRITE"

_batches_scored = 0  # batches scored by this process; read by the fault-injection hook


class InjectedFault(RuntimeError):
    """Raised after the armed number of scored batches, so tests can kill a score job mid-run."""


@dataclass(frozen=True)
class Faults:
    """The faults armed for one job: none unless a test set the environment variables."""

    after_batches: int | None = None  # raise once this many batches were scored in a process
    during_write: bool = False  # raise inside the tasks of the run's last table write


def armed() -> Faults:
    """The faults the driver's environment arms (read on the driver; shipped to executors in the spec)."""
    after = os.environ.get(AFTER_BATCHES_ENV)
    return Faults(
        after_batches=int(after) if after else None,
        during_write=os.environ.get(DURING_WRITE_ENV, "") not in ("", "0"),
    )


def note_batch(fail_after: int | None) -> None:
    """Count a scored batch in this process; raise InjectedFault once `fail_after` were counted.

    A module-level function (pickled by reference), so the count lives in the executor's module,
    not in a copy of it inside the pickled UDF closure.
    """
    global _batches_scored
    if fail_after is not None and _batches_scored >= fail_after:
        raise InjectedFault(f"injected fault after {_batches_scored} scored batches ({AFTER_BATCHES_ENV})")
    _batches_scored += 1


def batches_scored() -> int:
    """How many batches this process has scored (tests aim the fault past it)."""
    return _batches_scored


def failing_write(df: DataFrame, column: str, enabled: bool) -> DataFrame:
    """`df` whose `column` raises inside the tasks of the write that consumes it, when `enabled`.

    The error is a Spark expression (raise_error), so it fires on executors while output files are
    being produced, after the job's own checks passed: the write starts and never commits.
    """
    if not enabled:
        return df
    fault = F.raise_error(F.lit(f"injected fault during the write ({DURING_WRITE_ENV})"))
    return df.withColumn(column, F.when(F.col(column).isNotNull(), fault).otherwise(F.col(column)))
