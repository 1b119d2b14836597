"""The evaluation protocol in Spark: leave-one-out split and sampled candidate lists.

Pure DataFrame transformations (no I/O, no collect). Randomness comes from `xxhash64(seed, user,
item)`, which classic Spark and Sail compute identically, so the same seed gives the same rows on
every engine and partitioning, unlike `rand()`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.spark.rejects import NULL_KEY, item_reason, null_keys, utf8_text


def _seeded_order(seed: int) -> list[Column]:
    """A per-(user, item) pseudo-random order that is stable across engines; item_id breaks ties."""
    return [F.xxhash64(F.lit(seed), F.col(C.USER_ID), F.col(C.ITEM_ID)), F.col(C.ITEM_ID)]


def shown_items(items: DataFrame) -> DataFrame:
    """Distinct item_ids that can appear in a prompt: a non-null id and a readable, non-blank title."""
    visible = F.length(F.regexp_replace(F.col(C.TITLE), r"[\s\p{C}]+", "")) > 0  # more than blanks and controls
    titled = F.col(C.ITEM_ID).isNotNull() & utf8_text(C.TITLE) & visible
    return items.where(titled).select(C.ITEM_ID).distinct()


def usable_interactions(interactions: DataFrame, items: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The rows the protocol may split and sample on, and the other rows with a `reason` column.

    A held-out target must be an item a prompt can show, or the user's evaluation list would lose
    its target later; so rows with a null key, an unknown item or an untitled item are set aside.
    """
    keys = [C.USER_ID, C.ITEM_ID, C.EVENT_TS]
    known = items.where(F.col(C.ITEM_ID).isNotNull()).select(C.ITEM_ID).distinct().withColumn("_known", F.lit(True))
    shown = shown_items(items).withColumn("_shown", F.lit(True))
    joined = interactions.where(~null_keys(keys)).join(known, C.ITEM_ID, "left").join(shown, C.ITEM_ID, "left")
    reason = item_reason(F.col("_known"), F.col("_shown"))
    columns = interactions.columns
    rejected = (
        interactions.where(null_keys(keys))
        .withColumn("reason", F.lit(NULL_KEY))
        .unionByName(joined.where(reason.isNotNull()).select(*columns, reason.alias("reason")))
    )
    return joined.where(reason.isNull()).select(*columns), rejected


def holdout_split(interactions: DataFrame) -> DataFrame:
    """Per user, the last interaction by (event_ts, item_id) is `test`, the one before `valid`.

    Ordering on the stored column types (not on a string rendering) with item_id as tie-break makes
    the split deterministic despite MovieLens' many equal timestamps.
    """
    newest_first = Window.partitionBy(C.USER_ID).orderBy(F.col(C.EVENT_TS).desc(), F.col(C.ITEM_ID).desc())
    ranked = interactions.withColumn("_pos", F.row_number().over(newest_first))
    return ranked.where(F.col("_pos") <= 2).select(
        C.USER_ID,
        C.ITEM_ID,
        C.EVENT_TS,
        F.when(F.col("_pos") == 1, F.lit(C.SPLIT_TEST)).otherwise(F.lit(C.SPLIT_VALID)).alias(C.SPLIT),
    )


def sample_candidates(
    interactions: DataFrame, items: DataFrame, holdout: DataFrame, *, seed: int, negatives: int
) -> DataFrame:
    """Per test user: the held-out target plus `negatives` items the user never interacted with.

    `items` is the pool of negatives: pass `shown_items(...)` so every negative can be shown.

    Each user's negatives are drawn without replacement and without a users × items product: the
    pool is put in a seeded random order (indices 0..n-1) and each user walks that order from a
    seeded start with a seeded stride modulo a prime p ≥ n (`walk_items`), which visits every index
    once; the first `negatives` unseen items met are theirs. So every user gets exactly `negatives`
    (or every unseen item when fewer exist), and the work is linear in users and interactions.

    The list is then shuffled (seeded) into `retrieval_rank` 1..n so that the target's position
    carries no signal for rankers that read the retrieval order.
    """
    targets = holdout.where(F.col(C.SPLIT) == C.SPLIT_TEST).select(C.USER_ID, C.ITEM_ID)
    seen = interactions.select(C.USER_ID, C.ITEM_ID).distinct()
    sampled = walk_items(targets.select(C.USER_ID).distinct(), items, seen, seed=seed, wanted=negatives)
    shuffle = Window.partitionBy(C.USER_ID).orderBy(*_seeded_order(seed + 1))
    return sampled.unionByName(targets).withColumn(C.RETRIEVAL_RANK, F.row_number().over(shuffle).cast("int"))


