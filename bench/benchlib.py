"""Measurement helpers the benchmark scripts share (run them from the repository root:
``python bench/bench_log.py``; this module sits beside them)."""

from __future__ import annotations

import gc
import math
import os
import resource
from collections.abc import Sequence
from typing import Any

__all__ = ["cpu_s", "decision_event", "pct", "settle"]


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


def decision_event(n: int, principal: str = "alice") -> dict[str, Any]:
    """A ~580-byte ``decision`` event like the governor's (the log benchmarks' workload)."""
    return {
        "v": 1,
        "type": "decision",
        "time": "2026-12-03T13:00:00Z",
        "request": "sha256:" + "ab" * 32,
        "principal": principal,
        "action": "exec",
        "resource": "/usr/bin/pg_dump",
        "args": "sha256:" + "cd" * 32,
        "decision": "allow",
        "policies": ["policy0", "policy1"],
        "obligations": [],
        "bundle": "sha256:" + "ef" * 32,
        "eval_us": 123,
        "n": n,
        "pad": "x" * 180,
    }
