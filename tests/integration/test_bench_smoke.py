"""The benchmark script still runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench" / "bench_log.py"


@pytest.mark.slow
def test_bench_log_runs_and_prints_its_tables() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--sizes",
            "600",
            "--samples",
            "100",
            "--concurrent-events",
            "256",
            "--single-events",
            "20",
            "--threads",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for heading in ("Durable appends", "Proofs", "Targets"):
        assert heading in proc.stdout
