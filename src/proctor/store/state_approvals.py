"""Approvals and the calls counted for call limits (tables ``approvals`` and ``calls``;
state schema step 3 on both backends).

An approval is asked for by an allow that carries ``approval_required``
(:mod:`proctor.governor.approvals`): its row binds the principal, action, resource,
argument digest, executable digest and zone of the request, the policies that required
it, and its expiry. Its ``status`` moves only forward, each move one conditional
``UPDATE`` (so two governor nodes, or two requests, can never both make it):

    pending --claim_decision--> deciding --decided_writer--> approved | denied
    approved --claim_use--> using --used_writer--> used

``deciding`` and ``using`` are claims taken just before the log commit that records the
move (the commit's own write then cannot find the row moved by someone else, which
would fail the whole group commit); a commit that fails gives its claim back
(:func:`release`). ``expired`` is never stored: a row still ``pending`` or ``approved``
past its ``expires`` reads as expired, and every claim requires ``expires > now``.

A ``calls`` row is written with each warrant whose call a call limit may count
(:mod:`proctor.governor.call_limits`): principal, resource, argument digest, time.

The DDL and every query are in the common SQL subset (:mod:`proctor.store.sql`).
Query functions take a :class:`~proctor.store.sql.Connection`; driver errors pass
through (the state store wraps them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from proctor.errors import StoreError
from proctor.store.sql import Connection, not_in

__all__ = [
    "APPROVALS_DDL",
    "APPROVALS_SUMMARY",
    "APPROVAL_STATUSES",
    "StoredApproval",
    "approval_writer",
    "approval",
    "approvals",
    "claim_decision",
    "decided_writer",
    "claim_use",
    "used_writer",
    "release",
    "call_writer",
    "count_calls",
    "distinct_arguments",
]

APPROVALS_DDL = (
    """CREATE TABLE IF NOT EXISTS approvals (
        id TEXT PRIMARY KEY, principal TEXT NOT NULL, action TEXT NOT NULL,
        resource TEXT NOT NULL, args_digest TEXT NOT NULL, executable_digest TEXT NOT NULL,
        zone TEXT NOT NULL, policies TEXT NOT NULL, status TEXT NOT NULL,
        requested BIGINT NOT NULL, expires BIGINT NOT NULL, decision_index BIGINT NOT NULL,
        requested_index BIGINT NOT NULL, decided_by TEXT NOT NULL DEFAULT '',
        decided BIGINT NOT NULL DEFAULT 0, decided_index BIGINT NOT NULL DEFAULT -1,
        warrant TEXT NOT NULL DEFAULT '', used_index BIGINT NOT NULL DEFAULT -1)""",
    "CREATE INDEX IF NOT EXISTS approvals_by_status ON approvals (status, requested)",
    """CREATE TABLE IF NOT EXISTS calls (
        warrant TEXT PRIMARY KEY, principal TEXT NOT NULL, resource TEXT NOT NULL,
        args_digest TEXT NOT NULL, at BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS calls_by_resource ON calls (principal, resource, at)",
)
"""State schema step 3, the same statements on SQLite and PostgreSQL."""

APPROVALS_SUMMARY = (
    "the approvals table (approval requests and their decisions) and the calls table (call limits)"
)

APPROVAL_STATUSES = ("pending", "approved", "denied", "expired", "used")
"""What an approval is, as read (``deciding`` reads as pending, ``using`` as approved)."""

_COLUMNS = (  # constant: the f-strings below only ever splice this in
    "id, principal, action, resource, args_digest, executable_digest, zone, policies, status, "
    "requested, expires, decision_index, requested_index, decided_by, decided, decided_index, "
    "warrant, used_index"
)
_SHOWN = {"deciding": "pending", "using": "approved"}
MAX_LISTED = 1000


