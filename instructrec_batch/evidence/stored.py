"""The `candidate_evidence` table as its readers see it: one run's rows covering the reader's
candidates, or a clear error."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import TableCatalog
from instructrec_batch.errors import ContractError
from instructrec_batch.spark.tables import read_input, resolve, table_exists


def read_run_evidence(
    spark: SparkSession, tables: TableCatalog, run_id: str, needed_by: str, covering: DataFrame
) -> DataFrame:
    """The candidate_evidence rows the evidence job wrote for `run_id`: user_id, item_id, EVIDENCE_COLUMNS
    and EVIDENCE_NOTE_COLUMNS. `needed_by` names the reader in the errors raised when there are none,
    or when a (user_id, item_id) of `covering` (the reader's candidates) has no row: the candidates
    changed after the evidence job ran (e.g. a pinned run.run_id, a new sample), and reading on would
    rank those candidates as if there were no evidence for them."""
    rerun = f"needed by {needed_by}: run `instructrec-batch evidence` for that run first"
    missing = ContractError(f"table 'candidate_evidence' has no rows for run_id '{run_id}', {rerun}")
    if not table_exists(spark, resolve(tables, C.CANDIDATE_EVIDENCE.name)):
        raise missing
    evidence = read_input(spark, tables, C.CANDIDATE_EVIDENCE).where(F.col(C.RUN_ID) == run_id)
    if evidence.limit(1).count() == 0:
        raise missing
    keys = [C.USER_ID, C.ITEM_ID]
    uncovered = covering.select(*keys).join(evidence.select(*keys), keys, "left_anti").limit(1).collect()
    if uncovered:
        user, item = uncovered[0]
        raise ContractError(
            f"table 'candidate_evidence' has no row for user_id {user!r}, item_id {item!r} (and maybe more) "
            f"in run_id '{run_id}' (the candidates changed after the evidence job ran), {rerun}"
        )
    return evidence.select(*keys, *C.EVIDENCE_COLUMNS, *C.EVIDENCE_NOTE_COLUMNS)


def stored_vectors(spark: SparkSession, tables: TableCatalog, run_id: str) -> DataFrame | None:
    """The sequence_vectors rows the evidence job wrote for `run_id` (user_id, item_id, vector, log_norm),
    None when there are none."""
    if not table_exists(spark, resolve(tables, C.SEQUENCE_VECTORS.name)):
        return None
    vectors = read_input(spark, tables, C.SEQUENCE_VECTORS).where(F.col(C.RUN_ID) == run_id)
    if vectors.limit(1).count() == 0:
        return None
    return vectors.select(C.USER_ID, C.ITEM_ID, C.VECTOR, C.LOG_NORM)


def read_run_vectors(
    spark: SparkSession, tables: TableCatalog, sequential: bool, run_id: str, needed_by: str
) -> DataFrame | None:
    """`stored_vectors` of `run_id`, None when the sequential evidence is off (evidence.sequential, passed as
    `sequential`). `needed_by` names the reader
    in the error raised when the sequential evidence is on but the run has no vectors: evidence read
    without them would weigh a constant where the fitted rankers expect the model's probabilities."""
    if not sequential:
        return None
    vectors = stored_vectors(spark, tables, run_id)
    if vectors is None:
        raise ContractError(
            f"table 'sequence_vectors' has no rows for run_id '{run_id}', needed by {needed_by} "
            "(evidence.sequential is on): run `instructrec-batch evidence` for that run first, "
            "or set evidence.sequential=false"
        )
    return vectors
