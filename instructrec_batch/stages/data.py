"""Data jobs: load MovieLens-100K into Delta tables, and derive the evaluation protocol tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import Config
from instructrec_batch.data import movielens
from instructrec_batch.data.protocol import holdout_split, sample_candidates, shown_items, usable_interactions
from instructrec_batch.spark.input_errors import explains_undecodable_inputs
from instructrec_batch.spark.rejects import reject_rows
from instructrec_batch.spark.runs import recorded_run, run_identity
from instructrec_batch.spark.tables import (
    check_output_format,
    read_input,
    resolve,
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


@explains_undecodable_inputs
def protocol_job(spark: SparkSession, cfg: Config) -> ProtocolCounts:
    """Write `holdout` (test/valid rows per user) and `candidates` (target + sampled negatives).

    Both inputs are validated before anything is written. Interaction rows with a null key or an
    item no prompt can show are left out and written to `rejects` (stage 'protocol') with a reason.
    `holdout` is what later jobs use to keep test and validation items out of training data and out
    of scoring histories.
    """
    check_output_format(spark, cfg)
    interactions = read_input(spark, cfg, C.INTERACTIONS, nonempty=True)
    items = read_input(spark, cfg, C.ITEMS, nonempty=True)
    identity = run_identity(cfg)
    usable, rejected = usable_interactions(interactions, items)
    holdout_ref, candidates_ref = resolve(cfg, "holdout"), resolve(cfg, "candidates")
    with recorded_run(spark, cfg, STAGE, identity) as run:
        write_table(holdout_split(usable), cfg, holdout_ref)
        holdout = read_input(spark, cfg, C.HOLDOUT)
        candidates = sample_candidates(
            usable, shown_items(items), holdout, seed=cfg.data.seed, negatives=cfg.data.negatives
        )
        write_table(candidates, cfg, candidates_ref)
        rejects = reject_rows(rejected, identity.run_id, STAGE, "interactions", F.col("reason"))
        write_run_scoped(rejects, cfg, resolve(cfg, "rejects"), {C.RUN_ID: identity.run_id, "stage": STAGE})
        counts = ProtocolCounts(
            users=holdout.where(f"{C.SPLIT} = '{C.SPLIT_TEST}'").count(),
            holdout_rows=holdout.count(),
            candidate_rows=read_input(spark, cfg, C.CANDIDATES).count(),
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


def movielens_job(spark: SparkSession, cfg: Config) -> ProtocolCounts:
    """Fetch MovieLens-100K (cached), write `interactions` and `items`, then the protocol tables."""
    check_output_format(spark, cfg)
    files = movielens.fetch(cfg.cache_path / "movielens")
    interactions = movielens.parse_interactions(files.inter)
    items = movielens.parse_items(files.item)
    log.info(
        "MovieLens-100K: %d interactions, %d users, %d items",
        len(interactions),
        interactions[C.USER_ID].nunique(),
        len(items),
    )
    write_table(spark.createDataFrame(interactions, _INTERACTIONS_SCHEMA), cfg, resolve(cfg, "interactions"))
    write_table(spark.createDataFrame(items, _ITEMS_SCHEMA), cfg, resolve(cfg, "items"))
    return protocol_job(spark, cfg)
