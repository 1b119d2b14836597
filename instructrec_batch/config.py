"""Typed configuration: defaults here, YAML files layered on top, then `--set key=value` overrides.

Every section is a frozen pydantic model with `extra="forbid"`, so an unknown key or a bad value is
rejected at start-up with its dotted path and the allowed keys or values (`ConfigError`), long
before a Spark job touches data. conf/base.yaml mirrors these defaults (a test keeps them equal).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from instructrec_batch.errors import ConfigError
from instructrec_batch.paths import BARE_NAME, CATALOG_NAME, is_catalog_schema, is_path, outside_roots, table_location

# The instruction template version of prompts and adapters unless prompt.template_version says otherwise.
DEFAULT_TEMPLATE_VERSION = "v2"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EngineKind = Literal["local", "spark", "connect"]
TableFormat = Literal["delta", "parquet"]


class EngineConfig(_Section):
    """Which Spark runs the jobs."""

    kind: EngineKind = Field("local", description="local: embedded Sail; spark: classic; connect: remote")
    remote: str | None = Field(None, description="Spark Connect URL (sc://host:port), for kind=connect")
    master: str | None = Field(None, description="classic master URL (e.g. local[2]); None keeps spark-submit's choice")
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions")
    conf: dict[str, str] = Field(default_factory=dict, description="extra Spark conf, applied at start")
    session_timeout_secs: int = Field(
        3600, ge=1, description="local: the embedded server expires a session idle this long (Sail's default is 900)"
    )
    keep_alive: bool = Field(
        True, description="local: touch the session from a background thread so long driver-side work never idles it"
    )


class TablesConfig(_Section):
    """Where tables live. A value is a catalog name (`cat.schema.table` or `schema.table`), a path
    (contains '/' or '://'), or a bare name resolved under `root`."""

    root: str | None = Field(None, description="folder or catalog.schema of bare table names; default <workdir>/tables")
    staging: str | None = Field(None, description="scratch folder for multi-step jobs; default <root>/_staging")
    format: TableFormat = Field(
        "delta",
        description="output format; parquet only for classic Spark without Delta jars (tests, Spark-parity checks)",
    )
    interactions: str = "interactions"
    items: str = "items"
    candidates: str = "candidates"
    candidates_history: str = "candidates_history"
    intents: str = "intents"
    holdout: str = "holdout"
    prompts: str = "prompts"
    rejects: str = "rejects"
    runs: str = "runs"
    recommendations: str = "recommendations"
    candidate_scores: str = "candidate_scores"
    candidate_evidence: str = "candidate_evidence"
    sequence_vectors: str = "sequence_vectors"
    metrics: str = "metrics"

    @field_validator(
        "interactions",
        "items",
        "candidates",
        "candidates_history",
        "intents",
        "holdout",
        "prompts",
        "rejects",
        "runs",
        "recommendations",
        "candidate_scores",
        "candidate_evidence",
        "sequence_vectors",
        "metrics",
    )
    @classmethod
    def _table_name(cls, value: str) -> str:
        """A bare name becomes a folder under the root: it must not be '..' or anything but a plain name."""
        if is_path(value) or CATALOG_NAME.match(value) or BARE_NAME.match(value):
            return value
        raise ValueError("expected a plain table name (letters, digits, '_', '-'), a catalog name or a path")

    def locations(self, root: str) -> dict[str, str]:
        """tables.<name> → the path it resolves to, for the tables that are paths (not catalog tables)."""
        found = {}
        for name in [n for n in type(self).model_fields if n not in ("root", "staging", "format")]:
            location, is_catalog = table_location(getattr(self, name), root)
            if not is_catalog:
                found[f"tables.{name}"] = location
        return found


@dataclass(frozen=True)
class TableCatalog:
    """Where each logical table lives: the `tables` settings with their root resolved. What table I/O
    needs of a configuration, and all it gets."""

    settings: TablesConfig
    root: str  # folder or catalog.schema of bare table names

    @property
    def format(self) -> str:
        return self.settings.format

    def configured(self, logical: str) -> str:
        """The configured value of tables.<logical>."""
        return getattr(self.settings, logical)


class DataConfig(_Section):
    """Evaluation protocol knobs: fixed so that figures compare across runs."""

    seed: int = Field(42, description="seed of the negative sampling and candidate shuffling")
    negatives: int = Field(19, ge=1, description="sampled negatives per user next to the held-out target")
    genre_intents: bool = Field(
        False,
        description="`data movielens`: also write intents stating each interacted film's genres at its time "
        "(InstructRec's specific intention: leaks the target's category by construction)",
    )


class RedialConfig(_Section):
    """`data redial`: the ReDial dialogues (He et al.'s data/redial/ files) as the project's tables."""

    source: str | None = Field(None, description="folder holding test.jsonl, item_ids.json, entity2id.json")
    names_removed: bool = Field(
        False, description="read the seeker's words from test_p3.jsonl (film names removed from the text)"
    )
    shares: tuple[float, float, float] = Field(
        (0.5, 0.2, 0.3),
        description="train / valid / test shares of the dialogues (split by a seeded hash); the valid ones fit the "
        "fusion head (docs/experiments/45-redial-levers)",
    )


TaskFormName = Literal["pointwise", "listwise"]
ItemAttribute = Literal["category", "brand"]
TextColumn = Literal["title", "category", "brand", "description"]
InstructionForm = Literal["preference", "intention", "both"]


class SasrecConfig(_Section):
    """The sequential model (SASRec, a self-attentive sequential recommender), trained on the driver (a GPU
    when it has one): once a run by the evidence job for the evidence column ev_sequence (with
    evidence.sequential on), and by the evaluation for its `sasrec` row when evaluate.sasrec_source=train."""

    max_len: int = Field(
        50, ge=2, description="items per training sequence; a user is scored from their newest max_len"
    )
    dim: int = Field(64, ge=8, description="embedding width")
    blocks: int = Field(2, ge=1, description="self-attention blocks")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    epochs: int = Field(80, ge=1, description="passes over the training sequences")
    min_steps: int = Field(
        1500,
        ge=0,
        description="optimiser steps at least: more epochs where an epoch is only a few batches (few users, "
        "short histories); short of ~1,500 steps a SASRec still ranks like popularity. 0 = exactly `epochs`",
    )
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0)
    loss: Literal["ce", "bce"] = Field(
        "ce",
        description="ce: softmax cross-entropy of the next item against the catalogue (sampled beyond "
        "ce_negatives items); bce: the original paper's one sampled negative per position",
    )
    ce_negatives: int = Field(
        2048,
        ge=1,
        description="ce: items up to this many are all scored; a larger catalogue samples this many per batch",
    )
    sequences: Literal["newest", "all"] = Field(
        "all",
        description="newest: each user's max_len newest items (the paper); all: the whole history, in windows",
    )
    max_minutes: float | None = Field(
        20.0, gt=0, description="wall-clock budget of training: stop after the epoch that spends it; null = none"
    )


class EvidenceConfig(_Section):
    """Evidence per (user, candidate) from training interactions and the items table (popularity,
    co-occurrence, category affinity, text similarity)."""

    window: int = Field(10, ge=1, description="two items co-occur when a user's sequence has them this close")
    history: int = Field(20, ge=1, description="newest history items each candidate is compared with")
    max_items: int = Field(200, ge=2, description="newest distinct items per user counted (caps heavy users)")
    recent_days: int = Field(
        14,
        ge=1,
        description="ev_popularity_recent counts the users of an item in this many days before the newest "
        "interaction the evidence is given (its as-of moment)",
    )
    text_columns: list[TextColumn] = Field(
        default_factory=lambda: ["title", "category", "brand"],
        description="items columns whose words the text similarity compares (absent ones are skipped; "
        "[] = no text similarity): the item text the instructions show",
    )
    pairs_per_slice: int = Field(
        10_000_000,
        ge=1,
        description="windowed item pairs counted per step (bounds memory; each pair is aggregated in both "
        "orders): evidence is computed in item-hash slices of about this many pairs, each staged, then "
        "published in one commit",
    )
    request_encoder: str | None = Field(
        "all-minilm-l6-v2",
        description="sentence encoder of ev_request_meaning (request vs candidate text, when an intents table "
        "exists): a known alias (pulled into the cache once) or a Hugging Face encoder folder; null = none",
    )
    sequential: bool = Field(
        True,
        description="ev_sequence: the `sasrec` model's log-probability that the candidate comes next, trained once "
        "a run on the evidence's training interactions; false: no sequential model, ev_sequence is a constant",
    )


class ModelConfig(_Section):
    """The base causal LM."""

    base: str = Field(
        "smollm2-135m-instruct",
        description="a known alias (pulled into the cache on first use) or a path to a Hugging Face folder",
    )
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="weights dtype of a pulled model")


class PromptConfig(_Section):
    """How instructions are built."""

    task: TaskFormName = Field("pointwise", description="pointwise (Yes/No per candidate) or listwise")
    template_version: str = Field(DEFAULT_TEMPLATE_VERSION, description="templates/<version>.yaml")
    template_id: str | None = Field(None, description="pinned inference template; None = '<task>-0'")
    max_tokens: int = Field(512, ge=64, description="token budget of the longest model input per user")
    max_history: int = Field(
        10,
        ge=0,
        description="newest history items an instruction shows, before the token budget cuts further: the same "
        "length in training examples and in scoring prompts, so an adapter is never served longer histories "
        "than it was tuned on",
    )
    title_max_chars: int = Field(120, ge=8, description="item titles are cut to this many characters")
    title_max_tokens: int = Field(32, ge=2, description="... and to this many tokens")
    item_attributes: list[ItemAttribute] = Field(
        default_factory=lambda: ["category", "brand"],
        description="items columns shown after each title ('Title | Comedy, Drama'); absent ones are skipped",
    )
    attribute_max_tokens: int = Field(16, ge=2, description="each shown attribute is cut to this many tokens")
    show_ratings: bool = Field(
        False,
        description="history lines carry the user's rating ('Title | rated 4/5', out of the table's largest "
        "rating) when interactions have a rating column; candidates never do",
    )
    taste_categories: int = Field(
        0,
        ge=0,
        description="the instruction names the user's this many most frequent items.category values over their "
        "whole history (with shares), next to the newest history lines; 0 = no taste line",
    )
    text_max_chars: int = Field(300, ge=8, description="intents and reviews are cut to this many characters")
    text_max_tokens: int = Field(64, ge=2, description="... and to this many tokens")
    users_per_slice: int = Field(
        50_000, ge=1, description="users processed per step; bounds memory, output is still one commit"
    )
    sample_users: int | None = Field(
        None, ge=1, description="build prompts for a seeded sample of this many users (demo, dev); None = all"
    )
    exclude_holdout: bool = Field(
        True, description="cut each user's history before their held-out rows (when a holdout table exists)"
    )

    @property
    def inference_template_id(self) -> str:
        return self.template_id or f"{self.task}-0"

    def item_text(self) -> dict[str, Any]:
        """The settings that shape the text of a history line or candidate beyond the template: which item
        attributes follow a title, whether history lines carry ratings and how many categories the taste
        line names. An adapter's manifest records them, so scoring can refuse to rank text laid out unlike
        the text the adapter was tuned on."""
        return {
            "item_attributes": list(self.item_attributes),
            "show_ratings": self.show_ratings,
            "taste_categories": self.taste_categories,
        }


class TrainConfig(_Section):
    """LoRA instruction tuning. Defaults fit a CPU budget of under 15 minutes on 2 cores."""

    tasks: list[TaskFormName] = Field(default_factory=lambda: ["pointwise"], description="task forms to train on")
    examples_per_user: int = Field(3, ge=1, description="newest training targets per user (before the holdout)")
    negatives: int = Field(3, ge=1, description="pointwise: sampled negatives per positive")
    negative_sampling: Literal["uniform", "popularity", "neighbours"] = Field(
        "popularity",
        description="how training examples' negatives are drawn: uniformly over items; popularity: half of "
        "them in proportion to the items' training interactions (so popularity alone does not separate "
        "target from negatives); neighbours: a third by popularity, a third among the 50 items nearest by "
        "co-occurrence (in the training sequences) to the item just before the target, a third uniform. "
        "Validation and fusion lists stay uniform, like the evaluation's",
    )
    list_size: int = Field(20, ge=2, le=26, description="listwise: candidates per example (target + negatives)")
    forms: dict[InstructionForm, float] = Field(
        default_factory=lambda: {"preference": 0.25, "intention": 0.25, "both": 0.5},
        description="shares of InstructRec's instruction forms among training examples whose user had stated "
        "an intent by the target's time: preference only (history), intention only (the intent), both",
    )
    max_users: int | None = Field(None, ge=1, description="train on a seeded sample of this many users")
    val_users: int = Field(100, ge=1, description="validation examples (one per user, their valid item)")
    pairwise_weight: float = Field(
        1.0, ge=0, description="weight of the pointwise ranking loss (target above its negatives); 0 = CE only"
    )
    packed: bool = Field(
        True,
        description="one sequence per pointwise example (prefix once, suffixes masked apart); false = "
        "every candidate's sequence in full (the reference)",
    )
    micro_batch_tokens: int = Field(
        1024,
        ge=64,
        description="a batch is run in parts of whole examples up to this many (padded) tokens, gradients "
        "accumulated to the whole batch's: same updates, a fraction of the activation memory",
    )
    residual: bool = Field(
        False,
        description="rank the model's score plus an evidence blend in the pairwise loss, so the adapter learns "
        "what collaborative evidence misses",
    )
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], description="attention projections"
    )
    lr: float = Field(5e-4, gt=0)
    max_steps: int = Field(150, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=32, description="longest training sequence in tokens (longer are dropped)")
    eval_every: int = Field(50, ge=1, description="steps between validation losses")
    patience: int = Field(2, ge=1, description="stop after this many evaluations without improvement")
    max_minutes: float = Field(
        12.0, gt=0, description="wall-clock budget of the loop, validations included; training stops to fit it"
    )
    seed: int = 42
    output: str | None = Field(None, description="adapter folder; None = <workdir>/adapters/<run_id>")
    fusion_users: int = Field(
        200,
        ge=0,
        description="users whose validation lists fit the fusion head (model score + evidence); 0 = no head",
    )
    fusion_negatives: int = Field(19, ge=1, description="sampled negatives per fusion list, next to the valid item")
    split: Literal["holdout", "time"] = Field(
        "holdout",
        description="where validation (early stopping, the fusion head's lists) comes from: holdout = the "
        "benchmark protocol's table (each user's valid row); time = train on what happened before train.cutoff "
        "and validate on each user's first interaction after it (a production night: no holdout table)",
    )
    cutoff: str | None = Field(
        None,
        description="train.split=time: the cut-off, a timestamp, UTC unless it names its zone (or a number "
        "when event_ts is BIGINT); None = the time before which all but train.valid_share of the interactions fall",
    )
    valid_share: float = Field(
        0.1, gt=0, lt=1, description="train.split=time without a cutoff: the newest share of interactions, after it"
    )
    lists: Literal["sampled", "retriever"] = Field(
        "sampled",
        description="the labelled lists the evidence blend and the fusion head are fitted on: sampled = each "
        "validation user's valid item and sampled negatives (the benchmark's lists); retriever (train.split=time) "
        "= a retriever's lists, labelled by what users chose from them in train.horizon_days: at the cut-off (the "
        "candidates_history table's first night on or after it, else an item-kNN top-train.replay_top_n replayed "
        "there) and at train.earlier_cutoffs earlier cut-offs. Their retrieval rank gets the weight "
        "it earns, and a head that ranks them worse than their own order is not shipped: the night keeps the "
        "retriever's order (the floor)",
    )
    replay_top_n: int = Field(20, ge=2, description="train.lists=retriever without kept nights: the replayed list size")
    earlier_cutoffs: int = Field(
        8,
        ge=0,
        description="train.lists=retriever: the blend also learns from the retriever's lists at this many earlier "
        "cut-offs, train.horizon_days apart before the newest interaction's day, each as at the training cut-off "
        "(the kept list in force when each user came back, else an item-kNN replay) with evidence from before it",
    )
    horizon_days: int = Field(
        7, ge=1, description="train.lists=retriever: a list's positive is the first item chosen within these days"
    )
    as_of: str | None = Field(
        None,
        pattern=r"^(\d{4}-\d{2}-\d{2}|previous)$",
        description="train only on what was known before this date (interactions, kept lists, stated intents): "
        "YYYY-MM-DD, or previous = the night `promote` judges (promote.night=previous), so a challenger never "
        "sees what followed the night it is compared on; None = everything",
    )

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of_as_text(cls, value: object) -> object:
        """YAML reads 2026-11-22 as a date: accept it as the same text."""
        return value.isoformat() if isinstance(value, date) else value

    @model_validator(mode="after")
    def _retriever_lists_need_time(self) -> TrainConfig:
        if self.lists == "retriever" and self.split != "time":
            raise ValueError(
                "train.lists=retriever needs train.split=time: its labels are what users chose after the cut-off, "
                "and a benchmark holdout's later rows are its test rows"
            )
        return self

    @field_validator("forms")
    @classmethod
    def _forms_are_shares(cls, forms: dict[str, float]) -> dict[str, float]:
        if set(forms) != {"preference", "intention", "both"} or any(v < 0 for v in forms.values()):
            raise ValueError("expected a share for each of preference, intention and both, none negative")
        if abs(sum(forms.values()) - 1.0) > 1e-6:
            raise ValueError(f"the shares sum to {sum(forms.values()):.4g}, not 1")
        return forms


class ScoreConfig(_Section):
    """Batch scoring on executors."""

    adapter: str | None = Field(
        None,
        description="LoRA adapter folder, or models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/<path>; "
        "None scores with the base model alone",
    )
    k: int = Field(10, ge=1, description="recommendations kept per user")
    method: Literal["onepass", "shared_prefix", "naive"] = Field(
        "onepass",
        description="pointwise implementation: onepass (prefix + all suffixes in one masked sequence), "
        "shared_prefix (prefix KV cache reused), naive (the per-pair reference)",
    )
    batch_size: int = Field(32, ge=1, description="sequences per forward pass (halved on CUDA out-of-memory)")
    max_batch_tokens: int = Field(
        1024,
        ge=64,
        description="onepass: users packed per forward up to this many tokens (rows × longest row); small batches "
        "are fastest on CPUs, raise it (e.g. 16384) on GPUs",
    )
    progress_secs: float = Field(
        30.0, ge=0, description="seconds between progress lines (users done, candidates/s, ETA); 0 = none"
    )
    cached_models: int = Field(
        1, ge=1, description="models kept loaded per executor process; the least recently used is dropped first"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    merge_adapter: bool = Field(True, description="merge LoRA weights into the base for faster inference")
    prompts_run_id: str | None = Field(None, description="score the prompts of this run; None = this run_id")
    users_per_slice: int = Field(50_000, ge=1, description="users per scoring step (bounds memory)")
    write_scores: bool = Field(
        False, description="also write every candidate's score to candidate_scores (evaluate reuses them)"
    )
    keep_lists: bool = Field(
        True,
        description="add the night's lists in their arrival order to candidates_history (this run_date's rows "
        "replaced), the past nights later trainings fit on (train.lists=retriever); never into a table of yours",
    )
    partitions: int | None = Field(
        None, ge=1, description="repartition prompts by user before scoring (e.g. a multiple of the GPU count)"
    )
    fusion: bool = Field(
        True, description="rank by the adapter's fusion head (model score + collaborative evidence) when it has one"
    )
    skip_unused_model: bool = Field(
        True,
        description="when the fusion head gives the model's score no weight, rank by its evidence without the "
        "model pass (no GPU work; candidate_scores then has no lm_score); false runs the model anyway",
    )


EvalMethod = Literal[
    "retriever", "random", "popularity", "itemknn", "bm25", "minilm", "blend", "sasrec", "zero_shot", "lora", "hybrid"
]


class EvaluateConfig(_Section):
    """Offline evaluation against baselines on the protocol's candidate lists."""

    methods: list[EvalMethod] = Field(
        default_factory=lambda: ["random", "popularity", "itemknn", "blend", "sasrec", "zero_shot", "lora", "hybrid"],
        description="rankers compared on the same candidates; zero_shot/lora/hybrid use the model",
    )
    tasks: list[TaskFormName] = Field(
        default_factory=lambda: ["pointwise"], description="task forms the model methods are reported for"
    )
    max_users: int | None = Field(None, ge=1, description="evaluate a seeded sample of this many users; None = all")
    seed: int = Field(42, description="seed of the user sample and of the random baseline")
    dataset: str | None = Field(None, description="label in the metrics table; None = the candidates table location")
    night: str | None = Field(
        None,
        description="judge this past night (a run_id with recommendations) by what users did after it, instead "
        "of a benchmark split: its shipped order and the lists' own order, no holdout read",
    )
    horizon_days: int = Field(7, ge=1, description="evaluate.night: the days from the night's date that count")
    report_dir: str | None = Field(None, description="markdown report and PNG charts; None = <workdir>/report")
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples of users for the 95% intervals")
    control: bool = Field(
        True,
        description="with an intents table, also rank by the blend and the hybrid with every user's request "
        "swapped for another user's (rows '<method>/shuffled-intents'): how much of their gain reads the request",
    )
    sasrec_source: Literal["evidence", "train"] = Field(
        "evidence",
        description="evidence: the sasrec row ranks by the run's ev_sequence, the SASRec the evidence job "
        "trained (no second training); train: a SASRec trained here with the `sasrec` section's recipe (also "
        "what happens when evidence.sequential is off)",
    )


class PromoteConfig(_Section):
    """The challenger against the champion on the same judged night; the champion alias moves only when the
    challenger's NDCG@10 is higher with a paired 95% interval above 0 (or when there is no champion yet)."""

    challenger: str | None = Field(
        None,
        description="the registered version to promote (models:/<name>@<alias> or models:/<name>/<version>); "
        "None = models:/<mlflow.model_name>@<mlflow.alias>, the version training registered last",
    )
    champion_alias: str = Field(
        "champion", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,254}$", description="the alias the nightly scores with"
    )
    night: str = Field(
        "previous",
        description="the night both rank (a run_id with recommendations, its prompts and evidence), judged by "
        "what users chose from their lists after it; previous = the latest whose promote.horizon_days have passed",
    )
    horizon_days: int = Field(7, ge=1, description="the days from the night's date whose interactions judge it")
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples of users for the paired interval")
    seed: int = Field(42, description="seed of the bootstrap")


