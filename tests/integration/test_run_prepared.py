"""``proctor run`` sets its contained child up while the governor decides (ADR 0024).

Real parts: ``proctor serve`` child processes and the real ``Supervisor`` in this
process. The child set up ahead has no resource limits; a warrant whose obligations
change the containment (here no network) gets a child prepared for them, and the one
set up ahead is cancelled, never started. A denied run starts nothing and leaves no
child behind.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_server import GovernorServer
from gov_support import POLICIES
from proctor.authorization.keys import PrincipalKey
from proctor.enforcement import _approval
from proctor.enforcement.containment import Containment
from proctor.enforcement.supervisor import EXIT_DENIED, RunOptions, Supervisor

POLICY = """
@id("dev-exec-offline")
@lease_ttl_s("5")
@no_network("true")
permit (principal, action == Proctor::Action::"exec", resource) when { principal.role == "dev" };

@id("no-env")
forbid (principal, action, resource == Proctor::Executable::"/usr/bin/env");
"""


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    policy = tmp_path_factory.mktemp("policy")
    (policy / "offline.cedar").write_text(POLICY)
    server = GovernorServer(tmp_path_factory.mktemp("prepared") / "gov", policy=policy)
    yield server
    server.stop()


def children() -> set[int]:
    found: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            found |= {int(p) for p in Path(f"/proc/self/task/{tid}/children").read_text().split()}
        except OSError:
            continue
    return {p for p in found if _state(p) not in ("Z", "")}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _run(gov: GovernorServer, argv: list[str]) -> tuple[int, bytes, str]:
    said: list[str] = []
    out = io.BytesIO()
    run = Supervisor(RunOptions(gov.url, PrincipalKey.load(gov.key)), argv, stdout=out, stderr=io.BytesIO())
    run.say = said.append  # type: ignore[method-assign,assignment]
    return run.run(), out.getvalue(), "\n".join(said)


def test_a_warrant_that_changes_the_containment_gets_a_child_prepared_for_it(gov: GovernorServer) -> None:
    before = children()
    status, out, said = _run(gov, ["/bin/sh", "-c", "tail -n +3 /proc/net/dev"])  # its own namespace's
    assert status == 0, said
    assert "netns" in said, said  # containment: ..., netns
    names = [line.split(b":")[0].strip() for line in out.splitlines()]
    assert names == [b"lo"], out  # no interface but loopback: the obligation held
    assert not (children() - before), "the child set up ahead (with the network) was left behind"


def test_a_denied_run_starts_nothing_and_leaves_no_child(gov: GovernorServer, tmp_path: Path) -> None:
    before = children()
    mark = tmp_path / "ran"
    status, _, said = _run(gov, ["/usr/bin/env", "touch", str(mark)])
    assert status == EXIT_DENIED, said
    assert "no-env" in said or "denied" in said.lower(), said
    assert not mark.exists()
    assert not (children() - before), "the child set up ahead outlived the denial"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    """A governor whose warrants carry no resource limits: the child set up ahead is used."""
    server = GovernorServer(tmp_path_factory.mktemp("plain") / "gov", policy=POLICIES / "run")
    yield server
    server.stop()


def test_a_head_start_that_runs_out_while_the_start_is_recorded_is_replaced(
    plain: GovernorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An authorization that took most of the gate's time (an approval granted late), then
    a slow recording: the head start is past its deadline when the start is recorded, and a
    child prepared then starts the command (the recorded start is not wasted). Scaled
    down: gate 1.0 s, authorize 0.7 s more, recording 0.6 s more."""
    real_prepare = Containment.prepare
    real_json = _approval.ApprovingGovernors.json
    real_request = _approval.ApprovingGovernors.request

    def prepare(self: Containment, *a: Any, **kw: Any) -> Any:
        kw.setdefault("gate_timeout", 1.0)
        return real_prepare(self, *a, **kw)

    def slow_json(self: Any, method: str, target: str, body: Any = None, **kw: Any) -> Any:
        answer = real_json(self, method, target, body, **kw)
        if target == "/v1/authorize":
            time.sleep(0.7)
        return answer

    def slow_request(self: Any, method: str, target: str, *a: Any, **kw: Any) -> Any:
        answer = real_request(self, method, target, *a, **kw)
        if target == "/v1/executions":
            time.sleep(0.6)
        return answer

    monkeypatch.setattr(Containment, "prepare", prepare)
    monkeypatch.setattr(_approval.ApprovingGovernors, "json", slow_json)
    monkeypatch.setattr(_approval.ApprovingGovernors, "request", slow_request)
    mark = tmp_path / "ran"
    status, _, said = _run(plain, ["/bin/sh", "-c", f": > {mark}"])
    assert status == 0, said
    assert mark.exists()


def test_an_interrupt_while_the_child_is_set_up_ahead_leaves_no_child(
    plain: GovernorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the run waits for the ahead thread: the child that thread sets up after
    the run ended is cancelled by the thread itself."""
    made: list[Any] = []
    real_prepare = Containment.prepare

    def slow_prepare(self: Containment, *a: Any, **kw: Any) -> Any:
        time.sleep(0.6)  # a slow fork or cgroup move
        made.append(real_prepare(self, *a, **kw))
        return made[-1]

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Containment, "prepare", slow_prepare)
    before = children()
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.4)  # after the authorize answer, during the join
        with pytest.raises(KeyboardInterrupt):
            _run(plain, ["/bin/sh", "-c", f": > {tmp_path / 'ran'}"])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    deadline = time.monotonic() + 5
    while not made and time.monotonic() < deadline:
        time.sleep(0.05)
    assert made, "the ahead thread set nothing up"
    assert not made[0].usable, "the ahead child was never cancelled"
    deadline = time.monotonic() + 5
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (children() - before)
    assert not (tmp_path / "ran").exists()
