"""``proctor run`` under a policy that requires approval (:mod:`proctor.enforcement._approval`):
nothing starts without an admin's approval; approved, it runs once; denied, it exits
DENIED (77) with the reason, nothing started.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gov_server import GovernorServer, cli

pytestmark = pytest.mark.slow

POLICY = """
@id("echo-needs-approval")
@approval("required")
@approval_timeout_s("120")
permit (principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/usr/bin/echo");
"""


@pytest.fixture
def gov(tmp_path: Path) -> Iterator[GovernorServer]:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "exec.cedar").write_text(POLICY)
    server = GovernorServer(tmp_path / "gov", policy=policy)
    try:
        yield server
    finally:
        server.stop()


def start_run(gov: GovernorServer, stderr: Path, *argv: str) -> subprocess.Popen[str]:
    with stderr.open("w") as err:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "proctor", "run", "--server", gov.url, "--key", str(gov.key), "--", *argv],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def approval_named(stderr: Path, proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"approval required: (ap_[a-z2-7]{24})", stderr.read_text())
        if found:
            return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"proctor run named no approval: {stderr.read_text()}")


def test_run_waits_for_an_approval_and_runs_once_approved(gov: GovernorServer, tmp_path: Path) -> None:
    err = tmp_path / "run.err"
    proc = start_run(gov, err, "/usr/bin/echo", "approved-run")
    approval = approval_named(err, proc)
    assert proc.poll() is None  # waiting: nothing ran
    cli("approve", approval, "--server", gov.url, "--data", str(gov.data))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.read_text()
    assert out == "approved-run\n"
    shown = cli("approvals", "show", approval, "--json", "--server", gov.url, "--data", str(gov.data))
    assert '"status": "used"' in shown.stdout or '"status":"used"' in shown.stdout


def test_run_without_approval_fails_closed_with_the_reason(gov: GovernorServer, tmp_path: Path) -> None:
    err = tmp_path / "run.err"
    proc = start_run(gov, err, "/usr/bin/echo", "never")
    approval = approval_named(err, proc)
    cli("approve", approval, "--deny", "--server", gov.url, "--data", str(gov.data))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 77
    assert out == ""
    assert f"approval {approval} is denied, not approved; nothing started" in err.read_text()
