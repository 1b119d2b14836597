"""The names transformers 4.x and 5.x spell differently (models/compat.py), read off the installed release:
tests/test_runtime_fit.py admits 4.51 to 5.39, and these hold on whichever `make test` installed."""

from __future__ import annotations

from pathlib import Path

import torch

from instructrec_batch.models.base import load_causal_lm
from instructrec_batch.models.compat import cache_name


def test_a_model_loads_in_the_dtype_asked_for(tiny_model_dir: Path) -> None:
    """A release that took the dtype keyword for a config attribute would load float32 here."""
    model = load_causal_lm(tiny_model_dir, "bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in load_causal_lm(tiny_model_dir, "float32").parameters()} == {torch.float32}


def test_the_cache_is_passed_and_read_back_by_the_name_the_decoder_takes(tiny_model_dir: Path) -> None:
    decoder = load_causal_lm(tiny_model_dir).get_decoder()
    name = cache_name(decoder)
    out = decoder(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)
    cache = getattr(out, name)
    assert cache is not None and cache.get_seq_length() == 3
    more = decoder(input_ids=torch.tensor([[4]]), use_cache=True, **{name: cache})
    assert getattr(more, name).get_seq_length() == 4  # the prefix was read from the cache, not dropped

    class Old:
        def forward(self, input_ids=None, past_key_values=None, use_cache=None): ...

    class New:
        def forward(self, input_ids=None, cache=None, use_cache=None): ...

    assert (cache_name(Old()), cache_name(New())) == ("past_key_values", "cache")
