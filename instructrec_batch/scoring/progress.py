"""Progress of a scoring pass: users done / total, candidates per second and an ETA, logged at a steady
interval by a driver-side thread.

Executors count what they scored (`note_scored`, called by the scoring UDF every few dozen users) in this
module's counters. The driver reads them where the UDFs run in its own process, which is the local
(embedded Sail) engine. On classic Spark and remote Connect servers the UDFs run in Python worker
processes the driver cannot read; there the reporter says once that no progress is visible and stays
quiet rather than print a wrong ETA (the Spark UI shows task progress).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from instructrec_batch.periodic import every

log = logging.getLogger(__name__)

PROGRESS_CHUNK = 64  # users scored between progress counts (one packed forward holds a few on CPUs)

_lock = threading.Lock()
_users = 0
_candidates = 0


def note_scored(users: int, candidates: int) -> None:
    """Count one scored batch in this process (a module-level function: pickled by reference)."""
    global _users, _candidates
    with _lock:
        _users += users
        _candidates += candidates


def scored_so_far() -> tuple[int, int]:
    """(users, candidates) scored by this process since it started."""
    with _lock:
        return _users, _candidates


def progress_line(label: str, users: int, total: int, candidates: int, seconds: float) -> str:
    """`label: 120/300 users (40%), 15.2 candidates/s, ETA 3m 10s` from what is done so far."""
    rate = candidates / seconds if seconds > 0 else 0.0
    share = users / total if total else 1.0
    if users and users < total:
        remaining = seconds * (total - users) / users
        eta = f"ETA {int(remaining // 60)}m {int(remaining % 60):02d}s"
    else:
        eta = "ETA 0m 00s" if users >= total else "ETA unknown"
    return f"{label}: {users}/{total} users ({share:.0%}), {rate:.1f} candidates/s, {eta}"


@contextmanager
def reporting(label: str, total_users: int, every_s: float) -> Iterator[None]:
    """Log a progress line every `every_s` seconds while the block scores `total_users` users, and a last
    one when it completes (where counts arrive), so even a pass shorter than the interval says its rate."""
    if every_s <= 0 or total_users <= 0:
        yield
        return
    start_users, start_candidates = scored_so_far()
    started = time.monotonic()
    said_nothing_yet = False

    def report() -> None:
        nonlocal said_nothing_yet
        users, candidates = scored_so_far()
        users, candidates = users - start_users, candidates - start_candidates
        if users == 0:
            if not said_nothing_yet:
                log.info(
                    "%s: no user scored yet (counts arrive every %d users; where executors run in other "
                    "processes, as on classic Spark, they never arrive here: see the Spark UI)",
                    label,
                    PROGRESS_CHUNK,
                )
                said_nothing_yet = True
            return
        log.info(progress_line(label, min(users, total_users), total_users, candidates, time.monotonic() - started))

    with every(every_s, report, f"{label}-progress"):
        yield
    if scored_so_far()[0] > start_users:
        report()
