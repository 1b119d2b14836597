"""Request evidence: how well a candidate's text answers what the user asked for (their intent).

Two cheap readers of the same request the instruction shows, so the language model is compared with
methods that read the same words:
- `ev_request_words`: BM25 (bm25s: English stop words, lower-cased word tokens) of the request against
  each item's text (the `evidence.text_columns` of the items table, HTML references decoded);
- `ev_request_meaning`: the cosine of the request's and the item text's sentence embeddings
  (`models.encoder`, all-MiniLM-L6-v2 by default; 0 without an encoder).
A candidate whose user stated nothing by the moment scores 0 on both (no request evidence).

The BM25 index and the item embeddings are built once on the driver from the items table; the
requests are scored on the executors (mapInPandas), each distinct request once per batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import EvidenceConfig
from instructrec_batch.models.encoder import resolve_encoder
from instructrec_batch.spark.rejects import utf8_text
from instructrec_batch.text.intents import latest_by_holdout
from instructrec_batch.text.sanitize import clean_text, decode_text

REQUEST_WORDS, REQUEST_MEANING = C.EV_REQUEST_WORDS, C.EV_REQUEST_MEANING
REQUEST_COLUMNS = (REQUEST_WORDS, REQUEST_MEANING)
REQUEST_MAX_CHARS = 1000  # a request is read as an instruction shows it: one clean line, this long at most


@dataclass(frozen=True)
class Requests:
    """What the request evidence reads: the users' requests (user_id, and as_of_item_id for rows judged as
    of a training target, with the intent), the items' texts and the encoder folder (None: no embeddings)."""

    frame: DataFrame
    texts: pd.DataFrame
    encoder: Path | None


def requests_of(
    intents: DataFrame | None,
    users: DataFrame,
    holdout: DataFrame | None,
    items: DataFrame,
    ev: EvidenceConfig,
    cache: Path,
    split: str = C.SPLIT_TEST,
) -> Requests | None:
    """The requests of `users` as their prompts show them: each user's latest intent stated by the time of
    their held-out row of `split` (`test`: the lists a night ranks; `valid`: validation lists), or their
    latest without one. None without an intents table."""
    if intents is None:
        return None
    encoder = resolve_encoder(ev.request_encoder, cache) if ev.request_encoder else None
    requests = latest_by_holdout(intents, users, holdout, split)
    return Requests(requests, item_texts(items, ev.text_columns), encoder)


def item_texts(items: DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """item_id, text: each item's `columns` (those the table has) joined, decoded, on the driver."""
    present = [c for c in columns if c in items.columns] or [C.TITLE]
    text = F.concat_ws(" | ", *[F.when(utf8_text(c), F.col(c)) for c in present])
    local = items.select(C.ITEM_ID, text.alias("text")).toPandas()
    local["text"] = local["text"].fillna("").map(decode_text)
    return local.drop_duplicates(C.ITEM_ID).reset_index(drop=True)


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


def _scorer(texts: pd.DataFrame, encoder: Path | None):  # type: ignore[no-untyped-def]
    """The executor function: (keys..., intent) rows → keys + both request columns."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts["text"].tolist(), stopwords="en", show_progress=False), show_progress=False)
    position = {item: i for i, item in enumerate(texts[C.ITEM_ID].tolist())}
    vectors = None
    if encoder is not None:
        from instructrec_batch.models.encoder import encode

        vectors = encode(encoder, texts["text"].tolist())
    encoder_path = None if encoder is None else str(encoder)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            requests = frame[C.INTENT].map(lambda text: clean_text(text, REQUEST_MAX_CHARS) or "")
            distinct = sorted(set(requests))
            words = {
                r: retriever.get_scores(t) if t else None for r, t in zip(distinct, _tokens(distinct), strict=True)
            }
            meaning: dict[str, np.ndarray] = {}
            if vectors is not None and encoder_path is not None:
                from instructrec_batch.models.encoder import encode

                meaning = dict(zip(distinct, encode(encoder_path, distinct), strict=True))
            index = frame[C.ITEM_ID].map(position)
            out = frame.drop(columns=[C.INTENT])
            out[REQUEST_WORDS] = [
                float(words[r][int(i)]) if words[r] is not None and not pd.isna(i) else 0.0
                for r, i in zip(requests, index, strict=True)
            ]
            out[REQUEST_MEANING] = [
                float(vectors[int(i)] @ meaning[r]) if meaning and r and not pd.isna(i) else 0.0  # type: ignore[index]
                for r, i in zip(requests, index, strict=True)
            ]
            yield out

    return run


def request_scores(
    candidates: DataFrame, requests: DataFrame, keys: Sequence[str], texts: pd.DataFrame, encoder: Path | None
) -> DataFrame:
    """keys + REQUEST_COLUMNS for the candidate rows whose user has a request: `requests` holds keys' user
    part (user_id, and as_of_item_id when the candidates have it) and the intent."""
    request_keys = [k for k in keys if k != C.ITEM_ID]
    rows = candidates.select(*keys).distinct().join(requests.select(*request_keys, C.INTENT), request_keys)
    schema = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in rows.schema.fields if f.name != C.INTENT)
    return rows.mapInPandas(_scorer(texts, encoder), f"{schema}, {REQUEST_WORDS} DOUBLE, {REQUEST_MEANING} DOUBLE")
