"""Labelled lists for fitting rankers: validation items with sampled negatives, and their evidence.

The evidence blend (baseline and fusion head alike) is fitted on these lists. They are drawn like the
test lists (the protocol's sampler, items the user never interacted with) but around each user's
`valid` item, so no test item is ever a row, and their evidence comes from the same training
interactions the evidence job uses.
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import DataConfig, EvidenceConfig
from instructrec_batch.data.protocol import sample_candidates, sample_users, shown_items, usable_interactions
from instructrec_batch.evidence.features import candidate_evidence
from instructrec_batch.evidence.requests import Requests
from instructrec_batch.ranking.blend import POSITIVE

VALIDATION_SALT = 1000  # validation lists draw negatives with data.seed + this, apart from the test lists

BLEND_USERS = 5000  # an evidence blend is fitted on the validation lists of a seeded sample of this many users


def validation_lists(
    interactions: DataFrame, items: DataFrame, holdout: DataFrame, users: DataFrame, data: DataConfig
) -> DataFrame:
    """user_id, item_id, positive: each of `users`' valid item plus data.negatives sampled negatives.

    Drawn by the protocol's own sampler (items the user never interacted with, shown items only), so
    the lists look like the test lists, but from the validation split: no test item is ever a row.
    """
    valid = holdout.where(F.col(C.SPLIT) == C.SPLIT_VALID).join(users, C.USER_ID, "left_semi")
    as_target = valid.withColumn(C.SPLIT, F.lit(C.SPLIT_TEST))
    usable, _ = usable_interactions(interactions, items)
    lists = sample_candidates(
        usable, shown_items(items), as_target, seed=data.seed + VALIDATION_SALT, negatives=data.negatives
    )
    marked = valid.select(C.USER_ID, C.ITEM_ID, F.lit(True).alias("positive"))
    return (
        lists.select(C.USER_ID, C.ITEM_ID)
        .join(marked, [C.USER_ID, C.ITEM_ID], "left")
        .select(C.USER_ID, C.ITEM_ID, F.coalesce(F.col("positive"), F.lit(False)).alias("positive"))
    )


def blend_lists(interactions: DataFrame, items: DataFrame, holdout: DataFrame, data: DataConfig) -> DataFrame:
    """validation_lists of a sample of BLEND_USERS users with a validation row (seeded by data.seed):
    what an evidence blend is fitted on, whichever users are evaluated, so that the blend baseline and
    the fusion head's blend learn from the same lists."""
    users = holdout.where(F.col(C.SPLIT) == C.SPLIT_VALID).select(C.USER_ID).distinct()
    return validation_lists(interactions, items, holdout, sample_users(users, BLEND_USERS, data.seed), data)


def list_evidence(
    source: DataFrame,
    lists: DataFrame,
    cfg: EvidenceConfig,
    items: DataFrame,
    vectors: DataFrame | None,
    requests: Requests | None = None,
) -> pd.DataFrame:
    """The evidence of labelled `lists` (user_id, item_id, positive; a retriever's rank in retrieval_rank,
    when they are its lists) from training interactions `source` (and the run's sequence `vectors`, None
    without sequential evidence, and the users' `requests`, None without intents), collected to the
    driver in (user_id, item_id) order, so that a fit does not follow Spark's row order."""
    keys = [C.USER_ID, C.ITEM_ID, *([C.RETRIEVAL_RANK] if C.RETRIEVAL_RANK in lists.columns else [])]
    fitted = candidate_evidence(source, lists.select(*keys), cfg, items, vectors, requests).join(
        lists.select(C.USER_ID, C.ITEM_ID, POSITIVE), [C.USER_ID, C.ITEM_ID]
    )
    return fitted.toPandas().sort_values([C.USER_ID, C.ITEM_ID], ignore_index=True)
