"""Non-LLM rankers scored on exactly the candidate lists the model sees.

Each returns user_id, item_id, score for every candidate row. Every one learns only from training
interactions (held-out rows removed), so none sees anything the model cannot:
- random, popularity and item-kNN (co-occurrence) are the classic floors;
- blend is a linear listwise ranker over the same collaborative evidence the fusion head gets,
  fitted on validation lists (each user's `valid` item plus sampled negatives): what the evidence
  achieves without the language model;
- sasrec is a self-attentive sequential recommender: by default the one the evidence job trained for
  the night (its `ev_sequence`), else one trained here on the driver.
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import Config, EvidenceConfig, SasrecConfig
from instructrec_batch.data.protocol import sample_candidates, sample_users, shown_items, usable_interactions
from instructrec_batch.evaluation.metrics import SCORE
from instructrec_batch.evidence.features import candidate_evidence
from instructrec_batch.evidence.ranker import LinearRanker, fit_ranker, quadratic

VALIDATION_SALT = 1000  # validation lists draw negatives with data.seed + this, apart from the test lists


def training_interactions(interactions: DataFrame, holdout: DataFrame) -> DataFrame:
    """Interactions minus every held-out (user, item) pair, validation and test alike."""
    return interactions.join(holdout.select(C.USER_ID, C.ITEM_ID).distinct(), [C.USER_ID, C.ITEM_ID], "left_anti")


RANDOM_SALT = "random-baseline"


def random_scores(candidates: DataFrame, seed: int) -> DataFrame:
    """A seeded random order that every engine computes identically (xxhash64, not rand()).

    Salted: the protocol samples negatives by xxhash64(seed, user, item) (the smallest hashes win),
    so an unsalted hash with the same seed would rank the target first almost always.
    """
    noise = F.xxhash64(F.lit(RANDOM_SALT), F.lit(seed), F.col(C.USER_ID), F.col(C.ITEM_ID))
    return candidates.select(C.USER_ID, C.ITEM_ID, noise.cast("double").alias(SCORE))


def popularity_scores(candidates: DataFrame, train: DataFrame) -> DataFrame:
    """Training interaction count of each candidate item (0 for items never seen in training)."""
    counts = train.groupBy(C.ITEM_ID).agg(F.count(F.lit(1)).alias("_n"))
    return candidates.join(counts, C.ITEM_ID, "left").select(
        C.USER_ID, C.ITEM_ID, F.coalesce(F.col("_n"), F.lit(0)).cast("double").alias(SCORE)
    )


def itemknn_scores(candidates: DataFrame, train: DataFrame) -> DataFrame:
    """Item co-occurrence kNN: sum over the user's training items h of cosine(h, candidate).

    cosine(h, c) = users(h ∧ c) / sqrt(users(h) · users(c)), counted on distinct (user, item) pairs
    of the training interactions. Only pairs whose second item is some candidate are counted.
    """
    seen = train.select(C.USER_ID, C.ITEM_ID).distinct()
    users_per_item = seen.groupBy(C.ITEM_ID).agg(F.count(F.lit(1)).alias("_n"))
    history = seen.select(C.USER_ID, F.col(C.ITEM_ID).alias("_h"))
    wanted = seen.join(candidates.select(C.ITEM_ID).distinct(), C.ITEM_ID).select(
        C.USER_ID, F.col(C.ITEM_ID).alias("_c")
    )
    cooc = (
        history.join(wanted, C.USER_ID)
        .where(F.col("_h") != F.col("_c"))
        .groupBy("_h", "_c")
        .agg(F.count(F.lit(1)).alias("_co"))
    )
    similarity = (
        cooc.join(users_per_item.select(F.col(C.ITEM_ID).alias("_h"), F.col("_n").alias("_nh")), "_h")
        .join(users_per_item.select(F.col(C.ITEM_ID).alias("_c"), F.col("_n").alias("_nc")), "_c")
        .select("_h", "_c", (F.col("_co") / F.sqrt(F.col("_nh") * F.col("_nc"))).alias("_sim"))
    )
    per_pair = (
        candidates.select(C.USER_ID, F.col(C.ITEM_ID).alias("_c"))
        .join(history, C.USER_ID)
        .join(similarity, ["_h", "_c"])
        .groupBy(C.USER_ID, "_c")
        .agg(F.sum("_sim").alias("_s"))
    )
    return (
        candidates.select(C.USER_ID, C.ITEM_ID)
        .join(per_pair.withColumnRenamed("_c", C.ITEM_ID), [C.USER_ID, C.ITEM_ID], "left")
        .select(C.USER_ID, C.ITEM_ID, F.coalesce(F.col("_s"), F.lit(0.0)).cast("double").alias(SCORE))
    )


BLEND_USERS = 5000  # an evidence blend is fitted on the validation lists of a seeded sample of this many users


def validation_lists(
    interactions: DataFrame, items: DataFrame, holdout: DataFrame, users: DataFrame, cfg: Config
) -> DataFrame:
    """user_id, item_id, positive: each of `users`' valid item plus data.negatives sampled negatives.

    Drawn by the protocol's own sampler (items the user never interacted with, shown items only), so
    the lists look like the test lists, but from the validation split: no test item is ever a row.
    """
    valid = holdout.where(F.col(C.SPLIT) == C.SPLIT_VALID).join(users, C.USER_ID, "left_semi")
    as_target = valid.withColumn(C.SPLIT, F.lit(C.SPLIT_TEST))
    usable, _ = usable_interactions(interactions, items)
    lists = sample_candidates(
        usable, shown_items(items), as_target, seed=cfg.data.seed + VALIDATION_SALT, negatives=cfg.data.negatives
    )
    marked = valid.select(C.USER_ID, C.ITEM_ID, F.lit(True).alias("positive"))
    return (
        lists.select(C.USER_ID, C.ITEM_ID)
        .join(marked, [C.USER_ID, C.ITEM_ID], "left")
        .select(C.USER_ID, C.ITEM_ID, F.coalesce(F.col("positive"), F.lit(False)).alias("positive"))
    )


def blend_lists(interactions: DataFrame, items: DataFrame, holdout: DataFrame, cfg: Config) -> DataFrame:
    """validation_lists of a sample of BLEND_USERS users with a validation row (seeded by data.seed):
    what an evidence blend is fitted on, whichever users are evaluated, so that the blend baseline and
    the fusion head's blend learn from the same lists."""
    users = holdout.where(F.col(C.SPLIT) == C.SPLIT_VALID).select(C.USER_ID).distinct()
    return validation_lists(interactions, items, holdout, sample_users(users, BLEND_USERS, cfg.data.seed), cfg)


