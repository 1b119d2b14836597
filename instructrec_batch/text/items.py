"""Item text as Spark columns, shared by the evidence (category affinity, text similarity) and the
instructions (the taste line): text decoded as people read it, an item's categories, an item's words.

One home, so the evidence's features and the text the model is shown split and decode the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.spark.rejects import utf8_text
from instructrec_batch.text.sanitize import decode_text


def _decode_series(texts: pd.Series) -> pd.Series:
    return texts.map(lambda text: None if text is None else decode_text(text))


def decoded(column: Column) -> Column:
    """`column` (a string) as people read it: HTML character references decoded and NFC-composed, as
    the instructions show it. Product exports often carry "Toys &amp; Games" or "Men&#39;s": left
    encoded, the `;` of a reference would split a category in two and "amp" or "39" would count as
    words shared between items. A pandas UDF, made per call since it needs an active session."""
    return F.pandas_udf(_decode_series, "string")(column)


# One items.category value may list several categories ("Action, Adventure", "Toys|Games"), a
# taxonomy path ("Beauty > Skin Care > Face": each level counts as a category) or a list written out
# as text ('["Beauty", "Skin Care"]', "['Beauty', 'Skin Care']"): split at these separators, then
# strip the brackets, quotes and blanks around each part.
CATEGORY_SEPARATORS = r"[,;|>]"
CATEGORY_WRAPPING = r"^[\s\[\]\"']+|[\s\[\]\"']+$"
CATEGORY = "_cat"  # item_categories: one of an item's categories


def item_categories(items: DataFrame | None) -> DataFrame | None:
    """item_id, _cat: one row per distinct (item, category), items.category split as
    CATEGORY_SEPARATORS says; None when there is no items table or it has no category column."""
    if items is None or C.CATEGORY not in items.columns:
        return None
    parts = items.where(utf8_text(C.CATEGORY)).select(
        C.ITEM_ID, F.explode(F.split(decoded(F.col(C.CATEGORY)), CATEGORY_SEPARATORS)).alias(CATEGORY)
    )
    cleaned = parts.select(C.ITEM_ID, F.regexp_replace(CATEGORY, CATEGORY_WRAPPING, "").alias(CATEGORY))
    return cleaned.where(F.length(CATEGORY) > 0).distinct()


WORD_BREAKS = r"[^\p{L}\p{N}]+"  # words are runs of letters and digits, lower-cased, in any script
WORD, WEIGHT = "_word", "_w"  # item_words: one of an item's words and its weight


def item_words(items: DataFrame | None, columns: Sequence[str]) -> DataFrame | None:
    """item_id, _word, _w: each item's distinct words from its `columns` (those the items table has)
    with IDF weights, log(items / items with the word), scaled so that an item's weights have unit
    length: the dot product of two items' weights is the cosine of their word sets. Words that every
    item holds weigh nothing and are left out. None without an items table or any of the columns."""
    present = [c for c in columns if items is not None and c in items.columns]
    if items is None or not present:
        return None
    text = F.concat_ws(" ", *[F.when(utf8_text(c), F.col(c)) for c in present])
    words = F.explode(F.split(F.lower(decoded(text)), WORD_BREAKS)).alias(WORD)
    found = items.select(C.ITEM_ID, words).where(F.length(WORD) > 0).distinct()
    total = found.agg(F.countDistinct(C.ITEM_ID).alias("_items"))
    idf = found.groupBy(WORD).agg(F.count(F.lit(1)).alias("_df")).crossJoin(total)
    idf = idf.select(WORD, F.log(F.col("_items") / F.col("_df")).alias("_idf")).where(F.col("_idf") > 0)
    weighted = found.join(idf, WORD)
    norm = weighted.groupBy(C.ITEM_ID).agg(F.sqrt(F.sum(F.col("_idf") * F.col("_idf"))).alias("_norm"))
    return weighted.join(norm, C.ITEM_ID).select(C.ITEM_ID, WORD, (F.col("_idf") / F.col("_norm")).alias(WEIGHT))