@dataclass(frozen=True)
class StoredApproval:
    """One approval's row. ``stored`` is the status column; :meth:`status_at` is what
    it is at a time (expiry is read, never written)."""

    id: str
    principal: str
    action: str
    resource: str
    args_digest: str
    executable_digest: str
    zone: str
    policies: tuple[str, ...]
    stored: str
    requested: int
    expires: int
    decision_index: int
    requested_index: int
    decided_by: str
    decided: int
    decided_index: int
    warrant: str
    used_index: int

    def status_at(self, now: int) -> str:
        """One of :data:`APPROVAL_STATUSES` at unix time ``now``."""
        shown = _SHOWN.get(self.stored, self.stored)
        if shown in ("pending", "approved") and now >= self.expires:
            return "expired"
        return shown

    def to_json(self, now: int) -> dict[str, Any]:
        """``{"id", "status", "principal", "action", "resource", "args_digest", ...}``."""
        return {
            "id": self.id,
            "status": self.status_at(now),
            "principal": self.principal,
            "action": self.action,
            "resource": self.resource,
            "args_digest": self.args_digest,
            "executable_digest": self.executable_digest,
            "zone": self.zone,
            "policies": list(self.policies),
            "requested_at": self.requested,
            "expires_at": self.expires,
            "decision_index": self.decision_index,
            "log_index": self.requested_index,
            "decided_by": self.decided_by,
            "decided_at": self.decided,
            "warrant": self.warrant,
        }


def _record(row: Any) -> StoredApproval:
    try:
        policies = orjson.loads(row[7])
        if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
            raise TypeError(f"policies: expected a list of names, found {policies!r}")
        return StoredApproval(
            str(row[0]),
            str(row[1]),
            str(row[2]),
            str(row[3]),
            str(row[4]),
            str(row[5]),
            str(row[6]),
            tuple(policies),
            str(row[8]),
            int(row[9]),
            int(row[10]),
            int(row[11]),
            int(row[12]),
            str(row[13]),
            int(row[14]),
            int(row[15]),
            str(row[16]),
            int(row[17]),
        )
    except (TypeError, ValueError, orjson.JSONDecodeError) as e:  # a row written by something else
        raise StoreError(f"approvals[{row[0]!r}]: a column holds an unexpected value: {e}") from e


def approval_writer(record: StoredApproval) -> Callable[..., None]:
    """The insert of a requested approval, run in the commit of its ``decision`` as
    ``write(conn, index=...)`` (the decision's index; its ``approval.requested`` event
    follows it)."""

    def write(conn: Connection, index: int = -1) -> None:
        conn.execute(
            f"INSERT INTO approvals ({_COLUMNS}) VALUES ({', '.join('?' * 18)})",  # noqa: S608 - constant
            (
                record.id,
                record.principal,
                record.action,
                record.resource,
                record.args_digest,
                record.executable_digest,
                record.zone,
                orjson.dumps(list(record.policies)).decode(),
                "pending",
                record.requested,
                record.expires,
                index,
                index + 1,
                "",
                0,
                -1,
                "",
                -1,
            ),
        )

    return write


def approval(conn: Connection, approval_id: str) -> StoredApproval | None:
    """The approval's row, or ``None``."""
    query = f"SELECT {_COLUMNS} FROM approvals WHERE id = ?"  # noqa: S608 - constant
    row = conn.execute(query, (approval_id,)).fetchone()
    return None if row is None else _record(row)


def approvals(
    conn: Connection, *, status: str | None, now: int, limit: int = MAX_LISTED
) -> list[StoredApproval]:
    """Approvals, newest first, at most ``limit``; with ``status``, only those that
    are in it at ``now`` (one of :data:`APPROVAL_STATUSES`)."""
    select = f"SELECT {_COLUMNS} FROM approvals"  # noqa: S608 - constant
    if status is None:
        rows = conn.execute(f"{select} ORDER BY requested DESC, id LIMIT ?", (limit,)).fetchall()
    elif status == "expired":
        rows = conn.execute(
            f"{select} WHERE status IN ('pending', 'deciding', 'approved', 'using') "
            "AND expires <= ? ORDER BY requested DESC, id LIMIT ?",
            (now, limit),
        ).fetchall()
    else:
        stored = {"pending": ("pending", "deciding"), "approved": ("approved", "using")}.get(
            status, (status, status)
        )
        live = status in ("pending", "approved")
        rows = conn.execute(
            f"{select} WHERE status IN (?, ?) AND (expires > ? OR ? = 0) ORDER BY requested DESC, id LIMIT ?",
            (*stored, now, int(live), limit),
        ).fetchall()
    return [_record(r) for r in rows]


def claim_decision(conn: Connection, approval_id: str, now: int) -> bool:
    """Take a pending, unexpired approval for deciding; ``False`` if it is not that."""
    cursor = conn.execute(
        "UPDATE approvals SET status = 'deciding' WHERE id = ? AND status = 'pending' AND expires > ?",
        (approval_id, now),
    )
    return cursor.rowcount == 1