def list_evidence(
    source: DataFrame, lists: DataFrame, cfg: EvidenceConfig, items: DataFrame, vectors: DataFrame | None
) -> pd.DataFrame:
    """The evidence of labelled `lists` (user_id, item_id, positive) from training interactions `source`
    (and the run's sequence `vectors`, None without sequential evidence), collected to the driver in
    (user_id, item_id) order, so that a fit does not follow Spark's row order."""
    fitted = candidate_evidence(source, lists.select(C.USER_ID, C.ITEM_ID), cfg, items, vectors).join(
        lists, [C.USER_ID, C.ITEM_ID]
    )
    return fitted.toPandas().sort_values([C.USER_ID, C.ITEM_ID], ignore_index=True)


# The blend's terms: each evidence column and its square. The square lets the blend bend a feature's
# effect where a straight line cannot follow it (the sequential score's floor for items its model never
# saw, co-occurrence that saturates): on short histories, where those matter most, it ranks the
# test lists better than the evidence columns alone (see the README, Quality).
BLEND_TERMS = quadratic(C.EVIDENCE_COLUMNS)


def fit_blend(lists: pd.DataFrame) -> LinearRanker:
    """The evidence blend over BLEND_TERMS, fitted on `list_evidence` rows."""
    return fit_ranker(lists, BLEND_TERMS, lists[C.USER_ID].to_numpy(), lists["positive"].to_numpy())


def blend_scores(
    candidates: DataFrame,
    evidence: DataFrame,
    lists: DataFrame,
    source: DataFrame,
    items: DataFrame,
    cfg: EvidenceConfig,
    vectors: DataFrame | None,
) -> DataFrame:
    """The evidence blend: a linear ranker over BLEND_TERMS fitted on validation `lists`, applied to
    the candidates' evidence rows (`evidence`, from the evidence job). `source` (training interactions),
    `items` and the run's sequence `vectors` feed the lists' evidence, as they fed the evidence job's."""
    ranker = fit_blend(list_evidence(source, lists, cfg, items, vectors))
    joined = candidates.join(evidence, [C.USER_ID, C.ITEM_ID], "left").fillna(0.0, subset=list(C.EVIDENCE_COLUMNS))
    return joined.select(C.USER_ID, C.ITEM_ID, ranker.column().alias(SCORE))


def stored_sasrec_scores(evidence: DataFrame) -> DataFrame:
    """The run's `ev_sequence` as the SASRec row: log p(candidate next | history) under the SASRec the
    evidence job trained on the same training interactions. Within a list it orders candidates as
    the model's own dot products do (the log-normaliser is the user's constant); items the model never
    saw share the floor, last, as they are last under `sasrec_scores`."""
    return evidence.select(C.USER_ID, C.ITEM_ID, F.col(C.EV_SEQUENCE).cast("double").alias(SCORE))


def sasrec_scores(
    spark: SparkSession, candidates: DataFrame, train: DataFrame, cfg: SasrecConfig, seed: int
) -> DataFrame:
    """SASRec trained on the training interactions (collected to the driver), scoring every candidate."""
    from instructrec_batch.evidence.sasrec import train_sasrec

    model = train_sasrec(train.select(C.USER_ID, C.ITEM_ID, C.EVENT_TS).toPandas(), cfg, seed)
    local = candidates.select(C.USER_ID, C.ITEM_ID).toPandas()
    local[SCORE] = model.score(local)
    types = {f.name: f.dataType.simpleString() for f in candidates.schema.fields}
    return spark.createDataFrame(
        local, f"{C.USER_ID} {types[C.USER_ID]}, {C.ITEM_ID} {types[C.ITEM_ID]}, {SCORE} double"
    )
