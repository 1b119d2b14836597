"""The model side of scoring, shared by the score and evaluate jobs.

Checking a base model and adapter on the driver and shipping them to executors (`prepare_model_scoring`),
scoring prompts there (`score_candidates`, or `unscored_candidates` when a fusion head needs no model
score), reading a run's prompts, and applying an adapter's fusion head to the run's evidence (`fuse`).
Jobs compose these; no job imports another.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import PromptConfig, ScoreConfig, TableCatalog
from instructrec_batch.errors import ConfigError, ContractError
from instructrec_batch.hardware import release_openmp_threads
from instructrec_batch.models.adapter import AdapterInfo, read_blob, verify_adapter
from instructrec_batch.models.base import BaseModel
from instructrec_batch.ranking.blend import with_evidence
from instructrec_batch.ranking.ranker import LinearRanker
from instructrec_batch.scoring.udf import MODEL, RETRIEVAL_ORDER, AdapterPayload, ScoringSpec, score_fn, scored_schema
from instructrec_batch.spark import faults
from instructrec_batch.spark.engine import is_connect
from instructrec_batch.spark.tables import read_input
from instructrec_batch.tracking import ResolvedAdapter

_PROMPT_INPUT = [
    "user_id",
    "template_id",
    "history_titles",
    "preference_text",
    "intention_text",
    "candidate_ids",
    "candidate_titles",
    "cold_start",
]

# What an adapter recorded before a setting joined PromptConfig.item_text: the behaviour it was tuned on.
_ITEM_TEXT_BEFORE_KEYS = {"taste_categories": 0}


def _payload(spark: SparkSession, adapter: AdapterInfo | None) -> AdapterPayload:
    if adapter is None:
        return AdapterPayload()
    files = read_blob(adapter)
    if is_connect(spark):  # no SparkContext over Connect: the bytes travel in the UDF closure
        return AdapterPayload(files=files)
    return AdapterPayload(broadcast=spark.sparkContext.broadcast(files))


@dataclass(frozen=True)
class ModelScoring:
    """A checked model (+ adapter) ready to ship to executors, and its lineage id."""

    spec: ScoringSpec
    payload: AdapterPayload
    model_id: str
    fusion_head: LinearRanker | None = None  # trained with the adapter: model score + evidence
    adapter: ResolvedAdapter | None = None  # where the adapter came from (folder, registered version, run)
    adapter_sha256: str | None = None
    blend: LinearRanker | None = None  # the evidence blend the head is built on, fitted by training
    trained_run: str | None = None  # the run_id whose tables the adapter (and its blend) was trained on

    def lineage(self, fused: bool = False) -> str:
        """The model_id written to output rows: base@sha+lora@sha[+fusion] [(models:/<name>/<version>)]."""
        registered = self.adapter.registered if self.adapter else None
        return f"{self.model_id}{'+fusion' if fused else ''}" + (f" ({registered})" if registered else "")


def prepare_model_scoring(
    spark: SparkSession,
    s: ScoreConfig,
    prompt: PromptConfig,
    base: BaseModel,
    source: ResolvedAdapter | None,
    template_id: str | None = None,
) -> ModelScoring:
    """Check the base model and the adapter (files, sha256, base model) on the driver, before any task.

    `source` is the adapter as a local folder (a models:/ or runs:/ reference already downloaded by the
    job context), checked like any folder; the lineage then also names the registered version.
    """
    base_sha = base.sha256()
    adapter_path = (source.registered or source.folder) if source else None
    adapter = verify_adapter(source.folder, base_sha256=base_sha) if source else None
    trained_on = adapter.manifest.get("template_version") if adapter else None
    if trained_on and trained_on != prompt.template_version:
        raise ConfigError(
            f"adapter {adapter_path} was trained on template version {trained_on} but prompt.template_version="
            f"{prompt.template_version}; build prompts and score with prompt.template_version={trained_on}, "
            "or train an adapter on the new version"
        )
    item_text = adapter.manifest.get("item_text") if adapter else None  # absent from older adapters
    if item_text is not None:
        item_text = {**_ITEM_TEXT_BEFORE_KEYS, **item_text}  # settings added later read as their former behaviour
    if item_text is not None and item_text != prompt.item_text():
        raise ConfigError(
            f"adapter {adapter_path} was trained on item text {item_text} but the config asks for "
            f"{prompt.item_text()}; set prompt.item_attributes, prompt.show_ratings and "
            "prompt.taste_categories as the adapter was trained and rebuild the prompts, or train an adapter "
            "with these settings"
        )
    model_id = f"{base.name}@{base_sha[:12]}" + (f"+lora@{adapter.sha256[:12]}" if adapter else "")
    spec = ScoringSpec(
        model_path=str(base.path),
        dtype=s.dtype,
        device=s.device,
        method=s.method,
        batch_size=s.batch_size,
        template_version=prompt.template_version,
        merge_adapter=s.merge_adapter,
        adapter_sha256=adapter.sha256 if adapter else None,
        template_id=template_id,
        fail_after_batches=faults.armed().after_batches,
        max_batch_tokens=s.max_batch_tokens,
        cached_models=s.cached_models,
    )
    return ModelScoring(
        spec,
        _payload(spark, adapter),
        model_id,
        adapter.fusion_head() if adapter else None,
        source,
        adapter.sha256 if adapter else None,
        adapter.blend() if adapter else None,
        adapter.manifest.get("run_id") if adapter else None,
    )


def score_candidates(prompts: DataFrame, scoring: ModelScoring, partitions: int | None = None) -> DataFrame:
    """One row per candidate: user_id, item_id, score, position, ranked_by, template_id (lazy).

    Called by the driver right before the action that scores: on the embedded engine the UDF runs on
    an engine thread of this process, so the driver thread's idle OpenMP team is released first.
    """
    release_openmp_threads()
    schema = scored_schema(
        prompts.schema[C.USER_ID].dataType.simpleString(),
        prompts.schema["candidate_ids"].dataType.elementType.simpleString(),
    )
    if partitions:
        prompts = prompts.repartition(partitions, C.USER_ID)
    columns = [*_PROMPT_INPUT, *([C.TASTE_TEXT] if C.TASTE_TEXT in prompts.columns else [])]  # older prompts lack it
    return prompts.select(*columns).mapInPandas(score_fn(scoring.spec, scoring.payload), schema)


HYBRID = "hybrid"
EVIDENCE = "evidence"  # ranked by a fusion head's evidence alone: the model's score had no weight, so no model pass


def unscored_candidates(prompts: DataFrame) -> DataFrame:
    """`score_candidates`' rows without the model: warm users' rows marked for the fusion head's evidence
    (`ranked_by` = evidence, no score yet), cold-start users' rows in retrieval order as the model pass
    would give them. For a head whose model weight is 0, `fuse` then ranks exactly as after a model pass.
    """
    rows = prompts.select(
        C.USER_ID, "template_id", "cold_start", F.posexplode("candidate_ids").alias("index", C.ITEM_ID)
    )
    position = (F.col("index") + 1).cast("int")
    cold = F.col("cold_start").cast("boolean")
    return rows.select(
        C.USER_ID,
        C.ITEM_ID,
        F.when(cold, -position.cast("double")).otherwise(F.lit(None).cast("double")).alias("score"),
        position.alias("position"),
        F.when(cold, F.lit(RETRIEVAL_ORDER)).otherwise(F.lit(EVIDENCE)).alias("ranked_by"),
        "template_id",
    )


def model_pass_needed(head: LinearRanker | None, score: ScoreConfig) -> bool:
    """Whether scoring must run the model over the lists: always, unless the adapter's fusion head ranks
    (score.fusion) and gives the model's score no weight, where the lists rank by their evidence alone
    and score.skip_unused_model skips the pass (and the GPU it needs)."""
    unused = head is not None and score.fusion and head.weight(C.LM_SCORE) == 0.0
    return not (unused and score.skip_unused_model)


def fuse(scored: DataFrame, evidence: DataFrame, head: LinearRanker, score: str = "score") -> DataFrame:
    """Model-ranked (and evidence-marked) rows get the fusion head's score over (model score, evidence);
    others keep theirs.

    The model's own score is read from `lm_score` (null on evidence rows, where the head gives it no
    weight). The score job has checked that the evidence covers every candidate
    (evidence.stored.read_run_evidence); the fill of `ranking.blend.with_evidence` is only a safety net.
    """
    joined = with_evidence(scored, evidence)
    by_head = F.col("ranked_by").isin(MODEL, EVIDENCE)
    return (
        joined.withColumn(score, F.when(by_head, head.column()).otherwise(F.col(score)))
        .withColumn("ranked_by", F.when(F.col("ranked_by") == MODEL, F.lit(HYBRID)).otherwise(F.col("ranked_by")))
        .drop(*C.EVIDENCE_COLUMNS)
    )


def read_run_prompts(
    spark: SparkSession, tables: TableCatalog, prompt: PromptConfig, run_id: str
) -> tuple[DataFrame, int]:
    """The prompts of `run_id` and their row count; an empty selection is an error naming the job to run.

    The count is returned because every caller needs it (slicing, coverage checks) and each count is a
    full scan of the prompts table. Rows must have been rendered with prompt.template_version, since
    scoring re-renders them with that version's templates.
    """
    prompts = read_input(spark, tables, C.PROMPTS).where(F.col(C.RUN_ID) == run_id)
    has_taste = C.TASTE_TEXT in prompts.columns
    tasted = F.count(C.TASTE_TEXT) if has_taste else F.lit(0)  # rows whose instruction has a taste line
    stats = prompts.groupBy("template_version").agg(F.count(F.lit(1)).alias("count"), tasted.alias("tasted"))
    rows = stats.collect()
    by_version = {r["template_version"]: r["count"] for r in rows}
    if not by_version:
        raise ContractError(
            f"table 'prompts' has no rows for run_id '{run_id}'; run `instructrec-batch prompts` for that "
            "run first, or set score.prompts_run_id"
        )
    wanted = prompt.template_version
    if set(by_version) != {wanted}:
        found = ", ".join(sorted(by_version))
        raise ContractError(
            f"table 'prompts' rows of run_id '{run_id}' were built with template version {found} but "
            f"prompt.template_version={wanted}; rerun `instructrec-batch prompts` with this setting, or score "
            f"with prompt.template_version={found}"
        )
    taste = prompt.taste_categories
    if (taste and not has_taste) or (not taste and sum(r["tasted"] for r in rows)):
        built = "with taste lines" if not taste else "without a taste_text column"
        raise ContractError(
            f"table 'prompts' rows of run_id '{run_id}' were built {built} but prompt.taste_categories={taste}; "
            "rerun `instructrec-batch prompts` with this setting, or score with the setting they were built with"
        )
    return prompts, sum(by_version.values())
