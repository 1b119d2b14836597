"""Collaborative evidence per (user, candidate item), computed in Spark from training interactions.

The features are what a co-occurrence recommender knows about a candidate, as numbers a ranker can
weigh next to the language model's answer:

- `ev_popularity`: log(1 + number of other users who interacted with the item);
- `ev_popularity_recent`: the same count over the last `recent_days` before the newest interaction given
  (the evidence's as-of moment): what is in demand now, which all-time counts of an older catalogue hide;
- `ev_cooc_sum`, `ev_cooc_max`: sum and maximum over the user's `history` newest items h of the
  cosine co-occurrence sim(c, h) = co(c, h) / sqrt(n(c) · n(h)), where co(c, h) counts the users in
  whose sequence c and h lie at most `window` positions apart;
- `ev_cooc_share`: the share of those history items that co-occur with the candidate at all;
- `ev_recent_sim`: the same similarities weighted by 1 / (position from the newest), so the items
  consumed last count most;
- `ev_retrieval`: the upstream retrieval rank as 1 / rank (0 when the candidates table has none);
- `ev_category_mean`, `ev_category_max`: the user's affinity for the candidate's categories. The share
  of the user's history items (their whole capped sequence before the candidate, not only the
  `history` newest) in each category of the candidate, averaged and maximised over those categories;
  categories come from items.category (HTML references decoded), split at commas, semicolons, bars
  and taxonomy-path `>` (0 without them);
- `ev_text_mean`, `ev_text_recent`: how much the candidate's item text (`text_columns` of the items
  table: title, categories, brand) shares words with the user's `history` newest items: the cosine of
  IDF-weighted word sets (rare words count most), averaged over those items and summed weighted by
  1 / (position from the newest), as for co-occurrence. A baseline that weighs the evidence thereby
  reads the same item text the language model is shown;
- `ev_sequence`: the log-probability that a sequential model (SASRec, trained on the same
  interactions; evidence/sequential.py) gives the candidate as the user's next item.

Two more columns say the same in a form an instruction can put into words (EVIDENCE_NOTE_COLUMNS):
`ev_popularity_top`, the smallest of 1, 5, 20, 50, 100 such that the candidate is among that top
percent of items by interaction count (exact percentiles of the items' counts), and `ev_linked`,
how many of the compared history items co-occur with it.

Two rules keep training and scoring honest:
- Only the interactions given are used: callers pass training interactions (every user's rows
  before their first held-out row), so no held-out row can feed a feature.
- A user's own interaction with the candidate never counts. When the user did interact with the
  candidate (a training example's target), popularity and co-occurrence leave the user out and the
  history is the items before it, exactly as for a candidate the user has not seen; the example's
  negatives are compared with that same history (`as_of_item_id`).

Cost is linear in interactions: each user's sequence is cut to its `max_items` newest distinct
items (heavy users capped), pairs are only formed inside a window, and each candidate is compared with
`history` items, so no all-pairs blow-up.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import EvidenceConfig
from instructrec_batch.data.protocol import event_seconds, history_cut
from instructrec_batch.evidence.requests import REQUEST_COLUMNS, Requests, request_scores
from instructrec_batch.evidence.sequential import SEQUENCE_FLOOR, sequence_scores
from instructrec_batch.spark.rejects import null_keys
from instructrec_batch.text.items import CATEGORY, WEIGHT, WORD, item_categories, item_words

# The columns by name (contracts.py owns them; their order there is only the table's column order).
POPULARITY, RETRIEVAL, SEQUENCE_LOG_P = C.EV_POPULARITY, C.EV_RETRIEVAL, C.EV_SEQUENCE
POPULARITY_RECENT = C.EV_POPULARITY_RECENT
COOC_SUM, COOC_MAX, COOC_SHARE, RECENT_SIM = C.EV_COOC_SUM, C.EV_COOC_MAX, C.EV_COOC_SHARE, C.EV_RECENT_SIM
CATEGORY_MEAN, CATEGORY_MAX = C.EV_CATEGORY_MEAN, C.EV_CATEGORY_MAX
TEXT_MEAN, TEXT_RECENT = C.EV_TEXT_MEAN, C.EV_TEXT_RECENT
POPULARITY_TOP, LINKED = C.EV_POPULARITY_TOP, C.EV_LINKED
CATEGORY_COLUMNS = (CATEGORY_MEAN, CATEGORY_MAX)  # computed from the items table next to the sequences
TEXT_COLUMNS = (TEXT_MEAN, TEXT_RECENT)
TOP_PERCENTS = (1, 5, 20, 50)  # popularity buckets: among the top 1%, 5%, 20%, 50% of items, else 100

SEQUENCE = "_items"  # user_sequences: a user's distinct items, newest first (1-based position = recency rank)


def evidence_interactions(interactions: DataFrame, holdout: DataFrame | None) -> DataFrame:
    """The rows evidence may learn from: keyed interactions before each user's first held-out row."""
    keys = [C.USER_ID, C.ITEM_ID, C.EVENT_TS]
    return history_cut(interactions.where(~null_keys(keys)).select(*keys), holdout)


