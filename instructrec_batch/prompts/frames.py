"""Spark frames of prompt text shared by the prompts job and training: items with their cleaned titles."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import Config
from instructrec_batch.prompts.text_udfs import clean_titles_fn
from instructrec_batch.spark.rejects import utf8_text


def titled_items(items: DataFrame, cfg: Config, tokenizer_path: str) -> DataFrame:
    """items(item_id, title) with titles sanitised and capped on executors; null where nothing is left."""
    p = cfg.prompt
    title = F.when(utf8_text(C.TITLE), F.col(C.TITLE)).alias(C.TITLE)
    return items.select(C.ITEM_ID, title).mapInPandas(
        clean_titles_fn(tokenizer_path, p.title_max_chars, p.title_max_tokens),
        f"{C.ITEM_ID} {items.schema[C.ITEM_ID].dataType.simpleString()}, {C.TITLE} STRING",
    )
