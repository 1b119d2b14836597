"""Data jobs: load MovieLens-100K or ReDial into Delta tables, and derive the evaluation protocol tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import DataConfig, RedialConfig
from instructrec_batch.context import JobContext
from instructrec_batch.data import movielens
from instructrec_batch.data.protocol import holdout_split, sample_candidates, shown_items, usable_interactions
from instructrec_batch.data.redial import read_redial
from instructrec_batch.errors import ConfigError
from instructrec_batch.spark.rejects import reject_rows
from instructrec_batch.spark.tables import (
    check_replaceable,
    read_input,
    resolve,
    stamped,
    write_run_scoped,
    write_table,
)

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
    check_replaceable(spark, tables, [holdout_ref, candidates_ref], "data protocol")
    with ctx.recorded(STAGE) as (run, _):
        write_table(stamped(holdout_split(usable), STAGE), tables, holdout_ref)
        holdout = read_input(spark, tables, C.HOLDOUT)
        candidates = sample_candidates(usable, shown_items(items), holdout, seed=data.seed, negatives=data.negatives)
        write_table(stamped(candidates, STAGE), tables, candidates_ref)
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
    """Fetch MovieLens-100K (cached under `cache_path`), write `interactions` and `items` (and genre
    `intents`), then the protocol tables."""
    spark, tables = ctx.spark, ctx.tables
    written = ["interactions", "items", *(["intents"] if data.genre_intents else []), "holdout", "candidates"]
    check_replaceable(spark, tables, [resolve(tables, name) for name in written], "data movielens")
    files = movielens.fetch(cache_path / "movielens")
    interactions = movielens.parse_interactions(files.inter)
    items = movielens.parse_items(files.item)
    log.info(
        "MovieLens-100K: %d interactions, %d users, %d items",
        len(interactions),
        interactions[C.USER_ID].nunique(),
        len(items),
    )
    for name, frame, schema in (("interactions", interactions, _INTERACTIONS_SCHEMA), ("items", items, _ITEMS_SCHEMA)):
        write_table(stamped(spark.createDataFrame(frame, schema), "movielens"), tables, resolve(tables, name))
    if data.genre_intents:
        intents = movielens.genre_intents(interactions, items)
        schema = f"{C.USER_ID} BIGINT, {C.INTENT} STRING, {C.INTENT_TS} TIMESTAMP"
        write_table(stamped(spark.createDataFrame(intents, schema), "movielens"), tables, resolve(tables, "intents"))
        log.info("MovieLens-100K: %d genre intents (the target's genres: a specific intention)", len(intents))
    return protocol_job(ctx, data)


_INTENTS_SCHEMA = f"{C.USER_ID} STRING, {C.INTENT} STRING, {C.INTENT_TS} BIGINT"


def redial_job(ctx: JobContext, data: DataConfig, redial: RedialConfig) -> ProtocolCounts:
    """ReDial's dialogues as tables (`data.redial` says how): interactions, items, intents, a holdout of each
    held-out dialogue's target turn (valid and test dialogues, split by data.seed) and `candidates`, each
    test dialogue's target among data.negatives seeded negatives the dialogue never named."""
    if not redial.source:
        raise ConfigError("data redial needs the folder of the ReDial files: --source DIR (redial.source)")
    read = read_redial(redial.source, seed=data.seed, shares=redial.shares, names_removed=redial.names_removed)
    log.info(
        "ReDial: %d dialogues (%s), %d film mentions, %d intents, %d films",
        len(read.splits),
        read.splits[C.SPLIT].value_counts().to_dict(),
        len(read.interactions),
        len(read.intents),
        len(read.items),
    )
    spark, tables = ctx.spark, ctx.tables
    frames = {
        "interactions": spark.createDataFrame(
            read.interactions, f"{C.USER_ID} STRING, {C.ITEM_ID} BIGINT, {C.EVENT_TS} BIGINT"
        ),
        "items": spark.createDataFrame(read.items, f"{C.ITEM_ID} BIGINT, {C.TITLE} STRING"),
        "intents": spark.createDataFrame(read.intents, _INTENTS_SCHEMA),
        "holdout": spark.createDataFrame(
            read.holdout, f"{C.USER_ID} STRING, {C.ITEM_ID} BIGINT, {C.EVENT_TS} BIGINT, {C.SPLIT} STRING"
        ),
    }
    check_replaceable(spark, tables, [resolve(tables, name) for name in [*frames, "candidates"]], "data redial")
    with ctx.recorded("redial") as (run, _):
        for name, frame in frames.items():
            write_table(stamped(frame, "redial"), tables, resolve(tables, name))
        interactions = read_input(spark, tables, C.INTERACTIONS)
        items = read_input(spark, tables, C.ITEMS)
        holdout = read_input(spark, tables, C.HOLDOUT)
        candidates = sample_candidates(interactions, items, holdout, seed=data.seed, negatives=data.negatives)
        write_table(stamped(candidates, "redial"), tables, resolve(tables, "candidates"))
        counts = ProtocolCounts(
            users=holdout.where(F.col(C.SPLIT) == C.SPLIT_TEST).count(),
            holdout_rows=holdout.count(),
            candidate_rows=read_input(spark, tables, C.CANDIDATES).count(),
            rejected_interactions=0,
        )
        run.add({"users": counts.users, "candidates": counts.candidate_rows, "holdout_rows": counts.holdout_rows})
    log.info("redial: %s", counts)
    return counts
