"""Candidate evidence at any scale: computed in item-hash slices, each staged, read back as one table.

Counting co-occurring pairs is the memory-hungry part (one hash-aggregate row per distinct windowed
pair: ~100M rows for 100k users × 50 interactions). Each slice counts only the pairs whose first item
falls in it and computes the evidence of the candidates that are those items, so a slice holds its
share of the pairs and the slices' union is exactly the unsliced result. The users' sequences are
staged once and re-read by every slice; the slice count follows the number of windowed pairs.
"""

from __future__ import annotations

import logging
import math

from pyspark.sql import DataFrame, SparkSession

from instructrec_batch.config import Config
from instructrec_batch.evidence.features import sequence_evidence, user_sequences
from instructrec_batch.spark.tables import Staging, write_table

log = logging.getLogger(__name__)


def staged_evidence(
    spark: SparkSession, cfg: Config, train: DataFrame, candidates: DataFrame, staging: Staging, name: str
) -> DataFrame:
    """candidate_evidence(train, candidates) written to staging table `name` slice by slice, read back."""
    ev = cfg.evidence
    write_table(user_sequences(train, ev.max_items), cfg, staging.ref(f"{name}_sequences"))
    sequences = staging.read(spark, f"{name}_sequences")
    pairs = sequences.count() * ev.window
    slices = max(1, math.ceil(pairs / ev.pairs_per_slice))
    for index in range(slices):
        mode = "overwrite" if index == 0 else "append"
        write_table(sequence_evidence(sequences, candidates, ev, (index, slices)), cfg, staging.ref(name), mode=mode)
        log.info("evidence: slice %d/%d staged (~%d windowed pairs in all)", index + 1, slices, pairs)
    return staging.read(spark, name)
