"""The promote job: the challenger against the champion on one judged night; the alias moves only on a win.

A weekly training registers a new adapter version (alias `mlflow.alias`, "challenger"). Whether the
nightly should score with it is decided on a night neither has learned from: both rank that night's
lists (its prompts and evidence, as the score job ranked them) and are judged by what users chose from
those lists in the following `promote.horizon_days`, exactly as `evaluate.night` judges a night. The
champion alias moves to the challenger only when its NDCG@10 is higher on the same users with a paired
95% bootstrap interval above 0; otherwise the champion stays. With no champion yet, the first challenger
becomes it (bootstrapping a first deploy). The training workflow trains with train.as_of=previous, so
the challenger's interactions, kept lists and intents all end before the night it is judged on.

Every decision is written down: the runs row of the job, tags on the challenger's version
(instructrec.promotion.*), and the log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import MlflowConfig, ModelConfig, PromoteConfig, PromptConfig, ScoreConfig
from instructrec_batch.context import JobContext
from instructrec_batch.errors import ConfigError
from instructrec_batch.evaluation.bootstrap import paired_difference
from instructrec_batch.evaluation.night import chosen_night, followed_targets, following, prompts_run_of
from instructrec_batch.evaluation.spark_metrics import target_ranks
from instructrec_batch.evidence.stored import read_run_evidence
from instructrec_batch.models.base import BaseModel, resolve_base
from instructrec_batch.ranking.metrics import METHOD, SCORE, TARGET_RANK, Metric, metric_values
from instructrec_batch.scoring.model import (
    fuse,
    model_pass_needed,
    prepare_model_scoring,
    read_run_prompts,
    score_candidates,
    unscored_candidates,
)
from instructrec_batch.spark.tables import Staging, read_input, write_table
from instructrec_batch.tracking import ResolvedAdapter, alias_version, move_alias, resolve_adapter, tag_version

log = logging.getLogger(__name__)

STAGE = "promote"
DECIDING = Metric("NDCG", 10)
CHALLENGER, CHAMPION = "challenger", "champion"
BOOTSTRAPPED, PROMOTED, KEPT = "bootstrapped", "promoted", "kept"


@dataclass(frozen=True)
class Promotion:
    decision: str  # bootstrapped | promoted | kept
    reason: str
    challenger: str = ""  # models:/<name>/<version>
    champion: str | None = None  # the champion's version before the decision
    night: str | None = None  # the run_id both were judged on
    users: int = 0  # users who chose from their list in the horizon (judged)
    difference: float | None = None  # challenger − champion NDCG@10 over those users
    ci_low: float | None = None
    ci_high: float | None = None


def _version(resolved: ResolvedAdapter, ref: str) -> str:
    """The registered version number of a resolved challenger; a folder cannot carry an alias."""
    if resolved.registered is None:
        raise ConfigError(
            f"promote.challenger {ref!r} is not a registered version: name one as models:/<name>@<alias> or "
            "models:/<name>/<version> (`instructrec-batch train` registers each adapter it trains)"
        )
    return resolved.registered.rsplit("/", 1)[1]


def _ranked(
    ctx: JobContext,
    prompts: DataFrame,
    prompts_run: str,
    adapter: ResolvedAdapter,
    base: BaseModel,
    score: ScoreConfig,
    prompt: PromptConfig,
) -> DataFrame:
    """user_id, item_id, score of every candidate as the score job would rank it with `adapter` (its
    fusion head over the night's stored evidence; the model pass only when that head weighs the model)."""
    scoring = prepare_model_scoring(ctx.spark, score, prompt, base, adapter)
    head = scoring.fusion_head if score.fusion else None
    scored = score_candidates(prompts, scoring, score.partitions) if model_pass_needed(head, score) else None
    if scored is None:
        scored = unscored_candidates(prompts)
    scored = scored.withColumn(C.LM_SCORE, F.col("score"))
    if head is not None:
        listed = prompts.select(C.USER_ID, F.explode("candidate_ids").alias(C.ITEM_ID))
        evidence = read_run_evidence(ctx.spark, ctx.tables, prompts_run, "promote (the adapters' fusion heads)", listed)
        scored = fuse(scored, evidence, head)
    return scored.select(C.USER_ID, C.ITEM_ID, F.col("score").alias(SCORE))


def promote_job(
    ctx: JobContext,
    promote: PromoteConfig,
    mlflow: MlflowConfig,
    score: ScoreConfig,
    prompt: PromptConfig,
    model: ModelConfig,
    cache_path: Path,
    workdir: str,
) -> Promotion:
    """Decide whether the challenger becomes the champion (see the module docstring), and record why."""
    p = promote
    ref = p.challenger or f"models:/{mlflow.model_name}@{mlflow.alias}"
    challenger = resolve_adapter(mlflow, workdir, ref)
    version = _version(challenger, ref)
    registered = f"models:/{mlflow.model_name}/{version}"
    champion_version = alias_version(mlflow, workdir, p.champion_alias)
    with ctx.recorded(STAGE) as (run, staging):
        run.model_id = registered
        if champion_version is None:
            reason = f"no {p.champion_alias} yet: the first challenger becomes it"
            result = Promotion(BOOTSTRAPPED, reason, registered)
        elif champion_version == version:
            result = Promotion(KEPT, f"version {version} already is the {p.champion_alias}", registered, version)
        else:
            champion = resolve_adapter(mlflow, workdir, f"models:/{mlflow.model_name}@{p.champion_alias}")
            adapters = {CHALLENGER: challenger, CHAMPION: champion}
            result = _compare(ctx, staging, p, score, prompt, resolve_base(model, cache_path), adapters)
            result = replace(result, challenger=registered, champion=champion_version)
        if result.decision in (BOOTSTRAPPED, PROMOTED):
            move_alias(mlflow, workdir, p.champion_alias, version)
        tag_version(mlflow, workdir, version, _tags(result))
        run.add({"promoted": int(result.decision in (BOOTSTRAPPED, PROMOTED)), "users": result.users})
    log.info("promote: %s: %s", result.decision, result.reason)
    return result


def _tags(result: Promotion) -> dict[str, str]:
    """What a promotion decided about the challenger's version, and on what figures."""
    figures = {
        "night": result.night,
        "champion_version": result.champion,
        "users": str(result.users) if result.night else None,
        "ndcg10_difference": result.difference,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
    }
    said = {f"instructrec.promotion.{k}": str(v) for k, v in figures.items() if v is not None}
    return {"instructrec.promotion": result.decision, "instructrec.promotion.reason": result.reason, **said}


def _compare(
    ctx: JobContext,
    staging: Staging,
    p: PromoteConfig,
    score: ScoreConfig,
    prompt: PromptConfig,
    base: BaseModel,
    adapters: dict[str, ResolvedAdapter],
) -> Promotion:
    """Both `adapters` (CHALLENGER, CHAMPION) rank the chosen night's lists; the paired NDCG@10 interval
    decides. The result's challenger and champion fields are the caller's to fill."""
    spark, tables = ctx.spark, ctx.tables
    recommendations = read_input(spark, tables, C.RECOMMENDATIONS)
    today = date.fromisoformat(ctx.identity.run_date)
    found = chosen_night(recommendations, p.night, today, p.horizon_days)
    if found is None:
        reason = f"no night {p.horizon_days} or more days old to judge both on yet: the {p.champion_alias} stays"
        return Promotion(KEPT, reason)
    night, run_date = found
    prompts_run = prompts_run_of(recommendations, night)
    prompts, _ = read_run_prompts(spark, tables, prompt, prompts_run)
    targets = followed_targets(prompts, read_input(spark, tables, C.INTERACTIONS), following(run_date, p.horizon_days))
    for index, (name, adapter) in enumerate(adapters.items()):
        ranked = _ranked(ctx, prompts, prompts_run, adapter, base, score, prompt).withColumn(METHOD, F.lit(name))
        write_table(ranked, tables, staging.ref("scores"), mode="overwrite" if index == 0 else "append")
    ranks = target_ranks(staging.read(spark, "scores"), targets).toPandas()
    wide = ranks.pivot(index=C.USER_ID, columns=METHOD, values=TARGET_RANK).dropna().sort_index()
    if wide.empty:
        reason = f"nobody chose from their list of night {night} within {p.horizon_days} days: the champion stays"
        return Promotion(KEPT, reason, night=night)
    a, b = (metric_values(wide[m].to_numpy(), DECIDING) for m in (CHALLENGER, CHAMPION))
    diff = paired_difference(a, b, p.bootstrap, p.seed)
    won = diff.low > 0
    said = (
        f"challenger − {p.champion_alias} {DECIDING.label} on night {night} ({len(wide)} users judged): "
        f"{diff.value:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]"
    )
    reason = said + (": above 0, the challenger wins" if won else ": not above 0, the champion stays")
    decision = PROMOTED if won else KEPT
    return Promotion(decision, reason, night=night, users=len(wide), difference=diff.value, ci_low=diff.low,
                     ci_high=diff.high)  # fmt: skip
