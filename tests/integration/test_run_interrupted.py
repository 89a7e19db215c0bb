"""``proctor run`` interrupted (SIGINT, SIGTERM, SIGHUP): the whole tree is killed and the
governor's record says so at once (``execution.terminated``, reason ``interrupted``),
not a lease later (``supervisor-lost``); exit 128 + the signal. Interrupted before the
command started: nothing runs, and a start the governor recorded is finished
``failed``, reason ``interrupted``.

Real parts: a ``proctor serve`` child process, ``proctor run`` as a child process (its
signals as a terminal or a service manager sends them), real process trees; the
in-process case drives the real ``Supervisor`` on this thread, the main one.
"""

from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_server import GovernorServer, client_of
from gov_support import POLICIES
from proc_support import end_run, marked
from proctor.authorization import warrants
from proctor.authorization.keys import PrincipalKey
from proctor.enforcement import _pending
from proctor.enforcement import supervisor as supervisor_module
from proctor.enforcement.supervisor import RunOptions, Supervisor

TREE = Path(__file__).parent / "procs" / "tree.py"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    server = GovernorServer(tmp_path_factory.mktemp("interrupted") / "gov", policy=POLICIES / "run")
    yield server
    server.stop()


def _record(gov: GovernorServer, execution: str) -> dict[str, Any]:
    with client_of(gov) as client:
        shown: dict[str, Any] = client.json("GET", f"/v1/executions/{execution}")
    return shown


