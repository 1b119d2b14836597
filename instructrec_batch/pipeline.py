"""The whole nightly flow on one engine: [protocol] → evidence → prompts → train → score → [evaluate].

`instructrec-batch pipeline --config my.yaml` runs it on the configured tables; `instructrec-batch
demo` (and `make demo`, with conf/demo.yaml: a CPU budget and a seeded user sample) is the same flow
on MovieLens-100K, whose first stage downloads the data and writes the protocol tables. Each stage is
the library function its own subcommand runs, on one session and under one run_id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pyspark.sql import SparkSession

from instructrec_batch.config import Config, pin_run
from instructrec_batch.context import run_stage
from instructrec_batch.memory import peak_rss
from instructrec_batch.models.base import KNOWN_MODELS, pull
from instructrec_batch.spark.engine import spark_session
from instructrec_batch.tracking import TrainingRecord, resolve_adapter

T = TypeVar("T")

# A first stage that writes the input and protocol tables: (label, a stage job run by `run_stage`).
DataStage = tuple[str, Callable[..., object]]


@dataclass(frozen=True)
class PipelineResult:
    name: str
    tables: Path
    adapter: str
    report: Path | None  # None without a holdout: nothing to evaluate
    chart: Path | None
    table: str
    seconds: float
    mlflow: str | None = None  # where the run, model version and alias are, when MLflow is on

    def __str__(self) -> str:
        lines = ["", self.table, ""] if self.table else [""]
        lines += [
            f"{self.name} finished in {self.seconds / 60:.1f} min",
            f"output tables (Delta): {self.tables}  (recommendations, metrics, prompts, candidate_evidence, "
            "sequence_vectors, rejects, runs)",
            f"adapter:               {self.adapter}",
        ]
        if self.report is not None:
            lines += [f"report:                {self.report}", f"chart:                 {self.chart}"]
        if self.mlflow:
            lines.append(f"mlflow:                {self.mlflow}")
        return "\n".join(lines)


def run_pipeline(
    cfg: Config,
    say: Callable[[str], None] = print,
    *,
    data: DataStage | None = None,
    holdout: bool = True,
    name: str = "pipeline",
    session: SparkSession | None = None,
) -> PipelineResult:
    """Run every stage in order on one session, announcing each with its time and peak RSS.

    `data` replaces the protocol stage (the demo's MovieLens download writes the protocol tables
    itself). Without `holdout` the protocol and evaluation stages are skipped and no holdout table is
    read: prompts are built for the configured candidates table from every interaction, training
    validates on what came after a cut-off (train.split=time), and the lists are scored, as on a
    production night. `session`: run on this Spark
    session instead of opening the configured engine's (a caller that already has one).
    """
    from instructrec_batch.stages.data import protocol_job
    from instructrec_batch.stages.evaluate import evaluate_job
    from instructrec_batch.stages.evidence import evidence_job
    from instructrec_batch.stages.prompts import prompts_job
    from instructrec_batch.stages.score import score_job
    from instructrec_batch.stages.train import train_job

    started = time.monotonic()
    first: DataStage | None = data or (("evaluation protocol (holdout, candidates)", protocol_job) if holdout else None)
    stages = 5 + (first is not None) + holdout
    counter = iter(range(1, stages + 1))

    def stage(label: str, run: Callable[[], T], describe: Callable[[T], object] = str) -> T:
        number = next(counter)
        say(f"[{number}/{stages}] {label} ...")
        t0 = time.monotonic()
        with peak_rss() as memory:
            result = run()
        took, peak_gb = time.monotonic() - t0, memory.peak_mb / 1024
        say(f"[{number}/{stages}] {label} done in {took:.0f} s, peak RSS {peak_gb:.2f} GB: {describe(result)}")
        return result

    if cfg.model.base in KNOWN_MODELS:
        stage(f"base model {cfg.model.base}", lambda: pull(cfg.model.base, cfg.cache_path, cfg.model.dtype).path)
    else:
        say(f"[{next(counter)}/{stages}] base model: using the folder {cfg.model.base}")
    if not holdout:  # a production night: no benchmark table cuts histories or feeds validation
        cfg = cfg.model_copy(
            update={
                "prompt": cfg.prompt.model_copy(update={"exclude_holdout": False}),
                "train": cfg.train.model_copy(update={"split": "time", "lists": "retriever"}),
            }
        )
    cfg = pin_run(cfg)  # every stage writes under one run_id, even across UTC midnight
    with nullcontext(session) if session is not None else spark_session(cfg.engine) as spark:
        if first is not None:
            label, job = first
            stage(label, lambda: run_stage(job, spark, cfg))
        stage("collaborative evidence", lambda: run_stage(evidence_job, spark, cfg))
        stage("prompts", lambda: run_stage(prompts_job, spark, cfg))
        trained = stage("LoRA training", lambda: run_stage(train_job, spark, cfg))
        if trained.stopped == "time_budget":
            say(
                f"WARNING: training was cut by its wall-clock safety limit after {trained.steps} of "
                f"{cfg.train.max_steps} steps (train.max_minutes={cfg.train.max_minutes}); the adapter is "
                "undertrained and the figures below understate the model"
            )
        # With MLflow on, score and evaluate use the registered version, as a scheduled job would: resolved
        # (downloaded) once here, for both.
        reference = trained.mlflow.model_uri if trained.mlflow else trained.adapter
        tuned = cfg.model_copy(update={"score": cfg.score.model_copy(update={"adapter": reference})})
        adapter = resolve_adapter(cfg.mlflow, cfg.workdir, reference)
        stage("scoring (top-k per user)", lambda: run_stage(score_job, spark, tuned, adapter=adapter))
        evaluation = None
        if holdout:
            evaluation = stage(
                "evaluation against baselines",
                lambda: run_stage(evaluate_job, spark, tuned, adapter=adapter),
                lambda r: f"run {r.run_id}",
            )
    return PipelineResult(
        name=name,
        tables=Path(cfg.tables_root).resolve(),
        adapter=trained.adapter,
        report=evaluation.report.markdown.resolve() if evaluation and evaluation.report else None,
        chart=evaluation.report.chart.resolve() if evaluation and evaluation.report else None,
        table=evaluation.table() if evaluation else "",
        seconds=time.monotonic() - started,
        mlflow=_mlflow_line(cfg, trained.mlflow) if trained.mlflow else None,
    )


def _mlflow_line(cfg: Config, record: TrainingRecord) -> str:
    from instructrec_batch.tracking import store_uri

    store = store_uri(cfg.mlflow, cfg.workdir)
    return (
        f"run {record.run_id} in {store}; registered {record.model_uri} with alias {cfg.mlflow.alias}: "
        f"instructrec-batch score --adapter {record.alias_uri}"
    )


def run_demo(cfg: Config, say: Callable[[str], None] = print) -> PipelineResult:
    """The pipeline on MovieLens-100K: its first stage fetches the data and writes the protocol tables."""
    from instructrec_batch.stages.data import movielens_job

    return run_pipeline(cfg, say, data=("MovieLens-100K tables and evaluation protocol", movielens_job), name="demo")


def run_redial(cfg: Config, say: Callable[[str], None] = print, session: SparkSession | None = None) -> PipelineResult:
    """The pipeline on ReDial (redial.source): its first stage reads the dialogues and writes the tables with
    ReDial's own split and lists, which the later stages keep (no protocol stage)."""
    from instructrec_batch.stages.data import redial_job

    stage = ("ReDial tables, split and candidate lists", redial_job)
    return run_pipeline(cfg, say, data=stage, name="redial", session=session)
