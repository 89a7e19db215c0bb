"""The workload of the fault tests: concurrent authorizations, runs and appends against
one governor, every answer a client was given kept in a :class:`Ledger`, and the
processes of the governed jobs found by their tokens.

:class:`Workload` runs, in threads: authorizations (``authorize``), ``proctor run`` of
``tests/integration/procs/fault_job.py`` — one job that lasts until its lease or a
revocation ends it, and short ones that end by themselves (``run``) — and admin
revocations of issued warrants, appended in the group commits of the others
(``append``). The checks that follow a fault are in ``tests/fault_checks.py``.

Randomness: :func:`fault_rng` seeds a generator per test from ``PROCTOR_FAULT_SEED`` (or
a fresh seed) and prints it, so a failing run is replayed with that seed;
:func:`fault_rounds` reads ``PROCTOR_FAULT_ROUNDS`` (more rounds than CI runs).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gov_support import EXE
from proc_support import marked
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient
from proctor.errors import GovernorError

__all__ = [
    "JOB",
    "ROUNDS_ENV",
    "SEED_ENV",
    "TOKEN_PREFIX",
    "WAIT",
    "Decided",
    "Ledger",
    "Phases",
    "Revoked",
    "Run",
    "Started",
    "Workload",
    "decided",
    "describe",
    "echo",
    "fault_rng",
    "fault_rounds",
    "kill_tokens",
    "survivors",
    "tokens",
    "wait_gone",
    "warm",
]

SEED_ENV = "PROCTOR_FAULT_SEED"
ROUNDS_ENV = "PROCTOR_FAULT_ROUNDS"
JOB = Path(__file__).parent / "integration" / "procs" / "fault_job.py"
TOKEN_PREFIX = "faultjob-"  # never "proctor": that tells the enforcer from its command
LONG_JOB = (60.0, 60.0)  # seconds: outlives any fault round unless its lease or a revocation ends it
SHORT_JOB = (0.2, 1.0)  # ends by itself: its completion is recorded
WAIT = 90.0  # seconds: generous, the machine is shared; the checks wait on events


# -- reproducible randomness -------------------------------------------------------------


def fault_rng(name: str) -> tuple[random.Random, int]:
    """A generator for one test, from ``$PROCTOR_FAULT_SEED`` or a fresh seed (printed).

    Returns:
        ``(random.Random, seed)``: the same seed and name give the same schedule.
    """
    text = os.environ.get(SEED_ENV, "")
    seed = int(text) if text else secrets.randbelow(2**32)
    print(f"fault seed of {name}: {seed} (replay: {SEED_ENV}={seed})")
    return random.Random(f"{seed}:{name}"), seed


def fault_rounds(default: int) -> int:
    """Rounds per fault: ``$PROCTOR_FAULT_ROUNDS`` when set, else ``default`` (CI)."""
    text = os.environ.get(ROUNDS_ENV, "")
    rounds = int(text) if text else default
    if rounds < 1:
        raise ValueError(f"{ROUNDS_ENV}: expected at least 1 round, found {rounds}")
    return rounds


class Phases:
    """Prints how long each phase of a fault test took (shown when it fails, or with -s)."""

    def __init__(self) -> None:
        self._began = time.monotonic()

    def __call__(self, what: str) -> None:
        print(f"[{time.monotonic() - self._began:6.1f} s] {what}")


# -- what clients were told ----------------------------------------------------------------


@dataclass(frozen=True)
class Decided:
    """An authorization answered with a log index (allow or deny)."""

    allow: bool
    index: int
    request_digest: str
    warrant: str | None = None
    warrant_index: int | None = None


@dataclass(frozen=True)
class Started:
    """An execution whose start the governor acknowledged to ``proctor run``."""

    execution: str
    warrant: str
    token: str


@dataclass(frozen=True)
class Revoked:
    """A revocation the governor acknowledged with its log index."""

    kind: str
    target: str
    index: int


@dataclass
class Run:
    """One ``proctor run`` of :data:`JOB` by the workload."""

    token: str
    proc: subprocess.Popen[str]
    seconds: float  # how long the job runs unless ended
    stderr: str = ""
    returncode: int | None = None
    execution: str | None = None


class Ledger:
    """Every answer the workload's clients were given, and how many calls each operation
    made and had answered (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.decisions: list[Decided] = []
        self.starts: list[Started] = []
        self.revocations: list[Revoked] = []
        self.runs: list[Run] = []
        self.calls: Counter[str] = Counter()  # per operation: calls made
        self.failed: Counter[str] = Counter()  # per operation: no answer, or an error answer

    def add(self, item: Decided | Started | Revoked) -> None:
        with self._lock:
            if isinstance(item, Decided):
                self.decisions.append(item)
            elif isinstance(item, Started):
                self.starts.append(item)
            else:
                self.revocations.append(item)

    def call(self, operation: str, *, failed: bool = False) -> None:
        with self._lock:
            self.calls[operation] += 1
            if failed:
                self.failed[operation] += 1

    def add_run(self, run: Run) -> None:
        with self._lock:
            self.runs.append(run)

    def live_runs(self) -> list[Run]:
        """Runs whose ``proctor run`` has started its command and not ended."""
        with self._lock:
            runs = list(self.runs)
        return [r for r in runs if r.proc.poll() is None and r.execution is not None]

    def unrevoked_warrants(self) -> list[str]:
        with self._lock:
            done = {r.target for r in self.revocations}
            return [d.warrant for d in self.decisions if d.warrant is not None and d.warrant not in done]

    def acknowledged(self) -> dict[str, int]:
        """How many answers each operation was given (what check (c) looks for)."""
        with self._lock:
            return {
                "authorize": len(self.decisions),
                "run": len(self.starts),
                "append": len(self.revocations),
            }


# -- the workload ------------------------------------------------------------------------------


def echo(tag: str) -> dict[str, Any]:
    """The body of an authorization of ``/bin/echo TAG`` (the run policy allows it)."""
    return {"action": "exec", "resource": "/bin/echo", "argv": ["echo", tag], "executable_digest": EXE}


def decided(answer: dict[str, Any]) -> Decided | None:
    """What an answer of ``POST /v1/authorize`` acknowledged (``None``: no log index)."""
    index = answer.get("log_index")
    if index is None:
        return None
    w = answer.get("warrant") or {}
    decision = answer["decision"]
    return Decided(
        bool(decision["allow"]), int(index), str(decision["request_digest"]), w.get("id"), w.get("log_index")
    )


_STARTED = re.compile(r"execution (ex_[a-z0-9]+) started \(warrant (wr_[a-z0-9]+)")


class Workload:
    """Concurrent authorizations (``authorize``), ``proctor run`` of :data:`JOB` (``run``)
    and admin revocations of issued warrants (``append``: each one appended in the group
    commits of the others) against one governor, each answer kept in a :class:`Ledger`.

    ``url`` is read before each call (a restarted governor may move to another port).
    """

    def __init__(
        self,
        url: Callable[[], str],
        data: Path,
        markers: Path,
        ledger: Ledger,
        rng: Any,
        *,
        authorizers: int = 2,
        jobs: tuple[tuple[float, float], ...] = (LONG_JOB, SHORT_JOB),
        revokers: int = 1,
        pace: float = 0.05,
        timeout: float = 5.0,
    ) -> None:
        """``jobs``: one runner per entry, each running :data:`JOB` again and again for a
        duration drawn from that range (a long job is running whenever a fault lands;
        :meth:`stop` revokes it)."""
        self.url = url
        self.key = PrincipalKey.load(data / "alice.key")
        self.admin_key = PrincipalKey.load(data / "keys" / "admin.key")
        self.key_path = data / "alice.key"
        self.markers = markers
        self.ledger = ledger
        self.pace = pace
        self.timeout = timeout
        self._stop = threading.Event()
        self._seeds = [rng.random() for _ in jobs]
        self._threads = [
            *(threading.Thread(target=self._authorize, args=(n,)) for n in range(authorizers)),
            *(threading.Thread(target=self._run, args=(n, job)) for n, job in enumerate(jobs)),
            *(threading.Thread(target=self._revoke, args=(n,)) for n in range(revokers)),
        ]

    def __enter__(self) -> Workload:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop making calls; revoke the jobs still running (a long job would run on),
        including one that starts meanwhile; wait for the calls in flight and every
        ``proctor run``."""
        self._stop.set()
        ended: set[str] = set()
        deadline = time.monotonic() + WAIT
        while any(t.is_alive() for t in self._threads) and time.monotonic() < deadline:
            for run in self.ledger.live_runs():
                if run.token not in ended:
                    ended.add(run.token)
                    self._end(run)
            time.sleep(0.05)
        for t in self._threads:
            t.join(timeout=WAIT)

    def _end(self, run: Run) -> None:
        try:
            with self._client(self.admin_key) as admin:
                got = admin.json(
                    "POST",
                    "/v1/revocations",
                    {"kind": "execution", "target": run.execution, "reason": "done"},
                )
            self.ledger.call("append")
            self.ledger.add(Revoked(str(got["kind"]), str(got["target"]), int(got["log_index"])))
        except (GovernorError, httpx.HTTPError):
            self.ledger.call("append", failed=True)
            run.proc.terminate()  # it ends its command and reports, as for any signal

    def wait_for(self, at_least: dict[str, int]) -> None:
        """Wait until each operation was answered ``at_least`` times (the workload is
        warm: a fault lands in the middle of every operation)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            got = self.ledger.acknowledged()
            if all(got[op] >= n for op, n in at_least.items()):
                return
            time.sleep(0.02)
        raise AssertionError(f"the workload was not answered {at_least} times: {self.ledger.acknowledged()}")

    def _client(self, key: PrincipalKey) -> GovernorClient:
        return GovernorClient(self.url(), key, timeout=self.timeout)

    def _authorize(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                with self._client(self.key) as client:
                    got = client.authorize(echo(f"a{n}-{i}"))
            except (GovernorError, httpx.HTTPError):
                self.ledger.call("authorize", failed=True)
                self._stop.wait(0.05)
                continue
            self.ledger.call("authorize")
            if (answer := decided(got)) is not None:
                self.ledger.add(answer)
            self._stop.wait(self.pace)

    def _run(self, n: int, job: tuple[float, float]) -> None:
        rng = random.Random(self._seeds[n])
        while not self._stop.is_set():
            token = f"{TOKEN_PREFIX}{secrets.token_hex(5)}"
            seconds = rng.uniform(*job)
            proc = subprocess.Popen(
                [sys.executable, "-m", "proctor", "run", "--server", self.url(), "--key", str(self.key_path),
                 "--", sys.executable, str(JOB), str(self.markers), token, f"{seconds:.3f}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            run = Run(token, proc, seconds)
            self.ledger.add_run(run)
            if proc.stderr is None:
                raise RuntimeError("proctor run has no stderr pipe")
            lines = []
            for line in proc.stderr:  # read as it comes: live_runs() needs "started"
                lines.append(line)
                if found := _STARTED.search(line):
                    run.execution = found.group(1)
                    self.ledger.add(Started(found.group(1), found.group(2), token))
                run.stderr = "".join(lines)
            run.returncode = proc.wait(timeout=WAIT)
            proc.stderr.close()
            self.ledger.call("run", failed=run.execution is None)
            # A pause between runs (and no tight loop of start-ups against a governor
            # that is down): each run starts three Python processes.
            self._stop.wait(0.3 if run.execution is not None else 1.0)

    def _revoke(self, n: int) -> None:
        revoked: set[str] = set()
        while not self._stop.is_set():
            fresh = [w for w in self.ledger.unrevoked_warrants() if w not in revoked]
            if not fresh:
                self._stop.wait(0.02)
                continue
            target = fresh[-1]
            revoked.add(target)
            try:
                with self._client(self.admin_key) as admin:
                    got = admin.json(
                        "POST", "/v1/revocations", {"kind": "warrant", "target": target, "reason": "fault"}
                    )
            except (GovernorError, httpx.HTTPError):
                self.ledger.call("append", failed=True)
                self._stop.wait(0.05)
                continue
            self.ledger.call("append")
            self.ledger.add(Revoked(str(got["kind"]), str(got["target"]), int(got["log_index"])))
            self._stop.wait(self.pace * 3)


def tokens(markers: Path) -> list[str]:
    """The tokens of every job that ran (each wrote its marker first)."""
    return [m.name for m in markers.iterdir()]


def warm(load: Workload, ledger: Ledger, markers: Path) -> None:
    """Wait until every operation was answered a few more times than before and a long
    job's command is running: a fault then lands in the middle of all of them."""
    before = ledger.acknowledged()
    load.wait_for(
        {"authorize": before["authorize"] + 5, "run": before["run"] + 1, "append": before["append"] + 2}
    )
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        long = [r.token for r in ledger.live_runs() if r.seconds >= LONG_JOB[0]]
        if survivors(long):
            return
        time.sleep(0.02)
    every = [pid for t in tokens(markers) for pid in marked(t)]
    raise AssertionError(f"no long job's command is running: {describe(every)}")


# -- the processes of the jobs ------------------------------------------------------------------


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def survivors(tokens: Iterable[str]) -> list[int]:
    """Check (b): the live processes of these jobs (none, once their leases ended) — the
    governed ones: not ``proctor run`` itself (its argv carries the token too) nor its
    watchdog, which outlive the command to report how it ended."""
    return [
        pid
        for token in tokens
        for pid in marked(token, exclude=b"proctor\0run")
        if _comm(pid) != "proctor-watch"
    ]


def wait_gone(tokens: Iterable[str], seconds: float) -> tuple[list[int], float]:
    """Wait up to ``seconds`` for every process of these jobs to die.

    Returns:
        ``(pids still alive, seconds waited)``.
    """
    tokens = list(tokens)
    began = time.monotonic()
    while (left := survivors(tokens)) and time.monotonic() - began < seconds:
        time.sleep(0.02)
    return left, time.monotonic() - began


def describe(pids: Iterable[int]) -> str:
    """What these processes are (argv, state, parent), for a failure message."""
    out = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
            out.append(f"{pid} [{stat[0]}, parent {stat[1]}]: {argv.strip()}")
        except OSError:
            out.append(f"{pid}: gone")
    return "; ".join(out)


def kill_tokens(tokens: Iterable[str]) -> None:
    """SIGKILL whatever of these jobs is left (cleanup after a failed test)."""
    for pid in survivors(tokens):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