def user_sequences(train: DataFrame, max_items: int) -> DataFrame:
    """user_id, _items: one row per user, their distinct items by latest interaction, newest first
    (ties by item id, descending), cut to the `max_items` newest. An item's 1-based array position is
    its recency rank, so windows and histories are array slices and need no join."""
    latest = train.groupBy(C.USER_ID, C.ITEM_ID).agg(F.max(C.EVENT_TS).alias("_ts"))
    newest_first = F.sort_array(F.collect_list(F.struct("_ts", C.ITEM_ID)), asc=False)
    packed = latest.groupBy(C.USER_ID).agg(F.slice(newest_first, 1, max_items).alias("_packed"))
    return packed.select(C.USER_ID, F.col(f"_packed.{C.ITEM_ID}").alias(SEQUENCE))


def item_counts(sequences: DataFrame) -> DataFrame:
    """item_id, _n: how many users' (capped) sequences hold the item."""
    return sequences.select(F.explode(SEQUENCE).alias(C.ITEM_ID)).groupBy(C.ITEM_ID).agg(F.count(F.lit(1)).alias("_n"))


def recent_pairs(train: DataFrame, days: int) -> DataFrame:
    """user_id, item_id: the distinct pairs with an interaction in the `days` before the newest
    interaction of `train`, inclusive (the as-of moment: callers pass only what may be known then)."""
    at = event_seconds(train)
    newest = train.agg(F.max(at).alias("_newest"))
    recent = train.crossJoin(newest).where(at >= F.col("_newest") - F.lit(days * 86400))
    return recent.select(C.USER_ID, C.ITEM_ID).distinct()


def hash_part(key: Column, part: tuple[int, int]) -> Column:
    """Whether `key` (an item or a user id) falls in hash slice `part` = (index, count) (always true
    for one slice)."""
    index, count = part
    return F.lit(True) if count == 1 else F.pmod(F.xxhash64(key), F.lit(count)) == index


def pair_counts(sequences: DataFrame, window: int, part: tuple[int, int] = (0, 1)) -> DataFrame:
    """_a, _b, _co: in how many users' sequences items a and b lie 1..window positions apart (both
    orders), for the items a of item-hash slice `part` only.

    Each item of a sequence is paired with the array slices just before and after it, so a slice
    scans the sequences once and aggregates only its share of the pairs."""
    at = sequences.select(SEQUENCE, F.posexplode(SEQUENCE).alias("_i", "_a")).where(hash_part(F.col("_a"), part))
    position = F.col("_i") + 1
    first = F.greatest(position - window, F.lit(1))
    neighbours = F.concat(F.slice(SEQUENCE, first, position - first), F.slice(SEQUENCE, position + 1, F.lit(window)))
    pairs = at.select("_a", F.explode(neighbours).alias("_b"))
    return pairs.groupBy("_a", "_b").agg(F.count(F.lit(1)).alias("_co"))