def decided_writer(approval_id: str, *, status: str, by: str, at: int) -> Callable[..., None]:
    """The decision of a claimed approval, run in the commit of its ``approval.decided``
    event (``index``: that event's)."""
    if status not in ("approved", "denied"):
        raise StoreError(f"expected approved or denied, found {status!r}")

    def write(conn: Connection, index: int = -1) -> None:
        conn.execute(
            "UPDATE approvals SET status = ?, decided_by = ?, decided = ?, decided_index = ? "
            "WHERE id = ? AND status = 'deciding'",
            (status, by, at, index, approval_id),
        )

    return write


def claim_use(conn: Connection, found: StoredApproval, now: int) -> bool:
    """Take an approved, unexpired approval, still bound as ``found`` says, for the
    warrant about to be issued; ``False`` if another request took it first."""
    cursor = conn.execute(
        "UPDATE approvals SET status = 'using' WHERE id = ? AND status = 'approved' AND expires > ? "
        "AND principal = ? AND action = ? AND resource = ? AND args_digest = ? "
        "AND executable_digest = ? AND zone = ?",
        (
            found.id,
            now,
            found.principal,
            found.action,
            found.resource,
            found.args_digest,
            found.executable_digest,
            found.zone,
        ),
    )
    return cursor.rowcount == 1


def used_writer(approval_id: str, warrant_id: str) -> Callable[[Connection, int], None]:
    """Mark a claimed approval used by ``warrant_id``, in the commit of its
    ``warrant.issued`` event: ``write(conn, index)`` with that event's index."""

    def write(conn: Connection, index: int) -> None:
        conn.execute(
            "UPDATE approvals SET status = 'used', warrant = ?, used_index = ? "
            "WHERE id = ? AND status = 'using'",
            (warrant_id, index, approval_id),
        )

    return write


def release(conn: Connection, approval_id: str, claimed: str) -> bool:
    """Give a claim back (its commit failed): ``deciding`` to pending, ``using`` to approved."""
    back = {"deciding": "pending", "using": "approved"}[claimed]
    cursor = conn.execute(
        "UPDATE approvals SET status = ? WHERE id = ? AND status = ?", (back, approval_id, claimed)
    )
    return cursor.rowcount == 1


def call_writer(
    principal: str, resource: str, args_digest: str, at: int
) -> Callable[[Connection, int, str], None]:
    """The ``calls`` row of a warrant, in the commit of its ``warrant.issued`` event:
    ``write(conn, index, warrant_id)``."""

    def write(conn: Connection, index: int, warrant_id: str) -> None:
        conn.execute(
            "INSERT INTO calls (warrant, principal, resource, args_digest, at) VALUES (?, ?, ?, ?, ?)",
            (warrant_id, principal, resource, args_digest, at),
        )

    return write


def count_calls(
    conn: Connection, principal: str, resource: str, since: int, *, besides: Sequence[str] = ()
) -> int:
    """Calls of ``resource`` by ``principal`` at or after unix time ``since``, leaving
    out the warrants ``besides`` (counted by the caller), in one snapshot."""
    row = conn.execute(
        "SELECT count(*) FROM calls WHERE principal = ? AND resource = ? AND at >= ?"  # noqa: S608 - placeholders only
        + not_in("warrant", besides),
        (principal, resource, since, *besides),
    ).fetchone()
    return int(row[0])


def distinct_arguments(
    conn: Connection, principal: str, resource: str, since: int, args_digest: str, *, also: Sequence[str] = ()
) -> tuple[int, bool]:
    """The distinct argument digests of ``principal``'s calls of ``resource`` since
    ``since`` together with the digests ``also`` (calls the caller holds), and whether
    ``args_digest`` is one of the stored ones; one statement, one snapshot."""
    stored = "SELECT DISTINCT args_digest FROM calls WHERE principal = ? AND resource = ? AND at >= ?"
    placeholders = ", ".join("(?)" for _ in also)
    held = f" UNION SELECT column1 FROM (VALUES {placeholders}) AS held" if also else ""  # noqa: S608 - placeholders only
    row = conn.execute(
        f"SELECT (SELECT count(*) FROM ({stored}{held}) AS every_digest), "  # noqa: S608 - placeholders only
        f"(SELECT count(*) FROM calls WHERE principal = ? AND resource = ? AND at >= ? AND args_digest = ?)",
        (principal, resource, since, *also, principal, resource, since, args_digest),
    ).fetchone()
    return int(row[0]), int(row[1]) > 0
