"""Peak resident memory of this process and its children, sampled while a block runs.

The embedded Sail engine runs inside this process, so its memory is counted too; on classic Spark
the JVM and Python workers are children and are counted through the process tree.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil


@dataclass
class PeakRss:
    peak_mb: float = 0.0


def _tree_rss(proc: psutil.Process) -> int:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # a child may exit between listing and reading
            continue
    return total


@contextmanager
def peak_rss(interval_s: float = 0.1) -> Iterator[PeakRss]:
    """Yield a PeakRss whose `peak_mb` holds the highest RSS seen while the block ran."""
    result = PeakRss()
    proc = psutil.Process()
    stop = threading.Event()

    def sample() -> None:
        while True:
            result.peak_mb = max(result.peak_mb, _tree_rss(proc) / 2**20)
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result.peak_mb = max(result.peak_mb, _tree_rss(proc) / 2**20)
