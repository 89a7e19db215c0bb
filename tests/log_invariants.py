"""The invariants of a governor's lineage log, checked after the fact.

A soak or a fault test runs a real governor, stops it, and then asks: does the history
it left hold together? :func:`check_events` answers for events already read (pure, no
I/O); :func:`check_log` reads a data directory's log (SQLite, or PostgreSQL with
``store=``) through proctor's own reader (:class:`proctor.lineage.log.Log` and the
store interface), proves every entry against the latest signed checkpoint, and checks
the events.

The rules (:data:`RULES`), each named in every :class:`Violation` it finds:

- ``indices-contiguous``: leaf indices run 0, 1, 2 … with no gap and no duplicate.
- ``event-shape``: every entry is a canonical lineage event.
- ``warrant-follows-allow``: every ``warrant.issued`` names, by ``decision_index``, an
  earlier ``decision`` that allowed the same principal.
- ``start-authorized``: every ``execution.started`` names a warrant issued earlier for
  the same principal (so an allowing decision comes before it too), and links to it.
- ``warrant-single-use``: a warrant starts at most one execution.
- ``start-not-revoked``: no execution starts under a warrant revoked earlier (itself or
  an ancestor), or for a principal revoked or suspended earlier and not resumed since.
- ``revoked-execution-ends``: every execution running when a revocation of it, of its
  warrant chain or of its principal was recorded has a terminal event after that
  revocation; an execution revoked by id ends as ``execution.terminated`` (the governor
  does not take its enforcer's word that it completed).
- ``one-terminal-outcome``: an execution ends at most once, and only after it started.
- ``leaf-hash``: each entry hashes (RFC 9162 §2.1.1) to the leaf hash the log stores.
- ``inclusion``: each entry proves included in the latest signed checkpoint.
- ``checkpoint-consistency``: every stored checkpoint verifies under the log's key and
  is consistent with the latest one (so with every later one: both are prefixes of it).
- ``log-audit``: the log's own full audit (``proctor log verify``'s first step) passes.

Executions still running when the log was read are not violations (a live log has
them); :attr:`Report.open_executions` lists them, for a caller that stopped everything
first to require none.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proctor.datadir import DataDir
from proctor.errors import EventError, ProctorError
from proctor.lineage.checkpoint import Checkpoint, open_checkpoint
from proctor.lineage.events import Event
from proctor.lineage.log import Log
from proctor.lineage.merkle import leaf_hash, verify_consistency, verify_inclusion
from proctor.note import NoteVerifier
from proctor.store.open import open_log_store

__all__ = ["RULES", "TERMINAL", "Report", "Violation", "check_events", "check_log", "read_events"]

RULES = {
    "indices-contiguous": "leaf indices run 0, 1, 2 ... with no gap and no duplicate",
    "event-shape": "every entry is a canonical lineage event",
    "warrant-follows-allow": "every warrant.issued names an earlier decision that allowed its principal",
    "start-authorized": "every execution.started follows an allow decision and a warrant issued for it",
    "warrant-single-use": "a warrant starts at most one execution",
    "start-not-revoked": "no execution starts under a revoked warrant or a revoked or suspended principal",
    "revoked-execution-ends": "every execution running at its revocation has a terminal event after it",
    "one-terminal-outcome": "an execution ends at most once, and only after it started",
    "leaf-hash": "each entry hashes to the leaf hash the log stores",
    "inclusion": "each entry proves included in the latest signed checkpoint",
    "checkpoint-consistency": "every stored checkpoint verifies and is consistent with the latest",
    "log-audit": "the log's own full audit passes",
}
"""Rule name -> the sentence it holds."""

TERMINAL = frozenset({"execution.completed", "execution.terminated"})
"""The event types that end an execution."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (a leaf index, when one can be named), which rule, what."""

    index: int | None
    rule: str
    detail: str

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}; expected one of {sorted(RULES)}")

    def __str__(self) -> str:
        where = "" if self.index is None else f" at leaf {self.index}"
        return f"[{self.rule}]{where}: {self.detail}"


