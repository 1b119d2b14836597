"""Run identity and the `runs` table: one row per (run_id, job), replaced when a run is re-run.

The `runs` row is each job's commit marker. A job first marks its run 'running' (replacing the row of
an earlier attempt), then writes its tables, and marks it 'succeeded' last ('failed' with the error
when anything raised). So a reader that takes a run's rows only when its row says 'succeeded' never
sees half a night: a score run whose recommendations landed but whose candidate_scores did not is
'failed', and a rerun in progress is 'running'.

An invocation resolves its identity once (`config.run_identity`, or `config.pin_run` for a flow of several
jobs) and passes it down, so a job crossing UTC midnight still writes every row under one run_id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import SparkSession

from instructrec_batch.config import RunIdentity, TableCatalog
from instructrec_batch.spark.tables import resolve, write_run_scoped

log = logging.getLogger(__name__)

RUNS_SCHEMA = (
    "run_id STRING, job STRING, status STRING, started_at TIMESTAMP, finished_at TIMESTAMP, users BIGINT, "
    "candidates BIGINT, rejects BIGINT, counts STRING, config_hash STRING, model_id STRING, engine STRING, "
    "error STRING"
)


@dataclass
class RunRecord:
    """Counts and lineage a job fills in while it runs; written to `runs` at the end."""

    job: str
    identity: RunIdentity
    config_hash: str  # Config.fingerprint(): what determined the results
    engine: str  # engine.kind
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    counts: dict[str, int] = field(default_factory=dict)
    model_id: str | None = None

    def add(self, values: Mapping[str, int]) -> None:
        self.counts.update({k: int(v) for k, v in values.items()})


@contextmanager
def recorded_run(spark: SparkSession, tables: TableCatalog, record: RunRecord) -> Iterator[RunRecord]:
    """Mark the run 'running', yield its RunRecord, and mark it 'succeeded' (or 'failed' with the error)
    when the job ends: the `runs` row is written first and last, around every other write."""
    log.info("%s: run_id=%s run_date=%s", record.job, record.identity.run_id, record.identity.run_date)
    _write(spark, tables, record, "running", None)
    try:
        yield record
    except Exception as exc:
        _write(spark, tables, record, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    _write(spark, tables, record, "succeeded", None)


def _write(spark: SparkSession, tables: TableCatalog, record: RunRecord, status: str, error: str | None) -> None:
    row = (
        record.identity.run_id,
        record.job,
        status,
        record.started_at.replace(tzinfo=None),
        datetime.now(timezone.utc).replace(tzinfo=None),
        record.counts.get("users"),
        record.counts.get("candidates"),
        record.counts.get("rejects"),
        json.dumps(record.counts, sort_keys=True),
        record.config_hash,
        record.model_id,
        record.engine,
        error,
    )
    try:
        frame = spark.createDataFrame([row], RUNS_SCHEMA)
        write_run_scoped(frame, tables, resolve(tables, "runs"), {"run_id": record.identity.run_id, "job": record.job})
    except Exception:  # the runs row is bookkeeping: never let it hide the job's own error
        if error is None:
            raise
        log.exception("could not record the failed run in the runs table")
