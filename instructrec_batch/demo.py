"""The whole nightly pipeline on one engine: data → prompts → train → score → evaluate.

`make demo` calls this through `instructrec-batch demo` with conf/demo.yaml (a CPU budget and a
seeded user sample); each stage is the same library function its own subcommand runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from instructrec_batch.bench.memory import peak_rss
from instructrec_batch.config import Config
from instructrec_batch.models.base import KNOWN_MODELS, pull
from instructrec_batch.spark.engine import spark_session

T = TypeVar("T")


@dataclass(frozen=True)
class DemoResult:
    tables: Path
    adapter: str
    report: Path
    chart: Path
    table: str
    seconds: float

    def __str__(self) -> str:
        return "\n".join(
            [
                "",
                self.table,
                "",
                f"demo finished in {self.seconds / 60:.1f} min",
                f"output tables (Delta): {self.tables}  (recommendations, metrics, prompts, rejects, runs)",
                f"adapter:               {self.adapter}",
                f"report:                {self.report}",
                f"chart:                 {self.chart}",
            ]
        )


def run_demo(cfg: Config, say: Callable[[str], None] = print) -> DemoResult:
    """Run every stage in order on one session, announcing each with its elapsed time."""
    from instructrec_batch.data.job import movielens_job
    from instructrec_batch.evaluation.job import evaluate_job
    from instructrec_batch.prompts.job import prompts_job
    from instructrec_batch.scoring.job import score_job
    from instructrec_batch.training.job import train_job

    started = time.monotonic()
    stages = 6

    def stage(number: int, name: str, run: Callable[[], T], describe: Callable[[T], object] = str) -> T:
        say(f"[{number}/{stages}] {name} ...")
        t0 = time.monotonic()
        with peak_rss() as memory:
            result = run()
        took, peak_gb = time.monotonic() - t0, memory.peak_mb / 1024
        say(f"[{number}/{stages}] {name} done in {took:.0f} s, peak RSS {peak_gb:.2f} GB: {describe(result)}")
        return result

    if cfg.model.base in KNOWN_MODELS:
        stage(1, f"base model {cfg.model.base}", lambda: pull(cfg.model.base, cfg.cache_path, cfg.model.dtype).path)
    else:
        say(f"[1/{stages}] base model: using the folder {cfg.model.base}")
    with spark_session(cfg.engine) as spark:
        stage(2, "MovieLens-100K tables and evaluation protocol", lambda: movielens_job(spark, cfg))
        stage(3, "prompts", lambda: prompts_job(spark, cfg))
        trained = stage(4, "LoRA training", lambda: train_job(spark, cfg))
        if trained.stopped == "time_budget":
            say(
                f"WARNING: training was cut by its wall-clock safety limit after {trained.steps} of "
                f"{cfg.train.max_steps} steps (train.max_minutes={cfg.train.max_minutes}); the adapter is "
                "undertrained and the figures below understate the model"
            )
        adapter = trained.adapter
        tuned = cfg.model_copy(
            update={
                "score": cfg.score.model_copy(update={"adapter": adapter}),
            }
        )
        stage(5, "scoring (top-k per user)", lambda: score_job(spark, tuned))
        evaluation = stage(
            6, "evaluation against baselines", lambda: evaluate_job(spark, tuned), lambda r: f"run {r.run_id}"
        )
    return DemoResult(
        tables=Path(cfg.tables_root).resolve(),
        adapter=adapter,
        report=evaluation.report.markdown.resolve(),
        chart=evaluation.report.chart.resolve(),
        table=evaluation.table(),
        seconds=time.monotonic() - started,
    )
