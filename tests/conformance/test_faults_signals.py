"""A governor or a supervisor killed (SIGKILL) or stopped (SIGSTOP, then SIGCONT or
SIGKILL) at a random point of concurrent authorizations, runs and appends: no command
runs unauthorized, none outlives its lease, nothing the governor acknowledged is lost, and
``proctor log verify`` passes (the checks of ``tests/fault_checks.py``).

The governor is a real ``proctor serve`` (SQLite: the governor's process holds the
database, so these are the database's faults too; PostgreSQL's own are in
``test_faults_postgres.py``); the enforcers are real ``proctor run`` processes, one
running a job that lasts until its lease or a revocation ends it, one short jobs. The
moment of each fault is drawn from a seeded generator (the seed is printed; set
``PROCTOR_FAULT_SEED`` to replay it); ``PROCTOR_FAULT_ROUNDS`` runs more rounds than CI.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fault_checks import COLUMNS, Tally, check_after_fault
from fault_workload import (
    Ledger,
    Run,
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

TTL = 2.0  # the run policy's lease
GRACE = 0.5  # SIGTERM, then SIGKILL this much later
MARGIN = 3.0  # scheduling on a loaded two-core machine; still under a second lease
WATCHDOG_MARGIN = 10.0  # a stopped supervisor's tree is killed by its watchdog (test_stopped_supervisor)
FAULTS = ("sigkill", "sigstop-sigcont", "sigstop-sigkill")
OPERATIONS = ("authorize", "run", "append")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(tmp_path_factory.mktemp("faults"), policy=POLICIES / "run")
    yield gov
    if gov.proc is not None:
        os.kill(gov.proc.pid, signal.SIGCONT)  # a failed test may leave it stopped
    gov.stop()


@pytest.mark.parametrize("fault", FAULTS)
def test_a_governor_killed_or_stopped_mid_operation_loses_nothing_it_acknowledged(
    server: GovernorServer, tmp_path: Path, fault: str
) -> None:
    """A governor killed or stopped at a random point of authorizations, runs and appends
    loses nothing it acknowledged, runs nothing unauthorized, and no command outlives its lease."""
    rng, _seed = fault_rng(f"governor-{fault}")
    markers = tmp_path / "markers"
    markers.mkdir()
    ledger = Ledger()
    tally = Tally(fault, "governor")
    waited: list[float] = []
    hit = 0
    try:
        for n in range(fault_rounds(1)):
            with Workload(lambda: server.url, server.data, markers, ledger, rng) as load:
                warm(load, ledger, markers)
                delay = rng.uniform(0.0, 1.0)
                print(f"round {n}: {fault} of the governor {delay:.3f} s after the workload was warm")
                time.sleep(delay)
                assert server.proc is not None
                pid = server.proc.pid
                hit += len(survivors(tokens(markers)))
                if fault == "sigkill":
                    server.kill()
                else:
                    os.kill(pid, signal.SIGSTOP)
                # (b) With the governor gone, no lease is renewed: every command dies within it.
                left, took = wait_gone(tokens(markers), TTL + GRACE + MARGIN)
                assert left == [], f"commands outlived their lease, governor {fault}: {describe(left)}"
                waited.append(took)
                if fault == "sigstop-sigcont":
                    os.kill(pid, signal.SIGCONT)
                elif fault == "sigstop-sigkill":
                    server.kill()
                if server.proc is None:
                    server.start()
                warm(load, ledger, markers)  # it serves again, by itself or restarted
            assert survivors(tokens(markers)) == []
            tally.round_done(check_after_fault(server, ledger, markers), ledger)
    finally:
        kill_tokens(tokens(markers))
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
    record(
        f"faults-{fault}-governor",
        section="Faults injected",
        summary=[
            f"governor {fault}: {tally.rounds} round(s), {hit} governed process(es) running at the fault; "
            f"each was dead {max(waited):.2f} s after it at the latest (lease {TTL:.0f} s)",
        ],
        columns=COLUMNS,
        rows=tally.rows(OPERATIONS),
    )


def _signal_supervisor(run: Run, fault: str) -> Callable[[], None]:
    """Send the fault to one ``proctor run``; return how to end it (SIGCONT or SIGKILL)."""
    pid = run.proc.pid
    if fault == "sigkill":
        os.kill(pid, signal.SIGKILL)
        return lambda: None
    os.kill(pid, signal.SIGSTOP)
    if fault == "sigstop-sigcont":
        return lambda: os.kill(pid, signal.SIGCONT)
    return lambda: os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("fault", FAULTS)
def test_a_supervisor_killed_or_stopped_mid_run_leaves_nothing_running_past_its_lease(
    server: GovernorServer, tmp_path: Path, fault: str
) -> None:
    """A supervisor killed or stopped at a random point of its run leaves nothing running
    past its lease, and the log accounts for every command that ran."""
    rng, _seed = fault_rng(f"supervisor-{fault}")
    markers = tmp_path / "markers"
    markers.mkdir()
    ledger = Ledger()
    tally = Tally(fault, "supervisor")
    waited: list[float] = []
    hit = 0
    try:
        for n in range(fault_rounds(1)):
            with Workload(lambda: server.url, server.data, markers, ledger, rng) as load:
                warm(load, ledger, markers)
                delay = rng.uniform(0.0, 1.0)
                time.sleep(delay)
                # A supervisor whose command runs (the long job's, at least): killing one
                # that has not started anything yet would test nothing of the lease.
                runs = [r for r in ledger.live_runs() if survivors([r.token])]
                assert runs, "no governed command is running"
                victim = rng.choice(runs)
                print(
                    f"round {n}: {fault} of proctor run {victim.token}, {delay:.3f} s after the workload was warm"
                )
                hit += len(survivors([victim.token]))
                end = _signal_supervisor(victim, fault)
                # (b) Its command, if it started, dies within the lease (a watchdog it does
                # not control kills it while it is stopped).
                limit = TTL + GRACE + (MARGIN if fault == "sigkill" else WATCHDOG_MARGIN)
                left, took = wait_gone([victim.token], limit)
                end()
                assert left == [], (
                    f"the command of a supervisor hit by {fault} outlived its lease: {describe(left)}"
                )
                waited.append(took)
                warm(load, ledger, markers)
            assert survivors(tokens(markers)) == []
            tally.round_done(check_after_fault(server, ledger, markers), ledger)
    finally:
        kill_tokens(tokens(markers))
    record(
        f"faults-{fault}-supervisor",
        section="Faults injected",
        summary=[
            f"proctor run {fault}: {tally.rounds} round(s), {hit} governed process(es) of the hit "
            f"supervisors running at the fault; each was dead {max(waited):.2f} s after it at the latest",
        ],
        columns=COLUMNS,
        rows=tally.rows(("run",)),
    )
