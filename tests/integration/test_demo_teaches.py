"""``proctor demo`` teaches (issue 11), run as a user runs it.

Each scene prints the Cedar policy that decided it, the exact command line, and what
happened in full; the revocation latency is the governor's, computed from two logged
events (checked here against ``proctor log entry``); ``--keep`` leaves a governor that
answers, with commands to try that work; without it nothing is left behind.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from gov_server import cli

pytestmark = pytest.mark.slow

_LATENCY = re.compile(
    r"revocation latency at the governor: (-?\d+) ms, from log #(\d+) revocation at (\S+) "
    r"to log #(\d+) execution\.terminated at (\S+)$"
)
_GOVERNOR = re.compile(r"^governor on (http://127\.0\.0\.1:\d+) \(pid (\d+)\)$", re.MULTILINE)


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proctor", "demo", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _scenes(stdout: str) -> list[list[str]]:
    """The scene blocks: from each ``── n/4`` header to the next blank line."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith("── "):
            current = [line]
            blocks.append(current)
        elif current is not None:
            if not line.strip():
                current = None
            else:
                current.append(line)
    return blocks


def _commands(block: list[str]) -> list[list[str]]:
    """The command lines after a scene's ``command:`` / ``commands …:`` label."""
    start = next(i for i, line in enumerate(block) if line.startswith("command"))
    end = next(i for i, line in enumerate(block) if line.startswith("what happened"))
    return [shlex.split(line) for line in block[start + 1 : end]]


def _is_proctor(argv: list[str]) -> bool:
    return Path(argv[0]).name == "proctor" or argv[1:3] == ["-m", "proctor"]


def _gone(pid: int) -> bool:
    """No such process, or a zombie waiting for a parent that is not us."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


def _refuses(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
    except httpx.HTTPError:
        return True
    return False


@dataclass
class Kept:
    stdout: str
    data: Path
    url: str
    pid: int


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kept]:
    """``proctor demo --keep --data DIR``; afterwards the kept governor is stopped as printed."""
    data = tmp_path_factory.mktemp("demo") / "data"
    done = _demo("--keep", "--data", str(data))
    found = _GOVERNOR.search(done.stdout)
    pid = int(found.group(2)) if found else 0
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert found is not None, done.stdout
        yield Kept(done.stdout, data, found.group(1), pid)
    finally:
        job = re.search(r"through proctor run \(pid (\d+),", done.stdout)  # the long job --keep leaves
        job_pid = int(job.group(1)) if job is not None else 0
        if (
            job_pid
            and not _gone(job_pid)
            and b"run" in Path(f"/proc/{job_pid}/cmdline").read_bytes().split(b"\0")
        ):
            os.kill(job_pid, signal.SIGTERM)
        if pid:
            # Only the governor this demo started: `proctor serve` on this data directory.
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if not _gone(pid) else []
            if b"serve" in cmdline and str(data).encode() in cmdline:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while not _gone(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not _gone(pid):
                    os.kill(pid, signal.SIGKILL)
        _remove_as_printed(done.stdout, data)


def _remove_as_printed(stdout: str, data: Path) -> None:
    """Run the printed ``rm -rf`` (after ``stop it``), on nothing but this demo's directories."""
    lines = stdout.splitlines()
    after = lines[next((i for i, line in enumerate(lines) if line.startswith("stop it")), len(lines)) :]
    for line in after:
        argv = shlex.split(line)
        if argv[:2] == ["rm", "-rf"]:
            temp = Path(tempfile.gettempdir())
            for path in map(Path, argv[2:]):
                assert path == data or (path.parent == temp and path.name.startswith("proctor-demo-")), path
            subprocess.run(argv, check=True, timeout=60)
            assert not any(Path(p).exists() for p in argv[2:])


def test_each_scene_prints_its_policy_and_command_line(kept: Kept) -> None:
    scenes = _scenes(kept.stdout)
    assert [s[0].split(" ", 2)[1] for s in scenes] == ["1/4", "2/4", "3/4", "4/4"], kept.stdout
    for block, policy_id, effect in (
        (scenes[0], "dev-shell", "permit"),
        (scenes[1], "no-recursive-delete", "forbid"),
        (scenes[2], "dev-shell", "permit"),
    ):
        # The policy: named, located, and its Cedar text as pushed.
        assert block[1].startswith("policy ("), block
        assert "demo.cedar, line " in block[1], block
        assert f'    @id("{policy_id}")' in block
        assert any(line.startswith(f"    {effect} (principal, action") for line in block), block
        for argv in _commands(block):
            assert _is_proctor(argv), argv
            assert "--server" in argv
            assert argv[argv.index("--server") + 1] == kept.url
    assert scenes[3][1].startswith("policy: none"), scenes[3]
    run, revoke = _commands(scenes[2])
    assert "run" in run
    assert "--key" in run
    assert Path(run[run.index("--key") + 1]).is_file()
    assert "revoke" in revoke
    assert revoke[revoke.index("--data") + 1] == str(kept.data)
    (verify,) = _commands(scenes[3])
    assert "verify" in verify
    assert Path(verify[verify.index("--log-key") + 1]) == kept.data / "keys" / "log.pub"


