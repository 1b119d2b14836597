"""The prompts job: one InstructRec instruction per user, built in Spark, written to `prompts`.

Joins interactions, items, candidates and optional intents without collecting to the driver; row
problems (unknown or untitled items, duplicate candidates, null keys, users left with no valid
candidate) go to `rejects` with a reason; everything else becomes one `prompts` row per user with
the cleaned instruction parts, so scoring and training render byte-identical text from it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import DataConfig, EvidenceConfig, ModelConfig, PromptConfig, TableCatalog
from instructrec_batch.context import JobContext
from instructrec_batch.data.protocol import history_cut, sample_users
from instructrec_batch.errors import ConfigError, ContractError
from instructrec_batch.evidence.stored import read_run_evidence
from instructrec_batch.models.base import load_tokenizer, resolve_base
from instructrec_batch.prompts.budget import prompt_tokens
from instructrec_batch.prompts.frames import (
    SHOWN,
    collect_ordered,
    history_text,
    rating_scale,
    require_taste_line,
    taste_profile,
    titled_items,
)
from instructrec_batch.prompts.render import UserContext, candidate_text
from instructrec_batch.prompts.templates import Template, load_templates
from instructrec_batch.prompts.text_udfs import (
    ATTRIBUTE_SEPARATOR,
    CAND_IDS,
    CAND_NOTES,
    CAND_TITLES,
    HIST_IDS,
    HIST_TITLES,
    NOTE_ARRAYS,
    PROMPT_COLUMNS,
    TASTE,
    cap_tokens,
    prompt_schema,
    render_prompts_fn,
    token_counter,
)
from instructrec_batch.spark.rejects import INVALID_UTF8, item_reason, null_keys, reject_rows, utf8_text
from instructrec_batch.spark.tables import (
    check_key_types,
    existing_columns,
    read_input,
    read_optional,
    resolve,
    write_run_scoped,
    write_table,
)
from instructrec_batch.text.intents import intent_problem, latest_by_holdout

log = logging.getLogger(__name__)

STAGE = "prompts"


@dataclass(frozen=True)
class PromptCounts:
    run_id: str
    users_in: int
    users_emitted: int
    users_rejected: int
    cold_start_users: int
    candidates_in: int
    candidates_kept: int
    rejects: dict[str, int]


def _type(df: DataFrame, column: str) -> str:
    return df.schema[column].dataType.simpleString()


def check_budget(
    template: Template, tokenizer: object, p: PromptConfig, evidence_history: int, max_candidates: int
) -> None:
    """Fail before any work when the worst-case prompt without history cannot fit prompt.max_tokens
    (`evidence_history`: evidence.history, the largest count an evidence note names)."""
    filler = "recommendation " * 400
    title, text = cap_tokens(tokenizer, [filler[: p.title_max_chars], filler[: p.text_max_chars]], 10**6)
    attribute = cap_tokens(tokenizer, [title], p.attribute_max_tokens)[0]
    title = ATTRIBUTE_SEPARATOR.join(
        [cap_tokens(tokenizer, [title], p.title_max_tokens)[0]] + [attribute] * len(p.item_attributes)
    )
    text = cap_tokens(tokenizer, [text], p.text_max_tokens)[0]
    worst = UserContext(history=(), preference=text, intent=text)  # no history: no taste line either
    count = token_counter(tokenizer)
    shown = [candidate_text(template, title, top, evidence_history) for top, _ in template.popularity_words]
    longest = max(shown or [title], key=lambda t: count([t])[0])
    need = prompt_tokens(template, worst, [longest] * max_candidates, count)
    if need > p.max_tokens:
        raise ConfigError(
            f"prompt.max_tokens={p.max_tokens} cannot hold the instruction, intent and {max_candidates} "
            f"candidate(s) of a worst-case user ({need} tokens); raise prompt.max_tokens or lower "
            "prompt.title_max_tokens / prompt.text_max_tokens"
        )


def _prompt_columns(spark: SparkSession, tables: TableCatalog, p: PromptConfig) -> list[str]:
    """PROMPT_COLUMNS as this run writes them: taste_text only when the taste line is on or the prompts
    table already has the column. A Delta table's schema must match on every write (the embedded
    engine cannot evolve it), so a table from before the taste line keeps its columns while it is off,
    and turning it on there fails before anything is written, naming what to do."""
    ref = resolve(tables, "prompts")
    existing = existing_columns(spark, tables, ref)
    has_taste = existing is not None and C.TASTE_TEXT in existing
    if p.taste_categories and existing is not None and not has_taste:
        raise ContractError(
            f"{ref} has no {C.TASTE_TEXT} column (written without prompt.taste_categories), and a Delta table's "
            "columns cannot be changed by a run: point tables.prompts at a new table, or move the old one aside, "
            f"to build prompts with prompt.taste_categories={p.taste_categories}"
        )
    keep = bool(p.taste_categories) or has_taste
    return [c for c in PROMPT_COLUMNS if c != C.TASTE_TEXT or keep]


def _reject(
    df: DataFrame, run_id: str, source: str, reason: str | Column, item: bool = True, user: bool = True
) -> DataFrame:
    return reject_rows(df, run_id, STAGE, source, reason, user=user, item=item)


def _candidate_order(cands: DataFrame) -> list[Column]:
    """Upstream order: retrieval_rank, else retrieval_score descending, then item_id (deterministic)."""
    order = []
    if C.RETRIEVAL_RANK in cands.columns:
        order.append(F.col(C.RETRIEVAL_RANK).asc_nulls_last())
    if C.RETRIEVAL_SCORE in cands.columns:
        order.append(F.col(C.RETRIEVAL_SCORE).desc_nulls_last())
    return [*order, F.col(C.ITEM_ID).asc()]


def _prepare_candidates(
    cands: DataFrame, titles: DataFrame, evidence: DataFrame | None, run_id: str
) -> tuple[DataFrame, list[DataFrame]]:
    """Per-user candidate lists in upstream order (with their evidence notes when given), and the
    rejected candidate rows."""
    rejects = [_reject(cands.where(null_keys([C.USER_ID, C.ITEM_ID])), run_id, "candidates", "null_key")]
    cands = cands.where(~null_keys([C.USER_ID, C.ITEM_ID]))
    order = _candidate_order(cands)
    dup_rank = F.row_number().over(Window.partitionBy(C.USER_ID, C.ITEM_ID).orderBy(*order))
    ranked = cands.withColumn("_dup", dup_rank)
    rejects.append(_reject(ranked.where(F.col("_dup") > 1), run_id, "candidates", "duplicate_candidate"))
    known = titles.withColumn("_known", F.lit(True))
    joined = ranked.where(F.col("_dup") == 1).join(known, C.ITEM_ID, "left")
    reason = item_reason(F.col("_known"), F.col(C.TITLE))
    rejects.append(_reject(joined.where(reason.isNotNull()), run_id, "candidates", reason))
    valid = joined.where(reason.isNull())
    notes: list[str] = []
    if evidence is not None:
        notes = list(C.EVIDENCE_NOTE_COLUMNS)
        valid = valid.join(evidence.select(C.USER_ID, C.ITEM_ID, *notes), [C.USER_ID, C.ITEM_ID], "left")
    pos = F.row_number().over(Window.partitionBy(C.USER_ID).orderBy(*order))
    fields = {C.ITEM_ID: CAND_IDS, C.TITLE: CAND_TITLES, **(NOTE_ARRAYS if notes else {})}
    lists = collect_ordered(valid.withColumn("_pos", pos), [C.USER_ID], [F.col("_pos")], fields)
    return lists, rejects


def _prepare_history(
    interactions: DataFrame,
    titles: DataFrame,
    holdout: DataFrame | None,
    p: PromptConfig,
    run_id: str,
    scale: float | None,
    items: DataFrame,
) -> tuple[DataFrame, DataFrame | None, DataFrame | None, list[DataFrame]]:
    """Per-user newest prompt.max_history titled items (+ count of all usable ones), latest review,
    taste profile over all usable history rows (None when off), rejects."""
    max_history = p.max_history
    keys = [C.USER_ID, C.ITEM_ID, C.EVENT_TS]
    rejects = [_reject(interactions.where(null_keys(keys)), run_id, "interactions", "null_key")]
    rows = history_cut(interactions.where(~null_keys(keys)), holdout)
    joined = rows.join(titles.withColumn("_known", F.lit(True)), C.ITEM_ID, "left")
    reason = item_reason(F.col("_known"), F.col(C.TITLE))
    rejects.append(_reject(joined.where(reason.isNotNull()), run_id, "interactions", reason))
    usable = joined.where(reason.isNull()).withColumn(SHOWN, history_text(scale))
    per_user = Window.partitionBy(C.USER_ID)
    newest = per_user.orderBy(F.col(C.EVENT_TS).desc(), F.col(C.ITEM_ID).desc())
    ranked = usable.withColumn("_n", F.row_number().over(newest)).withColumn("_total", F.count(F.lit(1)).over(per_user))
    hist = collect_ordered(
        ranked.where(F.col("_n") <= max_history),
        [C.USER_ID],
        [F.col(C.EVENT_TS), F.col(C.ITEM_ID)],  # oldest first
        {C.ITEM_ID: HIST_IDS, SHOWN: HIST_TITLES},
        F.max("_total").alias("history_available"),
    )
    review = None
    if C.REVIEW in rows.columns:
        with_text = rows.where((F.length(F.trim(F.col(C.REVIEW))) > 0) & utf8_text(C.REVIEW))
        latest = Window.partitionBy(C.USER_ID).orderBy(F.col(C.EVENT_TS).desc(), F.col(C.ITEM_ID).desc())
        review = (
            with_text.withColumn("_n", F.row_number().over(latest))
            .where(F.col("_n") == 1)
            .select(C.USER_ID, F.col(C.REVIEW).alias("review"))
        )
    taste = taste_profile(usable.select(C.USER_ID, C.ITEM_ID), items, [C.USER_ID], p.taste_categories)
    return hist, review, taste, rejects


def _latest_intent(
    intents: DataFrame, users: DataFrame, holdout: DataFrame | None, run_id: str
) -> tuple[DataFrame, list[DataFrame]]:
    """Each of `users`' latest intent, stated by the time of their test row when a holdout exists (the target
    their list is ranked for, as a training example's is stated by its target), and the intents rows that
    cannot be shown."""
    keyed = intents.where(F.col(C.USER_ID).isNotNull())
    rejects = [
        _reject(intents.where(F.col(C.USER_ID).isNull()), run_id, "intents", "null_key", item=False),
        _reject(keyed.where(intent_problem().isNotNull()), run_id, "intents", intent_problem(), item=False),
    ]
    return latest_by_holdout(intents, users, holdout), rejects


@dataclass(frozen=True)
class _Inputs:
    interactions: DataFrame
    candidates: DataFrame
    intents: DataFrame | None
    holdout: DataFrame | None

    def slice(self, index: int, count: int) -> _Inputs:
        """Only the users whose hash falls in slice `index` of `count` (the filter is pushed to the reads)."""
        if count == 1:
            return self

        def part(df: DataFrame | None) -> DataFrame | None:
            if df is None:
                return None
            return df.where(F.pmod(F.xxhash64(F.col(C.USER_ID)), F.lit(count)) == index)

        return _Inputs(part(self.interactions), part(self.candidates), part(self.intents), part(self.holdout))


def _build(
    inputs: _Inputs,
    titles: DataFrame,
    evidence: DataFrame | None,
    p: PromptConfig,
    template: Template,
    tokenizer_path: str,
    run_id: str,
    scale: float | None,
    items: DataFrame,
    columns: list[str],
) -> tuple[DataFrame, DataFrame]:
    """The prompts and rejects of one slice of users (lazy DataFrames); `scale` is the whole table's."""
    cand_lists, rejects = _prepare_candidates(inputs.candidates, titles, evidence, run_id)
    hist, review, taste, hist_rejects = _prepare_history(
        inputs.interactions, titles, inputs.holdout, p, run_id, scale, items
    )
    rejects += hist_rejects
    users = cand_lists.join(hist, C.USER_ID, "left")
    if inputs.intents is not None:
        intent, intent_rejects = _latest_intent(inputs.intents, cand_lists, inputs.holdout, run_id)
        rejects += intent_rejects
        users = users.join(intent, C.USER_ID, "left")
    else:
        users = users.withColumn(C.INTENT, F.lit(None).cast("string"))
    if review is not None:
        users = users.join(review, C.USER_ID, "left")
    else:
        users = users.withColumn("review", F.lit(None).cast("string"))
    if taste is not None:
        users = users.join(taste, C.USER_ID, "left")
    else:
        users = users.withColumn(TASTE, F.lit(None).cast("string"))
    all_users = inputs.candidates.where(F.col(C.USER_ID).isNotNull()).select(C.USER_ID).distinct()
    no_valid = all_users.join(cand_lists, C.USER_ID, "left_anti")
    rejects.append(_reject(no_valid, run_id, "candidates", "no_valid_candidates", item=False))
    render = render_prompts_fn(
        tokenizer_path, p.template_version, template.template_id, p.max_tokens, p.text_max_chars, p.text_max_tokens
    )
    schema = prompt_schema(_type(inputs.candidates, C.USER_ID), _type(inputs.candidates, C.ITEM_ID))
    lists = [CAND_IDS, CAND_TITLES, *(CAND_NOTES if evidence is not None else ()), HIST_IDS, HIST_TITLES]
    prompts = users.select(C.USER_ID, *lists, "history_available", C.INTENT, "review", TASTE).mapInPandas(
        render, schema
    )
    prompts = prompts.select(F.lit(run_id).alias("run_id"), *columns, F.current_timestamp().alias("created_at"))
    all_rejects = rejects[0]
    for frame in rejects[1:]:
        all_rejects = all_rejects.unionByName(frame)
    return prompts, all_rejects


