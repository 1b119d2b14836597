"""Run a small function every few seconds on a daemon thread while a block of work runs.

Used for the local session's keep-alive and for scoring progress lines: both must tick while the
driver is busy elsewhere, and both must stop, and be joined, when the block ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def every(seconds: float, tick: Callable[[], bool | None], name: str) -> Iterator[None]:
    """Call `tick` every `seconds` until the block ends, or until `tick` returns False."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            if tick() is False:
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
