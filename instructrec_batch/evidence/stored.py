"""The `candidate_evidence` table as its readers see it: one run's rows, or a clear error."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import Config
from instructrec_batch.errors import ContractError
from instructrec_batch.spark.tables import read_input, resolve, table_exists


def read_run_evidence(spark: SparkSession, cfg: Config, run_id: str, needed_by: str) -> DataFrame:
    """The candidate_evidence rows the evidence job wrote for `run_id`: user_id, item_id, EVIDENCE_COLUMNS
    and EVIDENCE_NOTE_COLUMNS. `needed_by` names the reader in the error raised when there are none."""
    missing = ContractError(
        f"table 'candidate_evidence' has no rows for run_id '{run_id}', which {needed_by} reads: "
        "run `instructrec-batch evidence` for that run first"
    )
    if not table_exists(spark, resolve(cfg, C.CANDIDATE_EVIDENCE.name)):
        raise missing
    evidence = read_input(spark, cfg, C.CANDIDATE_EVIDENCE).where(F.col(C.RUN_ID) == run_id)
    if evidence.limit(1).count() == 0:
        raise missing
    return evidence.select(C.USER_ID, C.ITEM_ID, *C.EVIDENCE_COLUMNS, *C.EVIDENCE_NOTE_COLUMNS)
