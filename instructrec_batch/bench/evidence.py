"""`bench evidence`: the collaborative evidence of every candidate on synthetic tables, timed alone.

Same synthetic tables as `bench prompts` (generated in Spark, not timed). The evidence of all
users × candidates is computed from the interactions and staged slice by slice (so the work is
really done), as the prompts job does. Prints seconds, users/s and the peak RSS.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from pyspark.sql import SparkSession

from instructrec_batch import contracts as C
from instructrec_batch.bench.memory import peak_rss
from instructrec_batch.bench.prompts import synthetic_tables
from instructrec_batch.config import Config
from instructrec_batch.evidence.features import evidence_interactions
from instructrec_batch.evidence.staged import staged_evidence
from instructrec_batch.spark.tables import Staging, read_input


@dataclass(frozen=True)
class EvidenceBench:
    users: int
    items: int
    interactions_per_user: int
    candidates_per_user: int
    window: int
    history: int
    pairs_per_slice: int
    seconds: float
    users_per_s: float
    rows: int
    peak_rss_mb: float


def bench_evidence(
    spark: SparkSession, cfg: Config, *, users: int, items: int, per_user: int, cands: int
) -> EvidenceBench:
    synthetic_tables(spark, cfg, users, items, per_user, cands)
    interactions = read_input(spark, cfg, C.INTERACTIONS)
    candidates = read_input(spark, cfg, C.CANDIDATES)
    with Staging(cfg, "bench-evidence") as staging, peak_rss() as memory:
        start = time.perf_counter()
        evidence = staged_evidence(
            spark, cfg, evidence_interactions(interactions, None), candidates, staging, "evidence"
        )
        seconds = time.perf_counter() - start
        rows = evidence.count()
    return EvidenceBench(
        users,
        items,
        per_user,
        cands,
        cfg.evidence.window,
        cfg.evidence.history,
        cfg.evidence.pairs_per_slice,
        round(seconds, 2),
        round(users / seconds, 1),
        rows,
        round(memory.peak_mb, 1),
    )


def report(result: EvidenceBench, as_json: bool) -> str:
    if as_json:
        return json.dumps(asdict(result))
    return "\n".join(f"{key:>22}: {value}" for key, value in asdict(result).items())