def cosine(co: Column, n_a: Column, n_b: Column) -> Column:
    """The evidence's item similarity: co-occurrence count over sqrt(n(a) · n(b)) (counts floored at 1)."""
    return co / F.sqrt(F.greatest(n_a, F.lit(1)) * F.greatest(n_b, F.lit(1)))


NEAR = "_near"  # nearest_items: an item's nearest neighbours by co-occurrence, as an id-sorted array


SIM = "_sim"  # item_neighbours: the cosine co-occurrence of items _a and _b


def item_neighbours(sequences: DataFrame, window: int, top: int) -> DataFrame:
    """_a, _b, _sim: each item a's `top` nearest items b by the evidence's cosine co-occurrence
    (co(a, b) / sqrt(n(a) · n(b)), ties by item id): what an item-kNN recommender ranks by."""
    counts = item_counts(sequences)
    n_a = counts.select(F.col(C.ITEM_ID).alias("_a"), F.col("_n").alias("_na"))
    n_b = counts.select(F.col(C.ITEM_ID).alias("_b"), F.col("_n").alias("_nb"))
    pairs = pair_counts(sequences, window).join(n_a, "_a").join(n_b, "_b")
    sims = pairs.select("_a", "_b", cosine(F.col("_co"), F.col("_na"), F.col("_nb")).alias(SIM))
    nearest = Window.partitionBy("_a").orderBy(F.col(SIM).desc(), F.col("_b"))
    return sims.withColumn("_r", F.row_number().over(nearest)).where(F.col("_r") <= top).drop("_r")


def nearest_items(sequences: DataFrame, window: int, top: int) -> DataFrame:
    """item_id, _near: each item's `top` nearest items (`item_neighbours`), sorted by id so the array is
    the same on every engine: the items a co-occurrence ranker would put next to it."""
    ranked = item_neighbours(sequences, window, top)
    return ranked.groupBy(F.col("_a").alias(C.ITEM_ID)).agg(F.array_sort(F.collect_list("_b")).alias(NEAR))


AS_OF = "as_of_item_id"  # optional column of `candidates`: the history ends just before this item


def candidate_evidence(
    train: DataFrame,
    candidates: DataFrame,
    cfg: EvidenceConfig,
    items: DataFrame | None,
    vectors: DataFrame | None = None,
    requests: Requests | None = None,
) -> DataFrame:
    """user_id, item_id (and as_of_item_id) with EVIDENCE_COLUMNS for every distinct candidate row.

    `train` holds user_id, item_id, event_ts of the interactions allowed to inform the features;
    `items` gives the categories and the words behind the category and text features (None, or none
    of those columns: all 0).
    `candidates` may carry retrieval_rank, and `as_of_item_id`: for a training example, its target,
    so every candidate of the example is compared with the history before the target, as the prompt
    shows it. Without it the history is the user's newest items (before the candidate itself when the
    user holds it).
    `vectors` (sequence_vectors rows of a model trained on `train`) feed ev_sequence; without them, and
    for rows with an as_of item (the model learned from that interaction), it is SEQUENCE_FLOOR.
    `requests` (evidence.requests) feed the request columns; without them they are 0.
    """
    sequences = user_sequences(train, cfg.max_items)
    counts = item_counts(sequences)
    recent = recent_pairs(train, cfg.recent_days)
    compared = compared_candidates(sequences, counts, recent, candidates, cfg.history, item_categories(items))
    words = item_words(items, cfg.text_columns)
    text = None if words is None else text_similarity(compared, sequences, words, cfg.history)
    asked = request_evidence(candidates, requests)
    return part_evidence(compared, sequences, counts, cfg, text, sequential_evidence(candidates, vectors), asked)


def request_evidence(candidates: DataFrame, requests: Requests | None) -> DataFrame | None:
    """keys and the request columns of the candidates whose user has a request; None without requests."""
    if requests is None:
        return None
    return request_scores(candidates, requests.frame, _keys(candidates), requests.texts, requests.encoder)


