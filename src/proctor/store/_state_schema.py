"""The state tables' schema on SQLite and its migrations (:mod:`proctor.store.state` uses them).

:data:`SQLITE_STATE_SCHEMA` is the schema as numbered steps
(:mod:`proctor.store.migrations`): version 1 is the tables below; version 2 adds the
``nodes`` table (:mod:`proctor.store.state_nodes`, the same DDL on PostgreSQL); version 3 the
``approvals`` and ``calls`` tables (:mod:`proctor.store.state_approvals`, the same DDL on
PostgreSQL). Its ``settle`` hook
completes, on every open, a database that was labelled version 1 before versioned
migrations existed: such a database gets what was added to version 1 since it was
written: tables (:data:`ADDED_TABLES`), columns (:data:`ADDED_COLUMNS`), the identity
indexes and the bundle triggers (:func:`add_constraints`). Nothing is ever dropped or
rewritten: a database whose rows already break an identity rule is refused with what
to fix. A later change is a new numbered step, not another addition here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from proctor.errors import StoreConflictError
from proctor.store.migrations import Migration, Schema
from proctor.store.state_approvals import APPROVALS_DDL, APPROVALS_SUMMARY
from proctor.store.state_nodes import NODES_DDL

__all__ = [
    "ADDED_COLUMNS",
    "ADDED_TABLES",
    "NODES_SUMMARY",
    "SCHEMA",
    "SQLITE_STATE_SCHEMA",
    "STATE_SCHEMA_VERSION",
    "add_columns",
    "add_constraints",
]

STATE_SCHEMA_VERSION = 3

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS principals (
        name TEXT PRIMARY KEY, public_key TEXT NOT NULL, attrs TEXT NOT NULL,
        zone TEXT NOT NULL, status TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS bundles (
        digest TEXT PRIMARY KEY, version INTEGER NOT NULL, doc TEXT NOT NULL,
        activated TEXT NOT NULL, log_index INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS revocations (
        kind TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL, by TEXT NOT NULL,
        time TEXT NOT NULL, log_index INTEGER NOT NULL, PRIMARY KEY (kind, target))""",
    """CREATE TABLE IF NOT EXISTS warrants (
        id TEXT PRIMARY KEY, principal TEXT NOT NULL, parent TEXT NOT NULL,
        decision_index INTEGER NOT NULL, expires INTEGER NOT NULL, issued INTEGER NOT NULL,
        issued_index INTEGER NOT NULL DEFAULT -1, token TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS executions (
        id TEXT PRIMARY KEY, warrant TEXT NOT NULL UNIQUE, principal TEXT NOT NULL,
        status TEXT NOT NULL, reason TEXT NOT NULL, bundle TEXT NOT NULL,
        request TEXT NOT NULL, started_index INTEGER NOT NULL, indices TEXT NOT NULL,
        lease_expires_ms INTEGER NOT NULL, ttl_ms INTEGER NOT NULL, started INTEGER NOT NULL,
        ended INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS executions_by_principal ON executions (principal, status)",
    "CREATE INDEX IF NOT EXISTS warrants_by_principal ON warrants (principal, issued)",
    """CREATE TABLE IF NOT EXISTS nonces (
        keyid TEXT NOT NULL, nonce TEXT NOT NULL, expires INTEGER NOT NULL,
        PRIMARY KEY (keyid, nonce)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires)",
    """CREATE TABLE IF NOT EXISTS auth_failures (
        id INTEGER PRIMARY KEY, time INTEGER NOT NULL, keyid TEXT NOT NULL,
        reason TEXT NOT NULL, detail TEXT NOT NULL)""",
]

