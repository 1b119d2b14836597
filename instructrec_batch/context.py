"""The job context: what every stage job gets, built once per job from the configuration.

A stage job is `job(ctx, **sections)`: `ctx` carries the session, the table catalog, the run's
identity and lineage, and the adapter resolved once; the keyword parameters name the configuration
sections the job reads (`evidence: EvidenceConfig`, `prompt: PromptConfig`, ...), and `run_stage`
passes exactly those. So a job's signature says what it depends on, no library function needs the
whole Config, and the preamble every job used to repeat (the output-format check, the run identity,
the recorded run, staging, explaining undecodable inputs) lives here once.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import Config, RunIdentity, TableCatalog, run_identity
from instructrec_batch.spark.input_errors import explaining_undecodable_inputs
from instructrec_batch.spark.runs import RunRecord, recorded_run
from instructrec_batch.spark.tables import Staging, check_output_format, read_input
from instructrec_batch.tracking import ResolvedAdapter, resolve_adapter

R = TypeVar("R")


@dataclass
class JobContext:
    """The session, tables, run identity and lineage of one job, and the adapter it scores with."""

    spark: SparkSession
    tables: TableCatalog
    identity: RunIdentity
    config_hash: str  # Config.fingerprint(), recorded in `runs`
    engine: str  # engine.kind, recorded in `runs`
    adapter_ref: str | None = None  # score.adapter: a folder, models:/... or runs:/...
    resolver: Callable[[str], ResolvedAdapter] | None = None  # how a reference becomes a local folder
    resolved: ResolvedAdapter | None = None  # the adapter once resolved (or handed over by the pipeline)

    @property
    def run_id(self) -> str:
        return self.identity.run_id

    @property
    def adapter(self) -> ResolvedAdapter | None:
        """score.adapter as a local folder, resolved on first use (a registry reference is downloaded then,
        once per context), or None when no adapter is configured."""
        if self.resolved is None and self.adapter_ref and self.resolver is not None:
            self.resolved = self.resolver(self.adapter_ref)
        return self.resolved

    @contextmanager
    def recorded(self, job: str) -> Iterator[tuple[RunRecord, Staging]]:
        """The job's `runs` row ('running', then 'succeeded' or 'failed') around its writes, and a staging
        area of its own, removed when the block ends."""
        record = RunRecord(job, self.identity, self.config_hash, self.engine)
        with (
            recorded_run(self.spark, self.tables, record) as run,
            Staging(self.tables, f"{job}-{self.run_id}") as staging,
        ):
            yield run, staging

    def written(self, contract: C.TableContract) -> DataFrame:
        """This run's rows of an output table, read back (what the job's counts report)."""
        return read_input(self.spark, self.tables, contract).where(F.col(C.RUN_ID) == self.run_id)


def job_context(spark: SparkSession, cfg: Config, adapter: ResolvedAdapter | None = None) -> JobContext:
    """The context of one job; fails before any read when the engine cannot write the table format.

    `adapter`: score.adapter already resolved (the pipeline resolves it once for the score and evaluate
    jobs); otherwise the context resolves it when a job first asks for it.
    """
    tables = cfg.catalog
    check_output_format(spark, tables)
    return JobContext(
        spark,
        tables,
        run_identity(cfg),
        cfg.fingerprint(),
        cfg.engine.kind,
        adapter_ref=cfg.score.adapter,
        resolver=functools.partial(resolve_adapter, cfg.mlflow, cfg.workdir),
        resolved=adapter,
    )


def sections(job: Callable[..., Any], cfg: Config) -> dict[str, Any]:
    """The configuration sections `job` names as keyword parameters, read off the Config by name."""
    names = [name for name in inspect.signature(job).parameters if name != "ctx"]
    unknown = [name for name in names if not hasattr(cfg, name)]
    if unknown:
        raise TypeError(f"{job.__qualname__} asks for {', '.join(unknown)}, which are not configuration sections")
    return {name: getattr(cfg, name) for name in names}


def run_stage(job: Callable[..., R], spark: SparkSession, cfg: Config, *, adapter: ResolvedAdapter | None = None) -> R:
    """Run a stage job with its context and its sections; an input the engine cannot decode is named."""
    ctx = job_context(spark, cfg, adapter)
    with explaining_undecodable_inputs(spark, ctx.tables):
        return job(ctx, **sections(job, cfg))


def stage_runner(job: Callable[..., R]) -> Callable[[SparkSession, Config], R]:
    """`job` as a function of (spark, cfg), for the CLI's and the pipeline's tables of stages."""
    return functools.partial(run_stage, job)