def sequential_evidence(candidates: DataFrame, vectors: DataFrame | None) -> DataFrame | None:
    """keys, ev_sequence of the candidates from the model's `vectors`; None (no sequential evidence)
    without vectors or when the candidates are training examples' (they carry an as_of item)."""
    keys = _keys(candidates)
    if vectors is None or AS_OF in keys:
        return None
    return sequence_scores(candidates, vectors, keys)


def compared_candidates(
    sequences: DataFrame,
    counts: DataFrame,
    recent: DataFrame,
    candidates: DataFrame,
    history: int,
    categories: DataFrame | None,
) -> DataFrame:
    """One row per distinct candidate (keys) with what its evidence needs from the user's sequence:
    _rank (upstream retrieval rank), _own (the candidate's position when the user holds it, else
    null), _nc (its user count, the user's own interaction left out), _nr (its count among the
    `recent_pairs`, the user's own left out), _start (the position the
    history starts after: the as_of item's, else _own, else 0), _hist (the `history` items after
    _start, newest first) and the category affinities (`category_affinity`, from `categories` as
    given by item_categories, or null without them)."""
    keys = _keys(candidates)
    rank = (
        F.min(C.RETRIEVAL_RANK).alias("_rank")  # duplicate rows: the best rank, the row prompts keep
        if C.RETRIEVAL_RANK in candidates.columns
        else F.lit(None).cast("int").alias("_rank")
    )
    recent_counts = recent.groupBy(C.ITEM_ID).agg(F.count(F.lit(1)).alias("_nr_all"))
    mine = recent.select(C.USER_ID, C.ITEM_ID, F.lit(1).alias("_mine"))
    rows = (
        candidates.groupBy(*keys)
        .agg(rank)
        .join(sequences, C.USER_ID, "left")
        .join(counts, C.ITEM_ID, "left")
        .join(recent_counts, C.ITEM_ID, "left")
        .join(mine, [C.USER_ID, C.ITEM_ID], "left")
    )
    own = _position(F.col(C.ITEM_ID))
    as_of = _position(F.col(AS_OF)) if AS_OF in keys else F.lit(None).cast("int")
    start = F.coalesce(as_of, own, F.lit(0))
    compared = rows.select(
        *keys,
        "_rank",
        own.alias("_own"),
        (F.coalesce(F.col("_n"), F.lit(0)) - own.isNotNull().cast("long")).alias("_nc"),
        (F.coalesce(F.col("_nr_all"), F.lit(0)) - F.coalesce(F.col("_mine"), F.lit(0))).alias("_nr"),
        start.alias("_start"),
        F.slice(SEQUENCE, start + 1, F.lit(history)).alias("_hist"),
    )
    affinity = None if categories is None else category_affinity(compared, sequences, categories, keys)
    return _joined(compared, affinity, keys, CATEGORY_COLUMNS)


def _keys(frame: DataFrame) -> list[str]:
    """The candidate keys among `frame`'s columns: user_id, item_id and as_of_item_id when present."""
    return [c for c in frame.columns if c in (C.USER_ID, C.ITEM_ID, AS_OF)]


def _joined(rows: DataFrame, features: DataFrame | None, keys: list[str], columns: tuple[str, ...]) -> DataFrame:
    """`rows` with the `columns` of `features` joined on keys, or as nulls when there are none."""
    if features is None:
        return rows.select("*", *[F.lit(None).cast("double").alias(c) for c in columns])
    return rows.join(features, keys, "left")