def _gone(marker: str, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_an_interrupted_run_kills_its_tree_and_records_why(
    gov: GovernorServer, signum: signal.Signals
) -> None:
    marker = "proctor-test-" + secrets.token_hex(6)
    cmd = [sys.executable, "-m", "proctor", "run", "--server", gov.url, "--key", str(gov.key), "--"]
    proc = subprocess.Popen(
        [*cmd, sys.executable, str(TREE), marker], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        assert proc.stdout is not None
        said: list[str] = []
        while len(said) < 20 and (line := proc.stderr.readline()):  # notes may come first
            said.append(line)
            if " started (" in line:
                break
        assert " started (" in said[-1], said
        execution = line.split("execution ", 1)[1].split(" ", 1)[0]
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # the tree forks on
        assert len(marked(marker)) >= 2
        proc.send_signal(signum)
        proc.wait(timeout=30)
        err = proc.stderr.read()
        assert proc.returncode == 128 + signum, err
        assert _gone(marker) == [], "processes of the tree survived"
        assert f"terminated: interrupted: {signum.name} received by proctor run" in err, err
        shown = _record(gov, execution)  # recorded now, not when the lease lapses
        assert (shown["status"], shown["reason"]) == ("terminated", "interrupted"), shown
    finally:
        end_run(proc, marker)


def test_interrupted_while_the_start_is_recorded_nothing_runs_and_the_start_is_finished(
    gov: GovernorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = tmp_path / "ran"
    real_verify = warrants.verify_warrant_bounds
    said: list[str] = []

    def interrupted_while_verifying(*a: Any, **kw: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in a terminal, while the start is on its way
        time.sleep(1)  # the handler runs here, on this (the main) thread
        return real_verify(*a, **kw)

    monkeypatch.setattr(supervisor_module, "verify_warrant_bounds", interrupted_while_verifying)
    run = Supervisor(
        RunOptions(gov.url, PrincipalKey.load(gov.key), quiet=True),
        ["/bin/sh", "-c", f"touch {mark}"],
        stdout=io.BytesIO(),
        stderr=io.BytesIO(),
    )
    monkeypatch.setattr(run, "say", said.append)
    before = signal.getsignal(signal.SIGINT)
    status = run.run()
    assert status == 128 + signal.SIGINT, said
    assert signal.getsignal(signal.SIGINT) is before  # the run's handler is gone
    time.sleep(0.3)
    assert not mark.exists()
    assert any("interrupted by SIGINT before the command started; nothing started" in s for s in said), said
    shown = _record(gov, run._execution)
    assert (shown["status"], shown["reason"]) == ("failed", "interrupted"), shown


def test_interrupted_before_anything_was_asked_says_so(
    gov: GovernorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []

    def interrupted(_argv: Any) -> Any:
        time.sleep(0.5)  # the warrant key read ahead (a thread) is back in its pool, closed with it
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
        raise AssertionError("the handler did not stop the run")

    monkeypatch.setattr(supervisor_module, "measure", interrupted)
    run = Supervisor(RunOptions(gov.url, PrincipalKey.load(gov.key), quiet=True), ["/bin/true"])
    monkeypatch.setattr(run, "say", said.append)
    assert run.run() == 128 + signal.SIGTERM
    assert said == ["interrupted by SIGTERM; nothing started"], said
    assert run._execution == ""


def _supervisor(
    gov: GovernorServer, argv: list[str], said: list[str], monkeypatch: pytest.MonkeyPatch
) -> Supervisor:
    run = Supervisor(
        RunOptions(gov.url, PrincipalKey.load(gov.key), quiet=True),
        argv,
        stdout=io.BytesIO(),
        stderr=io.BytesIO(),
    )
    monkeypatch.setattr(run, "say", said.append)
    return run


def test_an_interrupt_during_the_go_is_noted_and_then_stops_the_command(
    gov: GovernorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raised inside the go (after the child was told to start, before it is tracked) it
    would leave the command running untracked while the log said nothing started."""
    marker = "proctor-test-" + secrets.token_hex(6)
    real_forked = _pending.PendingStart._forked
    sent: list[int] = []

    def forked(self: _pending.PendingStart) -> None:
        if self._done and not sent:  # inside go(): the go written, the child forked
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)  # the handler runs here, on the main thread: it must only note it
        real_forked(self)

    monkeypatch.setattr(_pending.PendingStart, "_forked", forked)
    said: list[str] = []
    run = _supervisor(gov, [sys.executable, str(TREE), marker], said, monkeypatch)
    assert run.run() == 128 + signal.SIGINT, said
    assert sent
    assert _gone(marker) == [], "the command outlived an interrupt that came during its start"
    shown = _record(gov, run._execution)
    assert (shown["status"], shown["reason"]) == ("terminated", "interrupted"), shown


def test_a_second_interrupt_does_not_stop_the_start_being_finished(
    gov: GovernorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = tmp_path / "ran"
    real_verify = warrants.verify_warrant_bounds
    real_finish = Supervisor._finish

    def interrupted_while_verifying(*a: Any, **kw: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
        return real_verify(*a, **kw)

    def finish_after_another(self: Supervisor, body: dict[str, Any]) -> Any:
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C, while the start is finished
        time.sleep(0.3)
        return real_finish(self, body)

    monkeypatch.setattr(supervisor_module, "verify_warrant_bounds", interrupted_while_verifying)
    monkeypatch.setattr(Supervisor, "_finish", finish_after_another)
    said: list[str] = []
    run = _supervisor(gov, ["/bin/sh", "-c", f"touch {mark}"], said, monkeypatch)
    assert run.run() == 128 + signal.SIGINT, said
    assert not mark.exists()
    shown = _record(gov, run._execution)
    assert (shown["status"], shown["reason"]) == ("failed", "interrupted"), shown


def test_an_interrupt_after_the_command_ended_changes_nothing(
    gov: GovernorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_finish = Supervisor._finish

    def finish_after_an_interrupt(self: Supervisor, body: dict[str, Any]) -> Any:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)
        return real_finish(self, body)

    monkeypatch.setattr(Supervisor, "_finish", finish_after_an_interrupt)
    said: list[str] = []
    run = _supervisor(gov, ["/bin/sh", "-c", "exit 3"], said, monkeypatch)
    assert run.run() == 3, said  # the command's own status: it ended by itself
    shown = _record(gov, run._execution)
    assert shown["status"] == "completed", shown
