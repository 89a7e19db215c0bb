"""``proctor demo --keep`` and the web pages (issue 14, item 5): the demo prints the
URLs of its governor's pages, and leaves a long job running that an admin revokes and
watches die (here through the API, the health page open in a browser meanwhile)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from browser_support import watch_errors
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient
from proctor.console.health_pages import shown
from proctor.demo import LONG_JOB, PAGES

pytestmark = pytest.mark.slow

_GOVERNOR = re.compile(r"^governor on (http://127\.0\.0\.1:\d+) \(pid (\d+)\)$", re.MULTILINE)
_JOB = re.compile(r"^a long job runs under the governor: execution (ex_[a-z0-9]+)$", re.MULTILINE)
_JOB_PID = re.compile(r"through proctor run \(pid (\d+),")


def _gone(pid: int) -> bool:
    """No such process, or a zombie left for a parent that is not us."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


def _stop(pid: int, data: Path, word: bytes) -> None:
    """SIGTERM this demo's process ``pid`` (its command line names ``word`` and, for the
    governor, the data directory), SIGKILL if it stays."""
    if _gone(pid):
        return
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if word not in cmdline or (word == b"serve" and str(data).encode() not in cmdline):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _gone(pid):
        os.kill(pid, signal.SIGKILL)


def _logged(data: Path, index: int) -> tuple[str, int]:
    """Entry ``index``'s type and logged time in Unix milliseconds (read as any reader does)."""
    done = subprocess.run(
        [sys.executable, "-m", "proctor", "log", "entry", str(index), "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    event = json.loads(done.stdout)["event"]
    return event["type"], round(
        datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp() * 1000
    )


@dataclass
class Kept:
    stdout: str
    data: Path
    url: str
    execution: str
    job_pid: int


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kept]:
    """``proctor demo --keep``; afterwards its job and governor are stopped, its files removed."""
    data = tmp_path_factory.mktemp("demo-web") / "data"
    done = subprocess.run(
        [sys.executable, "-m", "proctor", "demo", "--keep", "--data", str(data)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    governor, job, job_pid = (
        _GOVERNOR.search(done.stdout),
        _JOB.search(done.stdout),
        _JOB_PID.search(done.stdout),
    )
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert governor is not None, done.stdout
        assert job is not None, done.stdout
        assert job_pid is not None, done.stdout
        yield Kept(done.stdout, data, governor.group(1), job.group(1), int(job_pid.group(1)))
    finally:
        if job_pid is not None:
            _stop(int(job_pid.group(1)), data, b"run")
        if governor is not None:
            _stop(int(governor.group(2)), data, b"serve")
        base = re.search(r"^\s*rm -rf (.+)$", done.stdout, re.MULTILINE)
        if base is not None:
            for path in shlex.split(base.group(1)):
                if Path(path).name.startswith("proctor-demo-") or Path(path) == data:
                    subprocess.run(["rm", "-rf", path], check=False, timeout=60)


def test_the_demo_prints_its_pages_and_each_answers(kept: Kept) -> None:
    lines = [line.strip() for line in kept.stdout.splitlines()]
    for label, path in PAGES:
        url = f"{kept.url}{path}"
        assert f"{label + ':':<15}{url}" in lines, (label, kept.stdout)
        # The console sends whoever is not signed in to its sign-in page, which answers.
        assert httpx.get(url, timeout=10, follow_redirects=True).status_code == 200, url


def test_the_demo_prints_how_to_sign_in_and_the_command_works(kept: Kept) -> None:
    lines = [line.strip() for line in kept.stdout.splitlines()]
    (token_line,) = [line for line in lines if " console token " in line]
    argv = shlex.split(token_line)
    assert argv[argv.index("--data") + 1] == str(kept.data)
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["token"].startswith("pcs1.")
    assert any(f"revoke execution {kept.execution}" in line for line in lines)
    assert f"kill {kept.job_pid}" in lines


def test_the_long_job_runs_until_an_admin_revokes_it_then_dies(kept: Kept, page: Any) -> None:
    admin = GovernorClient(kept.url, PrincipalKey.load(kept.data / "keys" / "admin.key"), timeout=30)
    with admin:
        running = admin.json("GET", "/v1/executions?status=running")["executions"]
        assert [e["id"] for e in running] == [kept.execution], running
        assert running[0]["status"] == "running"
        assert not _gone(kept.job_pid)
        # The health page counts its lease, and sees it go.
        errors = watch_errors(page)
        page.goto(kept.url + "/health")
        page.locator("#leases", has_text="1").wait_for()
        page.locator("#live", has_text="live").wait_for()
        revoked = admin.json(
            "POST", "/v1/revocations", {"kind": "execution", "target": kept.execution, "reason": "demo test"}
        )
        assert revoked["target"] == kept.execution
        deadline = time.monotonic() + 30
        while not _gone(kept.job_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(kept.job_pid), "proctor run still runs after its execution was revoked"
        page.locator("#leases", has_text="0").wait_for()
        ended = admin.json("GET", f"/v1/executions/{kept.execution}")
        assert ended["status"] == "terminated"
        assert ended["reason"] == "revoked"
        # How long it took to die: the two events' logged times, on /metrics and the page.
        page.locator("#revocation-last", has_not_text="\u2014").wait_for()
        (kind, revoked_ms), (end, ended_ms) = (
            _logged(kept.data, i) for i in (revoked["log_index"], ended["log_indices"][-1])
        )
        assert (kind, end) == ("revocation", "execution.terminated")
        metrics = httpx.get(f"{kept.url}/metrics", timeout=10).text
        (last,) = re.findall(r"^proctor_revocation_last_seconds (\S+)$", metrics, re.MULTILINE)
        assert round(float(last) * 1000) == ended_ms - revoked_ms >= 0
        assert page.locator("#revocation-last").inner_text() == shown(float(last) * 1000, "ms") + " ms"
        assert errors == []
    assert " ".join(LONG_JOB) in kept.stdout
