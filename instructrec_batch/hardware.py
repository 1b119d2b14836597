"""What the local hardware can do fast (dtypes for training and scoring) and how its threads are shared."""

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


def fast_bf16(device_type: str) -> bool:
    """Whether bf16 is this device's fast precision, the one place that decides it for training and
    scoring alike: CUDA devices that support it, and CPUs that multiply bf16 in hardware (Intel AMX,
    ~1.6x faster there); elsewhere fp32, since other CPUs emulate bf16 slowly."""
    if device_type.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_amx_bf16()


def release_openmp_threads() -> int:
    """Free the calling thread's idle OpenMP worker threads; returns how many OpenMP runtimes did so.

    Why: libgomp keeps its threads spinning between parallel regions only while the process has no
    more OpenMP threads than CPUs. The embedded engine runs model UDFs on its own threads, each with
    its own OpenMP team, so a team left behind by torch work on another thread (training or
    in-process scoring on the driver, an earlier scoring task) puts the process over that limit and
    every thread then sleeps and wakes between torch's many short parallel regions: measured 10-30%
    slower forwards on 2 cores. Call it on a thread that is done with torch for a while; torch builds
    a new team on its next parallel region. Only runtimes already loaded are touched (nothing is
    imported), via `omp_pause_resource_all` (OpenMP 5.0, libgomp and LLVM libomp); 0 where unavailable.
    """
    import ctypes

    from threadpoolctl import threadpool_info

    released = 0
    for info in threadpool_info():
        if info["user_api"] != "openmp":
            continue
        pause = getattr(ctypes.CDLL(info["filepath"]), "omp_pause_resource_all", None)
        if pause is not None and pause(1) == 0:  # 1 = omp_pause_soft: threads go, settings stay
            released += 1
    return released
