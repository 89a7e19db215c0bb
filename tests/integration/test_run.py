"""`proctor run` end to end: a real governor, real child processes, real containment."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gov_server import GovernorServer, cli
from proc_support import marked
from unpriv_support import assert_passes_unprivileged

POLICIES = Path(__file__).parent / "policies"
TREE = Path(__file__).parent / "procs" / "tree.py"

pytestmark = pytest.mark.slow


def wait_gone(marker: str, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = marked(marker)
        if not left:
            return []
        time.sleep(0.05)
    return marked(marker)


def close(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def cleanup(marker: str) -> None:
    for pid in marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    server = GovernorServer(tmp_path_factory.mktemp("run"), policy=POLICIES / "run")
    yield server
    server.stop()


def run(gov: GovernorServer, *command: str, receipt: Path | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "proctor", "run", "--server", gov.url, "--key", str(gov.key)]
    if receipt is not None:
        args += ["--receipt", str(receipt)]
    return subprocess.Popen(
        [*args, "--", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def execution_id(stderr_line: str) -> str:
    match = re.search(r"execution (ex_[a-z0-9]+) started", stderr_line)
    assert match, stderr_line
    return match.group(1)


def wait_started(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    return execution_id(line)


def test_allowed_command_runs_and_its_exit_status_passes_through(gov: GovernorServer, tmp_path: Path) -> None:
    receipt = tmp_path / "r.json"
    proc = run(gov, "sh", "-c", "echo hello; echo oops >&2; exit 3", receipt=receipt)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert out == "hello\n"
    assert "oops" in err
    assert re.search(r"proctor: execution ex_\w+ started", err)
    doc = json.loads(receipt.read_text())
    assert {"checkpoint", "log_key", "events", "warrant_chain", "statement"} <= set(doc)
    key = httpx_get(gov, "/v1/log/key").strip()
    verified = cli("verify", str(receipt), "--log-key", key)
    assert json.loads(verified.stdout)["ok"] is True


def httpx_get(gov: GovernorServer, path: str) -> str:
    import httpx

    return httpx.get(gov.url + path, timeout=10).text


def test_denied_command_never_starts(gov: GovernorServer, tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    proc = run(gov, "touch", str(marker))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 77
    assert "denied" in err
    assert "no-touch" in err
    assert not marker.exists()


def test_revoke_kills_the_whole_tree(gov: GovernorServer) -> None:
    marker = "proctor-test-" + secrets.token_hex(6)
    proc = run(gov, sys.executable, str(TREE), marker)
    try:
        ex = wait_started(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # let the fork loop spin
        assert len(marked(marker)) >= 4
        gov.admin("revoke", "--execution", ex, "--reason", "test")
        proc.wait(timeout=30)
        assert proc.returncode == 79
        assert wait_gone(marker) == [], "processes of the tree survived"
    finally:
        close(proc)
        cleanup(marker)


def _pidfd_targets(pid: int) -> set[int]:
    """The pids that ``pid``'s pidfds name (``Pid:`` in their fdinfo)."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        if m := re.search(r"^Pid:\s*(-?\d+)", info, re.M):
            found.add(int(m.group(1)))
    return found


