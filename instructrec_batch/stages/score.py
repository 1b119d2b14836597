"""The score job: prompts → scores on executors → top-k per user → `recommendations` (one commit)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import ModelConfig, PromptConfig, ScoreConfig
from instructrec_batch.context import JobContext
from instructrec_batch.errors import ConfigError
from instructrec_batch.evidence.replay import night_lists
from instructrec_batch.evidence.stored import read_run_evidence
from instructrec_batch.models.adapter import verify_adapter
from instructrec_batch.models.base import resolve_base
from instructrec_batch.ranking.fusion import ranks_by_retriever
from instructrec_batch.scoring.model import (
    fuse,
    model_pass_needed,
    prepare_model_scoring,
    read_run_prompts,
    score_candidates,
    unscored_candidates,
)
from instructrec_batch.scoring.progress import reporting
from instructrec_batch.spark import faults
from instructrec_batch.spark.databricks import set_task_value
from instructrec_batch.spark.tables import existing_columns, resolve, stamped, write_run_scoped, write_table

log = logging.getLogger(__name__)

STAGE = "score"
MODEL_PASS = "model_pass"  # the Databricks task value the plan job sets (the nightly's condition reads it)


@dataclass(frozen=True)
class ScorePlan:
    """What the night's score job will do with its adapter, decided before any cluster starts."""

    model_pass: bool
    reason: str

    def __str__(self) -> str:
        return f"{MODEL_PASS}={'true' if self.model_pass else 'false'}: {self.reason}"


def plan_job(ctx: JobContext, score: ScoreConfig) -> ScorePlan:
    """Whether tonight's scoring runs the model over its lists, and so needs a GPU cluster.

    Read from the adapter's fusion head alone (`model_pass_needed`, what the score job decides too):
    no prompts, no model. On Databricks the answer is also set as the task value `model_pass`, which the
    nightly workflow's condition task reads to run the GPU score task or the CPU one.
    """
    if ctx.adapter is None:
        raise ConfigError("plan needs the adapter the night scores with: --adapter REF (score.adapter)")
    head = verify_adapter(Path(ctx.adapter.folder)).fusion_head()
    needed = model_pass_needed(head, score)
    if head is None or not score.fusion:
        reason = "the lists rank by the model's score (no fusion head ranks)"
    elif needed:
        weight = head.weight(C.LM_SCORE)
        reason = (
            f"the fusion head weighs the model's score ({weight:.4g})"
            if weight
            else "score.skip_unused_model is off: the model runs although its score has no weight"
        )
    elif ranks_by_retriever(head):
        reason = (
            "the adapter ships the retriever's order (the floor: its head ranked the retriever's lists no better "
            "than their own order in training), no GPU"
        )
    else:
        reason = "the fusion head gives the model's score no weight: the lists rank by their evidence, no GPU"
    on_databricks = set_task_value(ctx.spark, MODEL_PASS, needed)
    log.info("plan: %s%s", reason, f" (task value {MODEL_PASS} set)" if on_databricks else "")
    return ScorePlan(needed, reason)


@dataclass(frozen=True)
class ScoreCounts:
    run_id: str
    users: int
    rows: int
    cold_start_users: int
    model_id: str


def _keep_lists(ctx: JobContext, prompts: DataFrame) -> bool:
    """Add the night's lists to candidates_history (this run_date's rows replaced): what a later training
    fits its rankers on (train.lists=retriever). A candidates_history the score job did not write (no
    source_job column: the team's own, from its retriever's logs) is left alone; False then."""
    ref = resolve(ctx.tables, C.CANDIDATES_HISTORY.name)
    columns = existing_columns(ctx.spark, ctx.tables, ref)
    if columns is not None and C.SOURCE_JOB not in columns:
        log.info("score: %s is your own table (no %s column): tonight's lists are not added to it", ref, C.SOURCE_JOB)
        return False
    rows = stamped(night_lists(prompts, ctx.identity.run_date, ctx.run_id), STAGE)
    write_run_scoped(rows, ctx.tables, ref, {"run_date": ctx.identity.run_date}, partition_by=["run_date"])
    return True


def top_k(scored: DataFrame, k: int) -> DataFrame:
    """Best k per user: score descending, then item_id ascending (deterministic ties)."""
    order = Window.partitionBy(C.USER_ID).orderBy(F.col("score").desc(), F.col(C.ITEM_ID).asc())
    return scored.withColumn("rank", F.row_number().over(order).cast("int")).where(F.col("rank") <= k)


