"""Measurement helpers the benchmark scripts share (run them from the repository root:
``python bench/bench_log.py``; this module sits beside them)."""

from __future__ import annotations

import gc
import math
import os
import resource
from collections.abc import Sequence

__all__ = ["cpu_s", "pct", "settle"]


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of unsorted values."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def cpu_s() -> float:
    """User + system CPU seconds of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def settle() -> None:
    """Flush dirty pages so earlier phases' writeback does not land in the next timing."""
    os.sync()
    gc.collect()
