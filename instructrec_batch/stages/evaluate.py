"""The evaluate job: every method ranks the same candidate lists → `metrics` table + report.

The methods are a registry (`BASELINES`: name, what it reads, how it scores) of Spark DataFrame rankers,
plus the model methods, which run the scoring job's own executor path (score_candidates) on the run's
prompts, once per task form, with the base model alone (zero_shot) and with the adapter (lora), and the
adapter's fusion head over the lora scores (hybrid). All scores are staged, then ranked and averaged in
one Spark pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import (
    DataConfig,
    EvaluateConfig,
    EvidenceConfig,
    MlflowConfig,
    ModelConfig,
    PromptConfig,
    SasrecConfig,
    ScoreConfig,
    TableCatalog,
)
from instructrec_batch.context import JobContext
from instructrec_batch.data.protocol import sample_users
from instructrec_batch.errors import ConfigError
from instructrec_batch.evaluation.baselines import (
    blend_scores,
    evidence_column_scores,
    itemknn_scores,
    popularity_scores,
    random_scores,
    retriever_scores,
    sasrec_scores,
    stored_sasrec_scores,
    training_interactions,
)
from instructrec_batch.evaluation.intervals import METRICS_SCHEMA, control_of, with_intervals
from instructrec_batch.evaluation.night import (
    SHIPPED,
    chosen_night,
    followed_targets,
    following,
    night_scores,
    prompts_run_of,
)
from instructrec_batch.evaluation.report import ReportPaths, interval_table, markdown_table, wide_table, write_report
from instructrec_batch.evaluation.spark_metrics import metrics_frame, target_ranks
from instructrec_batch.evidence.features import evidence_interactions
from instructrec_batch.evidence.lists import blend_lists, list_evidence
from instructrec_batch.evidence.requests import REQUEST_COLUMNS, Requests, request_scores, requests_of
from instructrec_batch.evidence.stored import read_run_evidence, read_run_vectors
from instructrec_batch.models.base import resolve_base
from instructrec_batch.ranking.added import AddedValue, cross_validated_gain
from instructrec_batch.ranking.blend import BLEND_TERMS, POSITIVE, fit_blend, with_evidence
from instructrec_batch.ranking.metrics import METHOD, SCORE
from instructrec_batch.ranking.ranker import LinearRanker
from instructrec_batch.scoring.model import (
    EVIDENCE,
    HYBRID,
    MODEL,
    ModelScoring,
    fuse,
    prepare_model_scoring,
    read_run_prompts,
    score_candidates,
    unscored_candidates,
)
from instructrec_batch.scoring.progress import reporting
from instructrec_batch.spark.tables import (
    read_input,
    read_optional,
    resolve,
    table_exists,
    write_run_scoped,
    write_table,
)
from instructrec_batch.tracking import log_evaluation

log = logging.getLogger(__name__)

STAGE = "evaluate"
MODEL_METHODS = ("zero_shot", "lora")
LLM_METHODS = ("zero_shot", "lora", HYBRID)
# The hybrid method is this scoring ranked through its adapter's fusion head (the head weighs a pointwise
# answer score): the one scoring that decides whether hybrid runs and needs evidence.
HYBRID_BASE, HYBRID_NAME = "lora/pointwise", f"{HYBRID}/pointwise"
GAIN_USERS, GAIN_SPLITS = 5000, 20  # the model-gain diagnostic: a seeded sample of users, halvings


@dataclass(frozen=True)
class EvaluationResult:
    run_id: str
    metrics: pd.DataFrame  # method, metric, k, value, n_users
    report: ReportPaths | None  # None: nothing was evaluated (`note` says why)
    mlflow_run_id: str | None = None  # the (training) run the figures and report were logged to
    model_gain: AddedValue | None = None  # what the tuned model's score adds to the evidence (added.py)
    note: str = ""

    def table(self) -> str:
        table = markdown_table(wide_table(self.metrics)) + "\n\n" + interval_table(self.metrics)
        if self.model_gain is None:
            return table
        return f"{table}\n\n{GAIN_LABEL}: {self.model_gain}"

    def __str__(self) -> str:
        if self.report is None:
            return self.note
        return f"{self.table()}\n\nreport: {self.report.markdown}\nchart:  {self.report.chart}"


def _model_methods(
    ctx: JobContext, e: EvaluateConfig, score: ScoreConfig, prompt: PromptConfig, model: ModelConfig, cache: Path
) -> dict[str, ModelScoring]:
    """Checked model scorings per reported name ('lora/pointwise' ...), before any data is read."""
    if "lora" in e.methods and ctx.adapter is None:
        raise ConfigError(
            "evaluate.methods includes 'lora' but score.adapter is not set; "
            "pass --adapter DIR (an adapter folder from `instructrec-batch train`) or drop lora from evaluate.methods"
        )
    wanted = [method for method in MODEL_METHODS if method in e.methods]
    base = resolve_base(model, cache) if wanted else None
    scorings = {}
    for task in e.tasks:
        template = prompt.inference_template_id if task == prompt.task else f"{task}-0"
        for method in wanted:
            adapter = ctx.adapter if method == "lora" else None
            scorings[f"{method}/{task}"] = prepare_model_scoring(ctx.spark, score, prompt, base, adapter, template)
    return scorings


def _stored_scores(
    spark: SparkSession, tables: TableCatalog, run_id: str, scoring: ModelScoring, prompts: DataFrame, n_users: int
) -> DataFrame | None:
    """This run's candidate_scores of the same model and template, if they cover every evaluated user.

    A score job run with score.write_scores keeps every candidate's score; evaluating that model
    again would recompute exactly those numbers, so they are read back instead. The same model is the
    same base and adapter sha256 (model_id), whether the adapter was named by its folder or by its
    registered version, which the stored model_id may add in parentheses. Rows the fusion head ranked
    by evidence alone (the model pass skipped) hold no model score and do not count.
    """
    if not table_exists(spark, resolve(tables, "candidate_scores")):
        return None
    model_id = F.regexp_replace(F.col("model_id"), r" \(.*\)$", "")
    stored = read_input(spark, tables, C.CANDIDATE_SCORES)
    if "ranked_by" in stored.columns:
        stored = stored.where(F.col("ranked_by") != EVIDENCE)
    stored = stored.where(
        (F.col(C.RUN_ID) == run_id)
        & model_id.isin(scoring.model_id, f"{scoring.model_id}+fusion")
        & (F.col("template_id") == scoring.spec.template_id)
    ).join(prompts.select(C.USER_ID), C.USER_ID, "left_semi")
    if stored.select(C.USER_ID).distinct().count() != n_users:
        return None
    model_score = F.col(C.LM_SCORE) if C.LM_SCORE in stored.columns else F.col(SCORE)
    ranked_by = F.col("ranked_by") if "ranked_by" in stored.columns else F.lit(MODEL)
    # Rows the fusion head ranked were ranked by the model first: hand them back as model rows.
    ranked_by = F.when(ranked_by == HYBRID, F.lit(MODEL)).otherwise(ranked_by)
    return stored.select(C.USER_ID, C.ITEM_ID, model_score.alias(SCORE), ranked_by.alias("ranked_by"))


GAIN_LABEL = f"{HYBRID_BASE} score added to the evidence, cross-validated on these lists"


def _model_gain(model: DataFrame, evidence: DataFrame, targets: DataFrame, seed: int) -> AddedValue | None:
    """cross_validated_gain of the model's scores (user_id, item_id, score) over the evidence, on up to
    GAIN_USERS users' lists (None with too few)."""
    keys = [C.USER_ID, C.ITEM_ID]
    scored = model.select(*keys, F.col(SCORE).alias(C.LM_SCORE))
    rows = (
        with_evidence(scored, evidence.select(*keys, *C.EVIDENCE_COLUMNS))
        .join(targets.select(*keys, F.lit(True).alias("_target")), keys, "left")
        .join(sample_users(targets.select(C.USER_ID), GAIN_USERS, seed), C.USER_ID, "left_semi")
        .select(*keys, C.LM_SCORE, *C.EVIDENCE_COLUMNS, F.col("_target").isNotNull().alias(POSITIVE))
    )
    return cross_validated_gain(rows.toPandas(), BLEND_TERMS, C.LM_SCORE, GAIN_SPLITS, seed)


