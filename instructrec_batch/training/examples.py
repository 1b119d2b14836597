"""Training and validation examples, built in Spark from the same tables and code as scoring prompts.

Leave-one-out by time: each user's rows before their first held-out row form the
training sequence; its newest `examples_per_user` rows are training targets, each with the rows
before it as history. The user's `valid` row is the validation target, with the whole training
sequence as history, which is exactly the history the scoring prompt gets, rendered with the pinned
inference template. Fusion lists are the `valid` targets of a seeded sample of users with more
negatives. `test` rows are never targets and never in a history. Negatives are items the user never
interacted with, drawn by hash (seeded, engine-independent). An example's taste line (when
prompt.taste_categories is set) counts every training row before its target, as a scoring prompt's
counts every row before the holdout. Rendering goes through `render_prompts_fn`, the function that
builds scoring prompts.

Intentions: with an intents table, each example carries the latest intent its user had stated by the
time of its target (`prompts.frames.latest_intents`: never a later one; intents without intent_ts are
not used, since they cannot be placed in time). A training example with an intent takes one of
InstructRec's instruction forms, drawn by hash against train.forms: preference only (history, no
intent), intention only (intent, no history) or both; validation and fusion examples take both, as a
scoring prompt shows everything the user has.
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import EvidenceConfig, PromptConfig, TrainConfig
from instructrec_batch.data.protocol import history_cut
from instructrec_batch.evidence.features import (
    AS_OF,
    NEAR,
    candidate_evidence,
    evidence_interactions,
    nearest_items,
    user_sequences,
)
from instructrec_batch.prompts.frames import (
    SHOWN,
    collect_ordered,
    history_text,
    rating_scale,
    require_taste_line,
    taste_profile,
    titled_items,
)
from instructrec_batch.prompts.templates import load_templates
from instructrec_batch.prompts.text_udfs import (
    CAND_IDS,
    CAND_NOTES,
    CAND_TITLES,
    HIST_IDS,
    HIST_TITLES,
    NOTE_ARRAYS,
    TASTE,
    prompt_schema,
    render_prompts_fn,
)
from instructrec_batch.ranking.blend import POSITIVE
from instructrec_batch.text.intents import STATED_BY, latest_intents

TRAIN, VALID, FUSION = "train", "valid", "fusion"
FORM = "form"  # an example's instruction form: preference | intention | both (train.forms)


def _hash_int(seed: int, *cols: Column | str) -> Column:
    return F.xxhash64(F.lit(seed), *[F.col(c) if isinstance(c, str) else c for c in cols])


def build_examples(
    interactions: DataFrame,
    items: DataFrame,
    holdout: DataFrame,
    train: TrainConfig,
    prompt: PromptConfig,
    evidence: EvidenceConfig,
    tokenizer_path: str,
    *,
    fusion: bool = False,
    intents: DataFrame | None = None,
    lists: DataFrame | None = None,
) -> DataFrame:
    """One row per (example, task form): prompt parts as in `prompts`, plus kind and target_item_id.

    With `fusion`, only the fusion lists instead: for train.fusion_users users, the `valid` item plus
    train.fusion_negatives negatives, pointwise with the pinned inference template, the lists the
    fusion head is fitted on after tuning. With `lists` too (labelled retriever lists: user_id, item_id,
    positive; evidence/replay.py), those users' retriever lists instead, each at the time of its user's
    `valid` row (the history and stated intent before it).
    """
    t = train
    keys = [C.USER_ID, C.ITEM_ID, C.EVENT_TS]
    rows = interactions.where(
        F.col(C.USER_ID).isNotNull() & F.col(C.ITEM_ID).isNotNull() & F.col(C.EVENT_TS).isNotNull()
    )
    titles = titled_items(items, prompt, tokenizer_path).where(F.col(C.TITLE).isNotNull())
    scale = rating_scale(interactions, prompt)
    rating = [C.RATING] if scale is not None else []
    train_seq = history_cut(rows.select(*keys, *rating), holdout).join(titles, C.ITEM_ID)
    if t.max_users is not None:
        users = train_seq.select(C.USER_ID).distinct()
        users = users.withColumn("_h", _hash_int(t.seed, C.USER_ID)).orderBy("_h", C.USER_ID).limit(t.max_users)
        train_seq = train_seq.join(users.select(C.USER_ID), C.USER_ID)
    newest = Window.partitionBy(C.USER_ID).orderBy(F.col(C.EVENT_TS).desc(), F.col(C.ITEM_ID).desc())
    ranked = train_seq.withColumn("_n", F.row_number().over(newest)).withColumn(
        "_len", F.count(F.lit(1)).over(Window.partitionBy(C.USER_ID))
    )
    # Only the newest rows can be targets or their histories: bound the self-join below.
    recent = ranked.where(F.col("_n") <= t.examples_per_user + prompt.max_history)

    is_train_target = (F.col("_n") <= t.examples_per_user) & (F.col("_n") < F.col("_len"))
    train_targets = ranked.where(is_train_target).select(
        C.USER_ID, C.ITEM_ID, C.EVENT_TS, C.TITLE, F.lit(TRAIN).alias("kind")
    )
    neighbours = None
    if t.negative_sampling == "neighbours" and not fusion:  # fusion lists have no training targets
        # Each training target's anchor is the user's item just before it (the newest of its history).
        near = nearest_items(user_sequences(train_seq.select(*keys), evidence.max_items), evidence.window, NEAR_ITEMS)
        anchors = ranked.withColumn("_anchor", F.lead(C.ITEM_ID).over(newest)).where(is_train_target)
        neighbours = anchors.join(near.withColumnRenamed(C.ITEM_ID, "_anchor"), "_anchor").select(
            C.USER_ID, F.col(C.ITEM_ID).alias("target_item_id"), NEAR
        )

    valid = holdout.where(F.col(C.SPLIT) == C.SPLIT_VALID)

    def sampled_targets(rows: DataFrame, users: int, salt: int, kind: str) -> DataFrame:
        """`rows` (user_id, item_id, event_ts) of a seeded sample of `users` users of the training set."""
        return (
            rows.join(train_seq.select(C.USER_ID).distinct(), C.USER_ID)  # users in the (sampled) training set
            .withColumn("_h", _hash_int(t.seed + salt, C.USER_ID))
            .orderBy("_h", C.USER_ID)
            .limit(users)
            .join(titles, C.ITEM_ID)
            .select(C.USER_ID, C.ITEM_ID, C.EVENT_TS, C.TITLE, F.lit(kind).alias("kind"))
        )

    if fusion and lists is not None:
        chosen = (
            lists.where(F.col(POSITIVE))
            .select(C.USER_ID, C.ITEM_ID)
            .join(valid.select(C.USER_ID, C.EVENT_TS), C.USER_ID)
        )
        targets = sampled_targets(chosen, t.fusion_users, 5, FUSION)
        tasks = ["pointwise"]
    elif fusion:
        targets, tasks = sampled_targets(valid, t.fusion_users, 5, FUSION), ["pointwise"]
    else:
        targets, tasks = train_targets.unionByName(sampled_targets(valid, t.val_users, 1, VALID)), list(t.tasks)

    ts, item, target_ts, target_item = F.col(C.EVENT_TS), F.col(C.ITEM_ID), F.col("_tts"), F.col("target_item_id")
    example_keys = [C.USER_ID, "target_item_id", "kind"]

    def rows_before_target(rows: DataFrame) -> DataFrame:
        """Each example's rows of `rows` (its user's) that come before its target, by (event_ts, item_id)."""
        return (
            targets.select(C.USER_ID, F.col(C.EVENT_TS).alias("_tts"), item.alias("target_item_id"), "kind")
            .join(rows, C.USER_ID)
            .where((ts < target_ts) | ((ts == target_ts) & (item < target_item)))
        )

    by_example = Window.partitionBy(*example_keys).orderBy(ts.desc(), item.desc())
    hist = collect_ordered(
        rows_before_target(recent)
        .withColumn("_k", F.row_number().over(by_example))
        .where(F.col("_k") <= prompt.max_history)
        .withColumn(SHOWN, history_text(scale)),
        example_keys,
        [ts, item],  # oldest first
        {C.ITEM_ID: HIST_IDS, SHOWN: HIST_TITLES},
        F.count(F.lit(1)).alias("history_available"),
    )
    # The taste line counts every training row before the target (not only the shown history), as the
    # scoring prompt counts every row before the holdout.
    before = rows_before_target(train_seq.select(C.USER_ID, C.ITEM_ID, C.EVENT_TS))
    taste = taste_profile(before.select(*example_keys, C.ITEM_ID), items, example_keys, prompt.taste_categories)
    if taste is not None:
        hist = hist.join(taste, example_keys, "left")
    else:
        hist = hist.withColumn(TASTE, F.lit(None).cast("string"))

    moments = targets.select(
        C.USER_ID, F.col(C.ITEM_ID).alias("target_item_id"), "kind", F.col(C.EVENT_TS).alias(STATED_BY)
    )
    if intents is not None and C.INTENT_TS in intents.columns:
        stated = latest_intents(intents, moments, example_keys)
    else:  # without intent_ts no intent can be placed before a target: none is used
        stated = moments.select(*example_keys, F.lit(None).cast("string").alias(C.INTENT))

    examples = []
    templates = load_templates(prompt.template_version)
    require_taste_line(templates.get(f"{tasks[0]}-0"), prompt)
    for task in tasks:
        wanted = t.fusion_negatives if fusion else t.negatives if task == "pointwise" else t.list_size - 1
        by_popularity = train_seq.select(C.ITEM_ID) if t.negative_sampling != "uniform" else None
        if lists is not None and fusion:  # the rest of each retriever list
            negatives = lists.where(~F.col(POSITIVE)).join(
                targets.select(C.USER_ID, F.col(C.ITEM_ID).alias("target_item_id"), "kind"), C.USER_ID
            )
            negatives = negatives.select(C.USER_ID, "target_item_id", "kind", C.ITEM_ID)
        else:
            negatives = _sample_negatives(targets, titles, rows, wanted, t.seed, by_popularity, neighbours)
        source = evidence_interactions(interactions, holdout) if templates.get(f"{task}-0").shows_evidence else None
        cands = _candidate_lists(targets, negatives, titles, t.seed, source, evidence)
        n_templates = len(templates.ids(task))
        template_id = F.when(F.col("kind") != TRAIN, F.lit(f"{task}-0")).otherwise(
            F.concat(
                F.lit(f"{task}-"),
                F.pmod(_hash_int(t.seed + 3, C.USER_ID, "target_item_id"), F.lit(n_templates)).cast("string"),
            )
        )
        notes = [*(CAND_NOTES if source is not None else ())]
        joined = cands.join(hist, example_keys, "left").join(stated, example_keys, "left")
        form = _form(t, F.col(C.INTENT), F.col("kind"))
        shows_history = form != "intention"
        frame = joined.withColumn(FORM, form).select(
            C.USER_ID,
            CAND_IDS,
            CAND_TITLES,
            *notes,
            *[F.when(shows_history, F.col(c)).alias(c) for c in (HIST_IDS, HIST_TITLES)],
            F.when(shows_history, F.col("history_available")).otherwise(F.lit(0)).alias("history_available"),
            F.when(F.col(FORM) != "preference", F.col(C.INTENT)).alias(C.INTENT),
            F.lit(None).cast("string").alias("review"),
            F.when(shows_history, F.col(TASTE)).alias(TASTE),
            template_id.alias("template_id"),
            "kind",
            F.lit(task).alias("task_form"),
            "target_item_id",
            FORM,
        )
        user_type, item_type = (frame.schema[c].dataType.simpleString() for c in (C.USER_ID, "target_item_id"))
        rendered = frame.mapInPandas(
            render_prompts_fn(
                tokenizer_path,
                prompt.template_version,
                f"{task}-0",
                prompt.max_tokens,
                prompt.text_max_chars,
                prompt.text_max_tokens,
                passthrough=("kind", "task_form", "target_item_id", FORM),
            ),
            prompt_schema(user_type, item_type)
            + f", kind STRING, task_form STRING, target_item_id {item_type}, {FORM} STRING",
        )
        examples.append(rendered)
    result = examples[0]
    for frame in examples[1:]:
        result = result.unionByName(frame)
    return result


def _form(t: TrainConfig, intent: Column, kind: Column) -> Column:
    """The instruction form of an example: preference without an intent; both for validation and fusion
    examples; for a training example with an intent, drawn by hash (seeded) against train.forms."""
    draw = F.pmod(_hash_int(t.seed + 7, C.USER_ID, "target_item_id"), F.lit(1_000_000)) / F.lit(1_000_000.0)
    preference, intention = t.forms["preference"], t.forms["intention"]
    return (
        F.when(intent.isNull(), F.lit("preference"))
        .when(kind != TRAIN, F.lit("both"))
        .when(draw < preference, F.lit("preference"))
        .when(draw < preference + intention, F.lit("intention"))
        .otherwise(F.lit("both"))
    )


def collect_examples(examples: DataFrame) -> pd.DataFrame:
    """The examples on the driver in one fixed order (kind, task form, user, target). Row order from
    Spark follows the plan and the partitioning; sorted, the trainer's seeded shuffle sees the same
    examples in the same order on any engine, so the same data and seed tune the same adapter."""
    keys = ["kind", "task_form", C.USER_ID, "target_item_id"]
    return examples.toPandas().sort_values(keys, kind="stable", ignore_index=True)


def _sample_negatives(
    targets: DataFrame,
    titles: DataFrame,
    seen_rows: DataFrame,
    wanted: int,
    seed: int,
    popularity: DataFrame | None = None,
    neighbours: DataFrame | None = None,
) -> DataFrame:
    """`wanted` distinct titled items per target that the user never interacted with (hash draws).

    Draws are uniform over titled items; with `popularity` (one item_id row per training
    interaction), every other draw of a training target follows those interaction counts instead;
    with `neighbours` too (user_id, target_item_id, _near: items near the training target's
    anchor; used only next to `popularity`), draws rotate: one from _near, one by popularity, one
    uniform. Validation and fusion targets keep uniform draws (their lists must look like the
    evaluation's).
    """
    slots, n_items = _item_ranges(titles.select(C.ITEM_ID).withColumn("_c", F.lit(1)), "uniform")
    pool, size = F.lit("uniform"), F.lit(n_items)
    if popularity is not None:
        counts = (
            popularity.join(titles.select(C.ITEM_ID), C.ITEM_ID).groupBy(C.ITEM_ID).agg(F.count(F.lit(1)).alias("_c"))
        )
        popular, n_interactions = _item_ranges(counts, "popularity")
        slots = slots.unionByName(popular)
        # Training targets' draws alternate between pools, so lists mix popular and random items and never
        # run short of distinct items when a few items dominate the counts.
        train = F.col("kind") == TRAIN
        if neighbours is None:  # even draws by popularity, odd draws uniform
            by_popularity = train & (F.col("_j") % 2 == 0)
            pool = F.when(by_popularity, "popularity").otherwise("uniform")
        else:
            by_popularity = train & (F.col("_j") % 3 == 1)
            pool = F.when(train & (F.col("_j") % 3 == 0), "neighbours")
            pool = pool.when(by_popularity, "popularity").otherwise("uniform")
        size = F.when(by_popularity, F.lit(n_interactions)).otherwise(F.lit(n_items))
    draws = wanted * 3 + 10  # enough that anti-joined draws rarely fall short
    draw = _hash_int(seed, C.USER_ID, "target_item_id", "_j")
    keyed = (
        targets.select(C.USER_ID, F.col(C.ITEM_ID).alias("target_item_id"), "kind")
        .withColumn("_j", F.explode(F.sequence(F.lit(0), F.lit(draws - 1))))
        .withColumn("_pool", pool)
    )
    example = [C.USER_ID, "target_item_id", "kind", "_j"]
    drawn = (
        keyed.withColumn("_u", F.pmod(draw, size))
        .withColumn("_bucket", (F.col("_u") / _BUCKET).cast("long"))
        .join(slots, ["_pool", "_bucket"])
        .where((F.col("_lo") <= F.col("_u")) & (F.col("_u") < F.col("_hi")))
        .select(*example, C.ITEM_ID)
    )
    if neighbours is not None:
        near = keyed.where(F.col("_pool") == "neighbours").join(neighbours, [C.USER_ID, "target_item_id"])
        near = near.where(F.size(NEAR) > 0).select(  # (defensive: nearest_items lists no empty arrays)
            *example, F.element_at(NEAR, (F.pmod(draw, F.size(NEAR)) + 1).cast("int")).alias(C.ITEM_ID)
        )
        drawn = drawn.unionByName(near)
    drawn = drawn.join(seen_rows.select(C.USER_ID, C.ITEM_ID).distinct(), [C.USER_ID, C.ITEM_ID], "left_anti")
    first_draw = Window.partitionBy(C.USER_ID, "target_item_id", "kind", C.ITEM_ID).orderBy("_j")
    distinct = drawn.withColumn("_d", F.row_number().over(first_draw)).where(F.col("_d") == 1)
    keep = Window.partitionBy(C.USER_ID, "target_item_id", "kind").orderBy("_j")
    return (
        distinct.withColumn("_r", F.row_number().over(keep))
        .where(F.col("_r") <= wanted)
        .select(C.USER_ID, "target_item_id", "kind", C.ITEM_ID)
    )


NEAR_ITEMS = 50  # `neighbours` sampling: an anchor's nearest items by co-occurrence that draws pick from
_BUCKET = 64  # draws are matched to item ranges within buckets of this many slots (no range join)


def _item_ranges(weights: DataFrame, pool: str) -> tuple[DataFrame, int]:
    """item_id with its slots [_lo, _hi) out of `size` (one per unit of weight `_c`), listed under
    every `_bucket` the range touches and tagged `_pool`, so a draw u in [0, size) finds its item by
    an equality join."""
    # A running sum over the whole catalogue (one row per item): one partition is what it takes, said
    # explicitly (a constant partition key) so Spark does not warn about every training run.
    whole = Window.partitionBy(F.lit(0)).orderBy(C.ITEM_ID)
    order = whole.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    ranged = weights.withColumn("_hi", F.sum("_c").over(order)).withColumn("_lo", F.col("_hi") - F.col("_c"))
    size = ranged.agg(F.max("_hi")).first()[0] or 0
    buckets = F.sequence((F.col("_lo") / _BUCKET).cast("long"), ((F.col("_hi") - 1) / _BUCKET).cast("long"))
    slots = ranged.select(C.ITEM_ID, "_lo", "_hi", F.explode(buckets).alias("_bucket"), F.lit(pool).alias("_pool"))
    return slots, max(int(size), 1)


def _candidate_lists(
    targets: DataFrame,
    negatives: DataFrame,
    titles: DataFrame,
    seed: int,
    evidence_source: DataFrame | None,
    ev: EvidenceConfig,
) -> DataFrame:
    """Target + negatives per example, with titles, shuffled by hash into positions 1..n.

    With an `evidence_source` (training interactions) each candidate also carries its evidence notes,
    computed as of the example's target: the history before the target, the user's own interaction
    with the target left out, exactly what a candidate the user has not seen gets at scoring time.
    """
    positives = targets.select(C.USER_ID, F.col(C.ITEM_ID).alias("target_item_id"), "kind", C.ITEM_ID)
    pool = positives.unionByName(negatives).join(titles, C.ITEM_ID)
    notes: list[str] = []
    if evidence_source is not None:
        notes = list(C.EVIDENCE_NOTE_COLUMNS)
        rows = pool.select(C.USER_ID, F.col("target_item_id").alias(AS_OF), C.ITEM_ID)
        evidence = candidate_evidence(evidence_source, rows, ev, None).select(
            C.USER_ID, F.col(AS_OF).alias("target_item_id"), C.ITEM_ID, *notes
        )
        pool = pool.join(evidence, [C.USER_ID, "target_item_id", C.ITEM_ID], "left")
    example = [C.USER_ID, "target_item_id", "kind"]
    shuffle = Window.partitionBy(*example).orderBy(
        _hash_int(seed + 2, C.USER_ID, "target_item_id", C.ITEM_ID), C.ITEM_ID
    )
    fields = {C.ITEM_ID: CAND_IDS, C.TITLE: CAND_TITLES, **(NOTE_ARRAYS if notes else {})}
    return collect_ordered(pool.withColumn("_pos", F.row_number().over(shuffle)), example, [F.col("_pos")], fields)