@dataclass
class Report:
    """What :func:`check_events` (and :func:`check_log`) counted and found."""

    events: int = 0
    decisions: int = 0
    allowed: int = 0
    denied: int = 0
    warrants: int = 0
    executions_started: int = 0
    completed: int = 0
    terminated: int = 0
    revocations: int = 0
    revoked: int = 0
    """Executions that were running when a revocation covering them was recorded."""
    checkpoints: int = 0
    """Stored checkpoints verified and proved consistent with the latest (check_log)."""
    inclusion_proofs: int = 0
    """Entries proved included in the latest checkpoint (check_log)."""
    open_executions: list[str] = field(default_factory=list)
    """Executions started and not (yet) ended."""
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no rule was broken."""
        return not self.violations

    def counts(self) -> dict[str, int]:
        """The counts, by name (for a table of figures)."""
        return {
            "events": self.events,
            "decisions": self.decisions,
            "allowed": self.allowed,
            "denied": self.denied,
            "warrants": self.warrants,
            "executions started": self.executions_started,
            "completed": self.completed,
            "terminated": self.terminated,
            "revocations": self.revocations,
            "executions revoked while running": self.revoked,
            "checkpoints checked": self.checkpoints,
            "inclusion proofs checked": self.inclusion_proofs,
            "open executions": len(self.open_executions),
            "violations": len(self.violations),
        }

    def __str__(self) -> str:
        lines = [", ".join(f"{k} {v}" for k, v in self.counts().items())]
        lines += [f"  {v}" for v in self.violations[:50]]
        if len(self.violations) > 50:
            lines.append(f"  ... and {len(self.violations) - 50} more")
        return "\n".join(lines)


# -- the events ------------------------------------------------------------------------


@dataclass
class _Execution:
    id: str
    started: int
    warrant: str
    principal: str
    ended: int | None = None
    outcome: str = ""


@dataclass
class _Revocation:
    index: int
    kind: str
    target: str


class _Checker:
    """One pass over the events in index order, keeping what the rules need."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.decisions: dict[int, Mapping[str, Any]] = {}
        self.warrants: dict[str, tuple[int, Mapping[str, Any]]] = {}  # id -> (index, event)
        self.parent_of: dict[str, str] = {}  # warrant -> its parent warrant
        self.started_by: dict[str, str] = {}  # warrant -> the execution it started
        self.executions: dict[str, _Execution] = {}
        self.revoked_warrants: dict[str, int] = {}  # warrant -> index of its first revocation
        self.inactive: dict[str, int] = {}  # principal -> index since which it is not active
        self.pending: dict[str, list[_Revocation]] = {}  # execution -> revocations it must end after
        self.seen_ex_revocation: set[str] = set()

    def bad(self, index: int | None, rule: str, detail: str) -> None:
        self.report.violations.append(Violation(index, rule, detail))

    def chain(self, warrant: str) -> Iterator[str]:
        """The warrant and its ancestors (a cycle, which a log cannot hold, stops it)."""
        seen: set[str] = set()
        while warrant and warrant not in seen:
            seen.add(warrant)
            yield warrant
            warrant = self.parent_of.get(warrant, "")

    def covered(self, ex: _Execution, rev: _Revocation) -> bool:
        if rev.kind == "execution":
            return rev.target == ex.id
        if rev.kind == "principal":
            return rev.target == ex.principal
        if rev.kind == "warrant":
            return rev.target in self.chain(ex.warrant)
        return False

    def event(self, index: int, ev: Mapping[str, Any]) -> None:
        kind = ev.get("type")
        handler = _HANDLERS.get(str(kind))
        if handler is not None:
            handler(self, index, ev)

    def decision(self, index: int, ev: Mapping[str, Any]) -> None:
        self.report.decisions += 1
        if ev.get("decision") == "allow":
            self.report.allowed += 1
        else:
            self.report.denied += 1
        self.decisions[index] = ev

    def warrant_issued(self, index: int, ev: Mapping[str, Any]) -> None:
        self.report.warrants += 1
        wid, principal = str(ev.get("warrant", "")), ev.get("principal")
        at = ev.get("decision_index")
        decision = self.decisions.get(at) if type(at) is int and at < index else None
        if decision is None:
            self.bad(index, "warrant-follows-allow", f"warrant {wid} names no earlier decision ({at!r})")
        elif decision.get("decision") != "allow" or decision.get("principal") != principal:
            self.bad(
                index,
                "warrant-follows-allow",
                f"warrant {wid} for {principal!r} names decision {at}, which "
                f"{decision.get('decision')!r}ed {decision.get('principal')!r}",
            )
        if wid in self.warrants:
            self.bad(
                index,
                "warrant-follows-allow",
                f"warrant {wid} issued twice (first at {self.warrants[wid][0]})",
            )
            return
        self.warrants[wid] = (index, ev)
        parent = ev.get("parent_warrant")
        if isinstance(parent, str) and parent:
            self.parent_of[wid] = parent

    def started(self, index: int, ev: Mapping[str, Any]) -> None:
        self.report.executions_started += 1
        ex_id, wid, principal = (
            str(ev.get("execution", "")),
            str(ev.get("warrant", "")),
            str(ev.get("principal")),
        )
        if ex_id in self.executions:
            self.bad(index, "one-terminal-outcome", f"execution {ex_id} started twice")
            return
        ex = _Execution(ex_id, index, wid, principal)
        self.executions[ex_id] = ex
        issued = self.warrants.get(wid)
        if issued is None:
            self.bad(
                index,
                "start-authorized",
                f"execution {ex_id} starts under warrant {wid!r}, never issued before it",
            )
        else:
            w_index, w_event = issued
            if w_event.get("principal") != principal:
                self.bad(
                    index,
                    "start-authorized",
                    f"execution {ex_id} of {principal!r} starts under {w_event.get('principal')!r}'s warrant {wid}",
                )
            parent = ev.get("parent")
            if not isinstance(parent, Mapping) or parent.get("index") != w_index:
                self.bad(
                    index,
                    "start-authorized",
                    f"execution {ex_id} does not link to warrant.issued at {w_index}",
                )
        first = self.started_by.setdefault(wid, ex_id)
        if first != ex_id:
            self.bad(index, "warrant-single-use", f"warrant {wid} starts {ex_id} after it started {first}")
        late: list[_Revocation] = []
        for w in self.chain(wid):
            at = self.revoked_warrants.get(w)
            if at is not None:
                self.bad(
                    index, "start-not-revoked", f"execution {ex_id} starts under warrant {w}, revoked at {at}"
                )
                late.append(_Revocation(at, "warrant", w))
        if principal in self.inactive:
            at = self.inactive[principal]
            self.bad(
                index,
                "start-not-revoked",
                f"execution {ex_id} starts for {principal!r}, not active since {at}",
            )
            late.append(_Revocation(at, "principal", principal))
        if late:  # it must still end (and is counted as revoked)
            self.report.revoked += 1
            self.pending[ex_id] = late

    def ended(self, index: int, ev: Mapping[str, Any]) -> None:
        kind = str(ev.get("type"))
        if kind == "execution.completed":
            self.report.completed += 1
        else:
            self.report.terminated += 1
        ex_id = str(ev.get("execution", ""))
        ex = self.executions.get(ex_id)
        if ex is None:
            self.bad(index, "one-terminal-outcome", f"{kind} of {ex_id!r}, which never started before it")
            return
        if ex.ended is not None:
            self.bad(
                index, "one-terminal-outcome", f"execution {ex_id} ends again ({ex.outcome} at {ex.ended})"
            )
            return
        ex.ended, ex.outcome = index, kind
        for rev in self.pending.pop(ex_id, []):
            if rev.kind == "execution" and kind != "execution.terminated":
                self.bad(
                    index,
                    "revoked-execution-ends",
                    f"execution {ex_id}, revoked at {rev.index}, ends as {kind}, not terminated",
                )

    def revocation(self, index: int, ev: Mapping[str, Any]) -> None:
        self.report.revocations += 1
        target = ev.get("target")
        if not isinstance(target, Mapping):
            return
        rev = _Revocation(index, str(target.get("kind", "")), str(target.get("id", "")))
        if rev.kind == "warrant":
            self.revoked_warrants.setdefault(rev.target, index)
        elif rev.kind == "principal":
            self.inactive.setdefault(rev.target, index)
        if rev.kind not in ("execution", "warrant", "principal"):
            return
        for ex in self.executions.values():
            if ex.ended is None and self.covered(ex, rev):
                if ex.id not in self.pending:
                    self.report.revoked += 1
                self.pending.setdefault(ex.id, []).append(rev)

    def principal_changed(self, index: int, ev: Mapping[str, Any]) -> None:
        name, status = str(ev.get("principal", "")), ev.get("status")
        if status == "active":
            self.inactive.pop(name, None)
        elif isinstance(status, str):
            self.inactive.setdefault(name, index)

    def finish(self) -> None:
        for ex_id, revs in self.pending.items():
            self.bad(
                self.executions[ex_id].started,
                "revoked-execution-ends",
                f"execution {ex_id}, revoked at {revs[0].index}, has no terminal event after it",
            )
        self.report.open_executions = [e.id for e in self.executions.values() if e.ended is None]