def walk_items(users: DataFrame, items: DataFrame, seen: DataFrame, *, seed: int, wanted: int) -> DataFrame:
    """(user_id, item_id): `wanted` distinct items of `items` per user of `users` that are not in their
    `seen` rows (fewer only when fewer exist), drawn as `sample_candidates` describes.

    A user whose walk starts at s with stride k ∈ [1, p) visits (s + j·k) mod p for j = 0, 1, …: all
    p indices once each (p prime). Indices ≥ n name no item (at most p − n of them) and at most
    |seen| items are the user's own, so the first wanted + |seen| + (p − n) steps hold enough.
    """
    pool = items.select(C.ITEM_ID).distinct()
    in_order = Window.partitionBy(F.lit(0)).orderBy(F.xxhash64(F.lit(seed), F.col(C.ITEM_ID)), F.col(C.ITEM_ID))
    indexed = pool.withColumn("_i", (F.row_number().over(in_order) - 1).cast("long"))
    n = indexed.count()
    if n == 0:  # nothing to draw: no rows (a product with the empty pool, computed on no rows)
        return users.select(C.USER_ID).crossJoin(pool)
    p = next_prime(n)
    owned = seen.groupBy(C.USER_ID).agg(F.count(F.lit(1)).alias("_seen"))
    steps = F.least(F.lit(wanted) + F.coalesce(F.col("_seen"), F.lit(0)) + F.lit(p - n), F.lit(p))
    start = F.pmod(F.xxhash64(F.lit(seed), F.col(C.USER_ID)), F.lit(p))
    stride = F.pmod(F.xxhash64(F.lit(seed + 1), F.col(C.USER_ID)), F.lit(p - 1)) + 1
    walk = F.explode(F.sequence(F.lit(0).cast("long"), (steps - 1).cast("long"))).alias("_j")
    walked = (
        users.join(owned, C.USER_ID, "left")
        .select(C.USER_ID, start.alias("_s"), stride.alias("_k"), walk)
        .withColumn("_i", F.pmod(F.col("_s") + F.col("_j") * F.col("_k"), F.lit(p)))
        .join(indexed, "_i")
        .join(seen, [C.USER_ID, C.ITEM_ID], "left_anti")
    )
    first = Window.partitionBy(C.USER_ID).orderBy("_j")
    return walked.withColumn("_r", F.row_number().over(first)).where(F.col("_r") <= wanted).select(C.USER_ID, C.ITEM_ID)


def next_prime(n: int) -> int:
    """The smallest prime ≥ max(n, 2)."""
    candidate = max(n, 2)
    while any(candidate % d == 0 for d in range(2, int(candidate**0.5) + 1)):
        candidate += 1
    return candidate


def sample_users(frame: DataFrame, n: int | None, seed: int) -> DataFrame:
    """The rows of `frame` whose user is among a seeded sample of n of its users (all when n is None).

    The same seed and n pick the same users on every engine (xxhash64 order, user_id tie-break), so a
    demo's prompts and its evaluation cover the same people.
    """
    if n is None:
        return frame
    users = (
        frame.select(C.USER_ID).distinct().orderBy(F.xxhash64(F.lit(seed), F.col(C.USER_ID)), F.col(C.USER_ID)).limit(n)
    )
    return frame.join(users, C.USER_ID, "left_semi")


def event_seconds(frame: DataFrame, column: str = C.EVENT_TS) -> Column:
    """`frame`'s event_ts (or another time `column`) as epoch seconds (a BIGINT one is taken to be seconds
    already; a TIMESTAMP_NTZ is read in the session's time zone, as classic Spark casts no NTZ to a number)."""
    kind = frame.schema[column].dataType.simpleString()
    if kind in ("bigint", "int"):
        return F.col(column)
    return F.col(column).cast("timestamp").cast("long")


def history_cut(interactions: DataFrame, holdout: DataFrame | None) -> DataFrame:
    """Keep only rows strictly before each user's first held-out row, ordered by (event_ts, item_id)."""
    if holdout is None:
        return interactions
    cut = holdout.groupBy(C.USER_ID).agg(
        F.min(F.struct(F.col(C.EVENT_TS).alias("cut_ts"), F.col(C.ITEM_ID).alias("cut_item"))).alias("_cut")
    )
    joined = interactions.join(cut, C.USER_ID, "left")
    ts, item = F.col(C.EVENT_TS), F.col(C.ITEM_ID)
    before = (ts < F.col("_cut.cut_ts")) | ((ts == F.col("_cut.cut_ts")) & (item < F.col("_cut.cut_item")))
    return joined.where(F.col("_cut").isNull() | before).drop("_cut")
