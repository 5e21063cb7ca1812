"""The benchmarks' memory figure: what a run has in use at its peak, measured in a real worker process."""

import functools

import pytest
import torch

from benchmarks.timing import memory_in_use

pytestmark = pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")


def test_memory_in_use_is_what_each_run_holds_at_its_peak():
    # factory(*args) must return the run; partial(partial, torch.ones)(n) is partial(torch.ones, n): a run that makes
    # an n-float tensor (4n bytes) and drops it. Both are picklable by reference, as a spawned worker needs.
    factory = functools.partial(functools.partial, torch.ones)
    small = memory_in_use(factory, (4 * 2**20,), runs=3)  # 16 MiB a run
    large = memory_in_use(factory, (16 * 2**20,), runs=3)  # 64 MiB a run
    for spread, mib in ((small, 16), (large, 64)):
        assert mib - 1 <= spread.min <= spread.max <= mib + 4, (mib, spread)