# Identity and history rules, added to every state database when it is opened (a data
# directory made before them gets them then; see add_constraints). Names are ASCII
# ([A-Za-z0-9._-]), so SQLite's lower() folds all of their case.
_PRINCIPAL_INDEXES = {
    "principals_name_nocase": "CREATE UNIQUE INDEX principals_name_nocase ON principals (lower(name))",
    "principals_public_key": "CREATE UNIQUE INDEX principals_public_key ON principals (public_key)",
}
_DUPLICATES = {
    "principals_name_nocase": (
        "SELECT group_concat(name, ', ') FROM principals GROUP BY lower(name) HAVING count(*) > 1",
        "differ only in case",
    ),
    "principals_public_key": (
        "SELECT group_concat(name, ', ') FROM principals GROUP BY public_key HAVING count(*) > 1",
        "share one public key",
    ),
}
_BUNDLE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS bundles_version_forward BEFORE INSERT ON bundles
        WHEN NEW.version <= (SELECT max(version) FROM bundles)
        BEGIN SELECT RAISE(ABORT, 'bundle versions only go forward'); END""",
    """CREATE TRIGGER IF NOT EXISTS bundles_no_update BEFORE UPDATE ON bundles
        BEGIN SELECT RAISE(ABORT, 'bundle activations are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS bundles_no_delete BEFORE DELETE ON bundles
        BEGIN SELECT RAISE(ABORT, 'bundle activations are append-only'); END""",
]


ADDED_COLUMNS = (
    # (table, column, definition): columns added since schema version 1 was first
    # written; an older database gets them (with their default) when opened.
    ("executions", "presented", "TEXT NOT NULL DEFAULT ''"),
)


ADDED_TABLES = (
    # Tables added since schema version 1 was first written.
    # openings: per decision, the salt and arguments its logged argument commitment
    # hides (proctor.policy.commitment): private, like the rest of this file.
    """CREATE TABLE IF NOT EXISTS openings (
        decision_index INTEGER PRIMARY KEY, opening TEXT NOT NULL)""",
)


def add_columns(conn: sqlite3.Connection) -> None:
    for statement in ADDED_TABLES:
        conn.execute(statement)
    for table, column, definition in ADDED_COLUMNS:
        present = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def add_constraints(conn: sqlite3.Connection, path: str | Path) -> None:
    """Create the identity indexes and the bundle triggers if missing (in the caller's
    transaction). Stored principals that already break an identity rule are reported,
    never dropped: the operator decides which to keep."""
    present = {str(n) for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    for name, create in _PRINCIPAL_INDEXES.items():
        if name in present:
            continue
        query, what = _DUPLICATES[name]
        clashes = [str(names) for (names,) in conn.execute(query)]
        if clashes:
            found = "; ".join(f"{{{c}}}" for c in clashes)
            raise StoreConflictError(
                f"{path}: expected principal names unique ignoring case and one public key per "
                f"principal, found principals that {what}: {found}. Nothing was changed; keep one "
                f"of each group (rename or delete the others in the principals table, e.g. with "
                f"sqlite3) and open the data directory again"
            )
        conn.execute(create)
    for trigger in _BUNDLE_TRIGGERS:
        conn.execute(trigger)


NODES_SUMMARY = "the nodes table: each governor node's zone, version, URL, heartbeat and log position"
"""Step 2 on every backend (the DDL is common: :mod:`proctor.store.state_nodes`)."""


def _settle_v1(conn: sqlite3.Connection, where: str) -> None:
    """Version 1 as it is now, on a database labelled 1 before (idempotent)."""
    add_columns(conn)
    add_constraints(conn, where)


def _create_v1(conn: sqlite3.Connection, where: str) -> None:
    for statement in SCHEMA:
        conn.execute(statement)
    _settle_v1(conn, where)


def _create_v2(conn: sqlite3.Connection, where: str) -> None:
    conn.execute(NODES_DDL)


def _create_v3(conn: sqlite3.Connection, where: str) -> None:
    for statement in APPROVALS_DDL:
        conn.execute(statement)


SQLITE_STATE_SCHEMA: Schema[sqlite3.Connection] = Schema(
    "SQLite",
    (
        Migration(
            1,
            "the state tables: principals, bundles, revocations, warrants, executions, openings, "
            "nonces, auth_failures; the identity indexes and the bundle rules",
            safe=True,
            apply=_create_v1,
        ),
        Migration(2, NODES_SUMMARY, safe=True, apply=_create_v2),
        Migration(3, APPROVALS_SUMMARY, safe=True, apply=_create_v3),
    ),
    settle=_settle_v1,
)
"""The state schema's steps on SQLite; its latest version is :data:`STATE_SCHEMA_VERSION`."""
