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


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_revocation_runs_and_prints_its_table(pg_cluster: object) -> None:
    # pg_cluster: without PostgreSQL this skips, or fails under PROCTOR_REQUIRE_PG=1 (the
    # bench starts a cluster of its own).
    proc = subprocess.run(
        [sys.executable, str(BENCH.with_name("bench_revocation.py")), "--quick", "--trials", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for heading in ("Revocation on node A", "PostgreSQL, 3 nodes (NOTIFY)", "SQLite shared", "yardstick"):
        assert heading in proc.stdout
