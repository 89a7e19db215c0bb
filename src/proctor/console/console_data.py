"""What the governance console shows, read from the governor: running executions,
principals, the policy bundles and their history, recent decisions, pending approvals.

Every read is bounded (the newest :data:`MAX_ROWS` executions, the last
:data:`DECISION_SCAN` log entries for decisions), so a page or a poll costs the same
whatever the size of the log. Values are returned as they are stored: the templates
escape them and the script sets them as text.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import orjson

from proctor.errors import ProctorError
from proctor.governor.execution_views import list_executions
from proctor.policy import SignedBundle

if TYPE_CHECKING:
    from proctor.governor.service import Governor

__all__ = [
    "DECISION_SCAN",
    "MAX_ROWS",
    "bundle_diff",
    "event_at",
    "bundle_history",
    "find_event",
    "live",
    "pending_approvals",
    "policy_text",
    "principals",
    "recent_decisions",
    "running",
]

MAX_ROWS = 200
"""The most running executions (and approvals) one page or poll shows."""
DECISION_SCAN = 300
"""How many of the log's newest entries are read for recent decisions."""
_DECISIONS = 25
_MAX_DIFF_LINES = 2000


def running(governor: Governor, admin: str) -> list[dict[str, Any]]:
    """The running (or terminating) executions, newest first, as the API lists them."""
    listed = list_executions(governor, admin, status="running", limit=MAX_ROWS)
    rows: list[dict[str, Any]] = listed["executions"]
    return rows


def principals(governor: Governor) -> list[dict[str, Any]]:
    """Every principal: name, status (as governance sees it), zone, attributes."""
    out = []
    for record in governor.state.principals():
        effective = governor.principal(record.name)
        status = effective.status if effective is not None else record.status
        out.append({"name": record.name, "status": status, "zone": record.zone, "attrs": dict(record.attrs)})
    return out


def pending_approvals(governor: Governor) -> list[dict[str, Any]]:
    """The approvals waiting for an admin, newest first."""
    found: list[dict[str, Any]] = governor.authorizer.approvals.listed("pending")["approvals"]
    return found[:MAX_ROWS]


def _entry(governor: Governor, index: int) -> dict[str, Any] | None:
    try:
        event = orjson.loads(governor.log.leaf(index))
    except (ProctorError, orjson.JSONDecodeError):
        return None
    return event if isinstance(event, dict) else None


def recent_decisions(governor: Governor) -> list[dict[str, Any]]:
    """The newest decisions among the last :data:`DECISION_SCAN` log entries: leaf
    index, time, principal, action, resource, allow or deny, the determining policies."""
    size = governor.log.size
    out: list[dict[str, Any]] = []
    for index in range(size - 1, max(-1, size - 1 - DECISION_SCAN), -1):
        event = _entry(governor, index)
        if event is None or event.get("type") != "decision":
            continue
        asked = event.get("request")
        request: dict[str, Any] = asked if isinstance(asked, dict) else {}
        out.append(
            {
                "index": index,
                "time": str(event.get("time", "")),
                "principal": str(event.get("principal", "")),
                "action": str(request.get("action", "")),
                "resource": str(request.get("resource", "")),
                "decision": str(event.get("decision", "")),
                "policies": [str(p) for p in event.get("policies", []) if isinstance(p, str)],
            }
        )
        if len(out) >= _DECISIONS:
            break
    return out


def find_event(
    governor: Governor, wanted: dict[str, str], *, scan: int = 256
) -> tuple[int, dict[str, Any]] | None:
    """The newest event among the last ``scan`` entries whose fields include ``wanted``
    (for an operation that does not return its leaf index)."""
    size = governor.log.size
    for index in range(size - 1, max(-1, size - 1 - scan), -1):
        event = _entry(governor, index)
        if event is not None and all(event.get(k) == v for k, v in wanted.items()):
            return index, event
    return None


def event_at(governor: Governor, index: int) -> dict[str, Any] | None:
    """The event at leaf ``index``, or ``None``."""
    return _entry(governor, index)


def bundle_history(governor: Governor) -> dict[str, Any]:
    """The active bundle's digest and every version accepted, newest first."""
    active = governor.state.active_bundle()
    versions = [
        {
            "digest": digest,
            "version": version,
            "activated": activated,
            "active": active is not None and digest == active[0],
        }
        for digest, version, activated in governor.state.bundle_versions()
    ]
    versions.reverse()
    return {"active": None if active is None else active[0], "versions": versions}


def _files(governor: Governor, digest: str) -> dict[str, str] | None:
    stored = governor.state.bundle(digest)
    if stored is None:
        return None
    try:
        return dict(SignedBundle.from_json(orjson.loads(stored)).bundle.files)
    except (ProctorError, orjson.JSONDecodeError, KeyError, TypeError):
        return None


def bundle_diff(governor: Governor, old: str, new: str) -> list[str] | None:
    """A unified diff of the policy files of bundles ``old`` and ``new`` (``None``:
    either is unknown); at most a bounded number of lines."""
    a, b = _files(governor, old), _files(governor, new)
    if a is None or b is None:
        return None
    lines: list[str] = []
    for name in sorted(set(a) | set(b)):
        lines += difflib.unified_diff(
            a.get(name, "").splitlines(),
            b.get(name, "").splitlines(),
            fromfile=f"{old[:19]}/{name}",
            tofile=f"{new[:19]}/{name}",
            lineterm="",
        )
    return lines[:_MAX_DIFF_LINES]


def policy_text(governor: Governor, digest: str) -> dict[str, str] | None:
    """The policy files of bundle ``digest``, or ``None``."""
    return _files(governor, digest)


def live(governor: Governor, admin: str) -> dict[str, Any]:
    """Everything the console's page refreshes, in one answer."""
    return {
        "now": governor.now(),
        "executions": running(governor, admin),
        "principals": principals(governor),
        "approvals": pending_approvals(governor),
        "decisions": recent_decisions(governor),
        "policy": bundle_history(governor),
    }
