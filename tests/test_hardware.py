"""Thread sharing: a thread done with torch can hand its OpenMP workers back."""

from __future__ import annotations

import psutil
import torch

from instructrec_batch.hardware import release_openmp_threads


def test_release_openmp_threads_ends_the_idle_team_and_torch_builds_a_new_one() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.arange(4_000_000, dtype=torch.float32)
        (x * 2).sum()  # a parallel region: this thread's OpenMP team now has one worker thread
        process = psutil.Process()
        with_team = process.num_threads()
        assert release_openmp_threads() == 1
        assert process.num_threads() == with_team - 1
        assert float((x * 2).sum()) == float(x.sum()) * 2  # torch works on, with a new team
        assert process.num_threads() == with_team
    finally:
        torch.set_num_threads(before)