def category_affinity(compared: DataFrame, sequences: DataFrame, categories: DataFrame, keys: list[str]) -> DataFrame:
    """keys, ev_category_mean, ev_category_max of the candidates that have categories.

    A history is the user's sequence after `_start` (everything older than the as_of item or the
    candidate itself), so each (user, _start) gets one category profile: the share of its items in
    each category. A candidate's affinities are the mean and the maximum of its categories' shares."""
    starts = compared.select(C.USER_ID, "_start").distinct().join(sequences, C.USER_ID)
    older = F.slice(SEQUENCE, F.col("_start") + 1, F.size(SEQUENCE))  # _start is a position in the sequence
    history = starts.select(
        C.USER_ID,
        "_start",
        (F.size(SEQUENCE) - F.col("_start")).alias("_total"),
        F.explode(older).alias(C.ITEM_ID),
    )
    profile = (
        history.join(categories, C.ITEM_ID)
        .groupBy(C.USER_ID, "_start", "_total", CATEGORY)
        .agg(F.count(F.lit(1)).alias("_in"))
        .select(C.USER_ID, "_start", CATEGORY, (F.col("_in") / F.col("_total")).alias("_share"))
    )
    share = F.coalesce(F.col("_share"), F.lit(0.0))
    return (
        compared.select(*keys, "_start")
        .join(categories, C.ITEM_ID)
        .join(profile, [C.USER_ID, "_start", CATEGORY], "left")
        .groupBy(*keys)
        .agg(F.avg(share).alias(CATEGORY_MEAN), F.max(share).alias(CATEGORY_MAX))
    )


def text_similarity(
    compared: DataFrame, sequences: DataFrame, words: DataFrame, history: int, part: tuple[int, int] = (0, 1)
) -> DataFrame:
    """keys, ev_text_mean, ev_text_recent of the `compared_candidates` rows that have words
    (`item_words`), for the users of user-hash slice `part` only (their profiles and aggregates are
    the memory this step needs; slices partition the output).

    The compared history (_hist: the `history` items after _start) depends only on (user, _start), so
    each gets one word profile: the mean of its items' word weights, and their sum weighted by
    1 / (position from the newest). A candidate's similarities are its word weights' dot products
    with the two profiles: the mean and the recency-weighted sum of its cosines with the history
    items, without pairing it with each."""
    rows = compared.where(hash_part(F.col(C.USER_ID), part))
    starts = rows.select(C.USER_ID, "_start").distinct().join(sequences, C.USER_ID)
    # _hist again, from the sequence: one row per (user, _start) without a distinct over an array column
    compared_items = F.slice(SEQUENCE, F.col("_start") + 1, F.lit(history))
    positions = starts.select(
        C.USER_ID, "_start", F.size(compared_items).alias("_size"), F.posexplode(compared_items).alias("_k", C.ITEM_ID)
    )
    profile = (
        positions.join(words, C.ITEM_ID)
        .groupBy(C.USER_ID, "_start", "_size", WORD)
        .agg(
            (F.sum(WEIGHT) / F.col("_size")).alias("_mean"),
            F.sum(F.col(WEIGHT) / (F.col("_k") + 1)).alias("_recent"),
        )
    )
    keys = _keys(rows)
    return (
        rows.select(*keys, "_start")
        .join(words, C.ITEM_ID)
        .join(profile, [C.USER_ID, "_start", WORD])
        .groupBy(*keys)
        .agg(
            F.sum(F.col(WEIGHT) * F.col("_mean")).alias(TEXT_MEAN),
            F.sum(F.col(WEIGHT) * F.col("_recent")).alias(TEXT_RECENT),
        )
    )


def _position(item: Column) -> Column:
    """The 1-based position of `item` in the user's sequence; null when the user does not hold it."""
    found = F.array_position(SEQUENCE, item).cast("int")
    return F.when(found > 0, found)


