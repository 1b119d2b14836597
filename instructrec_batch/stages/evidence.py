"""The evidence job: collaborative evidence of every candidate of the run, written to `candidate_evidence`.

Its own stage, ahead of the prompts job: the fusion head (score), the blend baseline (evaluate) and a
template that puts evidence into words (prompts) all read the same per-run rows, and on a cluster
this stage, the heaviest Spark work of a night, is scheduled, retried and sized on its own.
Computed from training interactions only (each user's rows before their first held-out row when
a holdout table exists and prompt.exclude_holdout is on), for the same sampled users the prompts job
builds instructions for. With evidence.sequential on, it first trains the sequential model on those
interactions (every user's, not only the sampled ones': later jobs score validation lists with it)
and stores it as `sequence_vectors` for the run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import DataConfig, EvidenceConfig, PromptConfig, SasrecConfig, TableCatalog
from instructrec_batch.context import JobContext
from instructrec_batch.data.protocol import sample_users
from instructrec_batch.errors import ContractError
from instructrec_batch.evidence.features import evidence_interactions
from instructrec_batch.evidence.requests import requests_of
from instructrec_batch.evidence.sequential import sequence_vectors
from instructrec_batch.evidence.staged import staged_evidence
from instructrec_batch.spark.rejects import null_keys
from instructrec_batch.spark.tables import (
    check_key_types,
    existing_columns,
    read_input,
    read_optional,
    resolve,
    write_run_scoped,
    write_table,
)

log = logging.getLogger(__name__)

STAGE = "evidence"


@dataclass(frozen=True)
class EvidenceCounts:
    run_id: str
    users: int
    candidates: int  # distinct (user, item) rows written
    seconds: float


def _check_existing_columns(spark: SparkSession, tables: TableCatalog) -> None:
    """Refuse, before writing anything, a candidate_evidence table written with fewer evidence columns
    (an older version): a Delta table's columns must match on every write and the embedded engine cannot
    add any, while the table holds only derived rows that the next run recomputes."""
    ref = resolve(tables, C.CANDIDATE_EVIDENCE.name)
    present = existing_columns(spark, tables, ref)
    if present is None:
        return
    missing = [c for c in (*C.EVIDENCE_COLUMNS, *C.EVIDENCE_NOTE_COLUMNS) if c not in present]
    if missing:
        raise ContractError(
            f"{ref} has no column {', '.join(missing)} (written by an older version), and a Delta table's columns "
            "cannot be changed by a run: its rows are derived, so move it aside or point tables.candidate_evidence "
            "at a new table, then rerun `instructrec-batch evidence`"
        )


def evidence_job(
    ctx: JobContext,
    evidence: EvidenceConfig,
    sasrec: SasrecConfig,
    data: DataConfig,
    prompt: PromptConfig,
    cache_path: Path,
) -> EvidenceCounts:
    """Write the run's `candidate_evidence`: one row per distinct (user, candidate item) with a key.

    Candidates with a null key are left to the prompts job, which rejects them with a reason; every
    other candidate gets a row, shown or not, so a reader joins on (user_id, item_id) and never misses.
    """
    spark, tables = ctx.spark, ctx.tables
    interactions = read_input(spark, tables, C.INTERACTIONS)
    items = read_input(spark, tables, C.ITEMS)
    every = read_input(spark, tables, C.CANDIDATES, nonempty=True)
    candidates = sample_users(every, prompt.sample_users, data.seed)  # the users prompts are built for
    holdout = read_optional(spark, tables, C.HOLDOUT) if prompt.exclude_holdout else None
    intents = read_optional(spark, tables, C.INTENTS)
    inputs = {
        "interactions": interactions,
        "items": items,
        "candidates": candidates,
        "holdout": holdout,
        "intents": intents,
    }
    check_key_types(inputs, (C.USER_ID, C.ITEM_ID))
    _check_existing_columns(spark, tables)
    with ctx.recorded(STAGE) as (run, staging):
        started = time.perf_counter()
        ranks = [C.RETRIEVAL_RANK] if C.RETRIEVAL_RANK in candidates.columns else []
        listed = candidates.where(~null_keys([C.USER_ID, C.ITEM_ID])).select(C.USER_ID, C.ITEM_ID, *ranks)
        train = evidence_interactions(interactions, holdout)
        vectors = None
        if evidence.sequential:  # staged, published after the evidence computed with them
            model = sequence_vectors(spark, train, sasrec, data.seed)
            write_table(model, tables, staging.ref("sequence_vectors"))
            vectors = staging.read(spark, "sequence_vectors")
        requests = requests_of(intents, listed, holdout, items, evidence, cache_path)  # as the prompts show them
        rows = staged_evidence(spark, evidence, train, listed, items, staging, "evidence", vectors, requests)
        run_id = {C.RUN_ID: ctx.run_id}
        write_run_scoped(
            rows.select(F.lit(ctx.run_id).alias(C.RUN_ID), "*"),
            tables,
            resolve(tables, C.CANDIDATE_EVIDENCE.name),
            run_id,
        )
        if vectors is not None:
            write_run_scoped(
                vectors.select(F.lit(ctx.run_id).alias(C.RUN_ID), "*"),
                tables,
                resolve(tables, C.SEQUENCE_VECTORS.name),
                run_id,
            )
        written = ctx.written(C.CANDIDATE_EVIDENCE)
        stats = written.agg(F.countDistinct(C.USER_ID).alias("users"), F.count(F.lit(1)).alias("rows")).first()
        counts = EvidenceCounts(ctx.run_id, stats["users"], stats["rows"], round(time.perf_counter() - started, 2))
        run.add({"users": counts.users, "candidates": counts.candidates})
    log.info("evidence: %s", counts)
    return counts
