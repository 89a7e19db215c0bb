"""A supervisor that cannot act does not leave its tree running: ``kill -STOP`` on
``proctor run`` and the governed tree is dead within the lease TTL, and stays dead —
killed by a watchdog the supervisor does not control (the pid namespace's init here;
a separate watchdog process where there is no pid namespace)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from gov_server import GovernorServer
from gov_support import POLICIES
from proc_support import marked
from unpriv_support import assert_passes_unprivileged

TREE = POLICIES.parent / "procs" / "tree.py"  # a setsid child, a double-forked orphan, a fork loop
TTL = 2.0  # the lease of the run policy
MARGIN = 10.0  # the kill itself takes milliseconds; a loaded machine may delay the watchdog


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(tmp_path_factory.mktemp("stopped"), policy=POLICIES / "run")
    yield gov
    gov.stop()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def governed(supervisor: int, marker: str) -> Callable[[], list[int]]:
    """The live processes of the governed tree (the supervisor's argv carries the marker too)."""
    return lambda: [p for p in marked(marker) if p != supervisor and _comm(p) != "proctor-watch"]


def gone_within(pids: Callable[[], list[int]], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := pids()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def test_a_stopped_supervisor_s_tree_is_killed_within_the_lease_ttl(server: GovernorServer) -> None:
    """A stopped supervisor's tree is killed within the lease TTL."""
    marker = "proctor-test-" + secrets.token_hex(6)
    run = [sys.executable, "-m", "proctor", "run", "--server", server.url, "--key", str(server.key)]
    proc = subprocess.Popen(
        [*run, "--", sys.executable, str(TREE), marker],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tree = governed(proc.pid, marker)
    try:
        assert proc.stderr is not None
        assert proc.stdout is not None
        assert "started" in proc.stderr.readline()
        assert proc.stdout.readline().strip() == "ready"
        assert len(tree()) >= 4
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            left = gone_within(tree, TTL + MARGIN)
            assert left == [], f"the tree ran on under a stopped supervisor: {left}"
            time.sleep(0.5)
            assert tree() == [], "the tree came back"
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        proc.wait(timeout=60)
        # Resumed, it finds its tree killed and its lease lapsed: never a success.
        assert proc.returncode in (79, 128 + signal.SIGKILL), proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pid in marked(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged (this is the re-run)")
def test_unprivileged_rerun_passes() -> None:
    """The same, as an unprivileged user (the init of a pid namespace in a user namespace)."""
    assert_passes_unprivileged(__file__, timeout=240)