def prompts_job(
    ctx: JobContext,
    prompt: PromptConfig,
    evidence: EvidenceConfig,
    data: DataConfig,
    model: ModelConfig,
    cache_path: Path,
) -> PromptCounts:
    """Build and write the `prompts` table (and this stage's `rejects`) for the configured run.

    Users are processed in hash slices of at most prompt.users_per_slice, each appended to a staging
    table; the outputs are then written from staging in one commit each. Slicing bounds memory
    on engines without backpressure into Python UDFs (Sail buffers a UDF's whole input otherwise).
    """
    spark, tables, p = ctx.spark, ctx.tables, prompt
    template = load_templates(p.template_version).get(p.inference_template_id)
    if template.task != p.task:
        raise ConfigError(f"prompt.template_id '{template.template_id}' is {template.task} but prompt.task={p.task}")
    require_taste_line(template, p)
    base = resolve_base(model, cache_path)
    tokenizer_path = str(base.path)
    interactions = read_input(spark, tables, C.INTERACTIONS)
    items = read_input(spark, tables, C.ITEMS, nonempty=True)
    candidates = sample_users(read_input(spark, tables, C.CANDIDATES, nonempty=True), p.sample_users, data.seed)
    intents = read_optional(spark, tables, C.INTENTS)
    holdout = read_optional(spark, tables, C.HOLDOUT) if p.exclude_holdout else None
    inputs = {
        "interactions": interactions,
        "items": items,
        "candidates": candidates,
        "intents": intents,
        "holdout": holdout,
    }
    check_key_types(inputs, (C.USER_ID, C.ITEM_ID))

    notes = None
    if template.shows_evidence:  # rendered into every candidate: the evidence job's rows of this run
        needed_by = f"template {template.template_id} ({p.template_version}, evidence in words)"
        keyed = candidates.where(~null_keys([C.USER_ID, C.ITEM_ID]))  # null keys become rejects
        notes = read_run_evidence(spark, tables, ctx.run_id, needed_by, keyed)
    columns = _prompt_columns(spark, tables, p)
    with ctx.recorded(STAGE) as (run, staging):
        run_id = ctx.run_id
        write_table(titled_items(items, p, tokenizer_path), tables, staging.ref("titles"))
        titles = staging.read(spark, "titles")
        per_user = candidates.where(F.col(C.USER_ID).isNotNull()).groupBy(C.USER_ID).count()
        stats = per_user.agg(F.count(F.lit(1)).alias("users"), F.max("count").alias("longest")).first()
        max_cands = (stats["longest"] or 1) if template.task == "listwise" else 1
        check_budget(template, load_tokenizer(tokenizer_path), p, evidence.history, max_cands)
        slices = max(1, math.ceil((stats["users"] or 0) / p.users_per_slice))
        everything = _Inputs(interactions, candidates, intents, holdout)
        scale = rating_scale(interactions, p)  # of the whole table, as training reads it: never per slice
        for index in range(slices):
            prompts, rejects = _build(
                everything.slice(index, slices),
                titles,
                notes,
                p,
                template,
                tokenizer_path,
                run_id,
                scale,
                items,
                columns,
            )
            mode = "overwrite" if index == 0 else "append"
            write_table(prompts, tables, staging.ref("prompts"), mode=mode)
            write_table(rejects, tables, staging.ref("rejects"), mode=mode)
            log.info("prompts: slice %d/%d staged", index + 1, slices)
        unreadable = items.where(F.col(C.TITLE).isNotNull() & ~utf8_text(C.TITLE))
        write_table(
            _reject(unreadable, run_id, "items", INVALID_UTF8, user=False),
            tables,
            staging.ref("rejects"),
            mode="append",
        )
        write_run_scoped(staging.read(spark, "prompts"), tables, resolve(tables, "prompts"), {"run_id": run_id})
        write_run_scoped(
            staging.read(spark, "rejects"), tables, resolve(tables, "rejects"), {"run_id": run_id, "stage": STAGE}
        )
        counts = _count(spark, tables, run_id, candidates)
        run.model_id = base.name
        run.add(
            {
                "users": counts.users_emitted,
                "candidates": counts.candidates_kept,
                "rejects": sum(counts.rejects.values()),
                "users_in": counts.users_in,
                "cold_start_users": counts.cold_start_users,
                "slices": slices,
            }
        )
    log.info("prompts: %s", counts)
    return counts


