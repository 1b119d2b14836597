"""`bench protocol`: the benchmark protocol (`data protocol`) on synthetic tables of a given size.

Same synthetic interactions and items as `bench prompts` (generated in Spark, not timed). The job
splits each user's last two interactions off and draws every test user's negatives, as on a real
table, and writes `holdout` and `candidates`. Prints seconds, users/s and the peak RSS of the process
tree (the engine included): the figures that say whether the protocol scales with users, not with
users × items.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pyspark.sql import SparkSession

from instructrec_batch.bench.figures import report as report  # the bench command prints with it
from instructrec_batch.bench.prompts import synthetic_tables
from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.memory import peak_rss
from instructrec_batch.stages.data import protocol_job


@dataclass(frozen=True)
class ProtocolBench:
    users: int
    items: int
    interactions_per_user: int
    negatives: int
    seconds: float
    users_per_s: float
    candidate_rows: int
    peak_rss_mb: float


def bench_protocol(spark: SparkSession, cfg: Config, *, users: int, items: int, per_user: int) -> ProtocolBench:
    synthetic_tables(spark, cfg, users, items, per_user, cands=0)
    with peak_rss() as memory:
        start = time.perf_counter()
        counts = run_stage(protocol_job, spark, cfg)
        seconds = time.perf_counter() - start
    return ProtocolBench(
        users,
        items,
        per_user,
        cfg.data.negatives,
        round(seconds, 2),
        round(users / seconds, 1),
        counts.candidate_rows,
        round(memory.peak_mb, 1),
    )
