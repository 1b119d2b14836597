"""`bench prompts`: the prompts job on synthetic tables of a given size, on the configured engine.

Tables are generated inside Spark (range + hashes), so the driver never holds the data; generation
is not timed, nor is the evidence job that a template showing evidence needs first (`bench
evidence` times that one). Prints users/s, seconds and the peak RSS of the job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.bench.figures import report as report  # the bench command prints with it
from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.memory import peak_rss
from instructrec_batch.prompts.templates import load_templates
from instructrec_batch.spark.tables import resolve, write_table
from instructrec_batch.stages.evidence import evidence_job
from instructrec_batch.stages.prompts import prompts_job

_WORDS = ["Star", "Night", "Love", "War", "City", "King", "Dream", "Story", "Return", "Secret", "Last", "River"]


@dataclass(frozen=True)
class PromptsBench:
    users: int
    items: int
    interactions_per_user: int
    candidates_per_user: int
    seconds: float
    users_per_s: float
    peak_rss_mb: float
    users_emitted: int


def synthetic_tables(
    spark: SparkSession, cfg: Config, users: int, items: int, per_user: int, cands: int, categories: bool = False
) -> None:
    """interactions (users × per_user), items (titled from a word list; with `categories`, also a
    category column of two of 20 genres, "G3, G17"), candidates (users × cands; none when cands is 0)."""
    words = F.array(*[F.lit(w) for w in _WORDS])

    def word(seed: int) -> F.Column:
        return F.element_at(words, (F.pmod(F.xxhash64(F.col("id"), F.lit(seed)), F.lit(len(_WORDS))) + 1).cast("int"))

    item_df = spark.range(items).select(
        F.col("id").alias(C.ITEM_ID),
        F.concat_ws(
            " ", word(1), word(2), word(3), F.concat(F.lit("("), (F.col("id") % 60 + 1960).cast("string"), F.lit(")"))
        ).alias(C.TITLE),
    )
    if categories:
        genre = [F.concat(F.lit("G"), F.pmod(F.xxhash64(F.col(C.ITEM_ID), F.lit(s)), F.lit(20))) for s in (5, 7)]
        item_df = item_df.withColumn(C.CATEGORY, F.concat_ws(", ", *genre))
    inter_df = spark.range(users * per_user).select(
        (F.col("id") / per_user).cast("bigint").alias(C.USER_ID),
        F.pmod(F.xxhash64(F.col("id"), F.lit(11)), F.lit(items)).alias(C.ITEM_ID),
        F.timestamp_seconds(F.lit(1_600_000_000) + (F.col("id") % per_user) * 3600).alias(C.EVENT_TS),
    )
    cand_df = spark.range(users * cands).select(
        (F.col("id") / cands).cast("bigint").alias(C.USER_ID),
        F.pmod(F.xxhash64(F.col("id"), F.lit(13)), F.lit(items)).alias(C.ITEM_ID),
        (F.col("id") % cands + 1).cast("int").alias(C.RETRIEVAL_RANK),
    )
    write_table(item_df, cfg.catalog, resolve(cfg.catalog, "items"))
    write_table(inter_df, cfg.catalog, resolve(cfg.catalog, "interactions"))
    if cands:
        write_table(cand_df, cfg.catalog, resolve(cfg.catalog, "candidates"))


def bench_prompts(
    spark: SparkSession, cfg: Config, *, users: int, items: int, per_user: int, cands: int
) -> PromptsBench:
    synthetic_tables(spark, cfg, users, items, per_user, cands)
    template = load_templates(cfg.prompt.template_version).get(cfg.prompt.inference_template_id)
    if template.shows_evidence:
        run_stage(evidence_job, spark, cfg)
    with peak_rss() as memory:
        start = time.perf_counter()
        counts = run_stage(prompts_job, spark, cfg)
        seconds = time.perf_counter() - start
    return PromptsBench(
        users,
        items,
        per_user,
        cands,
        round(seconds, 2),
        round(users / seconds, 1),
        round(memory.peak_mb, 1),
        counts.users_emitted,
    )