def _candidate_rows(prompts: DataFrame) -> DataFrame:
    """The lists as the model sees them (after the prompts job's rejects), one row per candidate."""
    return prompts.select(C.USER_ID, F.explode("candidate_ids").alias(C.ITEM_ID))


@dataclass
class Lists:
    """What the baselines may read, built once: the evaluated candidate rows, the training interactions
    (held-out rows removed), the inputs the evidence came from, and the run's evidence when a method
    reads it."""

    spark: SparkSession
    prompts: DataFrame  # the evaluated prompts rows: candidate_ids in the order the lists arrived in
    candidates: DataFrame  # user_id, item_id of every evaluated list
    train: DataFrame  # interactions minus every held-out pair
    interactions: DataFrame
    items: DataFrame
    holdout: DataFrame
    seed: int
    sasrec: SasrecConfig
    evidence_settings: EvidenceConfig
    data: DataConfig
    evidence: DataFrame | None = None  # the run's candidate_evidence rows of the candidates
    vectors: DataFrame | None = None  # the run's sequence_vectors (the blend's validation lists need them)
    blend: LinearRanker | None = None  # the evidence blend: the training run's, or fitted here once
    requests: Callable[[], Requests | None] = lambda: None  # the validation users' requests (intents)


@dataclass(frozen=True)
class Method:
    """A baseline: its name, whether it reads the run's evidence, and how it scores the candidate rows."""

    name: str
    scores: Callable[[Lists], DataFrame]
    reads_evidence: bool = False
    how: str = ""  # said in the log next to its name


