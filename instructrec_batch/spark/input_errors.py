"""Engine read failures of input tables, turned into errors that name the table and the column.

Some input problems only surface when an engine decodes the data: Sail (arrow-rs) refuses a Parquet
or Delta file whose STRING column holds bytes that are not UTF-8, wherever the job first touches it
and without saying which table. Jobs are wrapped so that such a failure is diagnosed after the fact
(only then are the input tables probed, one text column at a time) and re-raised as a ContractError
naming the table, the column and the fix. Outputs are published from staging, so nothing was written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import TableCatalog
from instructrec_batch.errors import ContractError
from instructrec_batch.spark.tables import read_table, resolve, table_exists

INPUTS = (C.INTERACTIONS, C.ITEMS, C.CANDIDATES, C.INTENTS, C.HOLDOUT)
_TEXT_FAILURES = ("non utf-8", "invalid utf-8", "not valid utf-8")


def is_text_decoding_failure(exc: BaseException) -> bool:
    """Whether an engine error says it met bytes that are not UTF-8."""
    return any(marker in str(exc).lower() for marker in _TEXT_FAILURES)


def undecodable_text(spark: SparkSession, tables: TableCatalog) -> ContractError | None:
    """The first input table and STRING column the engine cannot decode, as a ContractError."""
    for contract in INPUTS:
        ref = resolve(tables, contract.name)
        if not table_exists(spark, ref):
            continue
        df = read_table(spark, tables, ref)
        wanted = set(contract.required) | set(contract.optional)
        for field in df.schema.fields:
            if field.name not in wanted or field.dataType.simpleString() != "string":
                continue
            try:
                df.select(F.max(F.length(field.name))).collect()
            except Exception as exc:
                if not is_text_decoding_failure(exc):
                    raise
                detail = str(exc).strip().splitlines()[0][:200]
                return ContractError(
                    f"{ref} column '{field.name}' holds bytes that are not valid UTF-8 and this engine cannot "
                    f"read it ({detail}); nothing was written. Rewrite the column as UTF-8 upstream (e.g. decode "
                    "with errors='replace'); on classic Spark such rows go to rejects as invalid_utf8 instead"
                )
    return None


@contextmanager
def explaining_undecodable_inputs(spark: SparkSession, tables: TableCatalog) -> Iterator[None]:
    """Around a job: a text-decoding failure is re-raised as the ContractError naming its table and column."""
    try:
        yield
    except ContractError:
        raise
    except Exception as exc:
        if not is_text_decoding_failure(exc):
            raise
        explained = undecodable_text(spark, tables)
        if explained is None:
            raise
        raise explained from exc
