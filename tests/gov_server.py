"""A real governor in a child process (``proctor serve``), for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_of(server: GovernorServer, key: Path | None = None) -> GovernorClient:
    """A signed client of ``server`` as its principal (``key``: another principal's key)."""
    return GovernorClient(server.url, PrincipalKey.load(key or server.key), timeout=30)


def cli(*args: str, check: bool = True, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ``proctor ARGS`` and return the finished process."""
    proc = subprocess.run(
        [sys.executable, "-m", "proctor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"proctor {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


class GovernorServer:
    """``proctor serve`` on a free loopback port, on a fresh data directory (or, with
    ``beside``, on another server's: several ``proctor serve --shared`` on one store)."""

    def __init__(
        self,
        root: Path,
        *,
        policy: Path | None = None,
        origin: str = "run.example/gov",
        config: str = "",
        serve_args: tuple[str, ...] = (),
        store: str | None = None,
        beside: GovernorServer | None = None,
    ) -> None:
        """``store``: a ``postgresql://`` URL: ``init``, ``principal add`` and ``policy
        push`` get it as ``--store``, the server as ``PROCTOR_STORE`` (both forms tried).
        ``beside``: serve that server's data directory (and store), already initialised."""
        self.serve_args = serve_args
        self.data: Path = root / "data" if beside is None else beside.data
        self.store: str | None = store if beside is None else beside.store
        if beside is None:
            self._prepare(policy, origin, config)
        self.key = self.data / "alice.key"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "serve.err"  # the server's stderr
        self._log = self.log_path.open("w")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @classmethod
    def nodes(
        cls,
        root: Path,
        count: int,
        *,
        policy: Path | None = None,
        config: str = "",
        extra: tuple[str, ...] = (),
    ) -> list[GovernorServer]:
        """``count`` ``proctor serve --shared`` on one fresh data directory, each on its
        own port, named ``node-a``, ``node-b`` ... (``extra``: more ``serve`` options)."""
        first = cls(
            root / "node-a", policy=policy, config=config, serve_args=("--shared", "--node", "node-a", *extra)
        )
        return [first] + [
            cls(root / f"node-{n}", beside=first, serve_args=("--shared", "--node", f"node-{n}", *extra))
            for n in "bcdefgh"[: count - 1]
        ]

    def _prepare(self, policy: Path | None, origin: str, config: str) -> None:
        """``proctor init`` a data directory with alice (``role=dev``) and ``policy``."""
        store = self.store
        at = ("--store", store) if store is not None else ()
        cli("init", "--data", str(self.data), "--origin", origin, *at)
        if config:  # TOML appended to the data directory's config.toml
            with (self.data / "config.toml").open("a") as f:
                f.write("\n" + config)
        cli(
            "principal",
            "add",
            "alice",
            "--attr",
            "role=dev",
            "--out",
            str(self.data / "alice.key"),
            "--data",
            str(self.data),
            *at,
        )
        if policy is not None:
            cli("policy", "push", str(policy), "--data", str(self.data), *at)

    def start(self) -> None:
        """Start ``proctor serve`` and wait until *this* server answers.

        A free port can be taken by another process between choosing it and binding it
        (another test suite on the same machine): then our server exits and someone
        else's answers. The log key tells them apart; on a mismatch, another port.
        """
        own_key = (self.data / "keys" / "log.pub").read_text().strip()
        for _attempt in range(3):
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "proctor",
                    "serve",
                    "--data",
                    str(self.data),
                    "--port",
                    str(self.port),
                    *self.serve_args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                env=os.environ | ({"PROCTOR_STORE": self.store} if self.store is not None else {}),
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                        if httpx.get(f"{self.url}/v1/log/key", timeout=1).text.strip() == own_key:
                            return
                        break  # someone else's governor holds this port
                except httpx.HTTPError:
                    time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
        raise AssertionError("proctor serve did not start")

    def kill(self) -> None:
        """SIGKILL the governor (no goodbye to anyone)."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)  # --workers: the parent waits for its workers
            self.proc = None
        self._log.close()

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """An admin command against this server."""
        return cli(*args, "--server", self.url, "--data", str(self.data), check=check)


TREE = Path(__file__).parent / "integration" / "procs" / "tree.py"
"""A process tree that tries to survive (a setsid child, a double-forked orphan, a fork loop)."""


def revoke_across(a: GovernorServer, c: GovernorServer, marker: str) -> tuple[float, float, int, int]:
    """Run :data:`TREE` under ``proctor run`` leased from node ``c``, then revoke it on node
    ``a`` as its admin and wait for the tree to die.

    ``marker`` tags the tree's processes; it must not contain "proctor" (that is what
    tells the enforcer apart from the governed processes).

    Returns:
        ``(ms from the call until the tree is dead, ms of it after A answered — negative
        when the tree died before the answer, as a revocation is pushed before it is
        recorded (ADR 0021) —, the processes of the tree watched, proctor run's exit
        status)``.

    Raises:
        RuntimeError: the enforcer or its tree did not start, or the tree survived.
    """
    from proc_support import DeathWatch, end_run, marked

    if "proctor" in marker:
        raise ValueError(f"expected a marker without 'proctor', found {marker!r}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proctor", "run", "--server", c.url, "--key", str(c.key), "--",
         sys.executable, str(TREE), marker],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        if proc.stderr is None or proc.stdout is None:
            raise RuntimeError("proctor run has no pipes")
        found = re.search(r"execution (ex_[a-z0-9]+) started", proc.stderr.readline())
        if not found or proc.stdout.readline().strip() != "ready":
            raise RuntimeError("proctor run did not start its tree")
        deadline = time.monotonic() + 30
        while len(marked(marker)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # its stream to C is open by now (it opens it before reporting the start)
        tree = marked(marker, exclude=b"proctor")  # the governed processes, not the enforcer
        if not tree:
            raise RuntimeError("the process tree did not start")
        with client_of(a, a.data / "keys" / "admin.key") as admin:
            watch = DeathWatch(tree)  # the moment it died, even before A's answer
            sent = time.perf_counter()
            admin.json(
                "POST", "/v1/revocations", {"kind": "execution", "target": found.group(1), "reason": "test"}
            )
            answered = time.perf_counter()
            try:
                dead = watch.wait(30)
            except AssertionError as e:
                raise RuntimeError(f"the tree survived the revocation: {e}") from None
        status = proc.wait(timeout=30)
        if marked(marker):
            raise RuntimeError("processes of the tree survived the revocation")
        return (dead - sent) * 1000, (dead - answered) * 1000, len(tree), status
    finally:
        end_run(proc, marker)