def _blend_ranker(lists: Lists) -> LinearRanker:
    """The evidence blend: the one the training run fitted on this run's validation lists when the adapter
    carries it, else fitted here on the same lists (once)."""
    if lists.blend is None:
        source = evidence_interactions(lists.interactions, lists.holdout)
        labelled = blend_lists(lists.interactions, lists.items, lists.holdout, lists.data)  # evaluated users or not
        fitted = list_evidence(source, labelled, lists.evidence_settings, lists.items, lists.vectors, lists.requests())
        lists.blend = fit_blend(fitted)
    return lists.blend


def _blend(lists: Lists) -> DataFrame:
    return blend_scores(lists.candidates, lists.evidence, _blend_ranker(lists))


def swapped_requests(prompts: DataFrame, seed: int) -> DataFrame:
    """user_id, intent: every user with a request gets another user's (the users in a seeded order, each
    taking the next one's, the last the first's), so nobody keeps their own when two or more asked."""
    asked = prompts.where(F.col("intention_text").isNotNull()).select(
        C.USER_ID, F.col("intention_text").alias(C.INTENT)
    )
    order = Window.orderBy(F.xxhash64(F.lit(seed), F.col(C.USER_ID)), F.col(C.USER_ID))
    ranked = asked.withColumn("_r", F.row_number().over(order)).withColumn(
        "_n", F.count(F.lit(1)).over(Window.partitionBy())
    )
    partner = ranked.select(((F.col("_r") % F.col("_n")) + 1).alias("_r"), F.col(C.INTENT))
    return ranked.select(C.USER_ID, "_r").join(partner, "_r").select(C.USER_ID, C.INTENT)


def _with_requests(evidence: DataFrame, candidates: DataFrame, requests: DataFrame, source: Requests) -> DataFrame:
    """`evidence` with its request columns recomputed from `requests` (another user's, for the control)."""
    keys = [C.USER_ID, C.ITEM_ID]
    scored = request_scores(candidates, requests, keys, source.texts, source.encoder)
    rest = evidence.drop(*REQUEST_COLUMNS)
    return with_evidence(rest, scored).select(*evidence.columns)


