"""The per-process executor cache: loads once, bounded by kind (LRU), and the adapter folder is cleaned."""

from __future__ import annotations

import gc
import tempfile
import weakref
from pathlib import Path

import pytest

from instructrec_batch import executor_cache
from instructrec_batch.config import DEFAULT_TEMPLATE_VERSION
from instructrec_batch.models.adapter import read_blob, verify_adapter
from instructrec_batch.scoring.udf import AdapterPayload, ScoringSpec, load_handle, model_cache_key


class _Model:
    """Stands in for a loaded model: only its identity and lifetime matter here."""


@pytest.fixture(autouse=True)
def _fresh_cache():
    executor_cache.clear()
    yield
    executor_cache.clear()


def test_capacity_drops_the_least_recently_used_of_a_kind_and_frees_it() -> None:
    a = executor_cache.get_or_load(("model", "a"), _Model, capacity=2)
    a_ref = weakref.ref(a)
    b_ref = weakref.ref(executor_cache.get_or_load(("model", "b"), _Model, capacity=2))
    tokenizer = executor_cache.get_or_load(("tokenizer", "t"), _Model, capacity=2)
    assert executor_cache.get_or_load(("model", "a"), _Model, capacity=2) is a  # a is now the most recent
    del a
    executor_cache.get_or_load(("model", "c"), _Model, capacity=2)  # evicts b, the least recently used
    gc.collect()
    assert b_ref() is None and not executor_cache.cached(("model", "b"))  # dropped and freed
    assert a_ref() is not None and executor_cache.cached(("model", "a"))
    assert executor_cache.cached(("tokenizer", "t")) and tokenizer is not None  # another kind is untouched
    assert executor_cache.load_count(("model", "a")) == 1  # a hit, not a reload


def test_executor_loads_the_adapter_from_bytes_leaves_no_folder_and_evicts(tiny_model_dir, adapter_dir) -> None:
    info = verify_adapter(adapter_dir)
    payload = AdapterPayload(files=read_blob(info))
    fields = {
        "model_path": str(tiny_model_dir),
        "dtype": "float32",
        "device": "cpu",
        "method": "onepass",
        "batch_size": 4,
        "template_version": DEFAULT_TEMPLATE_VERSION,
        "merge_adapter": True,
        "cached_models": 1,
    }
    tuned = ScoringSpec(**fields, adapter_sha256=info.sha256)
    base = ScoringSpec(**fields, adapter_sha256=None)
    before = set(Path(tempfile.gettempdir()).glob("instructrec-adapter-*"))
    handle_ref = weakref.ref(load_handle(tuned, payload).model)
    assert set(Path(tempfile.gettempdir()).glob("instructrec-adapter-*")) == before  # no folder left behind
    assert handle_ref() is not None and executor_cache.cached(model_cache_key(tuned, "cpu", "float32"))
    load_handle(base, AdapterPayload())  # capacity 1: the tuned model makes room for the base one
    gc.collect()
    assert handle_ref() is None and not executor_cache.cached(model_cache_key(tuned, "cpu", "float32"))
