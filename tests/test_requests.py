"""Request evidence: BM25 and sentence-embedding similarity of what a user asked for to each candidate."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from instructrec_batch import contracts as C
from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.errors import ConfigError
from instructrec_batch.evidence.requests import item_texts, request_scores
from instructrec_batch.models.encoder import encode, resolve_encoder
from instructrec_batch.stages.evidence import evidence_job
from tests.helpers import write_input


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random two-layer BERT (safetensors) with the tiny test tokenizer: what the tests encode with."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-encoder")
    for name in tiny_model_dir.iterdir():
        if "token" in name.name:
            shutil.copy(name, folder / name.name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def test_the_encoder_gives_unit_vectors_that_depend_on_the_text_only(tiny_encoder: Path) -> None:
    vectors = encode(tiny_encoder, ["a comedy for date night", "star wars", "a comedy for date night"])
    assert vectors.shape == (3, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[2], atol=1e-6) and not np.allclose(vectors[0], vectors[1])
    # padding in a batch does not change a text's vector (mean pooling over the attention mask)
    assert np.allclose(encode(tiny_encoder, ["star wars"])[0], vectors[1], atol=1e-5)
    assert encode(tiny_encoder, []).shape == (0, 32)


def test_an_encoder_that_is_neither_known_nor_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"request_encoder 'nope'.*neither a known encoder"):
        resolve_encoder("nope", tmp_path)


def _items(spark) -> pd.DataFrame:
    titles = ["Space War", "Funny Comedy Night", "Love Drama", "Comedy Of Errors", "Toy Story"]
    return spark.createDataFrame(
        pd.DataFrame(
            {C.ITEM_ID: range(1, 6), C.TITLE: titles, C.CATEGORY: ["Action", "Comedy", "Drama", "Comedy", "Kids"]}
        ),
        f"{C.ITEM_ID} BIGINT, {C.TITLE} STRING, {C.CATEGORY} STRING",
    )


def test_bm25_and_embeddings_score_each_candidate_against_its_users_request(spark, tiny_encoder: Path) -> None:
    items = _items(spark)
    candidates = spark.createDataFrame(
        [(u, i) for u in (1, 2) for i in range(1, 6)], f"{C.USER_ID} BIGINT, {C.ITEM_ID} BIGINT"
    )
    requests = spark.createDataFrame([(1, "a comedy please")], f"{C.USER_ID} BIGINT, {C.INTENT} STRING")
    texts = item_texts(items, ["title", "category"])
    assert texts.set_index(C.ITEM_ID).text[2] == "Funny Comedy Night | Comedy"
    scored = request_scores(candidates, requests, [C.USER_ID, C.ITEM_ID], texts, tiny_encoder).toPandas()
    scored = scored.set_index(C.ITEM_ID)
    assert set(scored[C.USER_ID]) == {1}  # user 2 asked nothing: no rows, so 0 once joined
    words = scored[C.EV_REQUEST_WORDS]
    assert words[2] > 0 and words[4] > 0 and words[1] == words[3] == words[5] == 0
    meaning = scored[C.EV_REQUEST_MEANING]
    expected = encode(tiny_encoder, texts.text.tolist()) @ encode(tiny_encoder, ["a comedy please"])[0]
    assert np.allclose(meaning.sort_index().to_numpy(), expected, atol=1e-5)


def test_the_evidence_job_reads_each_users_request_as_the_prompts_show_it(spark, tiny_cfg: Config) -> None:
    t0 = datetime(2024, 1, 1)
    interactions = pd.DataFrame(
        [(u, i, t0, 4.0) for u in (1, 2, 3) for i in (1, 5)], columns=["user_id", "item_id", "event_ts", "rating"]
    )
    write_input(
        spark,
        tiny_cfg,
        "interactions",
        interactions,
        "user_id BIGINT, item_id BIGINT, event_ts TIMESTAMP, rating DOUBLE",
    )
    items = _items(spark).toPandas()
    write_input(spark, tiny_cfg, "items", items, "item_id BIGINT, title STRING, category STRING")
    cands = pd.DataFrame([(u, i) for u in (1, 2, 3) for i in (2, 3, 4)], columns=["user_id", "item_id"])
    write_input(spark, tiny_cfg, "candidates", cands, "user_id BIGINT, item_id BIGINT")
    intents = pd.DataFrame(
        [(1, "a comedy", t0), (2, "a drama", t0), (2, "love drama tonight", t0.replace(day=2))],
        columns=["user_id", "intent", "intent_ts"],
    )
    write_input(spark, tiny_cfg, "intents", intents, "user_id BIGINT, intent STRING, intent_ts TIMESTAMP")
    cfg = tiny_cfg.model_copy(
        update={"run": tiny_cfg.run.model_copy(update={"run_id": "req", "run_date": "2026-01-01"})}
    )
    run_stage(evidence_job, spark, cfg)
    import deltalake

    evidence = deltalake.DeltaTable(str(Path(cfg.tables_root) / "candidate_evidence")).to_pandas()
    words = evidence.set_index([C.USER_ID, C.ITEM_ID])[C.EV_REQUEST_WORDS]
    assert words[(1, 2)] > 0 and words[(1, 4)] > 0 and words[(1, 3)] == 0  # comedies answer user 1
    assert words[(2, 3)] > words[(2, 2)]  # user 2's latest request: love drama tonight
    assert (words.loc[3] == 0).all()  # user 3 stated nothing
    assert (evidence[C.EV_REQUEST_MEANING] == 0).all()  # no encoder configured in tests: BM25 only