class MlflowConfig(_Section):
    """MLflow tracking and model registry of adapters (training runs, registered versions, evaluations)."""

    enabled: bool = Field(True, description="log training and evaluation to MLflow and register adapters")
    tracking_uri: str | None = Field(
        None, description="None = a SQLite store in <workdir>/mlflow; 'databricks' on Databricks"
    )
    registry_uri: str | None = Field(None, description="None = the tracking store; 'databricks-uc' for Unity Catalog")
    experiment: str = Field("instructrec_batch", description="experiment name (a workspace path on Databricks)")
    model_name: str = Field(
        "instructrec_adapter", description="registered model of the adapters (catalog.schema.name in Unity Catalog)"
    )
    alias: str = Field(
        "challenger", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,254}$", description="alias set on each newly trained version"
    )


class RunConfig(_Section):
    """Identity of one nightly run; outputs are replaced per run_id, so reruns are idempotent."""

    run_date: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD; None = today (UTC)")
    run_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$", description="None = '<run_date>-<hash of tables, data, prompt>'"
    )

    @field_validator("run_date", mode="before")
    @classmethod
    def _date_as_text(cls, value: object) -> object:
        """YAML reads 2026-11-22 as a date: accept it as the same text."""
        return value.isoformat() if isinstance(value, date) else value


