"""Principals and revocations: who may act, and what was revoked (tables ``principals``
and ``revocations``).

Query functions take a :class:`~proctor.store.sql.Connection` and hold SQL in the
common subset of SQLite and PostgreSQL (:mod:`proctor.store.sql`); the ``*_writer``
functions return ``write(conn, index=-1)`` for the log to run inside the commit of the
event that explains the row (both or neither). Driver errors pass through: the state
store, or the log store that runs a writer, wraps them.

Rules the database holds (its backend's DDL): a principal's name is unique ignoring
case and a public key belongs to one principal; a revocation is keyed by
``(kind, target)`` and a later one replaces it (a principal revoked, resumed and
revoked again must have its latest index).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from proctor.errors import StoreConflictError, StoreError
from proctor.store.records import PrincipalRecord, RevocationRecord
from proctor.store.sql import INTEGRITY_ERRORS, Connection

__all__ = [
    "principal_writer",
    "principal",
    "principal_like",
    "principal_with_key",
    "principals",
    "revocation_writer",
    "revocation",
    "revocations",
    "is_revoked",
    "revoked_index",
    "TARGET_KINDS",
    "target_exists",
]


# -- principals ----------------------------------------------------------------


def principal_writer(record: PrincipalRecord) -> Callable[..., None]:
    """Insert a principal, or update the one with this exact name, as ``write(conn,
    index=...)`` inside another transaction (the log commit of the principal's event:
    both or neither).

    An upsert on the name, never ``INSERT OR REPLACE``: replacing would silently
    delete whichever *other* principal a unique index found in the way.

    The write raises :class:`~proctor.errors.StoreConflictError` if another principal
    has this name ignoring case, or this public key (nothing is replaced).
    """
    row = (
        record.name,
        record.public_key,
        orjson.dumps(record.attrs, option=orjson.OPT_SORT_KEYS).decode(),
        record.zone,
        record.status,
        record.created,
        record.updated,
    )

    def write(conn: Connection, index: int = -1) -> None:
        try:
            conn.execute(
                "INSERT INTO principals (name, public_key, attrs, zone, status, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "public_key = excluded.public_key, attrs = excluded.attrs, zone = excluded.zone, "
                "status = excluded.status, created = excluded.created, updated = excluded.updated",
                row,
            )
        except INTEGRITY_ERRORS as e:
            raise StoreConflictError(
                f"cannot store principal {record.name!r}: expected a name unique ignoring case and a "
                f"public key no other principal has ({e})"
            ) from e

    return write


def principal(conn: Connection, name: str) -> PrincipalRecord | None:
    """The principal named ``name``."""
    row = conn.execute(
        "SELECT name, public_key, attrs, zone, status, created, updated FROM principals WHERE name = ?",
        (name,),
    ).fetchone()
    return None if row is None else _principal(row)


def principal_like(conn: Connection, name: str) -> PrincipalRecord | None:
    """The principal whose name equals ``name`` ignoring (ASCII) case, if any."""
    row = conn.execute(
        "SELECT name, public_key, attrs, zone, status, created, updated FROM principals "
        "WHERE lower(name) = lower(?)",
        (name,),
    ).fetchone()
    return None if row is None else _principal(row)


def principal_with_key(conn: Connection, public_key: str) -> PrincipalRecord | None:
    """The principal registered with this public key (canonical base64), if any."""
    row = conn.execute(
        "SELECT name, public_key, attrs, zone, status, created, updated FROM principals WHERE public_key = ?",
        (public_key,),
    ).fetchone()
    return None if row is None else _principal(row)


def principals(conn: Connection) -> list[PrincipalRecord]:
    """Every principal, by name."""
    rows = conn.execute(
        "SELECT name, public_key, attrs, zone, status, created, updated FROM principals ORDER BY name"
    ).fetchall()
    return [_principal(r) for r in rows]


def _principal(row: tuple[Any, ...]) -> PrincipalRecord:
    name, public_key, attrs, zone, status, created, updated = row
    return PrincipalRecord(
        str(name),
        str(public_key),
        dict(orjson.loads(attrs)),
        str(zone),
        str(status),
        str(created),
        str(updated),
    )


# -- revocations ---------------------------------------------------------------


def revocation_writer(record: RevocationRecord) -> Callable[..., None]:
    """Record a revocation as ``write(conn, index=...)`` inside another transaction,
    with the log index of the ``revocation`` event (the commit that records the event:
    both or neither); a later revocation of the same target replaces it. Revoking an
    execution that is running marks it ``terminating`` (reason ``revoked``) in the same
    transaction."""
    row = (record.kind, record.target, record.reason, record.by, record.time)

    def write(conn: Connection, index: int = -1) -> None:
        conn.execute(
            "INSERT INTO revocations (kind, target, reason, by, time, log_index) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, target) DO UPDATE SET "
            "reason = excluded.reason, by = excluded.by, time = excluded.time, "
            "log_index = excluded.log_index",
            (*row, index),
        )
        if record.kind == "execution":
            conn.execute(
                "UPDATE executions SET status = 'terminating', reason = 'revoked' "
                "WHERE id = ? AND status = 'running'",
                (record.target,),
            )

    return write


def revocation(conn: Connection, kind: str, target: str) -> RevocationRecord | None:
    """The latest revocation of (kind, target), or ``None``."""
    row = conn.execute(
        "SELECT kind, target, reason, by, time, log_index FROM revocations WHERE kind = ? AND target = ?",
        (kind, target),
    ).fetchone()
    return None if row is None else _revocation(row)


def revocations(conn: Connection, since: int = -1) -> list[RevocationRecord]:
    """Revocations recorded after log index ``since``, in log order."""
    rows = conn.execute(
        "SELECT kind, target, reason, by, time, log_index FROM revocations WHERE log_index > ? "
        "ORDER BY log_index",
        (since,),
    ).fetchall()
    return [_revocation(r) for r in rows]


def is_revoked(conn: Connection, kind: str, target: str) -> bool:
    """Whether (kind, target) is revoked."""
    row = conn.execute("SELECT 1 FROM revocations WHERE kind = ? AND target = ?", (kind, target)).fetchone()
    return row is not None


def revoked_index(conn: Connection, kind: str, target: str) -> int | None:
    """The log index of the latest revocation of (kind, target), or ``None``."""
    row = conn.execute(
        "SELECT log_index FROM revocations WHERE kind = ? AND target = ?", (kind, target)
    ).fetchone()
    return None if row is None else int(row[0])


def _revocation(row: tuple[Any, ...]) -> RevocationRecord:
    kind, target, reason, by, time, log_index = row
    return RevocationRecord(str(kind), str(target), str(reason), str(by), str(time), int(log_index))


# -- what can be revoked ---------------------------------------------------------

_EXISTS = {
    "warrant": "SELECT 1 FROM warrants WHERE id = ?",
    "execution": "SELECT 1 FROM executions WHERE id = ?",
    "principal": "SELECT 1 FROM principals WHERE name = ?",
    "policy": "SELECT 1 FROM bundles WHERE digest = ?",
}

TARGET_KINDS = frozenset(_EXISTS)
"""The kinds :func:`target_exists` knows (what a revocation may name)."""


def target_exists(conn: Connection, kind: str, target: str) -> bool:
    """Whether the governor knows a ``warrant`` (issued by it), an ``execution``, a
    ``principal`` or a ``policy`` bundle (stored) of this id.

    Raises:
        StoreError: ``kind`` is none of those.
    """
    query = _EXISTS.get(kind)
    if query is None:
        raise StoreError(f"expected a kind in {sorted(_EXISTS)}, found {kind!r}")
    return conn.execute(query, (target,)).fetchone() is not None
