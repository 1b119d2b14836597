"""Per-process cache for heavy objects used inside UDFs (tokenizers, models).

It lives in an importable module, not in a UDF's globals, because classic Spark re-imports a
pickled function per task while reusing the Python worker (spark.python.worker.reuse=true), and
Sail runs UDFs on threads of its own process: a module-level dict is what survives both. Loads are
serialised by a lock so concurrent tasks in one process never load the same key twice.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_cache: dict[Hashable, Any] = {}
_loads: Counter[Hashable] = Counter()
_requests: Counter[Hashable] = Counter()


def get_or_load(key: Hashable, loader: Callable[[], T]) -> T:
    """Return the object cached under `key`, calling `loader` only on the first request in this process."""
    with _lock:
        _requests[key] += 1
        if key not in _cache:
            _cache[key] = loader()
            _loads[key] += 1
        return _cache[key]


def load_count(key: Hashable) -> int:
    """How many times `key` was loaded in this process (1 when the cache works)."""
    with _lock:
        return _loads[key]


def request_count(key: Hashable) -> int:
    """How many times `key` was asked for in this process (once per batch that needed it)."""
    with _lock:
        return _requests[key]


def clear() -> None:
    """Drop every cached object (tests; freeing memory between unrelated jobs)."""
    with _lock:
        _cache.clear()
        _loads.clear()
        _requests.clear()
