"""The database of a governor on PostgreSQL killed (SIGKILL of every server process, as
an OOM kill or a power cut) or stopped (SIGSTOP of every server process: every query
hangs; then SIGCONT, or SIGKILL) at a random point of concurrent authorizations, runs and
appends. The governor keeps running throughout: no command runs unauthorized, none
outlives its lease, nothing the governor acknowledged is lost, it serves again once the
database does (without a restart), and ``proctor log verify`` passes.

A real ``proctor serve --store postgresql://…`` on a throwaway cluster of this module's
own (``tests/pg_support.py``; the suite's shared one is never the one killed), real ``proctor run`` enforcers; the checks are those of
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


def _children(postmaster: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(") ", 1)[1].split()
                if int(stat[1]) == postmaster:
                    found.append(int(entry))
    return found


def server_processes(cluster: PgCluster) -> list[int]:
    """The postmaster, then every process it started (backends, checkpointer, WAL writer…)."""
    try:
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [postmaster, *_children(postmaster)]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def freeze(cluster: PgCluster) -> list[int]:
    """SIGSTOP the postmaster, then its children until no new one appears (one forked
    between a listing and the stop would otherwise run on, and outlive a SIGKILL of the
    rest holding the cluster's shared memory). Returns every process stopped."""
    pids = server_processes(cluster)
    if not pids:
        return []
    stopped: set[int] = set()
    while fresh := [p for p in [pids[0], *_children(pids[0])] if p not in stopped]:
        signal_all(fresh, signal.SIGSTOP)
        stopped.update(fresh)
    return [pids[0], *sorted(stopped - {pids[0]})]


def _dead(pid: int) -> bool:
    """Gone from ``/proc``: dead and reaped. A process that is a child subreaper (pytest
    becomes one once a test contains a command in process) inherits a killed postmaster
    and its children, which stay zombies until it reaps them: reap those of ours (the
    next postmaster would take a zombie for a live server)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return not Path(f"/proc/{pid}").exists()


def gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if all(_dead(pid) for pid in pids):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def faulted_cluster(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """A cluster of this module's own, to kill (``pg_cluster`` decides whether PostgreSQL
    tests run at all)."""
    cluster = PgCluster(pg_cluster.bin)
    try:
        cluster.start()
        yield cluster
    finally:
        signal_all(server_processes(cluster), signal.SIGCONT)  # a failed test may leave it stopped
        cluster.remove()


@pytest.fixture(scope="module")
def pg_server(
    faulted_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GovernorServer]:
    name = faulted_cluster.create_database()
    root = tmp_path_factory.mktemp("pgfaults")
    gov = GovernorServer(
        root, policy=POLICIES / "run", origin="pgfaults.example/gov", store=faulted_cluster.dsn(name)
    )
    try:
        yield gov
    finally:
        signal_all(server_processes(faulted_cluster), signal.SIGCONT)  # a failed test may leave it stopped
        gov.stop()


@pytest.mark.parametrize("fault", FAULTS)
def test_a_database_killed_or_stopped_mid_operation_loses_nothing_the_governor_acknowledged(
    faulted_cluster: PgCluster, pg_server: GovernorServer, tmp_path: Path, fault: str
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
                pids = freeze(faulted_cluster)  # every process at once, none forked after
                assert pids, "PostgreSQL is not running"
                if fault == "sigkill":
                    signal_all(pids, signal.SIGKILL)
                # (b) No lease can be renewed without the database: every command dies within it.
                left, took = wait_gone(tokens(markers), TTL + GRACE + MARGIN)
                if fault == "sigstop-sigcont":
                    signal_all(pids, signal.SIGCONT)
                elif fault == "sigstop-sigkill":
                    signal_all(pids, signal.SIGKILL)
                if fault != "sigstop-sigcont":
                    assert gone(pids), "PostgreSQL's processes outlived SIGKILL"
                    faulted_cluster.start()  # crash recovery from its WAL
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
