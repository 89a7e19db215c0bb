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

What the clients were told comes from the workload's :class:`~fault_workload.Ledger`
(``tests/fault_workload.py``), which also finds the jobs' processes for check (b).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fault_workload import TOKEN_PREFIX, WAIT, Ledger
from gov_server import GovernorServer, cli
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient
from proctor.lineage.checkpoint import Checkpoint, open_checkpoint
from proctor.lineage.merkle import leaf_hash, verify_inclusion
from proctor.note import NoteVerifier
from proctor.policy.commitment import ArgumentOpening
from proctor.receipts import check_receipt

__all__ = [
    "COLUMNS",
    "Checked",
    "LogView",
    "Tally",
    "check_acknowledged",
    "check_after_fault",
    "check_log_verifies",
    "check_no_unauthorized_execution",
    "log_invariants",
    "read_log",
    "stored_entries",
    "wait_settled",
]


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
