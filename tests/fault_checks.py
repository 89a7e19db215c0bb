"""Fault injection for the conformance suite: a seeded schedule, a workload that keeps
every answer a client was given, and the checks every fault test runs afterwards.

The checks (each returns how many items it checked, and fails with what it found):

(a) :func:`check_no_unauthorized_execution` — every marker a governed command wrote
    (``tests/integration/procs/fault_job.py`` writes ``MARKERS/TOKEN`` first thing) belongs
    to an execution the log records as allowed, with its warrant issued before it started:
    the execution's receipt verifies offline (:func:`proctor.receipts.check_receipt`), its
    decision allows, its indices are decision < warrant.issued < execution.started, its
    argument commitment opens to an argv that carries the marker's token, and the marker
    was written no earlier than the ``execution.started`` event's time.
(b) :func:`survivors` — after the lease TTL and a margin, no process of a governed command
    whose lease could not be renewed is alive (every process of a job carries its token).
(c) :func:`check_acknowledged` — every answer a client got (the log index of a decision
    and of its warrant, an execution's start, a revocation's index) is that event in the
    log after the restart, with an inclusion proof served by the governor that verifies
    against its latest checkpoint, opened with the log's key.
(d) :func:`check_log_verifies` — ``proctor log verify`` passes (for corruption faults the
    tests call it themselves and check that it names the damage).

Every check reads the log as stored (the SQLite file or the PostgreSQL tables) and as the
restarted governor serves it; nothing is taken from the workload's own bookkeeping except
what a client was told.

Randomness: :func:`fault_rng` seeds a generator per test from ``PROCTOR_FAULT_SEED`` (or
a fresh seed) and prints it, so a failing run is replayed with that seed;
:func:`fault_rounds` reads ``PROCTOR_FAULT_ROUNDS`` (more rounds than CI runs).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gov_server import GovernorServer, cli
from gov_support import EXE
from proc_support import marked
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient
from proctor.errors import GovernorError
from proctor.lineage.checkpoint import Checkpoint, open_checkpoint
from proctor.lineage.merkle import leaf_hash, verify_inclusion
from proctor.note import NoteVerifier
from proctor.policy.commitment import ArgumentOpening
from proctor.receipts import check_receipt

__all__ = [
    "JOB",
    "ROUNDS_ENV",
    "SEED_ENV",
    "Decided",
    "Ledger",
    "Phases",
    "LogView",
    "Revoked",
    "Started",
    "Tally",
    "Workload",
    "check_acknowledged",
    "check_after_fault",
    "check_log_verifies",
    "check_no_unauthorized_execution",
    "decided",
    "fault_rng",
    "fault_rounds",
    "read_log",
    "describe",
    "survivors",
    "tokens",
    "wait_gone",
    "wait_settled",
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


def fault_rng(name: str) -> tuple[Any, int]:
    """A generator for one test, from ``$PROCTOR_FAULT_SEED`` or a fresh seed (printed).

    Returns:
        ``(random.Random, seed)``: the same seed and name give the same schedule.
    """
    import random

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
        import random

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
            run = Run(token, proc)
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
    """Wait until every operation was answered a few more times than before and a
    governed command is running: a fault then lands in the middle of all of them."""
    before = ledger.acknowledged()
    load.wait_for(
        {"authorize": before["authorize"] + 5, "run": before["run"] + 1, "append": before["append"] + 2}
    )
    deadline = time.monotonic() + WAIT
    while not survivors(tokens(markers)) and time.monotonic() < deadline:
        time.sleep(0.02)
    every = [pid for t in tokens(markers) for pid in marked(t)]
    assert survivors(tokens(markers)), f"no governed command is running: {describe(every)}"


# -- the log, as stored and as served -----------------------------------------------------------


@dataclass
class LogView:
    """The stored log (every entry, parsed) and the served latest checkpoint."""

    raw: list[bytes]
    events: list[dict[str, Any]]
    checkpoint: Checkpoint
    log_key: str

    def of_type(self, kind: str) -> list[tuple[int, dict[str, Any]]]:
        return [(i, e) for i, e in enumerate(self.events) if e.get("type") == kind]


def stored_entries(server: GovernorServer) -> list[tuple[int, bytes]]:
    """Every stored entry ``(index, bytes)`` in index order, read from the store itself."""
    if server.store is not None:
        import psycopg

        with psycopg.connect(server.store, autocommit=True, connect_timeout=30) as pg:
            rows = pg.execute("SELECT idx, data FROM entries ORDER BY idx").fetchall()
    else:
        db = sqlite3.connect(f"file:{server.data / 'proctor.db'}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute("SELECT idx, data FROM entries ORDER BY idx").fetchall()
        finally:
            db.close()
    return [(int(i), bytes(d)) for i, d in rows]


def read_log(server: GovernorServer) -> LogView:
    """The governor's latest checkpoint, verified, then the log as stored (at least as
    long: the governor may append meanwhile), with no gap."""
    log_key = (server.data / "keys" / "log.pub").read_text().strip()
    note = httpx.get(f"{server.url}/v1/log/checkpoint", timeout=WAIT).text
    cp = open_checkpoint(note, NoteVerifier.from_string(log_key))
    rows = stored_entries(server)
    assert [i for i, _ in rows] == list(range(len(rows))), "the stored log has a gap"
    assert cp.size <= len(rows), f"the checkpoint says {cp.size} entries, {len(rows)} are stored"
    return LogView([d for _, d in rows], [json.loads(d) for _, d in rows], cp, log_key)


def _prove(http: httpx.Client, view: LogView, index: int) -> None:
    """Check (c) for one index: the served entry is the stored one and its served
    inclusion proof verifies against the latest checkpoint."""
    assert index < view.checkpoint.size, (
        f"index {index} is past the latest checkpoint ({view.checkpoint.size})"
    )
    served = http.get(f"/v1/log/entries/{index}")
    assert served.status_code == 200, served.text
    assert base64.b64decode(served.json()["leaf"]) == view.raw[index], f"entry {index} is served otherwise"
    proof = http.get("/v1/log/proof/inclusion", params={"index": index, "size": view.checkpoint.size})
    assert proof.status_code == 200, proof.text
    body = proof.json()
    hashes = [base64.b64decode(h) for h in body["hashes"]]
    verify_inclusion(
        index, view.checkpoint.size, leaf_hash(view.raw[index]), hashes, view.checkpoint.root_hash
    )


def check_acknowledged(server: GovernorServer, ledger: Ledger, view: LogView) -> dict[str, int]:
    """Check (c): every acknowledged answer is its event in the log, proven.

    Returns:
        How many answers were checked, per operation.
    """
    started = {e["execution"]: i for i, e in view.of_type("execution.started")}
    failed = {e["decision_index"]: i for i, e in view.of_type("warrant.failed")}
    issued_for = {e["decision_index"] for _, e in view.of_type("warrant.issued")}
    proven: set[int] = set()
    counts = {"authorize": 0, "run": 0, "append": 0}
    with httpx.Client(base_url=server.url, timeout=WAIT) as http:

        def prove(index: int) -> None:
            if index not in proven:
                _prove(http, view, index)
                proven.add(index)

        for d in list(ledger.decisions):
            assert d.index < len(view.events), f"acknowledged decision {d.index} is not in the log"
            event = view.events[d.index]
            assert event["type"] == "decision", (d, event)
            prove(d.index)
            if not d.allow and event["decision"] == "allow":
                # The decision allowed, no warrant could be minted and recorded in time
                # (warrant.failed takes its slot): the answer is deny, and the log says both.
                index = failed.get(d.index)
                assert index is not None, (
                    f"denied answer, allowing decision {d.index}, no warrant.failed: {event}"
                )
                assert d.index not in issued_for, f"denied answer, yet a warrant was issued for {d.index}"
                prove(index)
                counts["authorize"] += 1
                continue
            assert event["decision"] == ("allow" if d.allow else "deny"), (d, event)
            assert event["request_digest"] == d.request_digest, (d, event)
            if d.warrant is not None:
                assert d.warrant_index is not None
                issued = view.events[d.warrant_index]
                assert issued["type"] == "warrant.issued", (d, issued)
                assert (issued["warrant"], issued["decision_index"]) == (d.warrant, d.index), (d, issued)
                prove(d.warrant_index)
            counts["authorize"] += 1
        for s in list(ledger.starts):
            index = started.get(s.execution)
            assert index is not None, f"acknowledged start of {s.execution} is not in the log"
            assert view.events[index]["warrant"] == s.warrant, (s, view.events[index])
            prove(index)
            counts["run"] += 1
        for r in list(ledger.revocations):
            assert r.index < len(view.events), f"acknowledged revocation {r.index} is not in the log"
            event = view.events[r.index]
            assert event["type"] == "revocation", (r, event)
            assert (event["target"]["kind"], event["target"]["id"]) == (r.kind, r.target), (r, event)
            prove(r.index)
            counts["append"] += 1
    return counts


def wait_settled(server: GovernorServer) -> LogView:
    """Wait until every execution the log started has ended in the log (the enforcer's
    report, or the governor's ``supervisor-lost`` once its lease lapsed), and return the log."""
    deadline = time.monotonic() + WAIT
    while True:
        view = read_log(server)
        ended = {e["execution"] for i, e in enumerate(view.events) if e.get("type") in _TERMINAL}
        running = [
            e["execution"] for _, e in view.of_type("execution.started") if e["execution"] not in ended
        ]
        if not running:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"executions never ended in the log: {running}")
        time.sleep(0.2)


