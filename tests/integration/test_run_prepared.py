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
from collections.abc import Iterator
from pathlib import Path

import pytest

from gov_server import GovernorServer
from proctor.authorization.keys import PrincipalKey
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
