"""The two places where the transformers releases we support (4.51 to 5.39) spell things differently.

Databricks' ML runtimes ship transformers 4.x (17.3 LTS ML: 4.51.3, 18 LTS ML: 4.57.1) and a task's wheel
must use theirs rather than replace it (docs/databricks.md), while local installs get 5.x. Two names differ:

- the dtype a model is loaded in: `dtype=` from 4.56 on, `torch_dtype=` before (which older releases
  would otherwise take for a config attribute and load float32);
- a decoder's key-value cache: the `cache=` argument and output field from 5.24 on, `past_key_values`
  before (5.40 keeps only `cache`).

Both are read off the installed release or the module itself, never guessed from a runtime's name.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

from packaging.version import Version

DTYPE_SINCE = Version("4.56")


@cache
def _transformers_version() -> Version:
    import transformers

    return Version(transformers.__version__)


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """`from_pretrained` keyword arguments that load the weights in `dtype` on the installed release."""
    return {"dtype" if _transformers_version() >= DTYPE_SINCE else "torch_dtype": dtype}


def cache_name(decoder: Any) -> str:
    """The name `decoder`'s forward takes its key-value cache by (and its output returns it as)."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
