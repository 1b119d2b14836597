"""`bench evidence`: the evidence job on synthetic tables of a given size.

Same synthetic tables as `bench prompts` (generated in Spark, not timed: titles of three of 12 common
words and a year), whose items also carry two categories each so the category affinities are
computed; titles and categories give the text similarities their words. The job computes the
evidence of all users × candidates from the interactions slice by slice and writes
`candidate_evidence`, as a night does. Prints seconds, users/s, rows and the peak RSS. The sequential
model (SASRec trained on the driver, a GPU's job at this scale) is left out unless asked for.
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
from instructrec_batch.stages.evidence import evidence_job


@dataclass(frozen=True)
class EvidenceBench:
    users: int
    items: int
    interactions_per_user: int
    candidates_per_user: int
    window: int
    history: int
    pairs_per_slice: int
    sequential: bool
    seconds: float
    users_per_s: float
    rows: int
    peak_rss_mb: float


def bench_evidence(
    spark: SparkSession, cfg: Config, *, users: int, items: int, per_user: int, cands: int
) -> EvidenceBench:
    synthetic_tables(spark, cfg, users, items, per_user, cands, categories=True)
    with peak_rss() as memory:
        start = time.perf_counter()
        counts = run_stage(evidence_job, spark, cfg)
        seconds = time.perf_counter() - start
    return EvidenceBench(
        users,
        items,
        per_user,
        cands,
        cfg.evidence.window,
        cfg.evidence.history,
        cfg.evidence.pairs_per_slice,
        cfg.evidence.sequential,
        round(seconds, 2),
        round(users / seconds, 1),
        counts.candidates,
        round(memory.peak_mb, 1),
    )
