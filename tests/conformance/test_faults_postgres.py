"""The database of a governor on PostgreSQL killed (SIGKILL of every server process, as
an OOM kill or a power cut) or stopped (SIGSTOP of every server process: every query
hangs; then SIGCONT, or SIGKILL) at a random point of concurrent authorizations, runs and
appends. The governor keeps running throughout: no command runs unauthorized, none
outlives its lease, nothing the governor acknowledged is lost, it serves again once the
database does (without a restart), and ``proctor log verify`` passes.

A real ``proctor serve --store postgresql://…`` on the suite's throwaway cluster
(``tests/pg_support.py``), real ``proctor run`` enforcers; the checks are those of
``tests/fault_checks.py``; the seed (printed) replays with ``PROCTOR_FAULT_SEED``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fault_checks import COLUMNS, Tally, check_after_fault
from fault_workload import (
    WAIT,
    Ledger,
    Workload,
    describe,
    fault_rng,
    fault_rounds,
    kill_tokens,
    survivors,
    tokens,
    wait_gone,
    warm,
)
from figures import record
from gov_server import GovernorServer
from gov_support import POLICIES
from pg_support import PgCluster

pytestmark = pytest.mark.postgres

TTL = 2.0  # the run policy's lease
GRACE = 0.5
MARGIN = 3.0
FAULTS = ("sigkill", "sigstop-sigcont", "sigstop-sigkill")
OPERATIONS = ("authorize", "run", "append")


def server_processes(cluster: PgCluster) -> list[int]:
    """The postmaster, then every process it started (backends, checkpointer, WAL writer…)."""
    try:
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(") ", 1)[1].split()
                if int(stat[1]) == postmaster:
                    children.append(int(entry))
    return [postmaster, *children]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def pg_server(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    name = pg_cluster.create_database()
    root = tmp_path_factory.mktemp("pgfaults")
    gov = GovernorServer(
        root, policy=POLICIES / "run", origin="pgfaults.example/gov", store=pg_cluster.dsn(name)
    )
    try:
        yield gov
    finally:
        signal_all(server_processes(pg_cluster), signal.SIGCONT)  # a failed test may leave it stopped
        gov.stop()
        if not pg_cluster.running():
            pg_cluster.start()
        pg_cluster.drop_database(name)


@pytest.mark.parametrize("fault", FAULTS)
def test_a_database_killed_or_stopped_mid_operation_loses_nothing_the_governor_acknowledged(
    pg_cluster: PgCluster, pg_server: GovernorServer, tmp_path: Path, fault: str
) -> None:
    """A database killed or stopped at a random point of authorizations, runs and appends
    loses nothing its governor acknowledged, and no command runs unauthorized or past its lease."""
    rng, _seed = fault_rng(f"database-{fault}")
    server = pg_server
    markers = tmp_path / "markers"
    markers.mkdir()
    ledger = Ledger()
    tally = Tally(fault, "database (PostgreSQL)")
    waited: list[float] = []
    hit = 0
    pid = server.proc.pid if server.proc is not None else -1
    try:
        for n in range(fault_rounds(1)):
            with Workload(lambda: server.url, server.data, markers, ledger, rng) as load:
                warm(load, ledger, markers)
                delay = rng.uniform(0.0, 1.0)
                print(f"round {n}: {fault} of PostgreSQL {delay:.3f} s after the workload was warm")
                time.sleep(delay)
                hit += len(survivors(tokens(markers)))
                pids = server_processes(pg_cluster)
                assert pids, "PostgreSQL is not running"
                signal_all(pids, signal.SIGKILL if fault == "sigkill" else signal.SIGSTOP)
                # (b) No lease can be renewed without the database: every command dies within it.
                left, took = wait_gone(tokens(markers), TTL + GRACE + MARGIN)
                if fault == "sigstop-sigcont":
                    signal_all(pids, signal.SIGCONT)
                elif fault == "sigstop-sigkill":
                    signal_all(pids, signal.SIGKILL)
                if fault != "sigstop-sigcont":
                    assert gone(pids), "PostgreSQL's processes outlived SIGKILL"
                    pg_cluster.start()  # crash recovery from its WAL
                assert left == [], f"commands outlived their lease, database {fault}: {describe(left)}"
                waited.append(took)
                warm(load, ledger, markers)  # the governor serves again by itself
            assert survivors(tokens(markers)) == []
            assert server.proc is not None
            assert (server.proc.pid, server.proc.poll()) == (pid, None), "the governor was restarted"
            tally.round_done(check_after_fault(server, ledger, markers), ledger)
    finally:
        kill_tokens(tokens(markers))
    record(
        f"faults-{fault}-database",
        section="Faults injected",
        summary=[
            f"PostgreSQL {fault} (every server process): {tally.rounds} round(s), {hit} governed "
            f"process(es) running at the fault; each was dead {max(waited):.2f} s after it at the "
            "latest; the governor served again without a restart",
        ],
        columns=COLUMNS,
        rows=tally.rows(OPERATIONS),
    )
