"""Non-LLM rankers scored on exactly the candidate lists the model sees.

Each returns user_id, item_id, score for every candidate row. Every one learns only from training
interactions (held-out rows removed), so none sees anything the model cannot:
- retriever is the lists' own order, as they were handed over: the floor a re-ranker of a real
  retriever's lists must beat (on the benchmark protocol's lists, a seeded shuffle: a second random);
- random, popularity and item-kNN (co-occurrence) are the classic floors;
- blend is a linear listwise ranker over the same collaborative evidence the fusion head gets,
  fitted on validation lists (each user's `valid` item plus sampled negatives): what the evidence
  achieves without the language model;
- bm25 and minilm read the user's request (their intent): BM25 and sentence-embedding similarity of the
  request to each candidate's text (the request evidence columns);
- sasrec is a self-attentive sequential recommender: by default the one the evidence job trained for
  the night (its `ev_sequence`), else one trained here on the driver.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import SasrecConfig
from instructrec_batch.ranking.blend import with_evidence
from instructrec_batch.ranking.metrics import SCORE
from instructrec_batch.ranking.ranker import LinearRanker


def training_interactions(interactions: DataFrame, holdout: DataFrame) -> DataFrame:
    """Interactions minus every held-out (user, item) pair, validation and test alike."""
    return interactions.join(holdout.select(C.USER_ID, C.ITEM_ID).distinct(), [C.USER_ID, C.ITEM_ID], "left_anti")


RANDOM_SALT = "random-baseline"


def random_scores(candidates: DataFrame, seed: int) -> DataFrame:
    """A seeded random order that every engine computes identically (xxhash64, not rand()).

    Salted: the protocol orders its lists by xxhash64(seed + 1, user, item), so an unsalted hash of a
    nearby seed could follow the protocol's own order instead of being independent of it.
    """
    noise = F.xxhash64(F.lit(RANDOM_SALT), F.lit(seed), F.col(C.USER_ID), F.col(C.ITEM_ID))
    return candidates.select(C.USER_ID, C.ITEM_ID, noise.cast("double").alias(SCORE))


def retriever_scores(prompts: DataFrame) -> DataFrame:
    """The order the lists arrived in (the prompts' candidate_ids keep the candidates table's
    retrieval_rank, else retrieval_score, order): first scores highest."""
    ordered = prompts.select(C.USER_ID, F.posexplode("candidate_ids").alias("_pos", C.ITEM_ID))
    return ordered.select(C.USER_ID, C.ITEM_ID, (-F.col("_pos")).cast("double").alias(SCORE))


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


def blend_scores(candidates: DataFrame, evidence: DataFrame, blend: LinearRanker) -> DataFrame:
    """The evidence blend (a ranker over BLEND_TERMS, fitted on validation lists by `ranking.blend.fit_blend`)
    applied to the candidates' evidence rows (`evidence`, from the evidence job)."""
    return with_evidence(candidates, evidence).select(C.USER_ID, C.ITEM_ID, blend.column().alias(SCORE))


def evidence_column_scores(evidence: DataFrame, column: str) -> DataFrame:
    """One evidence column as a ranker (bm25: ev_request_words; minilm: ev_request_meaning): the text
    baselines that read the user's request, 0 for users who stated nothing."""
    return evidence.select(C.USER_ID, C.ITEM_ID, F.col(column).cast("double").alias(SCORE))


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