def baselines(e: EvaluateConfig, sequential: bool) -> list[Method]:
    """The non-LLM methods, in report order; sasrec reads the evidence job's SASRec (ev_sequence) unless
    evaluate.sasrec_source=train or the sequential evidence is off."""
    stored_sasrec = e.sasrec_source == "evidence" and sequential
    sasrec = (
        Method("sasrec", lambda x: stored_sasrec_scores(x.evidence), True, " (the evidence job's SASRec: ev_sequence)")
        if stored_sasrec
        else Method("sasrec", lambda x: sasrec_scores(x.spark, x.candidates, x.train, x.sasrec, x.seed))
    )
    return [
        Method("retriever", lambda x: retriever_scores(x.prompts), how=" (the lists' own order)"),
        Method("random", lambda x: random_scores(x.candidates, x.seed)),
        Method("popularity", lambda x: popularity_scores(x.candidates, x.train)),
        Method("itemknn", lambda x: itemknn_scores(x.candidates, x.train)),
        Method("bm25", lambda x: evidence_column_scores(x.evidence, C.EV_REQUEST_WORDS), True, " (request vs text)"),
        Method(
            "minilm", lambda x: evidence_column_scores(x.evidence, C.EV_REQUEST_MEANING), True, " (request vs text)"
        ),
        Method("blend", _blend, reads_evidence=True),
        sasrec,
    ]


def judge_night(ctx: JobContext, e: EvaluateConfig, prompt: PromptConfig, workdir: str) -> EvaluationResult:
    """A past night (evaluate.night, its run_id) against what users did in the evaluate.horizon_days
    from its date on (evaluation/night.py): the shipped order and the retriever's, the same users and
    lists, with intervals and their paired difference. No holdout table is read. Its metrics rows go
    under the night's run_id, labelled with the window."""
    spark, tables = ctx.spark, ctx.tables
    shipped_nights = read_input(spark, tables, C.RECOMMENDATIONS)
    today = date.fromisoformat(ctx.identity.run_date)
    found = chosen_night(shipped_nights, str(e.night), today, e.horizon_days)
    if found is None:
        note = (
            f"evaluate: no night dated {e.horizon_days} or more days before {today} in recommendations yet "
            "(its following days have not all passed): nothing to judge tonight"
        )
        log.warning(note)
        return EvaluationResult(ctx.run_id, pd.DataFrame(), None, note=note)
    night, run_date = found
    recommendations = shipped_nights.where(F.col(C.RUN_ID) == night)
    prompts_run = prompts_run_of(shipped_nights, night)
    prompts, n_users = read_run_prompts(spark, tables, prompt, prompts_run)
    window = following(run_date, e.horizon_days)
    targets = followed_targets(prompts, read_input(spark, tables, C.INTERACTIONS), window)
    dataset = f"what followed night {night}: {window.start:%Y-%m-%d} to {window.end:%Y-%m-%d} (exclusive)"
    with ctx.recorded(STAGE) as (run, staging):
        write_table(night_scores(recommendations, prompts), tables, staging.ref("scores"))
        scores = staging.read(spark, "scores")
        ranks = target_ranks(scores, targets).toPandas()
        values = metrics_frame(scores, targets).toPandas()
        table = with_intervals(values, ranks, e.bootstrap, e.seed, llm_methods=(SHIPPED,))
        write_run_scoped(
            spark.createDataFrame(
                table.assign(run_id=night, dataset=dataset)[[f.split()[0] for f in METRICS_SCHEMA.split(", ")]],
                METRICS_SCHEMA,
            ),
            tables,
            resolve(tables, "metrics"),
            {C.RUN_ID: night},
        )
        judged = int(table["n_users"].max()) if len(table) else 0
        run.add({"users": judged, "prompts_users": n_users})
        context = {
            "night": night,
            "what followed": dataset,
            "users with a chosen item in their list (judged)": f"{judged} of {n_users}",
        }
        report = write_report(table, Path(e.report_dir or Path(workdir) / "report"), context)
    log.info("evaluate: night %s judged on %d of its %d users; report at %s", night, judged, n_users, report.markdown)
    return EvaluationResult(night, table, report)


