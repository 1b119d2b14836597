"""Candidate evidence at any scale: computed in item-hash slices, each staged, read back as one table.

Counting co-occurring pairs is the memory-hungry part (one hash-aggregate row per distinct windowed
pair: ~100M rows for 100k users × 50 interactions). Each slice counts only the pairs whose first item
falls in it and computes the evidence of the candidates that are those items, so a slice holds its
share of the pairs and the slices' union is exactly the unsliced result.

Everything a slice would otherwise recompute from all users is staged once before the first: the
users' sequences (one array row per user), the item counts, and every candidate joined with its
user's history. A slice then scans those tables (every user's sequence, every candidate row) but
joins and aggregates only its own share of pairs and candidates, so no slice re-counts what another
has counted. The slice count follows the number of windowed pairs.

The text similarities need no pairs but one word profile per user history (and an aggregate per
candidate): staged first in as many user-hash slices, so that their memory is bounded too. The
sequential evidence (one dot product per candidate) is staged once, ahead of the slices.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from instructrec_batch.config import EvidenceConfig
from instructrec_batch.evidence.features import (
    SEQUENCE,
    compared_candidates,
    item_counts,
    part_evidence,
    recent_pairs,
    request_evidence,
    sequential_evidence,
    text_similarity,
    user_sequences,
)
from instructrec_batch.evidence.requests import Requests
from instructrec_batch.spark.tables import Staging, write_table
from instructrec_batch.text.items import item_categories, item_words

log = logging.getLogger(__name__)


def staged_evidence(
    spark: SparkSession,
    ev: EvidenceConfig,
    train: DataFrame,
    candidates: DataFrame,
    items: DataFrame | None,
    staging: Staging,
    name: str,
    vectors: DataFrame | None = None,
    requests: Requests | None = None,
) -> DataFrame:
    """candidate_evidence(train, candidates, items, vectors, requests) written to staging table `name` slice
    by slice, read back."""

    def stage(suffix: str, frame: DataFrame) -> DataFrame:
        write_table(frame, staging.tables, staging.ref(f"{name}_{suffix}"))
        return staging.read(spark, f"{name}_{suffix}")

    sequences = stage("sequences", user_sequences(train, ev.max_items))
    counts = stage("counts", item_counts(sequences))
    recent = recent_pairs(train, ev.recent_days)
    categories = item_categories(items)
    compared = stage("compared", compared_candidates(sequences, counts, recent, candidates, ev.history, categories))
    pairs = (sequences.agg(F.sum(F.size(SEQUENCE))).first()[0] or 0) * ev.window
    slices = max(1, math.ceil(pairs / ev.pairs_per_slice))

    def stage_slices(table: str, slice_frame: Callable[[tuple[int, int]], DataFrame], what: str) -> DataFrame:
        """Write slice_frame((i, slices)) for every slice i into one staging table, one after the other."""
        for index in range(slices):
            mode = "overwrite" if index == 0 else "append"
            write_table(slice_frame((index, slices)), staging.tables, staging.ref(table), mode=mode)
            log.info("evidence: %s slice %d/%d staged (~%d windowed pairs in all)", what, index + 1, slices, pairs)
        return staging.read(spark, table)

    words = item_words(items, ev.text_columns)
    text = None
    if words is not None:  # user-hash slices: each holds its users' word profiles only
        weights = stage("words", words)
        text = stage_slices(
            f"{name}_text", lambda part: text_similarity(compared, sequences, weights, ev.history, part), "text"
        )
    scored = sequential_evidence(candidates, vectors)
    sequential = None if scored is None else stage("sequential", scored)
    answered = request_evidence(candidates, requests)
    asked = None if answered is None else stage("requests", answered)
    return stage_slices(
        name, lambda part: part_evidence(compared, sequences, counts, ev, text, sequential, asked, part), "pairs"
    )