_TERMINAL = ("execution.terminated", "execution.completed")


def check_no_unauthorized_execution(server: GovernorServer, markers: Path, view: LogView) -> int:
    """Check (a): every marker belongs to an execution the log allowed before it started.

    Needs every execution ended (:func:`wait_settled`): receipts are of ended executions.

    Returns:
        How many markers were checked.
    """
    by_token: dict[str, tuple[str, dict[str, Any]]] = {}
    admin = PrincipalKey.load(server.data / "keys" / "admin.key")
    with GovernorClient(server.url, admin, timeout=WAIT) as client:
        for _, started in view.of_type("execution.started"):
            execution = started["execution"]
            doc = client.json("GET", f"/v1/executions/{execution}/receipt")
            report = check_receipt(doc, log_key=view.log_key)
            assert report.ok, f"the receipt of {execution} does not verify: {report.failed}"
            events = {e["leaf_index"]: json.loads(base64.b64decode(e["leaf"])) for e in doc["events"]}
            openings = {o["index"]: o["opening"] for o in doc.get("openings", [])}
            warrant = next(
                e
                for e in events.values()
                if e["type"] == "warrant.issued" and e["warrant"] == started["warrant"]
            )
            decision_at = warrant["decision_index"]
            opening = ArgumentOpening.from_json(openings[decision_at])
            assert opening.commitment() == events[decision_at]["request"]["args_commitment"]
            tokens = [a for a in opening.argv if a.startswith(TOKEN_PREFIX)]
            for token in tokens:
                assert token not in by_token, f"two executions ran with the token {token}"
                by_token[token] = (execution, events)
    checked = 0
    for marker in sorted(markers.iterdir()):
        found = by_token.get(marker.name)
        assert found is not None, f"{marker.name} ran, and no execution in the log was allowed to run it"
        execution, events = found
        begun, started = next((i, e) for i, e in events.items() if e["type"] == "execution.started")
        issued, warrant = next(
            (i, e)
            for i, e in events.items()
            if e["type"] == "warrant.issued" and e["warrant"] == started["warrant"]
        )
        decision = events[warrant["decision_index"]]
        assert decision["type"] == "decision", (marker.name, decision)
        assert decision["decision"] == "allow", (marker.name, decision)
        assert warrant["decision_index"] < issued < begun, (
            marker.name,
            warrant["decision_index"],
            issued,
            begun,
        )
        text = marker.read_text(encoding="ascii").split()
        if text:  # written before the job could be killed: its wall-clock time
            written_ms = int(text[0]) // 1_000_000
            assert written_ms >= _millis(events[begun]["time"]), (
                f"{marker.name} was written at {written_ms} ms, before its execution.started "
                f"({events[begun]['time']})"
            )
        checked += 1
    return checked