def part_evidence(
    compared: DataFrame,
    sequences: DataFrame,
    counts: DataFrame,
    cfg: EvidenceConfig,
    text: DataFrame | None,
    sequential: DataFrame | None = None,
    asked: DataFrame | None = None,
    part: tuple[int, int] = (0, 1),
) -> DataFrame:
    """candidate_evidence of the `compared_candidates` rows whose item falls in item-hash slice `part`,
    with their `text_similarity` values from `text` (None: 0), their `request_evidence` from `asked`
    (None: 0) and their `sequential_evidence` from
    `sequential` (None: SEQUENCE_FLOOR).

    Every value of a (user, candidate) depends only on pairs whose first item is the candidate, so
    slices partition the output and their union equals the whole."""
    rows = compared.where(hash_part(F.col(C.ITEM_ID), part))
    keys = _keys(rows)
    pairs = pair_counts(sequences, cfg.window, part)
    hist_counts = counts.select(F.col(C.ITEM_ID).alias("_h"), F.col("_n").alias("_nh"))
    per_item = rows.select(*keys, "_own", "_nc", "_start", F.posexplode("_hist").alias("_k", "_h"))
    compared_pairs = per_item.join(
        pairs, (F.col("_a") == F.col(C.ITEM_ID)) & (F.col("_b") == F.col("_h")), "left"
    ).join(hist_counts, "_h", "left")
    # Leave the user out: their own pair (candidate, h) counted once when both lie within the window.
    position = F.col("_start") + F.col("_k") + 1
    own_pair = (F.col("_own").isNotNull() & (F.abs(position - F.col("_own")) <= cfg.window)).cast("long")
    co = F.greatest(F.coalesce(F.col("_co"), F.lit(0)) - own_pair, F.lit(0))
    sim = cosine(co, F.col("_nc"), F.col("_nh"))
    per_pair = compared_pairs.select(*keys, sim.alias("_sim"), (F.col("_k") + 1).alias("_age"))
    similarity = per_pair.groupBy(*keys).agg(
        F.sum("_sim").alias(COOC_SUM),
        F.max("_sim").alias(COOC_MAX),
        F.sum(F.col("_sim") / F.col("_age")).alias(RECENT_SIM),
        F.sum((F.col("_sim") > 0).cast("int")).alias(LINKED),
        F.count(F.lit(1)).alias("_compared"),
    )
    similarity = similarity.withColumn(COOC_SHARE, F.col(LINKED).cast("double") / F.col("_compared"))
    rows = _joined(_joined(rows, text, keys, TEXT_COLUMNS), sequential, keys, (SEQUENCE_LOG_P,))
    rows = _joined(rows, asked, keys, REQUEST_COLUMNS)
    out = rows.join(similarity, keys, "left").crossJoin(_popularity_cuts(counts))
    return out.select(
        *keys,
        _zero(F.log1p(F.col("_nc").cast("double"))).alias(POPULARITY),
        _zero(F.log1p(F.col("_nr").cast("double"))).alias(POPULARITY_RECENT),
        *[_zero(F.col(c)).alias(c) for c in (COOC_SUM, COOC_MAX, COOC_SHARE, RECENT_SIM)],
        _zero(1.0 / F.col("_rank").cast("double")).alias(RETRIEVAL),
        *[_zero(F.col(c)).alias(c) for c in (*CATEGORY_COLUMNS, *TEXT_COLUMNS)],
        _zero(F.coalesce(F.col(SEQUENCE_LOG_P), F.lit(SEQUENCE_FLOOR))).alias(SEQUENCE_LOG_P),
        *[_zero(F.col(c)).alias(c) for c in REQUEST_COLUMNS],
        _top_percent(F.col("_nc")).alias(POPULARITY_TOP),
        F.coalesce(F.col(LINKED), F.lit(0)).cast("int").alias(LINKED),
    )


def _popularity_cuts(counts: DataFrame) -> DataFrame:
    """One row: `_cut<p>`, the interaction count an item needs to be among the top p% of items."""
    quantiles = [1 - p / 100 for p in TOP_PERCENTS]
    cuts = counts.agg(F.percentile(F.col("_n").cast("double"), quantiles).alias("_q"))
    return cuts.select(*[F.col("_q")[i].alias(f"_cut{p}") for i, p in enumerate(TOP_PERCENTS)])


def _top_percent(count: Column) -> Column:
    """The smallest TOP_PERCENTS bucket whose cut `count` reaches (100 when none, or no interactions)."""
    bucket = F.lit(100)
    for p in reversed(TOP_PERCENTS):
        bucket = F.when((count > 0) & (count >= F.col(f"_cut{p}")), F.lit(p)).otherwise(bucket)
    return bucket.cast("int")


def _zero(column: Column) -> Column:
    """0 where there is no evidence; rounded so that sums taken in any row order give equal values
    (equal features must give equal scores, or ties would break differently from run to run)."""
    return F.round(F.coalesce(column.cast("double"), F.lit(0.0)), 10)