_HANDLERS = {
    "decision": _Checker.decision,
    "warrant.issued": _Checker.warrant_issued,
    "execution.started": _Checker.started,
    "execution.completed": _Checker.ended,
    "execution.terminated": _Checker.ended,
    "revocation": _Checker.revocation,
    "principal.changed": _Checker.principal_changed,
}


def check_events(
    events: Iterable[tuple[int, Mapping[str, Any]]], report: Report | None = None
) -> list[Violation]:
    """Check the rules on events already read: ``(leaf index, event object)`` pairs in
    the order read.

    Args:
        events: the entries, in the order the log returned them.
        report: counts and open executions go here too (and its violations list).

    Returns:
        The violations found, in the order found (also in ``report``).
    """
    report = report if report is not None else Report()
    before = len(report.violations)
    checker = _Checker(report)
    expected = 0
    for index, ev in events:
        report.events += 1
        if index != expected:
            what = "duplicate of" if index < expected else "gap before"
            checker.bad(
                index, "indices-contiguous", f"leaf {index} read where {expected} was due ({what} it)"
            )
            if index < expected:
                continue  # a duplicate: the first one stands
        expected = index + 1
        if not isinstance(ev, Mapping):
            checker.bad(index, "event-shape", f"expected an event object, found {type(ev).__name__}")
            continue
        checker.event(index, ev)
    checker.finish()
    return report.violations[before:]


