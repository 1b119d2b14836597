"""Table I/O: resolve a configured table name, read it against its contract, write outputs.

A configured table is a catalog name (`catalog.schema.table` / `schema.table`), a path (anything
with '/' or '://'), or a bare name placed under the tables root. Inputs are checked against their
`TableContract` before any job logic runs, so a missing table or a missing/mistyped column fails
with the table, the column, the expected and the found type, and nothing has been written.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from instructrec_batch.config import TableCatalog
from instructrec_batch.contracts import SOURCE_JOB, TableContract
from instructrec_batch.errors import ConcurrentWriteError, ConfigError, ContractError, EngineError
from instructrec_batch.paths import is_catalog_schema, table_location
from instructrec_batch.spark.conflicts import is_commit_race
from instructrec_batch.spark.engine import is_connect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableRef:
    """Where one logical table lives."""

    logical: str  # the contract/config name, e.g. "interactions"
    location: str  # a path or a catalog name
    is_catalog: bool

    def __str__(self) -> str:
        kind = "catalog table" if self.is_catalog else "path"
        return f"table '{self.logical}' ({kind} {self.location})"


def resolve(tables: TableCatalog, logical: str) -> TableRef:
    """Turn `tables.<logical>` from the config into a TableRef."""
    location, is_catalog = table_location(tables.configured(logical), tables.root)
    return TableRef(logical, location, is_catalog)


def catalog_schema(tables: TableCatalog) -> bool:
    """Whether tables.root is a `catalog.schema` name rather than a folder."""
    return is_catalog_schema(tables.settings.root)


def _local_path(location: str) -> Path | None:
    if location.startswith("file://"):
        return Path(location[len("file://") :])
    return None if "://" in location else Path(location)


def _path_format(location: str, default: str) -> str:
    local = _local_path(location)
    if local is not None and (local / "_delta_log").is_dir():
        return "delta"
    return default


def table_exists(spark: SparkSession, ref: TableRef) -> bool:
    """True when the table can be read (a catalog table, or a folder holding a table)."""
    if ref.is_catalog:
        return bool(spark.catalog.tableExists(ref.location))
    local = _local_path(ref.location)
    if local is not None:
        return local.is_dir() and any(local.iterdir())
    try:  # remote storage: ask Spark
        spark.read.format("delta").load(ref.location).schema  # noqa: B018 - forces analysis
    except AnalysisException:
        return False
    return True


def read_table(spark: SparkSession, tables: TableCatalog, ref: TableRef) -> DataFrame:
    """Read a table as-is (no contract), failing with a clear message when it is absent."""
    hint = f"create it first or point tables.{ref.logical} at an existing table"
    if not table_exists(spark, ref):
        raise ContractError(f"{ref} does not exist; {hint}")
    try:
        if ref.is_catalog:
            df = spark.read.table(ref.location)
        else:
            df = spark.read.format(_path_format(ref.location, tables.format)).load(ref.location)
        df.schema  # noqa: B018 - resolve now so unreadable tables fail here, not mid-job
    except AnalysisException as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ContractError(f"{ref} cannot be read ({reason}); {hint}") from exc
    return df


def existing_columns(spark: SparkSession, tables: TableCatalog, ref: TableRef) -> list[str] | None:
    """The columns of output table `ref` when it already exists, else None. A Delta table's columns must
    match on every write and the embedded engine cannot add any, so a job that writes a column an older
    table lacks checks this before writing anything."""
    return read_table(spark, tables, ref).columns if table_exists(spark, ref) else None


def check_replaceable(spark: SparkSession, tables: TableCatalog, refs: Sequence[TableRef], job: str) -> None:
    """Refuse, before anything is written, to replace a table this project's data jobs did not write.

    A data job (a dataset loader, the benchmark protocol) replaces its tables on every run and stamps
    them (`stamped`). The same table names may point at a team's own tables: its interactions, its
    retriever's candidate lists. An existing table without the SOURCE_JOB column is one of those, and
    replacing it would destroy data nobody can regenerate, so the job stops and names it.
    """
    for ref in refs:
        columns = existing_columns(spark, tables, ref)
        if columns is not None and SOURCE_JOB not in columns:
            raise ContractError(
                f"{ref} exists and was not written by `instructrec-batch {job}` (it has no {SOURCE_JOB} column): it "
                f"is your own table, which this job would replace. Point tables.{ref.logical} at another table for "
                f"the job's output (e.g. --set tables.{ref.logical}=benchmark_{ref.logical}) or move it aside; "
                "nothing was written"
            )


def stamped(df: DataFrame, job: str) -> DataFrame:
    """`df` with the SOURCE_JOB column that marks a table as written by data job `job` (`check_replaceable`)."""
    return df.withColumn(SOURCE_JOB, F.lit(job))


def check_contract(df: DataFrame, contract: TableContract, ref: TableRef) -> None:
    """Raise ContractError naming the table, column, expected and found type on the first violations."""
    found = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    problems = []
    for column, allowed in contract.required.items():
        if column not in found:
            problems.append(
                f"missing required column '{column}' (expected {' or '.join(sorted(allowed))}); "
                f"found columns: {', '.join(sorted(found)) or 'none'}"
            )
        elif found[column] not in allowed:
            problems.append(f"column '{column}' has type {found[column]}, expected {' or '.join(sorted(allowed))}")
    for column, allowed in contract.optional.items():
        if column in found and found[column] not in allowed:
            problems.append(
                f"optional column '{column}' has type {found[column]}, expected {' or '.join(sorted(allowed))} "
                "(cast it or drop it)"
            )
    if problems:
        raise ContractError(f"{ref}: " + "; ".join(problems))


def read_input(
    spark: SparkSession, tables: TableCatalog, contract: TableContract, *, nonempty: bool = False
) -> DataFrame:
    """Read the configured table for `contract`, validate it, keep only the contract's columns.

    `nonempty`: an empty table is an error too (for inputs a job cannot do without, where no rows
    means an upstream export failed rather than a quiet night).
    """
    ref = resolve(tables, contract.name)
    df = read_table(spark, tables, ref)
    check_contract(df, contract, ref)
    if nonempty and df.limit(1).count() == 0:
        raise ContractError(
            f"{ref} has no rows; check the job that produces it, or point tables.{ref.logical} elsewhere"
        )
    return df.select(*contract.columns(set(df.columns)))


def read_optional(spark: SparkSession, tables: TableCatalog, contract: TableContract) -> DataFrame | None:
    """An optional input table (intents, holdout) read against its contract, or None when it does not exist."""
    return read_input(spark, tables, contract) if table_exists(spark, resolve(tables, contract.name)) else None


def check_key_types(tables: dict[str, DataFrame | None], keys: tuple[str, ...]) -> None:
    """Join keys must have one type across tables (a BIGINT user_id never equals a STRING one); absent
    optional tables (None) are skipped."""
    present = {name: df for name, df in tables.items() if df is not None}
    for key in keys:
        types = {name: df.schema[key].dataType.simpleString() for name, df in present.items() if key in df.columns}
        if len(set(types.values())) > 1:
            listing = ", ".join(f"{name}.{key} is {t}" for name, t in types.items())
            raise ContractError(
                f"join key '{key}' has different types across tables ({listing}); cast them to one type"
            )


def check_output_format(spark: SparkSession, tables: TableCatalog) -> None:
    """Fail before any write when the engine cannot write the configured format.

    Classic Spark writes Delta only with the Delta jars and extension (Databricks runtime, or
    `--packages io.delta:delta-spark_2.13:<ver>`); without them use tables.format=parquet.
    """
    if tables.format != "delta" or is_connect(spark):
        return
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    on_databricks = "DATABRICKS_RUNTIME_VERSION" in os.environ
    if "DeltaSparkSessionExtension" not in extensions and not on_databricks:
        raise EngineError(
            "tables.format=delta but this classic Spark session has no Delta Lake extension; start it with "
            "--packages io.delta:delta-spark_2.13:<version> --conf spark.sql.extensions="
            "io.delta.sql.DeltaSparkSessionExtension --conf spark.sql.catalog.spark_catalog="
            "org.apache.spark.sql.delta.catalog.DeltaCatalog, or set tables.format=parquet"
        )


COMMIT_ATTEMPTS = 4


def _save_committed(ref: TableRef, save: Callable[[], None]) -> None:
    """Run one write; if its Delta commit lost a race with another run's (`is_commit_race`), retry it from
    scratch.

    A failed commit wrote nothing (Delta commits are atomic), and every write here replaces only its
    own run's rows, so re-running it against the newer table version is safe. After the last attempt
    the error says what happened and what to do.
    """
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            save()
            return
        except Exception as exc:
            if not is_commit_race(exc):
                raise
            if attempt == COMMIT_ATTEMPTS:
                raise ConcurrentWriteError(
                    f"{ref}: another job kept committing to this table at the same time ({COMMIT_ATTEMPTS} "
                    f"attempts, last: {str(exc).splitlines()[0]}); nothing of this run was written: rerun the job, "
                    "which replaces its own run exactly"
                ) from exc
            log.warning("%s: commit lost a race with another writer (attempt %d), retrying", ref, attempt)
            time.sleep(0.2 * 2**attempt + random.random() * 0.2)


def write_table(
    df: DataFrame,
    tables: TableCatalog,
    ref: TableRef,
    *,
    mode: str = "overwrite",
    partition_by: list[str] | None = None,
) -> None:
    """Write `df` as one commit to `ref` in the configured format (Delta by default)."""
    writer = df.write.format(tables.format).mode(mode)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if mode == "overwrite" and tables.format == "delta":
        writer = writer.option("overwriteSchema", "true")
    if ref.is_catalog:
        _save_committed(ref, lambda: writer.saveAsTable(ref.location))
    else:
        _save_committed(ref, lambda: writer.save(ref.location))


def write_run_scoped(
    df: DataFrame,
    tables: TableCatalog,
    ref: TableRef,
    keys: dict[str, str],
    *,
    partition_by: list[str] | None = None,
) -> None:
    """Replace exactly the rows whose `keys` equal the given values, in one commit; keep all others.

    Delta: overwrite with `replaceWhere`. Every row of `df` must carry those key values (Sail does
    not check this, Delta-Spark does), which callers guarantee by construction. A table that does not
    exist yet is created by a plain write (Sail cannot replaceWhere into a missing table). Parquet
    (classic Spark without Delta): the keys become partition columns, overwritten dynamically.
    """
    spark = df.sparkSession
    if not table_exists(spark, ref):
        write_table(df, tables, ref, partition_by=partition_by if tables.format == "delta" else list(keys))
        return
    if tables.format == "parquet":
        writer = df.write.format("parquet").mode("overwrite").option("partitionOverwriteMode", "dynamic")
        writer = writer.partitionBy(*keys)
    else:
        predicate = " AND ".join(f"{column} = '{value}'" for column, value in keys.items())
        writer = df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
    if ref.is_catalog:
        _save_committed(ref, lambda: writer.saveAsTable(ref.location))
    else:
        _save_committed(ref, lambda: writer.save(ref.location))


def delta_version(ref: TableRef) -> int | None:
    """The current Delta version of a local path table (lineage for manifests); None when unknown."""
    local = None if ref.is_catalog else _local_path(ref.location)
    if local is None or not (local / "_delta_log").is_dir():
        return None
    import deltalake

    return int(deltalake.DeltaTable(str(local)).version())


class Staging:
    """Scratch tables of one job run under tables.staging (default <tables root>/_staging/<name>).

    Used where a job must write in several steps but publish in one commit: steps go to staging,
    the published table is written from staging once. Removed when the job leaves the block, also
    on failure (local paths; remote scratch is left to the storage's lifecycle rules).
    """

    def __init__(self, tables: TableCatalog, name: str) -> None:
        if tables.settings.staging is None and catalog_schema(tables):
            raise ConfigError(
                f"tables.root is the schema '{tables.settings.root}', so staging has no default folder: set "
                "tables.staging to a folder every executor can reach (e.g. /Volumes/<catalog>/<schema>/staging)"
            )
        self.tables = tables
        self.root = f"{tables.settings.staging or tables.root + '/_staging'}/{name}"

    def ref(self, table: str) -> TableRef:
        return TableRef(f"staging {table}", f"{self.root}/{table}", is_catalog=False)

    def read(self, spark: SparkSession, table: str) -> DataFrame:
        return read_table(spark, self.tables, self.ref(table))

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        local = _local_path(self.root)
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