class Config(_Section):
    """The whole configuration of one invocation."""

    workdir: str = Field("work", description="folder for tables, adapters, reports of a local run")
    cache_dir: str | None = Field(
        None, description="downloads and converted models; default $XDG_CACHE_HOME/instructrec_batch"
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)
    tables: TablesConfig = Field(default_factory=TablesConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    redial: RedialConfig = Field(default_factory=RedialConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    sasrec: SasrecConfig = Field(default_factory=SasrecConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    allowed_roots: list[str] = Field(
        default_factory=list,
        description="folders or storage URIs that every configured path must stay inside; empty = unrestricted",
    )

    @property
    def tables_root(self) -> str:
        return self.tables.root or str(Path(self.workdir) / "tables")

    @property
    def catalog(self) -> TableCatalog:
        """The table settings with their root resolved: what table I/O takes."""
        return TableCatalog(self.tables, self.tables_root)

    @property
    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "instructrec_batch"

    def path_settings(self) -> dict[str, str]:
        """Every location this configuration reads or writes through a path, keyed by its setting."""
        found = {"workdir": self.workdir, **({"redial.source": self.redial.source} if self.redial.source else {})}
        if not is_catalog_schema(self.tables.root):
            found["tables.root"] = self.tables_root
        found.update(self.tables.locations(self.tables_root))
        optional = {
            "cache_dir": self.cache_dir,
            "tables.staging": self.tables.staging,
            "train.output": self.train.output,
            "score.adapter": None if is_registry_ref(self.score.adapter) else self.score.adapter,
            "evaluate.report_dir": self.evaluate.report_dir,
        }
        found.update({key: value for key, value in optional.items() if value})
        base = self.model.base
        if is_path(base) or base.startswith((".", "~")) or Path(base).is_dir():  # else a model alias
            found["model.base"] = base
        return found

    def fingerprint(self) -> str:
        """A short stable hash of what determines results (not the run's own identity or folders)."""
        canonical = json.dumps(
            self.model_dump(mode="json", exclude={"run", "workdir", "cache_dir", "allowed_roots", "mlflow"}),
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def run_fingerprint(self) -> str:
        """Hash of what defines a night's run: its tables, data protocol and instruction format.

        The default run_id uses it, so every job of one nightly flow (evidence, prompts, train, score, evaluate)
        lands on the same run_id even though each sets its own options (an adapter, a k), and a rerun
        with a fixed model or scorer replaces that night's output instead of adding a second copy.
        """
        canonical = json.dumps(
            self.model_dump(mode="json", include={"tables", "data", "evidence", "sasrec", "prompt"}), sort_keys=True
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunIdentity:
    run_id: str
    run_date: str


def run_identity(cfg: Config, today: datetime | None = None) -> RunIdentity:
    """run_date defaults to today (UTC); run_id to '<run_date>-<run fingerprint>' so reruns collide."""
    run_date = cfg.run.run_date or (today or datetime.now(timezone.utc)).strftime("%Y-%m-%d")
    return RunIdentity(run_id=cfg.run.run_id or f"{run_date}-{cfg.run_fingerprint()[:8]}", run_date=run_date)


def pin_run(cfg: Config) -> Config:
    """`cfg` with run.run_date and run.run_id resolved now, for a flow whose jobs must share one run."""
    identity = run_identity(cfg)
    return cfg.model_copy(
        update={"run": cfg.run.model_copy(update={"run_id": identity.run_id, "run_date": identity.run_date})}
    )


def is_registry_ref(value: str | None) -> bool:
    """An MLflow models:/ or runs:/ URI: resolved by the tracking module, not a path to check."""
    return bool(value) and str(value).startswith(("models:/", "runs:/"))


def _deep_merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_override(item: str) -> dict[str, Any]:
    """`a.b.c=value` → {"a": {"b": {"c": value}}}; the value is read as YAML (numbers, bools, null)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key.path=value (e.g. engine.kind=spark)")
    value: Any = yaml.safe_load(raw) if raw.strip() else ""
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    # safe_load only builds plain data: a config file can never construct objects or run code.
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not plain YAML data: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, found {type(data).__name__}")
    return data


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at the parent of `loc` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        current = field.annotation
    return sorted(current.model_fields)


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    path = ".".join(str(p) for p in loc)
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(Config, loc))
        return f"unknown config key '{path}'; allowed keys here: {allowed}"
    if error["type"] == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"config key '{path}' has value {error.get('input')!r}; allowed values: {expected}"
    return f"config key '{path}': {error['msg']} (got {error.get('input')!r})"


def build_config(layers: Iterable[Mapping[str, Any]]) -> Config:
    """Merge mappings in order (later wins) and validate them into a Config."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _deep_merge(merged, layer)
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors())) from None
    check_roots(config)
    return config


def check_roots(config: Config) -> None:
    """With allowed_roots set, refuse any configured path outside them (after '..' and symlinks)."""
    if not config.allowed_roots:
        return
    escaping = outside_roots(config.path_settings(), config.allowed_roots)
    if escaping:
        raise ConfigError(
            f"configured paths outside allowed_roots ({', '.join(config.allowed_roots)}): {', '.join(escaping)}; "
            "point them inside a root, or add their folder to allowed_roots"
        )


def load_config(files: Iterable[str | Path] = (), overrides: Iterable[str] = ()) -> Config:
    """Defaults, then each YAML file in order (a base then overlays), then `key=value` overrides."""
    layers = [_read_yaml(Path(f)) for f in files]
    layers += [_parse_override(o) for o in overrides]
    return build_config(layers)