def _count(spark: SparkSession, tables: TableCatalog, run_id: str, candidates: DataFrame) -> PromptCounts:
    """Counts read back from what was written (so they reconcile with the tables, not with a plan)."""
    written = read_input(spark, tables, C.PROMPTS).where(F.col("run_id") == run_id)
    stats = written.agg(
        F.count(F.lit(1)).alias("users"),
        F.sum(F.col("cold_start").cast("int")).alias("cold"),
        F.sum(F.size("candidate_ids")).alias("cands"),
    ).first()
    try:
        rejects = read_input(spark, tables, C.REJECTS).where((F.col("run_id") == run_id) & (F.col("stage") == STAGE))
        by_reason = {
            f"{r['source_table']}.{r['reason']}": r["n"]
            for r in rejects.groupBy("source_table", "reason").agg(F.count(F.lit(1)).alias("n")).collect()
        }
    except ContractError:
        if tables.format != "parquet":
            raise
        by_reason = {}  # Parquet keeps no schema for a write without rows: a night with no rejects
    in_stats = candidates.agg(F.countDistinct(C.USER_ID).alias("users"), F.count(F.lit(1)).alias("rows")).first()
    return PromptCounts(
        run_id=run_id,
        users_in=in_stats["users"],
        users_emitted=stats["users"],
        users_rejected=by_reason.get("candidates.no_valid_candidates", 0),
        cold_start_users=stats["cold"] or 0,
        candidates_in=in_stats["rows"],
        candidates_kept=stats["cands"] or 0,
        rejects=by_reason,
    )
