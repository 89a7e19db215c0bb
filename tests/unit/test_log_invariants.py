"""tests/log_invariants.py: each rule it checks can fail, on a hand-built history that
breaks only that rule, and a real governor's log passes them all (and a tampered one
does not)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gov_exec import allow, start_body
from gov_fixtures import gov_data, governor
from gov_support import POLICIES, signed_bundle
from log_invariants import RULES, Report, Violation, check_events, check_log
from proctor.authorization.keys import PrincipalKey
from proctor.governor.service import Governor, initialize

__all__ = ["gov_data", "governor"]  # fixtures, used by name

T = "2026-01-31T12:00:00Z"
Events = list[dict[str, Any]]


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "type": kind, "time": T, **fields}


def decision(principal: str = "alice", verdict: str = "allow") -> dict[str, Any]:
    return ev("decision", principal=principal, decision=verdict)


def issued(warrant: str, at: int, principal: str = "alice", parent_warrant: str = "") -> dict[str, Any]:
    return ev(
        "warrant.issued",
        warrant=warrant,
        principal=principal,
        decision_index=at,
        parent_warrant=parent_warrant,
        parent={"index": at},
    )


def started(execution: str, warrant: str, at: int, principal: str = "alice") -> dict[str, Any]:
    return ev(
        "execution.started", execution=execution, warrant=warrant, principal=principal, parent={"index": at}
    )


def ended(execution: str, kind: str = "execution.completed") -> dict[str, Any]:
    return ev(kind, execution=execution)


def revoked(kind: str, target: str) -> dict[str, Any]:
    return ev("revocation", target={"kind": kind, "id": target}, reason="test", by="admin")


def principal(name: str, status: str) -> dict[str, Any]:
    return ev("principal.changed", principal=name, change=status, status=status)


def run(events: Events) -> list[Violation]:
    return check_events(list(enumerate(events)))


def rules(events: Events) -> set[str]:
    return {v.rule for v in run(events)}


def history() -> Events:
    """A run that keeps every rule: allow, warrant, start, revoke, end; a deny; a child warrant."""
    return [
        decision(),  # 0
        issued("wr_a", 0),  # 1
        started("ex_a", "wr_a", 1),  # 2
        decision("bob", "deny"),  # 3
        revoked("execution", "ex_a"),  # 4
        ended("ex_a", "execution.terminated"),  # 5
        decision(),  # 6
        issued("wr_b", 6, parent_warrant="wr_a"),  # 7
        started("ex_b", "wr_b", 7),  # 8
        ended("ex_b"),  # 9
        revoked("warrant", "wr_b"),  # 10: after it ended, nothing to end
    ]


def test_a_history_that_keeps_every_rule_has_no_violation_and_is_counted() -> None:
    report = Report()
    assert check_events(list(enumerate(history())), report) == []
    assert report.ok
    assert (report.events, report.decisions, report.allowed, report.denied) == (11, 3, 2, 1)
    assert (report.warrants, report.executions_started, report.revocations, report.revoked) == (2, 2, 2, 1)
    assert (report.completed, report.terminated, report.open_executions) == (1, 1, [])


def _swap(i: int, j: int) -> Callable[[Events], Events]:
    def change(events: Events) -> Events:
        events[i], events[j] = events[j], events[i]
        return events

    return change


def _put(i: int, event: dict[str, Any]) -> Callable[[Events], Events]:
    def change(events: Events) -> Events:
        events[i] = event
        return events

    return change


def _insert(i: int, event: dict[str, Any]) -> Callable[[Events], Events]:
    def change(events: Events) -> Events:
        return [*events[:i], event, *events[i:]]

    return change


def _drop(i: int) -> Callable[[Events], Events]:
    def change(events: Events) -> Events:
        return events[:i] + events[i + 1 :]

    return change


BROKEN: list[tuple[str, str, Callable[[Events], Events]]] = [
    ("warrant-follows-allow", "a warrant after a deny", _put(1, issued("wr_a", 3))),
    ("warrant-follows-allow", "a warrant after another principal's allow", _put(1, issued("wr_a", 0, "bob"))),
    ("warrant-follows-allow", "a warrant naming a later decision", _put(1, issued("wr_a", 6))),
    ("warrant-follows-allow", "a warrant issued twice", _put(10, issued("wr_a", 6))),
    ("start-authorized", "a start under a warrant never issued", _put(2, started("ex_a", "wr_x", 1))),
    ("start-authorized", "a start before its warrant", _swap(1, 2)),
    ("start-authorized", "a start under another's warrant", _put(2, started("ex_a", "wr_a", 1, "bob"))),
    ("start-authorized", "a start not linked to its warrant", _put(2, started("ex_a", "wr_a", 0))),
    ("warrant-single-use", "a warrant starting twice", _put(8, started("ex_b", "wr_a", 1))),
    ("start-not-revoked", "a start under a revoked warrant", _insert(2, revoked("warrant", "wr_a"))),
    ("start-not-revoked", "a start under a revoked parent warrant", _insert(8, revoked("warrant", "wr_a"))),
    ("start-not-revoked", "a start by a revoked principal", _insert(2, revoked("principal", "alice"))),
    ("start-not-revoked", "a start by a suspended principal", _insert(2, principal("alice", "suspended"))),
    ("revoked-execution-ends", "a revoked execution never ends", _drop(5)),
    ("revoked-execution-ends", "a revoked execution completes", _put(5, ended("ex_a"))),
    (
        "revoked-execution-ends",
        "a revoked principal's execution never ends",
        _put(9, revoked("principal", "alice")),
    ),
    (
        "revoked-execution-ends",
        "a revoked parent warrant's child never ends",
        _put(9, revoked("warrant", "wr_a")),
    ),
    ("one-terminal-outcome", "an execution ends twice", _put(10, ended("ex_b", "execution.terminated"))),
    ("one-terminal-outcome", "an end of an execution never started", _put(10, ended("ex_z"))),
    ("one-terminal-outcome", "an end before the start", _swap(8, 9)),
    ("one-terminal-outcome", "an execution started twice", _put(10, started("ex_b", "wr_b", 7))),
]


@pytest.mark.parametrize(("rule", "change"), [(r, c) for r, _, c in BROKEN], ids=[d for _, d, _ in BROKEN])
def test_each_rule_finds_the_history_that_breaks_it(rule: str, change: Callable[[Events], Events]) -> None:
    found = run(change(history()))
    assert rule in {v.rule for v in found}, found
    assert all(v.rule in RULES for v in found)
    assert all(v.index is not None for v in found if v.rule == rule)


def test_every_event_rule_is_tried_above() -> None:
    log_only = {
        "leaf-hash",
        "inclusion",
        "checkpoint-consistency",
        "log-audit",
        "indices-contiguous",
        "event-shape",
    }
    assert {r for r, _, _ in BROKEN} == set(RULES) - log_only


@pytest.mark.parametrize(
    ("indices", "bad"),
    [([0, 1, 3, 4], [3]), ([0, 1, 1, 2], [1]), ([1, 2], [1]), ([0, 2, 1], [2, 1])],
    ids=["gap", "duplicate", "no-leaf-0", "out-of-order"],
)
def test_leaf_indices_with_a_gap_or_a_duplicate_are_found(indices: list[int], bad: list[int]) -> None:
    found = check_events([(i, decision()) for i in indices])
    assert [(v.rule, v.index) for v in found] == [("indices-contiguous", i) for i in bad]


def test_an_entry_that_is_not_an_event_object_is_found() -> None:
    found = check_events([(0, decision()), (1, ["not", "an", "event"])])  # type: ignore[list-item]
    assert [(v.rule, v.index) for v in found] == [("event-shape", 1)]


def test_a_resumed_principal_may_start_again_and_an_ended_execution_needs_no_end_after_revocation() -> None:
    events = [*history()[:3], principal("alice", "suspended"), principal("alice", "resumed")]
    events[4]["status"] = "active"
    events += [ended("ex_a"), revoked("principal", "alice"), principal("alice", "active")]
    events += [decision(), issued("wr_c", 8), started("ex_c", "wr_c", 9), ended("ex_c")]
    assert run(events) == []


def test_an_execution_still_running_is_listed_not_a_violation() -> None:
    report = Report()
    assert check_events(list(enumerate(history()[:3])), report) == []
    assert report.open_executions == ["ex_a"]


def test_a_violation_names_a_known_rule() -> None:
    with pytest.raises(ValueError, match="unknown rule"):
        Violation(0, "no-such-rule", "x")


# -- check_log on a real log -----------------------------------------------------------


@pytest.fixture
def used(governor: Governor, gov_data: Path) -> Path:
    """A governor's data directory after an allow, a deny, two executions (one revoked)."""
    token = allow(governor, "one")
    first = governor.executions.start("alice", start_body(token, "one"))["execution"]
    governor.executions.finish("alice", first, {"outcome": "completed", "exit_status": 0})
    second = governor.executions.start("alice", start_body(allow(governor, "two"), "two"))["execution"]
    governor.revoke("execution", second, reason="test", by="admin")
    governor.executions.finish("alice", second, {"outcome": "completed", "exit_status": 0})
    governor.close()
    return gov_data