def _millis(rfc3339: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


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


def check_log_verifies(server: GovernorServer) -> dict[str, Any]:
    """Check (d): ``proctor log verify`` passes (log and state tables)."""
    at = ("--store", server.store) if server.store is not None else ()
    done = cli("log", "verify", "--data", str(server.data), *at, "--json", check=False, timeout=WAIT)
    assert done.returncode == 0, f"proctor log verify exited {done.returncode}: {done.stdout} {done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["ok"] is True, report
    return report


def log_invariants(view: LogView) -> bool:
    """The log-wide invariants of ``tests/log_invariants.py`` on the settled log, when that
    module exists (every started execution has an allowing decision and a warrant before
    it, every revoked one a termination, one outcome each, no index gap).

    Returns:
        Whether they ran (and held).
    """
    try:
        from log_invariants import check_events  # another helper's module, maybe absent
    except ImportError:
        return False
    from log_invariants import Report

    report = Report()
    check_events(list(enumerate(view.events)), report)
    assert report.ok, [str(v) for v in report.violations]
    assert report.open_executions == [], report.open_executions
    return True


@dataclass
class Checked:
    """What the checks after one fault found (all passed, or they raised)."""

    acknowledged: dict[str, int]
    markers: int
    executions: int
    verified_size: int
    invariants: bool


def check_after_fault(server: GovernorServer, ledger: Ledger, markers: Path) -> Checked:
    """Checks (a), (c) and (d), and the log-wide invariants, on a serving governor, once
    every execution ended (check (b) is timed, so each test runs it at its moment)."""
    view = wait_settled(server)
    acknowledged = check_acknowledged(server, ledger, view)
    markers_checked = check_no_unauthorized_execution(server, markers, view)
    report = check_log_verifies(server)
    invariants = log_invariants(view)
    return Checked(
        acknowledged, markers_checked, len(view.of_type("execution.started")), int(report["size"]), invariants
    )


# -- figures ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counters of one fault test for its figures (``tests/figures.py``)."""

    fault: str
    target: str
    rounds: int = 0
    checks: int = 0  # checks (a) to (d) passed, summed over rounds
    per_operation: dict[str, Counter[str]] = field(default_factory=dict)

    def round_done(self, checked: Checked, ledger: Ledger) -> None:
        """Count one round whose checks all passed (the log invariants too, when they ran)."""
        self.rounds += 1
        self.checks += 4 + int(checked.invariants)
        for op, n in checked.acknowledged.items():
            c = self.per_operation.setdefault(op, Counter())
            c["acknowledged"] = n  # the ledger is cumulative: the last round's count is the total
            c["calls"] = ledger.calls[op]
            c["failed"] = ledger.failed[op]
        run = self.per_operation.setdefault("run", Counter())
        run["markers"] = checked.markers
        run["executions"] = checked.executions

    def rows(self, operations: Iterable[str] = ("authorize", "run", "append")) -> list[list[object]]:
        """One row per operation: what it did across the rounds and what was checked."""
        rows: list[list[object]] = []
        for op in operations:
            c = self.per_operation.get(op, Counter())
            what = f"{c['calls']} calls ({c['failed']} unanswered or refused), {c['acknowledged']} answers kept: each found in the log, proven"
            if op == "run":
                what += f"; {c['markers']} commands ran, each authorized before it started"
            rows.append(
                [
                    self.fault,
                    self.target,
                    op,
                    self.rounds,
                    what,
                    self.checks,
                ]
            )
        return rows


COLUMNS = (
    "fault",
    "target",
    "operation",
    "rounds injected",
    "what was checked",
    "checks passed ((a)-(d) and the log invariants, all rounds)",
)


def kill_tokens(tokens: Iterable[str]) -> None:
    """SIGKILL whatever of these jobs is left (cleanup after a failed test)."""
    for pid in survivors(tokens):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
