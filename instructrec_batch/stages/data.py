"""Data jobs: load MovieLens-100K into Delta tables, and derive the evaluation protocol tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import DataConfig
from instructrec_batch.context import JobContext
from instructrec_batch.data import movielens
from instructrec_batch.data.protocol import holdout_split, sample_candidates, shown_items, usable_interactions
from instructrec_batch.spark.rejects import reject_rows
from instructrec_batch.spark.tables import read_input, resolve, write_run_scoped, write_table

log = logging.getLogger(__name__)

_INTERACTIONS_SCHEMA = f"{C.USER_ID} BIGINT, {C.ITEM_ID} BIGINT, {C.EVENT_TS} TIMESTAMP, {C.RATING} DOUBLE"
_ITEMS_SCHEMA = f"{C.ITEM_ID} BIGINT, {C.TITLE} STRING, {C.CATEGORY} STRING"
STAGE = "protocol"


@dataclass(frozen=True)
class ProtocolCounts:
    users: int
    holdout_rows: int
    candidate_rows: int
    rejected_interactions: int


def protocol_job(ctx: JobContext, data: DataConfig) -> ProtocolCounts:
    """Write `holdout` (test/valid rows per user) and `candidates` (target + sampled negatives).

    Both inputs are validated before anything is written. Interaction rows with a null key or an
    item no prompt can show are left out and written to `rejects` (stage 'protocol') with a reason.
    `holdout` is what later jobs use to keep test and validation items out of training data and out
    of scoring histories.
    """
    spark, tables = ctx.spark, ctx.tables
    interactions = read_input(spark, tables, C.INTERACTIONS, nonempty=True)
    items = read_input(spark, tables, C.ITEMS, nonempty=True)
    usable, rejected = usable_interactions(interactions, items)
    holdout_ref, candidates_ref = resolve(tables, "holdout"), resolve(tables, "candidates")
    with ctx.recorded(STAGE) as (run, _):
        write_table(holdout_split(usable), tables, holdout_ref)
        holdout = read_input(spark, tables, C.HOLDOUT)
        candidates = sample_candidates(usable, shown_items(items), holdout, seed=data.seed, negatives=data.negatives)
        write_table(candidates, tables, candidates_ref)
        rejects = reject_rows(rejected, ctx.run_id, STAGE, "interactions", F.col("reason"))
        write_run_scoped(rejects, tables, resolve(tables, "rejects"), {C.RUN_ID: ctx.run_id, "stage": STAGE})
        counts = ProtocolCounts(
            users=holdout.where(f"{C.SPLIT} = '{C.SPLIT_TEST}'").count(),
            holdout_rows=holdout.count(),
            candidate_rows=read_input(spark, tables, C.CANDIDATES).count(),
            rejected_interactions=rejected.count(),
        )
        run.add(
            {
                "users": counts.users,
                "candidates": counts.candidate_rows,
                "rejects": counts.rejected_interactions,
                "holdout_rows": counts.holdout_rows,
            }
        )
    log.info("protocol: %s", counts)
    return counts


def movielens_job(ctx: JobContext, data: DataConfig, cache_path: Path) -> ProtocolCounts:
    """Fetch MovieLens-100K (cached under `cache_path`), write `interactions` and `items`, then the protocol
    tables."""
    spark, tables = ctx.spark, ctx.tables
    files = movielens.fetch(cache_path / "movielens")
    interactions = movielens.parse_interactions(files.inter)
    items = movielens.parse_items(files.item)
    log.info(
        "MovieLens-100K: %d interactions, %d users, %d items",
        len(interactions),
        interactions[C.USER_ID].nunique(),
        len(items),
    )
    write_table(spark.createDataFrame(interactions, _INTERACTIONS_SCHEMA), tables, resolve(tables, "interactions"))
    write_table(spark.createDataFrame(items, _ITEMS_SCHEMA), tables, resolve(tables, "items"))
    return protocol_job(ctx, data)