def test_a_real_governors_log_keeps_every_rule(used: Path) -> None:
    report = check_log(used)
    assert report.ok, report
    assert report.executions_started == 2
    assert (report.completed, report.terminated, report.revoked) == (1, 1, 1)
    assert report.inclusion_proofs == report.events > 0
    assert report.checkpoints >= 2
    assert report.open_executions == []


def test_a_changed_entry_fails_the_audit_and_its_inclusion(used: Path) -> None:
    with sqlite3.connect(used / "proctor.db") as db:
        (n,) = db.execute("SELECT max(idx) FROM entries").fetchone()
        data = db.execute("SELECT data FROM entries WHERE idx = ?", (n,)).fetchone()[0]
        db.execute("UPDATE entries SET data = ? WHERE idx = ?", (data.replace(b"ex_", b"ey_"), n))
    found = {(v.rule, v.index) for v in check_log(used).violations}
    assert ("log-audit", n) in found
    assert ("inclusion", n) in found


def test_a_forged_checkpoint_is_found(used: Path) -> None:
    with sqlite3.connect(used / "proctor.db") as db:
        size, note = db.execute(
            "SELECT size, note FROM checkpoints ORDER BY size LIMIT 1 OFFSET 1"
        ).fetchone()
        db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (note.replace("\n\n", "\n\n ", 1), size))
    found = check_log(used).violations
    assert any(v.rule == "checkpoint-consistency" and f"size {size} " in v.detail for v in found), found


def test_a_store_url_needs_the_data_directory_of_its_key() -> None:
    with pytest.raises(ValueError, match="data="):
        check_log("postgresql://nobody@127.0.0.1/none")


@pytest.mark.postgres
def test_a_real_governors_log_on_postgresql_keeps_every_rule(tmp_path: Path, pg_dsn: str) -> None:
    data = tmp_path / "data"
    initialize(data, origin="test.example/pg", store=pg_dsn)
    with Governor(data, store=pg_dsn) as gov:
        alice = PrincipalKey.generate("alice")
        gov.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        gov.push_policy(signed_bundle(data, POLICIES / "basic"), by="admin")
        ex = gov.executions.start("alice", start_body(allow(gov, "one"), "one"))["execution"]
        gov.executions.finish("alice", ex, {"outcome": "completed", "exit_status": 0})
    report = check_log(pg_dsn, data=data)
    assert report.ok, report
    assert (report.executions_started, report.completed) == (1, 1)
    assert report.inclusion_proofs == report.events