def test_the_supervisor_holds_a_pidfd_of_the_command_itself(gov: GovernorServer) -> None:
    # terminate_tree's first SIGTERM goes through it (before any /proc read): it must name
    # the command, not the pid namespace's relays, and be in place soon after the start.
    marker = "heldcmd-" + secrets.token_hex(6)  # not "proctor": relays are told apart by it
    proc = run(gov, sys.executable, "-c", "import time; time.sleep(60)", marker)
    try:
        wait_started(proc)
        (command,) = wait_marked(marker)
        deadline = time.monotonic() + 10
        while command not in _pidfd_targets(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert command in _pidfd_targets(proc.pid)
    finally:
        close(proc)
        cleanup(marker)


def wait_marked(marker: str) -> list[int]:
    deadline = time.monotonic() + 10
    while not (found := marked(marker, exclude=b"proctor")) and time.monotonic() < deadline:
        time.sleep(0.01)
    return found


def test_supervisor_killed_takes_the_tree_with_it(gov: GovernorServer) -> None:
    marker = "proctor-test-" + secrets.token_hex(6)
    proc = run(gov, sys.executable, str(TREE), marker)
    try:
        wait_started(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_gone(marker) == [], "the tree outlived its supervisor"
    finally:
        close(proc)
        cleanup(marker)


def _append_a_line(script: Path) -> None:
    with script.open("a") as f:
        f.write("echo injected\n")


def _rename_another_over(script: Path) -> None:
    other = script.with_name("other.sh")
    other.write_text("echo evil\n")
    os.rename(other, script)


@pytest.mark.parametrize("modify", [_append_a_line, _rename_another_over], ids=["append", "rename-over"])
def test_modified_script_is_terminated_for_integrity(
    gov: GovernorServer, tmp_path: Path, modify: Callable[[Path], None]
) -> None:
    script = tmp_path / "job.sh"
    script.write_text("echo started\nsleep 30\n")
    proc = run(gov, "sh", str(script))
    try:
        wait_started(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        modify(script)
        proc.wait(timeout=30)
        assert proc.returncode == 79
        assert proc.stderr is not None
        assert "integrity" in proc.stderr.read()
    finally:
        close(proc)


def test_terminated_receipt_verifies_and_tampering_names_the_step(
    gov: GovernorServer, tmp_path: Path
) -> None:
    receipt = tmp_path / "t.json"
    proc = run(gov, "sleep", "30", receipt=receipt)
    try:
        ex = wait_started(proc)
        gov.admin("revoke", "--execution", ex)
        proc.wait(timeout=30)
        assert proc.returncode == 79
    finally:
        close(proc)
    key = httpx_get(gov, "/v1/log/key").strip()
    assert cli("verify", str(receipt), "--log-key", key).returncode == 0
    text = receipt.read_text()
    doc = json.loads(text)
    leaf = doc["events"][-1]["leaf"]
    flipped = leaf[:10] + ("A" if leaf[10] != "A" else "B") + leaf[11:]
    bad = tmp_path / "bad.json"
    bad.write_text(text.replace(leaf, flipped))
    failed = cli("verify", str(bad), "--log-key", key, check=False)
    assert failed.returncode == 1
    assert "step" in failed.stderr


def test_policy_that_denies_a_running_execution_terminates_it(tmp_path: Path) -> None:
    server = GovernorServer(tmp_path, policy=POLICIES / "run")
    try:
        proc = run(server, "sleep", "30")
        try:
            wait_started(proc)
            server.admin("policy", "push", str(POLICIES / "freeze"))
            proc.wait(timeout=30)
            assert proc.returncode == 79
            assert proc.stderr is not None
            assert "policy" in proc.stderr.read()
        finally:
            close(proc)
    finally:
        server.stop()


def test_governor_killed_means_lease_expiry_kills_the_execution(tmp_path: Path) -> None:
    server = GovernorServer(tmp_path, policy=POLICIES / "run")
    marker = "proctor-test-" + secrets.token_hex(6)
    try:
        proc = run(server, sys.executable, str(TREE), marker)
        try:
            wait_started(proc)
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            server.kill()
            killed_at = time.monotonic()
            assert wait_gone(marker, timeout=10) == []
            dead_after = time.monotonic() - killed_at
            # Lease TTL 2 s (policy) from the last renewal, then SIGTERM, 0.5 s grace,
            # SIGKILL: no grace beyond the lease (bench/ measures the exact figure). The
            # margin absorbs a loaded machine's scheduling and /proc scans, and is still
            # well under a second lease (a tree that outlived its lease would fail).
            assert dead_after < 2.0 + 0.5 + 1.5
            proc.wait(timeout=30)
            assert proc.returncode == 79
            assert proc.stderr is not None
            assert "lease-lost" in proc.stderr.read()
        finally:
            close(proc)
            cleanup(marker)
    finally:
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged (this is the re-run)")
def test_unprivileged_rerun_passes() -> None:
    """The same end-to-end suite, as an unprivileged user (no cgroups: namespaces only)."""
    assert_passes_unprivileged(__file__, timeout=240)