# -- the log ---------------------------------------------------------------------------


def _verifier(data: DataDir) -> NoteVerifier:
    """The log's published verifier key (``keys/log.pub``), else the one its signing key makes."""
    published = data.keys_path / "log.pub"
    if published.is_file():
        return NoteVerifier.from_string(published.read_text().strip())
    return data.log_verifier()


def _where(source: str | Path, store: str | None, data: str | Path | None) -> tuple[Path, str | None]:
    """(data directory, store URL) of :func:`check_log`'s arguments."""
    if str(source).startswith(("postgresql://", "postgres://")):
        if data is None:
            raise ValueError("a store URL needs data=, the data directory holding the log's key")
        return Path(data), str(source)
    return Path(source), store


def read_events(
    source: str | Path, *, store: str | None = None, data: str | Path | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every stored entry as ``(index, event object)``, in index order, read in bulk
    through the store interface (arguments as :func:`check_log`; nothing is verified:
    that is :func:`check_log`'s part). An entry that is not JSON reads as ``{}``."""
    path, url = _where(source, store, data)
    dd = DataDir.open(path)
    log_store, sequencer = open_log_store(url, db_path=dd.db_path, lock_path=dd.lock_path)
    try:
        for index, raw in log_store.entries(0, log_store.tree_size()):
            try:
                event = json.loads(raw)
            except ValueError:
                event = {}
            yield index, event if isinstance(event, dict) else {}
    finally:
        sequencer.close()
        log_store.close()


def check_log(source: str | Path, *, store: str | None = None, data: str | Path | None = None) -> Report:
    """Read a log through proctor's reader, prove every entry and check every rule.

    Best run once nothing appends any more (the governor stopped): the full audit reads
    the whole stored tree, which a live writer moves under it.

    Args:
        source: a data directory made by ``proctor init``; or a ``postgresql://`` URL,
            then ``data`` names the data directory holding the log's key.
        store: the data directory's PostgreSQL store (``--store``), if it has one.
        data: with a URL as ``source``, the data directory of its keys.

    Returns:
        The report: counts and every violation found.
    """
    source, store = _where(source, store, data)
    report = Report()
    dd = DataDir.open(source)
    verifier = _verifier(dd)
    log_store, sequencer = open_log_store(store, db_path=dd.db_path, lock_path=dd.lock_path)
    try:
        with Log.open(source, store=store) as log:
            audit = log.check_all()
            if not audit.ok:
                report.violations.append(
                    Violation(audit.index, "log-audit", audit.error or "the audit failed")
                )
            latest = _latest(log, verifier, report)
            if latest is None:
                return report
            _consistency(log, log_store.checkpoints(), latest, verifier, report)
            events = _entries(log, log_store.entries(0, latest.size), latest, report)
            check_events(events, report)
    finally:
        sequencer.close()
        log_store.close()
    return report


def _latest(log: Log, verifier: NoteVerifier, report: Report) -> Checkpoint | None:
    try:
        return open_checkpoint(log.checkpoint(), verifier)
    except ProctorError as e:
        report.violations.append(Violation(None, "checkpoint-consistency", f"the latest checkpoint: {e}"))
        return None


def _consistency(
    log: Log, stored: Iterable[tuple[int, str]], latest: Checkpoint, verifier: NoteVerifier, report: Report
) -> None:
    for size, note in stored:
        try:
            cp = open_checkpoint(note, verifier)
            if cp.size != size:
                raise ValueError(f"stored as size {size}, signed for {cp.size}")
            proof = log.consistency_proof(cp.size, latest.size)
            hashes = [base64.b64decode(h) for h in proof["hashes"]]
            verify_consistency(cp.size, latest.size, cp.root_hash, latest.root_hash, hashes)
        except (ProctorError, ValueError) as e:
            report.violations.append(
                Violation(
                    None,
                    "checkpoint-consistency",
                    f"checkpoint of size {size} vs the latest ({latest.size}): {e}",
                )
            )
            continue
        report.checkpoints += 1


def _entries(
    log: Log, stored: Iterable[tuple[int, bytes]], latest: Checkpoint, report: Report
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """The entries of the signed tree as events, each leaf hash and inclusion checked."""
    for index, raw in stored:
        try:
            leaf = leaf_hash(raw)
            if index < latest.size:
                if log.leaf_hash(index) != leaf:
                    report.violations.append(Violation(index, "leaf-hash", "the stored leaf hash differs"))
                proof = log.inclusion_proof(index, latest.size)
                hashes = [base64.b64decode(h) for h in proof["hashes"]]
                verify_inclusion(index, latest.size, leaf, hashes, latest.root_hash)
                report.inclusion_proofs += 1
        except ProctorError as e:
            report.violations.append(Violation(index, "inclusion", str(e)))
        try:
            event = Event.from_bytes(raw, strict=True)
        except EventError as e:
            report.violations.append(Violation(index, "event-shape", str(e)))
            yield index, {}  # its index still counts: the rules after it see no gap
            continue
        yield index, event.data
