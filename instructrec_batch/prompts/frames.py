"""Spark frames of prompt text shared by the prompts job and training: items with their cleaned titles,
and per-user lists in the order a prompt shows them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame
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


def collect_ordered(
    df: DataFrame, keys: Sequence[str], order: Sequence[Column], fields: Mapping[str, str], *extra: Column
) -> DataFrame:
    """One row per `keys` group: for each `fields` entry (column -> output name) the group's values as
    an array sorted by `order` (ties broken by the fields' own values), plus the `extra` aggregates.

    The arrays come out flat and already ordered, which is the input render_prompts_fn takes: Spark
    sorts one array of structs per group and splits it, so pandas gets no structs and no timestamps.
    """
    keyed = [o.alias(f"_order{i}") for i, o in enumerate(order)]
    packed = F.sort_array(F.collect_list(F.struct(*keyed, *[F.col(c) for c in fields]))).alias("_packed")
    grouped = df.groupBy(*keys).agg(packed, *extra)
    rest = [c for c in grouped.columns if c not in (*keys, "_packed")]
    return grouped.select(*keys, *[F.col(f"_packed.{c}").alias(name) for c, name in fields.items()], *rest)