def test_what_happened_is_not_cut(kept: Kept) -> None:
    """The denial's whole reason (the old table cut it after 60 characters: "by fo")."""
    (denied,) = [s for s in _scenes(kept.stdout) if "rm -rf (denied)" in s[0]]
    assert (
        "    proctor: denied: agent exec /usr/bin/rm (the principal's zone): "
        "by forbid policy no-recursive-delete" in denied
    ), denied
    assert any(line.endswith("still exists: rm never ran") for line in denied)


def test_revocation_latency_is_measured_at_the_governor_from_the_log(kept: Kept) -> None:
    (revoked,) = [s for s in _scenes(kept.stdout) if "revoked" in s[0]]
    matches = [m for line in revoked if (m := _LATENCY.search(line.strip()))]
    assert len(matches) == 1, revoked
    ms, r_index, r_time, t_index, t_time = matches[0].groups()
    revocation = json.loads(cli("log", "entry", r_index, "--data", str(kept.data)).stdout)["event"]
    terminated = json.loads(cli("log", "entry", t_index, "--data", str(kept.data)).stdout)["event"]
    assert revocation["type"] == "revocation"
    assert revocation["time"] == r_time
    assert terminated["type"] == "execution.terminated"
    assert terminated["time"] == t_time
    assert revocation["target"] == {"kind": "execution", "id": terminated["execution"]}

    def at(text: str) -> int:
        return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)

    assert int(ms) == at(t_time) - at(r_time) >= 0
    # The end-to-end figure is there too, labelled as such.
    assert any(
        re.fullmatch(r"    end to end, as a user sees it: \d+ ms from launching `proctor revoke` .*", line)
        for line in revoked
    ), revoked


def test_keep_leaves_a_governor_that_answers_and_prints_commands_that_work(kept: Kept) -> None:
    assert httpx.get(f"{kept.url}/healthz", timeout=5).status_code == 200
    served = httpx.get(f"{kept.url}/v1/log/key", timeout=5).text.strip()
    assert served == (kept.data / "keys" / "log.pub").read_text().strip()
    lines = kept.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("try next"))
    stop = next(i for i, line in enumerate(lines) if line.startswith("stop it"))
    block = [line.strip() for line in lines[start + 1 : stop]]
    comments = [line for line in block if line.startswith("# ")]
    commands = [shlex.split(line) for line in block if not line.startswith("# ")]
    assert 3 <= len(commands) <= 5, block
    assert len(comments) == len(commands), block
    # Every printed command, run as printed (in order: the receipt is written, then verified).
    codes = []
    for argv in commands:
        assert _is_proctor(argv), argv
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        codes.append(done.returncode)
    assert codes == [0, 0, 77, 0, 0], list(zip(comments, codes, strict=True))
    assert f"kill {kept.pid}" in [line.strip() for line in lines[stop + 1 :]]


def test_without_keep_nothing_is_left_running_or_on_disk() -> None:
    done = _demo()
    assert done.returncode == 0, done.stdout + done.stderr
    found = _GOVERNOR.search(done.stdout)
    head = re.search(r"data directory (\S+)", done.stdout)
    assert found is not None, done.stdout
    assert head is not None, done.stdout
    assert _refuses(found.group(1))
    assert _gone(int(found.group(2)))
    assert not Path(head.group(1)).parent.exists()  # the whole temporary directory
    assert "try next" not in done.stdout


def test_no_browser_is_accepted_and_hidden() -> None:
    """The demo opens no browser (it prints its pages' URLs): ``--no-browser`` is accepted
    (old command lines work) and not offered; ``--keep`` is."""
    shown = cli("demo", "--help", env={**os.environ, "COLUMNS": "200"}).stdout
    assert "--keep" in shown
    assert "--no-browser" not in shown
