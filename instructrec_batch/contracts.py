"""Column names and input table contracts.

The columns of the table contracts are named here once, and jobs use these constants for them, so
renaming a contract column is one edit (a job's own intermediate columns stay local literals).
A contract lists required and optional columns with the Spark types each may have;
`tables.read_input` checks a table against its contract before any job logic runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TS = "event_ts"
RATING = "rating"
REVIEW = "review"
TITLE = "title"
CATEGORY = "category"
BRAND = "brand"
DESCRIPTION = "description"
RETRIEVAL_SCORE = "retrieval_score"
RETRIEVAL_RANK = "retrieval_rank"
INTENT = "intent"
INTENT_TS = "intent_ts"
SPLIT = "split"
# Which of this project's data jobs (a dataset loader, the benchmark protocol) wrote a table. A table that
# exists without it is the user's own (their interactions, their retriever's candidates): no job replaces it.
SOURCE_JOB = "source_job"

SPLIT_TEST = "test"
SPLIT_TRAIN = "train"  # ReDial: dialogues of the training side (no held-out row)
SPLIT_VALID = "valid"

# Spark simpleString type names accepted for each kind of column.
ID_TYPES = frozenset({"string", "bigint", "int"})
TS_TYPES = frozenset({"timestamp", "timestamp_ntz", "bigint"})
NUMBER_TYPES = frozenset({"double", "float", "int", "bigint"})
TEXT_TYPES = frozenset({"string"})
INT_TYPES = frozenset({"int", "bigint"})


@dataclass(frozen=True)
class TableContract:
    """What a job needs from an input table: required and optional columns with allowed types."""

    name: str
    required: dict[str, frozenset[str]]
    optional: dict[str, frozenset[str]] = field(default_factory=dict)

    def columns(self, present: set[str]) -> list[str]:
        """The contract's columns that a job should select: all required, optional ones if present."""
        return list(self.required) + [c for c in self.optional if c in present]


INTERACTIONS = TableContract(
    "interactions",
    required={USER_ID: ID_TYPES, ITEM_ID: ID_TYPES, EVENT_TS: TS_TYPES},
    optional={RATING: NUMBER_TYPES, REVIEW: TEXT_TYPES},
)
ITEMS = TableContract(
    "items",
    required={ITEM_ID: ID_TYPES, TITLE: TEXT_TYPES},
    optional={CATEGORY: TEXT_TYPES, BRAND: TEXT_TYPES, DESCRIPTION: TEXT_TYPES},
)
CANDIDATES = TableContract(
    "candidates",
    required={USER_ID: ID_TYPES, ITEM_ID: ID_TYPES},
    optional={RETRIEVAL_SCORE: NUMBER_TYPES, RETRIEVAL_RANK: INT_TYPES},
)
# Past nights' lists as the retriever handed them over (train.lists=retriever fits rankers on them).
CANDIDATES_HISTORY = TableContract(
    "candidates_history",
    required={USER_ID: ID_TYPES, ITEM_ID: ID_TYPES, RETRIEVAL_RANK: INT_TYPES, "run_date": frozenset({"date"})},
)
INTENTS = TableContract(
    "intents",
    required={USER_ID: ID_TYPES, INTENT: TEXT_TYPES},
    optional={INTENT_TS: TS_TYPES},
)
HOLDOUT = TableContract(
    "holdout",
    required={USER_ID: ID_TYPES, ITEM_ID: ID_TYPES, EVENT_TS: TS_TYPES, SPLIT: TEXT_TYPES},
)

