"""A real witness in a child process (``proctor witness serve``), and the files around it,
for the witness tests (integration and conformance)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from gov_server import cli, free_port

__all__ = ["WitnessServer", "append_events", "write_policy", "fork_copy", "log_key"]


def log_key(data: Path) -> str:
    """The verifier key of the log in the governor data directory ``data``."""
    return cli("log", "key", "--data", str(data)).stdout.strip()


def append_events(data: Path, *tags: str) -> int:
    """Append one ``approval`` event per tag to the log of ``data``; the new tree size."""
    lines = "".join(
        json.dumps({"v": 1, "type": "approval", "time": "2026-01-01T00:00:00Z", "tag": tag}) + "\n"
        for tag in tags
    )
    out = cli("log", "append", "--data", str(data), "-", input=lines)
    return int(json.loads(out.stdout)["tree_size"])


def fork_copy(data: Path, to: Path) -> Path:
    """A copy of the data directory ``data`` (its database and its log key): from here on
    the two logs may grow apart, both signed by the same key."""
    shutil.copytree(data, to, symlinks=True)
    return to


def write_policy(path: Path, *, logs: list[str], witnesses: list[tuple[str, str, str]], quorum: str) -> Path:
    """A C2SP tlog-policy file: ``log`` lines, ``witness NAME VKEY URL`` lines, the quorum."""
    lines = [f"log {key}" for key in logs]
    lines += [f"witness {name} {vkey} {url}".rstrip() for name, vkey, url in witnesses]
    path.write_text("\n".join([*lines, f"quorum {quorum}"]) + "\n")
    return path


class WitnessServer:
    """``proctor witness serve`` on a free loopback port, over a fresh witness directory."""

    def __init__(self, root: Path, *, name: str = "witness.example/w1", trust: tuple[Path, ...] = ()) -> None:
        self.data = root / "witness"
        self.name = name
        cli("witness", "init", "--data", str(self.data), "--name", name)
        for log in trust:
            cli("witness", "add-log", "--data", str(self.data), "--vkey", log_key(log))
        self.vkey = cli("witness", "key", "--data", str(self.data)).stdout.strip()
        self.errors = root / "witness.err"
        self._err = self.errors.open("a")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""
        self.start()

    def start(self) -> None:
        """Start the process (again on its port, once it had one) and wait until *this*
        witness answers (a fresh port could be taken between choosing and binding it:
        then another port)."""
        for attempt in range(3):
            if not self.port or attempt:
                self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "proctor",
                    "witness",
                    "serve",
                    "--data",
                    str(self.data),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=self._err,
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
        raise AssertionError(f"proctor witness serve did not start: {self.errors.read_text()}")

    def stop(self) -> None:
        """SIGTERM, and wait for the process to end."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
            self.proc = None

    def close(self) -> None:
        """Stop it and close its log."""
        self.stop()
        self._err.close()

    def get(self, path: str) -> httpx.Response:
        """``GET path`` on the witness."""
        return httpx.get(f"{self.url}{path}", timeout=10)

    def post(self, body: str | bytes) -> httpx.Response:
        """``POST /add-checkpoint`` with ``body``."""
        return httpx.post(f"{self.url}/add-checkpoint", content=body, timeout=10)

    def status(self) -> tuple[int, dict[str, Any]]:
        """``proctor witness status --json``: its exit code and document."""
        done = cli("witness", "status", "--data", str(self.data), "--json", check=False)
        return done.returncode, json.loads(done.stdout)
