"""Spark frames of prompt text shared by the prompts job and training: items with their cleaned titles,
and per-user lists in the order a prompt shows them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import PromptConfig
from instructrec_batch.errors import ConfigError
from instructrec_batch.prompts.templates import Template
from instructrec_batch.prompts.text_udfs import ATTRIBUTE_SEPARATOR, TASTE, clean_titles_fn
from instructrec_batch.spark.rejects import utf8_text
from instructrec_batch.text.items import CATEGORY, item_categories


def titled_items(items: DataFrame, prompt: PromptConfig, tokenizer_path: str) -> DataFrame:
    """items(item_id, title): the text each item is shown as, built on executors; null where no title is left.

    That text is the sanitised, capped title followed by the prompt.item_attributes the items table
    has (absent optional columns are skipped, so one config fits tables with and without them).
    """
    p = prompt
    attributes = [a for a in p.item_attributes if a in items.columns]
    text = [F.when(utf8_text(c), F.col(c)).alias(c) for c in (C.TITLE, *attributes)]
    return items.select(C.ITEM_ID, *text).mapInPandas(
        clean_titles_fn(tokenizer_path, p.title_max_chars, p.title_max_tokens, attributes, p.attribute_max_tokens),
        f"{C.ITEM_ID} {items.schema[C.ITEM_ID].dataType.simpleString()}, {C.TITLE} STRING",
    )


SHOWN = "_shown"  # a history row's text in the prompt: its item's text, plus the user's rating when shown


def rating_scale(interactions: DataFrame, prompt: PromptConfig) -> float | None:
    """The top of the rating scale history lines are shown against (the largest rating in the table),
    or None when ratings are not shown: prompt.show_ratings off, no rating column, or no ratings."""
    if not prompt.show_ratings or C.RATING not in interactions.columns:
        return None
    top = interactions.where(_rated()).agg(F.max(F.col(C.RATING).cast("double"))).first()[0]
    return float(top) if top is not None and top > 0 else None


def history_text(scale: float | None) -> Column:
    """A history row's text: the item's text, then ' | rated 4/5' when the row has a rating and a
    scale is given. Only history rows get it: a candidate's rating is what the model must predict."""
    if scale is None:
        return F.col(C.TITLE)
    number = F.regexp_replace(F.round(F.col(C.RATING).cast("double"), 1).cast("string"), r"\.0$", "")
    top = f"{round(scale, 1):g}"  # rounded like the ratings themselves
    rated = F.concat(F.col(C.TITLE), F.lit(f"{ATTRIBUTE_SEPARATOR}rated "), number, F.lit(f"/{top}"))
    return F.when(_rated(), rated).otherwise(F.col(C.TITLE))


def _rated() -> Column:
    """Rows with a rating: neither null nor NaN (a float column can hold NaN for a missing value)."""
    rating = F.col(C.RATING).cast("double")
    return rating.isNotNull() & ~F.isnan(rating)


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


def taste_profile(history: DataFrame, items: DataFrame, keys: Sequence[str], top: int) -> DataFrame | None:
    """keys + TASTE: the `top` categories most frequent in each group's history rows, with the share of
    those rows in each, most frequent first ("Drama (45%), Comedy (30%), Thriller (18%)").

    `history` holds keys + item_id, one row per history interaction (a scoring user's rows before the
    holdout; a training example's rows before its target), so the profile is the user's long-term
    taste as of that moment. Categories come from items.category, split as `item_categories` splits
    them. None when `top` is 0 or the items table has no category column; a group none of whose items
    has a category gets no row. The text is raw: the renderer cleans and caps it like an intent.
    """
    categories = item_categories(items)
    if top <= 0 or categories is None:
        return None
    totals = history.groupBy(*keys).agg(F.count(F.lit(1)).alias("_total"))
    counts = history.join(categories, C.ITEM_ID).groupBy(*keys, CATEGORY).agg(F.count(F.lit(1)).alias("_n"))
    rank = F.row_number().over(Window.partitionBy(*keys).orderBy(F.col("_n").desc(), F.col(CATEGORY)))
    share = F.round(F.col("_n") * 100 / F.col("_total")).cast("int").cast("string")
    shown = F.concat(F.col(CATEGORY), F.lit(" ("), share, F.lit("%)"))
    best = counts.withColumn("_r", rank).where(F.col("_r") <= top).join(totals, list(keys))
    parts = collect_ordered(best.withColumn("_shown", shown), keys, [F.col("_r")], {"_shown": "_parts"})
    return parts.select(*keys, F.array_join("_parts", ", ").alias(TASTE))


def require_taste_line(template: Template, prompt: PromptConfig) -> None:
    """Fail before any work when prompt.taste_categories asks for a line the template version lacks."""
    if prompt.taste_categories and not template.taste:
        raise ConfigError(
            f"prompt.taste_categories={prompt.taste_categories} but template version "
            f"{prompt.template_version} has no taste line; use prompt.template_version v2 or v3, or set "
            "prompt.taste_categories=0"
        )
