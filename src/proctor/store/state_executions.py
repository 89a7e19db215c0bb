"""Executions: one row per started execution (table ``executions``).

A warrant starts at most one execution (``warrant`` is unique). The row holds its
status, the policy bundle it runs under, the decision's request (for re-evaluation
under a new policy), the log indices of its events (a JSON array, in log order) and
its lease. The governor writes it inside the log commits of the execution's events
(:func:`execution_writer`, :func:`execution_update_writer`) and persists lease
deadlines as side writes (:func:`write_leases`).

Summaries (:func:`execution_summary`) are what may be shown: the request's action,
resource and zone are read here and its arguments dropped, so they never leave the
store; newest start first, ties in the order the executions started (their
``execution.started`` log index).

Query functions and writers as in :mod:`proctor.store.state_principals` (common SQL
subset, driver errors pass through).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from proctor.errors import ProctorError, StoreError
from proctor.store.records import ExecutionSummary, NewExecution, StoredExecution
from proctor.store.sql import Connection

__all__ = [
    "EXECUTION_COLUMNS",
    "execution_writer",
    "execution_update_writer",
    "update_execution",
    "write_leases",
    "claim_warrant",
    "execution",
    "execution_summary",
    "execution_summaries",
    "running_executions",
    "running_leases",
    "running_count",
    "starts_after",
    "lapsed_executions",
    "renew_leases",
    "mark_terminating",
]

EXECUTION_COLUMNS = frozenset({"status", "reason", "bundle", "indices", "lease_expires_ms", "ended"})
"""The columns of an execution that may change after it started."""


def execution_writer(record: NewExecution) -> Callable[..., None]:
    """The insert of a started execution's row, to run inside the log commit of its
    ``execution.started`` event as ``write(conn, index=...)``: the index becomes its
    ``started_index`` and the last of its ``indices``. A second start of the same
    warrant violates the row's uniqueness and fails that commit: both or neither."""
    row = (
        record["id"],
        record["warrant"],
        record["principal"],
        record["bundle"],
        record["request"],
        record["started_index"],
        orjson.dumps(record["indices"]).decode(),
        record["lease_expires_ms"],
        record["ttl_ms"],
        record["started"],
        record.get("presented", ""),
    )

    def write(conn: Connection, index: int = -1) -> None:
        values = (
            row
            if index < 0
            else (*row[:5], index, orjson.dumps([*record["indices"], index]).decode(), *row[7:])
        )
        conn.execute(
            "INSERT INTO executions (id, warrant, principal, status, reason, bundle, request, "
            "started_index, indices, lease_expires_ms, ttl_ms, started, presented) "
            "VALUES (?, ?, ?, 'running', '', ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )

    return write


def execution_update_writer(
    execution_id: str, *, event_index: bool = True, **fields: Any
) -> Callable[..., None]:
    """:func:`update_execution` inside the log commit of the event that changes it, as
    ``write(conn, index=...)``; with ``event_index`` the event's index is appended to
    the execution's ``indices`` in the same statement. An end (a ``status`` other than
    running or terminating) applies only to a live execution: ``write`` raises
    :class:`~proctor.errors.StoreError` (failing the commit) if it had ended already.

    Raises:
        StoreError: a field is not one of :data:`EXECUTION_COLUMNS`.
    """
    sql, params = _update(fields)
    # An end is written once: only over a live execution, and a commit that finds it
    # ended already fails whole (a node whose transition lock's session died while it
    # changed the execution must not record a second end beside another node's).
    ends = fields.get("status") not in (None, "running", "terminating")
    if ends:
        sql += " AND status IN ('running', 'terminating')"

    def write(conn: Connection, index: int = -1) -> None:
        if event_index and index >= 0:
            # The stored array is compact JSON ("[]", "[1,2]"): append ",N" before its
            # "]" in one statement, so no concurrent writer's index is lost.
            conn.execute(
                "UPDATE executions SET indices = CASE WHEN indices = '[]' THEN '[' || ? || ']' "
                "ELSE substr(indices, 1, length(indices) - 1) || ',' || ? || ']' END WHERE id = ?",
                (str(index), str(index), execution_id),
            )
        if sql:
            cursor = conn.execute(sql, (*params, execution_id))
            if ends and cursor.rowcount != 1:
                raise StoreError(
                    f"expected execution {execution_id} running or terminating, found it ended "
                    "(its end was recorded already)"
                )

    return write


def update_execution(conn: Connection, /, execution_id: str, **fields: Any) -> None:
    """Change some columns of an execution (``indices`` is encoded).

    Raises:
        StoreError: no field, or one that is not in :data:`EXECUTION_COLUMNS`.
    """
    if not fields:
        raise StoreError("expected at least one execution column to update")
    sql, params = _update(fields)
    conn.execute(sql, (*params, execution_id))


def _update(fields: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """``UPDATE executions SET … WHERE id = ?`` for ``fields`` (``indices`` encoded)."""
    if not set(fields) <= EXECUTION_COLUMNS:
        raise StoreError(f"cannot update execution columns {sorted(fields)}")
    if not fields:
        return "", ()
    if "indices" in fields:
        fields = {**fields, "indices": orjson.dumps(fields["indices"]).decode()}
    assignments = ", ".join(f"{k} = ?" for k in fields)
    return f"UPDATE executions SET {assignments} WHERE id = ?", tuple(fields.values())  # noqa: S608 - column names are from the allow-list above


def write_leases(conn: Connection, deadlines: dict[str, int]) -> None:
    """On the log writer's connection (a side write): the lease deadlines
    (execution id → ms) of executions still running (others are left as they are).

    Raises:
        StoreError: the rows cannot be written (the whole commit fails).
    """
    try:
        conn.executemany(
            "UPDATE executions SET lease_expires_ms = ? WHERE id = ? AND status = 'running'",
            [(expires, ex) for ex, expires in deadlines.items()],
        )
    except ProctorError:
        raise
    except Exception as e:  # any backend's driver error (an adapted connection raises its own)
        raise StoreError(f"cannot persist lease deadlines: {e}") from e


def claim_warrant(conn: Connection, warrant_id: str) -> bool:
    """Whether the warrant has not started an execution yet."""
    row = conn.execute("SELECT 1 FROM executions WHERE warrant = ?", (warrant_id,)).fetchone()
    return row is None


def execution(conn: Connection, execution_id: str) -> StoredExecution | None:
    """The execution's row, with ``indices`` decoded.

    Raises:
        StoreError: a column of its row holds a value of the wrong type.
    """
    row = conn.execute(
        "SELECT id, warrant, principal, status, reason, bundle, request, started_index, indices, "
        "lease_expires_ms, ttl_ms, started, ended, presented FROM executions WHERE id = ?",
        (execution_id,),
    ).fetchone()
    if row is None:
        return None
    try:
        return StoredExecution(
            id=str(row[0]),
            warrant=str(row[1]),
            principal=str(row[2]),
            status=str(row[3]),
            reason=str(row[4]),
            bundle=str(row[5]),
            request=str(row[6]),
            started_index=int(row[7]),
            indices=[int(i) for i in orjson.loads(row[8])],
            lease_expires_ms=int(row[9]),
            ttl_ms=int(row[10]),
            started=int(row[11]),
            ended=int(row[12]),
            presented=str(row[13]),
        )
    except (TypeError, ValueError) as e:  # a row written by something else
        raise StoreError(f"executions[{execution_id}]: a column holds an unexpected value: {e}") from e


_SUMMARY = (
    "SELECT id, principal, warrant, request, status, reason, bundle, started, ended, lease_expires_ms, "
    "ttl_ms, indices FROM executions"
)


def execution_summary(conn: Connection, execution_id: str) -> ExecutionSummary | None:
    """The summary of one execution, or ``None`` if there is none by that id.

    Raises:
        StoreError: its row cannot be decoded.
    """
    row = conn.execute(f"{_SUMMARY} WHERE id = ?", (execution_id,)).fetchone()
    return None if row is None else _summary(row)


def execution_summaries(
    conn: Connection, *, principal: str | None, live_only: bool, limit: int
) -> list[ExecutionSummary]:
    """Summaries of executions, newest start first (ties: the later start first).

    Args:
        conn: the connection to read with.
        principal: only this principal's (``None``: everyone's).
        live_only: only those still ``running`` or ``terminating``.
        limit: at most this many (1 or more).

    Raises:
        StoreError: ``limit`` is below 1, or a row cannot be decoded.
    """
    if type(limit) is not int or limit < 1:
        raise StoreError(f"expected a limit of at least 1, found {limit!r}")
    where, params = [], []
    if principal is not None:
        where.append("principal = ?")
        params.append(principal)
    if live_only:
        where.append("status IN ('running', 'terminating')")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"{_SUMMARY}{clause} ORDER BY started DESC, started_index DESC, id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_summary(row) for row in rows]


def _summary(row: tuple[Any, ...]) -> ExecutionSummary:
    ex, principal, warrant = (str(v) for v in row[:3])
    action, resource, zone = _shown_request(ex, row[3])
    status, reason, bundle = (str(v) for v in row[4:7])
    try:
        started, ended, expires, ttl = (int(v) for v in row[7:11])
        indices = tuple(int(i) for i in orjson.loads(row[11]))
    except (orjson.JSONDecodeError, TypeError, ValueError) as e:
        raise StoreError(f"execution {ex!r}: expected integer times and log indices, found {e}") from e
    return ExecutionSummary(
        ex, principal, warrant, action, resource, zone, status, reason, bundle,
        started, ended, expires, ttl, indices,
    )  # fmt: skip


def _shown_request(execution_id: str, request: Any) -> tuple[str, str, str]:
    """The request's action, resource and zone (``""`` where absent); nothing else of
    it, its arguments least of all, is kept."""
    try:
        decoded = orjson.loads(request)
    except (orjson.JSONDecodeError, TypeError) as e:
        raise StoreError(f"execution {execution_id!r}: expected its request as JSON, found {e}") from e
    if not isinstance(decoded, dict):
        return "", "", ""
    action, resource, zone = (decoded.get(k) for k in ("action", "resource", "zone"))
    return _text(action), _text(resource), _text(zone)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def running_executions(conn: Connection) -> list[tuple[str, str]]:
    """``(execution id, principal)`` of every execution with status ``running``."""
    rows = conn.execute("SELECT id, principal FROM executions WHERE status = 'running'").fetchall()
    return [(str(i), str(p)) for i, p in rows]


def running_leases(conn: Connection) -> list[tuple[str, int]]:
    """``(execution id, lease deadline ms)`` of every running execution."""
    rows = conn.execute(
        "SELECT id, lease_expires_ms FROM executions WHERE status IN ('running', 'terminating')"
    ).fetchall()
    return [(str(i), int(e)) for i, e in rows]


# -- several governor processes on one store (ADR 0016) ---------------------------------


def running_count(conn: Connection, principal: str) -> int:
    """How many executions of ``principal`` have status ``running``."""
    row = conn.execute(
        "SELECT count(*) FROM executions WHERE principal = ? AND status = 'running'", (principal,)
    ).fetchone()
    return int(row[0])


def starts_after(conn: Connection, principal: str, after: int) -> int:
    """How many executions ``principal`` started after unix second ``after``."""
    row = conn.execute(
        "SELECT count(*) FROM executions WHERE principal = ? AND started > ?", (principal, after)
    ).fetchone()
    return int(row[0])


def lapsed_executions(conn: Connection, cutoff_ms: int) -> list[str]:
    """Ids of the executions still ``running`` or ``terminating`` whose stored lease had
    lapsed at ``cutoff_ms`` (ended before it), oldest lease first."""
    rows = conn.execute(
        "SELECT id FROM executions WHERE status IN ('running', 'terminating') AND lease_expires_ms < ? "
        "ORDER BY lease_expires_ms",
        (cutoff_ms,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def renew_leases(conn: Connection, rows: list[tuple[str, int, int]]) -> list[bool]:
    """In the caller's transaction: extend leases ``(execution id, new deadline ms, now
    ms)``, each only if the execution is still ``running`` and its stored lease has not
    lapsed at ``now`` (a lapsed lease is never revived: the sweeper may be closing it).

    Returns:
        Whether each lease was extended (in order).
    """
    renewed = []
    for execution_id, expires, now_ms in rows:
        cursor = conn.execute(
            "UPDATE executions SET lease_expires_ms = ? "
            "WHERE id = ? AND status = 'running' AND lease_expires_ms >= ?",
            (expires, execution_id, now_ms),
        )
        renewed.append(cursor.rowcount == 1)
    return renewed


def mark_terminating(conn: Connection, execution_id: str, reason: str) -> bool:
    """Mark a ``running`` execution ``terminating`` with ``reason``; ``False`` (nothing
    changed) if it is not running any more (it ended, or was revoked, meanwhile)."""
    cursor = conn.execute(
        "UPDATE executions SET status = 'terminating', reason = ? WHERE id = ? AND status = 'running'",
        (reason, execution_id),
    )
    return cursor.rowcount == 1