def evaluate_job(
    ctx: JobContext,
    evaluate: EvaluateConfig,
    score: ScoreConfig,
    prompt: PromptConfig,
    evidence: EvidenceConfig,
    sasrec: SasrecConfig,
    data: DataConfig,
    model: ModelConfig,
    cache_path: Path,
    mlflow: MlflowConfig,
    workdir: str,
) -> EvaluationResult:
    """Rank the run's candidate lists with every configured method; write `metrics` and the report.
    With evaluate.night, judge that past night by what followed it instead (`judge_night`)."""
    spark, tables, e = ctx.spark, ctx.tables, evaluate
    if e.night is not None:
        return judge_night(ctx, e, prompt, workdir)
    scorings = _model_methods(ctx, e, score, prompt, model, cache_path)
    prompts_run = score.prompts_run_id or ctx.run_id
    run_prompts, n_run_users = read_run_prompts(spark, tables, prompt, prompts_run)
    prompts = sample_users(run_prompts, e.max_users, e.seed)
    n_users = n_run_users if e.max_users is None else prompts.count()
    candidates = _candidate_rows(prompts)
    interactions = read_input(spark, tables, C.INTERACTIONS)
    items = read_input(spark, tables, C.ITEMS)
    holdout = read_input(spark, tables, C.HOLDOUT)
    intents = read_optional(spark, tables, C.INTENTS)
    targets = (
        holdout.where(F.col(C.SPLIT) == C.SPLIT_TEST)
        .select(C.USER_ID, C.ITEM_ID)
        .join(prompts.select(C.USER_ID), C.USER_ID, "left_semi")
    )
    methods = [method for method in baselines(e, evidence.sequential) if method.name in e.methods]
    hybrid_base = scorings.get(HYBRID_BASE)
    hybrid = HYBRID in e.methods and hybrid_base is not None and hybrid_base.fusion_head is not None
    readers = [m.name for m in methods if m.reads_evidence] + ([HYBRID] if hybrid else [])
    run_evidence = vectors = None
    if readers:
        needed_by = f"the {' and '.join(readers)} method{'s' if len(readers) > 1 else ''}"
        if "sasrec" in readers:
            needed_by += " (evaluate.sasrec_source=train makes the sasrec row train its own model)"
        run_evidence = read_run_evidence(spark, tables, prompts_run, needed_by, candidates)
    trained_blend = None
    if hybrid_base is not None and hybrid_base.blend is not None and hybrid_base.trained_run == prompts_run:
        trained_blend = hybrid_base.blend  # the training of this very run fitted it on these validation lists
    if "blend" in e.methods and trained_blend is None:
        vectors = read_run_vectors(spark, tables, evidence.sequential, prompts_run, "the blend method")
    lists = Lists(
        spark,
        prompts,
        candidates,
        training_interactions(interactions, holdout),
        interactions,
        items,
        holdout,
        e.seed,
        sasrec,
        evidence,
        data,
        run_evidence,
        vectors,
        trained_blend,
        lambda: requests_of(intents, holdout, holdout, items, evidence, cache_path, C.SPLIT_VALID),
    )
    dataset = e.dataset or resolve(tables, "candidates").location
    model_gain: AddedValue | None = None
    with ctx.recorded(STAGE) as (run, staging):
        mode = "overwrite"

        def stage(frame: DataFrame, name: str) -> None:
            nonlocal mode
            write_table(
                frame.select(C.USER_ID, C.ITEM_ID, SCORE).withColumn(METHOD, F.lit(name)),
                tables,
                staging.ref("scores"),
                mode=mode,
            )
            mode = "append"

        for method in methods:
            stage(method.scores(lists), method.name)
            fitted = " (the training run's blend)" if method.name == "blend" and trained_blend is not None else ""
            log.info("evaluate: %s scored%s%s", method.name, method.how, fitted)
        for name, scoring in scorings.items():
            scored = _stored_scores(spark, tables, ctx.run_id, scoring, prompts, n_users)
            stored = scored is not None
            how = "read from candidate_scores" if stored else "scored"
            if not stored:
                scored = score_candidates(prompts, scoring, score.partitions).select(
                    C.USER_ID, C.ITEM_ID, SCORE, "ranked_by"
                )
            with reporting(f"evaluate {name}", 0 if stored else n_users, score.progress_secs):
                write_table(scored, tables, staging.ref(f"model-{name.replace('/', '-')}"))
            scored = staging.read(spark, f"model-{name.replace('/', '-')}")
            stage(scored, name)
            log.info("evaluate: %s %s (%s)", name, how, scoring.lineage())
            if name == HYBRID_BASE and run_evidence is not None:
                model_gain = _model_gain(scored, run_evidence, targets, e.seed)
                log.info("evaluate: %s: %s", GAIN_LABEL, model_gain or "too few lists")
            if name == HYBRID_BASE and HYBRID in e.methods:
                if scoring.fusion_head is None:
                    log.warning("evaluate: the adapter has no fusion head (train.fusion_users=0?): hybrid skipped")
                    continue
                fused = fuse(scored.withColumn(C.LM_SCORE, F.col(SCORE)), run_evidence, scoring.fusion_head, SCORE)
                stage(fused, HYBRID_NAME)
                log.info("evaluate: %s scored", HYBRID_NAME)
        source = lists.requests() if e.control and run_evidence is not None else None
        if source is not None:  # the control: every request swapped for another user's
            swapped = swapped_requests(prompts, e.seed)
            evidence_sw = _with_requests(run_evidence, candidates, swapped, source)
            if "blend" in e.methods:
                stage(blend_scores(candidates, evidence_sw, _blend_ranker(lists)), control_of("blend"))
                log.info("evaluate: %s scored", control_of("blend"))
            if hybrid and hybrid_base is not None and hybrid_base.fusion_head is not None:
                prompts_sw = prompts.drop("intention_text").join(
                    swapped.withColumnRenamed(C.INTENT, "intention_text"), C.USER_ID, "left"
                )
                name = control_of(HYBRID_NAME)
                # A head that gives the model no weight ranks by the evidence alone: no model pass, as scoring
                model_pass = hybrid_base.fusion_head.weight(C.LM_SCORE) != 0.0
                rows = (
                    score_candidates(prompts_sw, hybrid_base, score.partitions)
                    if model_pass
                    else unscored_candidates(prompts_sw)
                )
                with reporting(f"evaluate {name}", n_users if model_pass else 0, score.progress_secs):
                    write_table(rows, tables, staging.ref("control"))
                model_sw = staging.read(spark, "control").withColumn(C.LM_SCORE, F.col(SCORE))
                stage(fuse(model_sw, evidence_sw, hybrid_base.fusion_head, SCORE), name)
                log.info("evaluate: %s scored", name)
        scores = staging.read(spark, "scores")
        ranks = target_ranks(scores, targets).toPandas()
        values = metrics_frame(scores, targets).toPandas()
        table = with_intervals(values, ranks, e.bootstrap, e.seed, llm_methods=LLM_METHODS)
        write_run_scoped(
            spark.createDataFrame(
                table.assign(run_id=ctx.run_id, dataset=dataset)[[f.split()[0] for f in METRICS_SCHEMA.split(", ")]],
                METRICS_SCHEMA,
            ),
            tables,
            resolve(tables, "metrics"),
            {C.RUN_ID: ctx.run_id},
        )
        users = int(table["n_users"].max()) if len(table) else 0
        run.model_id = ", ".join(sorted({s.lineage() for s in scorings.values()})) or None
        run.add({"users": users, "methods": table[METHOD].nunique(), "prompts_users": n_users})
        context = {
            "run_id": ctx.run_id,
            "dataset": dataset,
            "users evaluated": str(users),
            "models": run.model_id or "none",
        }
        if model_gain is not None:
            context[GAIN_LABEL] = str(model_gain)
        report = write_report(table, Path(e.report_dir or Path(workdir) / "report"), context)
        tuned = next((s for name, s in scorings.items() if name.startswith("lora/")), None)
        tracked = (
            log_evaluation(
                mlflow,
                workdir,
                tuned.adapter if tuned else None,
                tuned.adapter_sha256 if tuned else None,
                table,
                report.markdown.parent,
            )
            if mlflow.enabled
            else None
        )
    log.info("evaluate: report at %s", report.markdown)
    return EvaluationResult(ctx.run_id, table, report, tracked, model_gain)
