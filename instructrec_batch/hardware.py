"""What the local hardware can do fast, for choosing dtypes in training and scoring."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX); Linux only, else False."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
