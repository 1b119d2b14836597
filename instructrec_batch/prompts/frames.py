"""Spark frames of prompt text shared by the prompts job and training: items with their cleaned titles."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import Config
from instructrec_batch.prompts.text_udfs import clean_titles_fn
from instructrec_batch.spark.rejects import utf8_text


def titled_items(items: DataFrame, cfg: Config, tokenizer_path: str) -> DataFrame:
    """items(item_id, title): the text each item is shown as, built on executors; null where no title is left.

    That text is the sanitised, capped title followed by the prompt.item_attributes the items table
    has (absent optional columns are skipped, so one config fits tables with and without them).
    """
    p = cfg.prompt
    attributes = [a for a in p.item_attributes if a in items.columns]
    text = [F.when(utf8_text(c), F.col(c)).alias(c) for c in (C.TITLE, *attributes)]
    return items.select(C.ITEM_ID, *text).mapInPandas(
        clean_titles_fn(tokenizer_path, p.title_max_chars, p.title_max_tokens, attributes, p.attribute_max_tokens),
        f"{C.ITEM_ID} {items.schema[C.ITEM_ID].dataType.simpleString()}, {C.TITLE} STRING",
    )
