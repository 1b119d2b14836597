"""The train job: examples in Spark, LoRA tuning on the driver, adapter + manifest on disk."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import (
    DataConfig,
    EvidenceConfig,
    MlflowConfig,
    ModelConfig,
    PromoteConfig,
    PromptConfig,
    SasrecConfig,
    ScoreConfig,
    TableCatalog,
    TrainConfig,
)
from instructrec_batch.context import JobContext
from instructrec_batch.data.protocol import event_seconds
from instructrec_batch.errors import ContractError
from instructrec_batch.evaluation.night import PREVIOUS, chosen_night, midnight
from instructrec_batch.evidence.features import evidence_interactions
from instructrec_batch.evidence.replay import RUN_DATE, CutoffLists, earlier_lists, log_end, retriever_lists
from instructrec_batch.evidence.requests import requests_of
from instructrec_batch.evidence.sequential import sequence_vectors
from instructrec_batch.evidence.stored import stored_vectors
from instructrec_batch.models.adapter import save_adapter
from instructrec_batch.models.base import load_causal_lm, load_tokenizer, resolve_base
from instructrec_batch.models.forward import pad_id_of
from instructrec_batch.prompts.templates import load_templates
from instructrec_batch.spark.tables import (
    Staging,
    delta_version,
    read_input,
    read_optional,
    resolve,
    table_exists,
    write_table,
)
from instructrec_batch.tracking import TrainingRecord, log_training
from instructrec_batch.training.examples import FORM, TRAIN, VALID, build_examples, collect_examples
from instructrec_batch.training.fusion import evidence_priors, fit_fusion_head
from instructrec_batch.training.sequences import sequences
from instructrec_batch.training.split import time_split
from instructrec_batch.training.trainer import train_lora

log = logging.getLogger(__name__)

STAGE = "train"


@dataclass(frozen=True)
class TrainSummary:
    adapter: str
    adapter_sha256: str
    val_loss: float
    zero_shot_val_loss: float
    steps: int
    stopped: str
    train_sequences: int
    val_sequences: int
    fusion: dict[str, Any] = field(default_factory=dict)  # the fusion head: its lists, MRRs, gain and weights
    mlflow: TrainingRecord | None = None  # the MLflow run and registered version (mlflow.enabled)


def _fusion_vectors(
    spark: SparkSession,
    tables: TableCatalog,
    sasrec: SasrecConfig,
    seed: int,
    run_id: str,
    interactions: DataFrame,
    holdout: DataFrame,
    stored: bool,
) -> DataFrame | None:
    """The sequential model the fusion lists' evidence is computed with: the run's stored vectors when
    the evidence job wrote them and they were cut at the same holdout (`stored`), else one trained here
    on the same training interactions (a training run of its own, e.g. a weekly retrain, needs no
    evidence run; a time split's cut-off is not the evidence job's, whose vectors saw what came after it)."""
    vectors = stored_vectors(spark, tables, run_id) if stored else None
    if vectors is None:
        log.info("no sequence_vectors for run %s: training the sequential model for the fusion lists", run_id)
        source = evidence_interactions(interactions, holdout)
        vectors = sequence_vectors(spark, source, sasrec, seed)
    return vectors


def _retriever_lists(
    spark: SparkSession,
    tables: TableCatalog,
    staging: Staging,
    t: TrainConfig,
    evidence: EvidenceConfig,
    interactions: DataFrame,
    items: DataFrame,
    holdout: DataFrame,
    cutoff_at: int,
    as_of: date | None,
) -> tuple[DataFrame | None, list[CutoffLists], dict[str, Any]]:
    """train.lists=retriever: the labelled retriever lists at the cut-off (staged: several steps read
    them), the lists at train.earlier_cutoffs earlier cut-offs before the log's end, and what the
    manifest says of them. No labelled list at the cut-off (nobody chose from theirs in the horizon)
    gives None: the head then falls back to sampled lists, with a warning."""
    titled = items.where(F.col(C.TITLE).isNotNull())
    history = read_optional(spark, tables, C.CANDIDATES_HISTORY)
    if history is not None and as_of is not None:
        history = history.where(F.col(RUN_DATE) < F.lit(as_of))
    source = evidence_interactions(interactions, holdout)
    lists, origin = retriever_lists(
        interactions, source, holdout, titled, history, cutoff_at, evidence, t.replay_top_n, t.horizon_days
    )
    write_table(lists, tables, staging.ref("retriever_lists"), mode="overwrite")
    labelled = staging.read(spark, "retriever_lists")
    n_lists = labelled.select(C.USER_ID).distinct().count()
    figures: dict[str, Any] = {"retriever_lists": origin, "retriever_lists_labelled": n_lists}
    if not n_lists:
        log.warning(
            "no %s retriever list at the cut-off holds an item its user chose within %d days: the head is fitted "
            "on sampled lists and no floor is checked (a later cut-off, train.horizon_days or a candidates_history "
            "with nights after the cut-off give it lists)",
            origin,
            t.horizon_days,
        )
        return None, [], figures
    log.info("fusion lists: %d %s retriever lists at the cut-off, labelled by what users chose next", n_lists, origin)
    end = log_end(interactions)
    earlier = earlier_lists(
        interactions, titled, history, end, evidence, t.replay_top_n, t.horizon_days, t.earlier_cutoffs
    )
    figures["earlier_cutoffs"] = [at.origin for at in earlier]
    shown = ", ".join(figures["earlier_cutoffs"]) or "none"
    log.info("the blend also learns from the lists at %d earlier cut-offs: %s", len(earlier), shown)
    return labelled, earlier, figures


def _as_of(ctx: JobContext, t: TrainConfig, promote: PromoteConfig) -> date | None:
    """train.as_of as a date: the one given, or for `previous` the date of the night `promote` judges
    (None, with a note, while no night has been judged yet: the first training sees everything)."""
    if t.as_of is None:
        return None
    if t.as_of != PREVIOUS:
        return date.fromisoformat(t.as_of)
    spark, tables = ctx.spark, ctx.tables
    today = date.fromisoformat(ctx.identity.run_date)
    found = None
    if table_exists(spark, resolve(tables, C.RECOMMENDATIONS.name)):
        found = chosen_night(read_input(spark, tables, C.RECOMMENDATIONS), PREVIOUS, today, promote.horizon_days)
    if found is None:
        log.info("train.as_of=previous: no night %d or more days old has been scored yet: training on everything",
                 promote.horizon_days)  # fmt: skip
        return None
    log.info("train.as_of=previous: training on what was known before night %s (%s)", found[0], found[1])
    return found[1]


def _before(frame: DataFrame, column: str, as_of: date) -> DataFrame:
    """The rows of `frame` whose `column` (a timestamp, or BIGINT epoch seconds) falls before `as_of` 00:00 UTC."""
    return frame.where(event_seconds(frame, column) < F.lit(int(midnight(as_of).timestamp())))


def _form_counts(examples: pd.DataFrame) -> dict[str, int]:
    """Training examples per instruction form (preference, intention, both)."""
    return {form: int((examples[FORM] == form).sum()) for form in ("preference", "intention", "both")}


def train_job(
    ctx: JobContext,
    train: TrainConfig,
    prompt: PromptConfig,
    evidence: EvidenceConfig,
    sasrec: SasrecConfig,
    data: DataConfig,
    score: ScoreConfig,
    model: ModelConfig,
    cache_path: Path,
    mlflow: MlflowConfig,
    workdir: str,
    promote: PromoteConfig,
) -> TrainSummary:
    """Build examples from the tables, tune a LoRA adapter, save it with its manifest (and register it)."""
    spark, tables, t = ctx.spark, ctx.tables, train
    base = resolve_base(model, cache_path)
    interactions = read_input(spark, tables, C.INTERACTIONS, nonempty=True)
    items = read_input(spark, tables, C.ITEMS, nonempty=True)
    as_of = _as_of(ctx, t, promote)
    if as_of is not None:
        interactions = _before(interactions, C.EVENT_TS, as_of)
    cutoff_at = None
    if t.split == "time":
        split = time_split(interactions, t)
        holdout, split_note, cutoff_at = split.holdout, {"kind": "time", "cutoff": split.cutoff}, split.cutoff_at
        log.info("training on interactions before %s, validating on each user's first one after it", split.cutoff)
    elif table_exists(spark, resolve(tables, "holdout")):
        holdout, split_note = read_input(spark, tables, C.HOLDOUT), {"kind": "holdout"}
    else:
        raise ContractError(
            f"{resolve(tables, 'holdout')} does not exist: with train.split=holdout training validates on the "
            "benchmark protocol's held-out rows. On your own logs train with --set train.split=time (what "
            "`pipeline --no-holdout` does: train before a cut-off, validate after it); for a benchmark run "
            "`instructrec-batch data protocol` first"
        )
    intents = read_optional(spark, tables, C.INTENTS)
    if intents is not None and as_of is not None and C.INTENT_TS in intents.columns:
        intents = _before(intents, C.INTENT_TS, as_of)
    if intents is not None and C.INTENT_TS not in intents.columns:
        log.warning(
            "table 'intents' has no %s column: no intent can be placed before a training target, so training "
            "examples carry none (scoring prompts still show each user's latest)",
            C.INTENT_TS,
        )
    torch_threads = os.cpu_count() or 1
    fusion = bool(t.fusion_users) and "pointwise" in t.tasks
    with ctx.recorded(STAGE) as (run, staging):
        # the run's stored sequential model, or one trained here (inside the run, so a failure is recorded)
        vectors = None
        if fusion and evidence.sequential:
            vectors = _fusion_vectors(
                spark, tables, sasrec, data.seed, ctx.run_id, interactions, holdout, stored=t.split == "holdout"
            )
        examples = build_examples(interactions, items, holdout, t, prompt, evidence, str(base.path), intents=intents)
        frame = collect_examples(examples)
        prior_blend = None
        if t.residual and "pointwise" in t.tasks:
            frame, prior_blend = evidence_priors(examples, frame, interactions, items, holdout, evidence)
        tokenizer = load_tokenizer(base.path)
        templates = load_templates(prompt.template_version)
        train_seqs = sequences(frame[frame.kind == TRAIN], tokenizer, templates, t.max_length)
        val_seqs = sequences(frame[frame.kind == VALID], tokenizer, templates, t.max_length)
        log.info(
            "training on %d sequences (%d examples), validating on %d",
            len(train_seqs),
            int((frame.kind == TRAIN).sum()),
            len(val_seqs),
        )
        import torch

        torch.set_num_threads(torch_threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        lm = load_causal_lm(base.path, "float32", device)
        result = train_lora(lm, train_seqs, val_seqs, t, pad_id_of(tokenizer))
        head, blend, fusion_figures, labelled, earlier = None, None, {}, None, []
        if fusion and cutoff_at is not None and t.lists == "retriever":
            labelled, earlier, fusion_figures = _retriever_lists(
                spark, tables, staging, t, evidence, interactions, items, holdout, cutoff_at, as_of
            )
        if fusion:
            lists = build_examples(
                interactions,
                items,
                holdout,
                t,
                prompt,
                evidence,
                str(base.path),
                fusion=True,
                intents=intents,
                lists=labelled,
            )
            head, blend, figures = fit_fusion_head(
                lists,
                result.model,
                tokenizer,
                pad_id_of(tokenizer),
                templates,
                interactions,
                items,
                holdout,
                vectors,
                evidence,
                data,
                score,
                t.seed,
                requests_of(intents, holdout, holdout, items, evidence, cache_path, C.SPLIT_VALID),
                labelled,
                earlier,
            )
            fusion_figures.update(figures)
        out = Path(t.output or Path(workdir) / "adapters" / ctx.run_id)
        base_sha = base.sha256()
        info = save_adapter(
            result.model,
            out,
            {
                "base_model": base.name,
                "base_model_sha256": base_sha,
                "template_version": templates.version,
                "item_text": prompt.item_text(),
                "tasks": list(t.tasks),
                "instruction_forms": {
                    "shares": dict(t.forms),
                    "train_examples": _form_counts(frame[frame.kind == TRAIN]),
                },
                "split": split_note,
                "as_of": as_of.isoformat() if as_of else None,
                "data_versions": {
                    name: delta_version(resolve(tables, name))
                    for name in ("interactions", "items", *(["holdout"] if t.split == "holdout" else []))
                },
                "hyperparameters": t.model_dump(mode="json"),
                "evidence": evidence.model_dump(mode="json"),
                "fusion": {**fusion_figures, "head": head.to_dict() if head else None},
                "residual_prior": prior_blend.to_dict() if prior_blend else None,
                "loss_history": result.history,
                "val_loss": result.val_loss,
                "zero_shot_val_loss": result.zero_shot_val_loss,
                "steps": result.steps,
                "stopped": result.stopped,
                "train_sequences": len(train_seqs),
                "val_sequences": len(val_seqs),
                "run_id": ctx.run_id,
                "config_hash": ctx.config_hash,
                "device": device,
                "created_at": datetime.now(timezone.utc).isoformat(),
            },
            fusion_head=head,
            blend=blend,
        )
        record = log_training(mlflow, workdir, out, info.manifest) if mlflow.enabled else None
        run.model_id = f"{base.name}@{base_sha[:12]}+lora@{info.sha256[:12]}" + (
            f" ({record.model_uri})" if record else ""
        )
        run.add(
            {
                "users": int(frame.user_id.nunique()),
                "train_sequences": len(train_seqs),
                "val_sequences": len(val_seqs),
                "steps": result.steps,
            }
        )
    summary = TrainSummary(
        str(out),
        info.sha256,
        round(result.val_loss, 4),
        round(result.zero_shot_val_loss, 4),
        result.steps,
        result.stopped,
        len(train_seqs),
        len(val_seqs),
        fusion_figures,
        record,
    )
    log.info("train: %s", summary)
    return summary
