"""Per-process cache for heavy objects used inside UDFs (tokenizers, models).

It lives in an importable module, not in a UDF's globals, because classic Spark re-imports a
pickled function per task while reusing the Python worker (spark.python.worker.reuse=true), and
Sail runs UDFs on threads of its own process: a module-level dict is what survives both. Loads are
serialised by a lock so concurrent tasks in one process never load the same key twice.

A caller may bound how many objects of one kind stay cached (`capacity`; the kind is a tuple key's
first element): past it the least recently used one of that kind is dropped, so a worker that
scores with several models in turn (evaluation: the base model, then the tuned one) holds one at a
time instead of all of them. A task still using a dropped model keeps it alive until it is done.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_cache: OrderedDict[Hashable, Any] = OrderedDict()  # least recently used first
_loads: Counter[Hashable] = Counter()
_requests: Counter[Hashable] = Counter()


def _kind(key: Hashable) -> Hashable:
    return key[0] if isinstance(key, tuple) and key else key


def get_or_load(key: Hashable, loader: Callable[[], T], capacity: int | None = None) -> T:
    """Return the object cached under `key`, calling `loader` only on the first request in this process.

    With `capacity`, at most that many objects of the key's kind stay cached: loading one more first
    drops the least recently used of that kind.
    """
    with _lock:
        _requests[key] += 1
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        if capacity is not None:
            same_kind = [k for k in _cache if _kind(k) == _kind(key)]
            for old in same_kind[: max(0, len(same_kind) - capacity + 1)]:
                del _cache[old]
        _cache[key] = value = loader()
        _loads[key] += 1
        return value


def cached(key: Hashable) -> bool:
    """Whether `key` is cached in this process right now."""
    with _lock:
        return key in _cache


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