def score_job(
    ctx: JobContext, score: ScoreConfig, prompt: PromptConfig, model: ModelConfig, cache_path: Path
) -> ScoreCounts:
    """Score the run's prompts and write top-k recommendations; reruns replace the run exactly.

    Everything that can be checked is checked on the driver before any task runs: the output format,
    the base model folder, the adapter's files, sha256 and base model, that prompts exist, and that
    the run's evidence covers every candidate when the adapter's fusion head ranks.
    """
    spark, tables, s = ctx.spark, ctx.tables, score
    scoring = prepare_model_scoring(spark, s, prompt, resolve_base(model, cache_path), ctx.adapter)
    model_id = scoring.lineage()
    prompts_run = s.prompts_run_id or ctx.run_id
    prompts, n_users = read_run_prompts(spark, tables, prompt, prompts_run)
    evidence = None
    model_pass = model_pass_needed(scoring.fusion_head, s)
    floor = s.fusion and ranks_by_retriever(scoring.fusion_head)
    if scoring.fusion_head is not None and s.fusion:
        head = "the adapter's fusion head (score.fusion=false ranks by the model alone)"
        listed = prompts.select(C.USER_ID, F.explode("candidate_ids").alias(C.ITEM_ID))
        evidence = read_run_evidence(spark, tables, prompts_run, head, listed)
        if floor:
            log.info(
                "score: the adapter ships the retriever's order (the floor): in training its head ranked the "
                "retriever's lists no better than their own order, so each user gets the top %d as handed over",
                s.k,
            )
        elif scoring.fusion_head.weight(C.LM_SCORE) == 0.0:
            log.info(
                "score: the fusion head gives the model's score no weight (it added nothing to the evidence on "
                "the fusion lists in training): the recommendations rank as the evidence blend does%s",
                "" if model_pass else "; the model pass is skipped (score.skip_unused_model)",
            )
    slices = max(1, math.ceil(n_users / s.users_per_slice))
    fault_in_write = faults.armed().during_write
    with ctx.recorded(STAGE) as (run, staging):
        run.model_id = model_id
        with reporting(STAGE, n_users if model_pass else 0, s.progress_secs):
            for index in range(slices):
                part = (
                    prompts
                    if slices == 1
                    else prompts.where(F.pmod(F.xxhash64(F.col(C.USER_ID)), F.lit(slices)) == index)
                )
                scored = score_candidates(part, scoring, s.partitions) if model_pass else unscored_candidates(part)
                write_table(scored, tables, staging.ref("scored"), mode="overwrite" if index == 0 else "append")
                log.info("score: slice %d/%d staged", index + 1, slices)
        scored = staging.read(spark, "scored").withColumn(C.LM_SCORE, F.col("score"))
        if evidence is not None and scoring.fusion_head is not None:
            scored = fuse(scored, evidence, scoring.fusion_head)
            model_id = run.model_id = scoring.lineage(fused=True) + (" (floor: the retriever's order)" if floor else "")
        # Recommendations first, candidate scores second, the runs row last: the run counts as
        # complete only when that row says 'succeeded' (see spark/runs.py).
        recs = top_k(scored, s.k).select(
            F.lit(ctx.run_id).alias(C.RUN_ID),
            F.to_date(F.lit(ctx.identity.run_date)).alias("run_date"),
            C.USER_ID,
            "rank",
            C.ITEM_ID,
            "score",
            F.lit(model_id).alias("model_id"),
            "template_id",
            "ranked_by",
            F.current_timestamp().alias("scored_at"),
            F.lit(prompts_run).alias("prompts_run_id"),
        )
        write_run_scoped(
            faults.failing_write(recs, "score", fault_in_write and not s.write_scores),
            tables,
            resolve(tables, "recommendations"),
            {C.RUN_ID: ctx.run_id},
            partition_by=["run_date"],
        )
        if s.write_scores:
            all_scores = scored.select(
                F.lit(ctx.run_id).alias(C.RUN_ID),
                C.USER_ID,
                C.ITEM_ID,
                "score",
                F.lit(model_id).alias("model_id"),
                "template_id",
                "ranked_by",
                C.LM_SCORE,
            )
            write_run_scoped(
                faults.failing_write(all_scores, "score", fault_in_write),
                tables,
                resolve(tables, "candidate_scores"),
                {C.RUN_ID: ctx.run_id},
            )
        kept = s.keep_lists and _keep_lists(ctx, prompts)
        written = ctx.written(C.RECOMMENDATIONS)
        stats = written.agg(
            F.countDistinct(C.USER_ID).alias("users"),
            F.count(F.lit(1)).alias("rows"),
            F.countDistinct(F.when(F.col("ranked_by") == "retrieval_order", F.col(C.USER_ID))).alias("cold"),
        ).first()
        counts = ScoreCounts(ctx.run_id, stats["users"], stats["rows"], stats["cold"], model_id)
        run.add(
            {
                "users": counts.users,
                "candidates": counts.rows,
                "rejects": n_users - counts.users,
                "prompts_users": n_users,
                "cold_start_users": counts.cold_start_users,
                "slices": slices,
                "model_pass": int(model_pass),
                "retriever_floor": int(floor),
                "kept_lists": int(kept),
            }
        )
    log.info("score: %s", counts)
    return counts