# Tables this system writes and later jobs read back.
RUN_ID = "run_id"
TASTE_TEXT = "taste_text"  # optional prompts column: the taste line's text, null where an instruction has none
ID_ARRAY_TYPES = frozenset(f"array<{t}>" for t in ID_TYPES)
PROMPTS = TableContract(
    "prompts",
    required={
        RUN_ID: TEXT_TYPES,
        USER_ID: ID_TYPES,
        "template_id": TEXT_TYPES,
        "template_version": TEXT_TYPES,
        "task": TEXT_TYPES,
        "preference_text": TEXT_TYPES,
        "intention_text": TEXT_TYPES,
        "history_titles": frozenset({"array<string>"}),
        "history_item_ids": ID_ARRAY_TYPES,
        "history_len": INT_TYPES,
        "history_available": INT_TYPES,
        "candidate_ids": ID_ARRAY_TYPES,
        "candidate_titles": frozenset({"array<string>"}),
        "cold_start": frozenset({"boolean"}),
        "prompt_tokens": INT_TYPES,
    },
    optional={"created_at": frozenset({"timestamp", "timestamp_ntz"}), TASTE_TEXT: TEXT_TYPES},
)
REJECTS = TableContract(
    "rejects",
    required={
        RUN_ID: TEXT_TYPES,
        "stage": TEXT_TYPES,
        "source_table": TEXT_TYPES,
        USER_ID: TEXT_TYPES,
        ITEM_ID: TEXT_TYPES,
        "reason": TEXT_TYPES,
    },
)
RECOMMENDATIONS = TableContract(
    "recommendations",
    required={
        RUN_ID: TEXT_TYPES,
        "run_date": frozenset({"date"}),
        USER_ID: ID_TYPES,
        "rank": INT_TYPES,
        ITEM_ID: ID_TYPES,
        "score": frozenset({"double"}),
        "model_id": TEXT_TYPES,
        "template_id": TEXT_TYPES,
        "ranked_by": TEXT_TYPES,
    },
    optional={"scored_at": frozenset({"timestamp", "timestamp_ntz"}), "prompts_run_id": TEXT_TYPES},
)
METRICS = TableContract(
    "metrics",
    required={
        RUN_ID: TEXT_TYPES,
        "method": TEXT_TYPES,
        "metric": TEXT_TYPES,
        "k": INT_TYPES,
        "value": frozenset({"double"}),
        "n_users": INT_TYPES,
        "dataset": TEXT_TYPES,
    },
)
# Collaborative evidence per (user, candidate), written by the evidence job (evidence/features.py).
EV_POPULARITY = "ev_popularity"
EV_POPULARITY_RECENT = "ev_popularity_recent"
EV_COOC_SUM = "ev_cooc_sum"
EV_COOC_MAX = "ev_cooc_max"
EV_COOC_SHARE = "ev_cooc_share"
EV_RECENT_SIM = "ev_recent_sim"
EV_RETRIEVAL = "ev_retrieval"
EV_CATEGORY_MEAN = "ev_category_mean"
EV_CATEGORY_MAX = "ev_category_max"
EV_TEXT_MEAN = "ev_text_mean"
EV_TEXT_RECENT = "ev_text_recent"
EV_SEQUENCE = "ev_sequence"
EV_REQUEST_WORDS = "ev_request_words"  # BM25 of the user's request against the candidate's text
EV_REQUEST_MEANING = "ev_request_meaning"  # cosine of the request's and the candidate text's sentence embeddings
EVIDENCE_COLUMNS = (
    EV_POPULARITY,
    EV_POPULARITY_RECENT,
    EV_COOC_SUM,
    EV_COOC_MAX,
    EV_COOC_SHARE,
    EV_RECENT_SIM,
    EV_RETRIEVAL,
    EV_CATEGORY_MEAN,
    EV_CATEGORY_MAX,
    EV_TEXT_MEAN,
    EV_TEXT_RECENT,
    EV_SEQUENCE,
    EV_REQUEST_WORDS,
    EV_REQUEST_MEANING,
)
# Evidence the v3 instructions put into words (never weighed by a ranker; the blend's columns carry the same
# information): the candidate's popularity bucket (top 1/5/20/50/100 percent of items by interactions)
# and how many of the user's compared history items it co-occurs with.
EV_POPULARITY_TOP = "ev_popularity_top"
EV_LINKED = "ev_linked"
EVIDENCE_NOTE_COLUMNS = (EV_POPULARITY_TOP, EV_LINKED)
LM_SCORE = "lm_score"  # the language model's own answer score, before any fusion with evidence
CANDIDATE_EVIDENCE = TableContract(
    "candidate_evidence",
    required={RUN_ID: TEXT_TYPES, USER_ID: ID_TYPES, ITEM_ID: ID_TYPES}
    | {column: frozenset({"double"}) for column in EVIDENCE_COLUMNS}
    | {column: frozenset({"int"}) for column in EVIDENCE_NOTE_COLUMNS},
)
# The sequential model behind ev_sequence, written by the evidence job per run: a row per user (user_id,
# their history's vector and log_norm) and per item (item_id, its vector; user_id and log_norm null).
VECTOR = "vector"
LOG_NORM = "log_norm"
SEQUENCE_VECTORS = TableContract(
    "sequence_vectors",
    required={
        RUN_ID: TEXT_TYPES,
        USER_ID: ID_TYPES,
        ITEM_ID: ID_TYPES,
        VECTOR: frozenset({"array<float>"}),
        LOG_NORM: frozenset({"double"}),
    },
)
CANDIDATE_SCORES = TableContract(
    "candidate_scores",
    required={
        RUN_ID: TEXT_TYPES,
        USER_ID: ID_TYPES,
        ITEM_ID: ID_TYPES,
        "score": frozenset({"double"}),
        "model_id": TEXT_TYPES,
        "template_id": TEXT_TYPES,
    },
    optional={LM_SCORE: frozenset({"double"}), "ranked_by": TEXT_TYPES},
)
