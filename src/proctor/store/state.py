"""Governance state beside the log, in the same SQLite file: principals, policy
bundles, revocations, issued warrants, request nonces and authentication failures.

The lineage log is the record of what happened; this is the current state derived
from it, kept for fast lookups. Every change here is made by the governor right after
the corresponding log append, so the log can always explain the state.

Tables (schema version ``state_schema`` in ``meta``):

- ``principals``: name, public key, attributes (canonical JSON), zone, status.
- ``bundles``: every accepted signed bundle by digest; ``meta.active_bundle`` names
  the active one.
- ``revocations``: (kind, target) → reason, by whom, when, log index.
- ``warrants``: issued warrants: id, principal, parent, decision index, expiry, issue
  time, the ``warrant.issued`` index and the token (rate counters, "revoke a
  principal", parent chains and receipts read it).
- ``executions``: one row per started execution (a warrant starts at most one): its
  status, the policy bundle it runs under, the decision's request (for re-evaluation),
  the log indices of its events, and its lease.
- ``nonces``: (key id, nonce) → expiry, for replay protection of signed requests.
- ``auth_failures``: a bounded record of rejected requests (not logged in the Merkle
  log, so that unauthenticated callers cannot grow it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from proctor.errors import StoreError
from proctor.store._connections import ThreadConnections

__all__ = ["STATE_SCHEMA_VERSION", "PrincipalRecord", "RevocationRecord", "StateStore"]

STATE_SCHEMA_VERSION = 1
MAX_AUTH_FAILURES = 10_000

_SCHEMA = [
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


@dataclass(frozen=True)
class PrincipalRecord:
    """A stored principal."""

    name: str
    public_key: str
    attrs: dict[str, str]
    zone: str
    status: str
    created: str
    updated: str

    def to_json(self) -> dict[str, Any]:
        """The principal as the API shows it (every field; ``attrs`` copied)."""
        return asdict(self)


@dataclass(frozen=True)
class RevocationRecord:
    """A stored revocation."""

    kind: str
    target: str
    reason: str
    by: str
    time: str
    log_index: int

    def to_json(self) -> dict[str, Any]:
        """The revocation as the API shows it (every field)."""
        return asdict(self)


class StateStore:
    """Governance state in the data directory's SQLite file."""

    def __init__(self, path: str | Path) -> None:
        """Open the state tables, creating them if needed.

        Raises:
            StoreError: the database cannot be opened or has an unknown state schema.
        """
        self._path = str(path)
        self._connections = ThreadConnections(path, what="state store")
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT value FROM meta WHERE key = 'state_schema'").fetchone()
            if row is None:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('state_schema', ?)", (str(STATE_SCHEMA_VERSION),)
                )
            elif row[0] != str(STATE_SCHEMA_VERSION):
                conn.execute("ROLLBACK")
                raise StoreError(
                    f"{path}: expected state schema version {STATE_SCHEMA_VERSION}, found {row[0]!r}"
                )
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"cannot open the governance state in {path}: {e}") from e

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._conn().execute(sql, params)
        except sqlite3.Error as e:
            raise StoreError(f"state store: {e}") from e

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers."""
        self._exec("SELECT 1").fetchone()

    # -- principals ------------------------------------------------------------

    def put_principal(self, record: PrincipalRecord) -> None:
        """Insert or replace a principal."""
        self._exec(
            "INSERT OR REPLACE INTO principals VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.name,
                record.public_key,
                orjson.dumps(record.attrs, option=orjson.OPT_SORT_KEYS).decode(),
                record.zone,
                record.status,
                record.created,
                record.updated,
            ),
        )

    def principal(self, name: str) -> PrincipalRecord | None:
        """The principal named ``name``."""
        row = self._exec("SELECT * FROM principals WHERE name = ?", (name,)).fetchone()
        return None if row is None else _principal(row)

    def principals(self) -> list[PrincipalRecord]:
        """Every principal, by name."""
        return [_principal(r) for r in self._exec("SELECT * FROM principals ORDER BY name")]

    # -- policy bundles --------------------------------------------------------

    def put_bundle(self, digest: str, version: int, doc: str, activated: str, log_index: int) -> None:
        """Store an accepted bundle and make it the active one, in one transaction."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT OR REPLACE INTO bundles VALUES (?, ?, ?, ?, ?)",
                (digest, version, doc, activated, log_index),
            )
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('active_bundle', ?)", (digest,))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"cannot store bundle {digest}: {e}") from e

    def active_bundle(self) -> tuple[str, str] | None:
        """(digest, signed bundle JSON) of the active bundle, or ``None``."""
        row = self._exec(
            "SELECT b.digest, b.doc FROM meta m JOIN bundles b ON b.digest = m.value "
            "WHERE m.key = 'active_bundle'"
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def bundle(self, digest: str) -> str | None:
        """The signed bundle JSON with this digest."""
        row = self._exec("SELECT doc FROM bundles WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else str(row[0])

    def bundle_index(self, digest: str) -> int | None:
        """The log index of the ``policy.activated`` event of this bundle."""
        row = self._exec("SELECT log_index FROM bundles WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else int(row[0])

    def activations(self, since: int = -1) -> list[tuple[int, str]]:
        """(log index, digest) of bundle activations after log index ``since``."""
        rows = self._exec(
            "SELECT log_index, digest FROM bundles WHERE log_index > ? ORDER BY log_index", (since,)
        )
        return [(int(i), str(d)) for i, d in rows]

    def bundle_versions(self) -> list[tuple[str, int, str]]:
        """(digest, version, activated) of every stored bundle, oldest first."""
        rows = self._exec("SELECT digest, version, activated FROM bundles ORDER BY log_index")
        return [(str(d), int(v), str(a)) for d, v, a in rows]

    # -- revocations -----------------------------------------------------------

    def put_revocation(self, record: RevocationRecord) -> None:
        """Record a revocation; a later revocation of the same target replaces it (a
        principal revoked, resumed and revoked again must have its latest index)."""
        try:
            self.revocation_writer(record)(self._conn(), index=record.log_index)
        except sqlite3.Error as e:
            raise StoreError(f"state store: {e}") from e

    @staticmethod
    def revocation_writer(record: RevocationRecord) -> Callable[..., None]:
        """:meth:`put_revocation` to run inside another transaction as ``write(conn,
        index=...)``, with the log index of the ``revocation`` event (the commit that
        records the event: both or neither)."""
        row = (record.kind, record.target, record.reason, record.by, record.time)

        def write(conn: sqlite3.Connection, index: int = -1) -> None:
            conn.execute("INSERT OR REPLACE INTO revocations VALUES (?, ?, ?, ?, ?, ?)", (*row, index))
            if record.kind == "execution":
                conn.execute(
                    "UPDATE executions SET status = 'terminating', reason = 'revoked' "
                    "WHERE id = ? AND status = 'running'",
                    (record.target,),
                )

        return write

    def is_revoked(self, kind: str, target: str) -> bool:
        """Whether (kind, target) is revoked."""
        row = self._exec("SELECT 1 FROM revocations WHERE kind = ? AND target = ?", (kind, target)).fetchone()
        return row is not None

    def revoked_index(self, kind: str, target: str) -> int | None:
        """The log index of the latest revocation of (kind, target), or ``None``."""
        row = self._exec(
            "SELECT log_index FROM revocations WHERE kind = ? AND target = ?", (kind, target)
        ).fetchone()
        return None if row is None else int(row[0])

    def revocations(self, since: int = -1) -> list[RevocationRecord]:
        """Revocations recorded after log index ``since``, in log order."""
        rows = self._exec("SELECT * FROM revocations WHERE log_index > ? ORDER BY log_index", (since,))
        return [
            RevocationRecord(str(k), str(t), str(r), str(b), str(tm), int(i)) for k, t, r, b, tm, i in rows
        ]

    # -- warrants --------------------------------------------------------------

    def put_warrant(
        self,
        warrant_id: str,
        *,
        principal: str,
        parent: str,
        decision_index: int,
        expires: int,
        issued: int,
        issued_index: int = -1,
        token: str = "",
    ) -> None:
        """Record an issued warrant on its own (the governor writes the row inside the
        log commit of its ``warrant.issued`` event instead: :meth:`warrant_writer`)."""
        write = self.warrant_writer(
            warrant_id,
            principal=principal,
            parent=parent,
            decision_index=decision_index,
            expires=expires,
            issued=issued,
            token=token,
        )
        try:
            write(self._conn(), index=issued_index)
        except sqlite3.Error as e:
            raise StoreError(f"cannot record warrant {warrant_id}: {e}") from e

    @staticmethod
    def warrant_writer(
        warrant_id: str,
        *,
        principal: str,
        parent: str,
        decision_index: int,
        expires: int,
        issued: int,
        token: str = "",
    ) -> Callable[..., None]:
        """The insert of an issued warrant's row, to run inside another transaction
        as ``write(conn, index=...)`` with the index of its ``warrant.issued`` event (the
        log commit that records the event: both or neither)."""
        row = (warrant_id, principal, parent, decision_index, expires, issued)

        def write(conn: sqlite3.Connection, index: int = -1) -> None:
            conn.execute("INSERT INTO warrants VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*row, index, token))

        return write

    def warrant(self, warrant_id: str) -> dict[str, Any] | None:
        """The issued warrant's record."""
        row = self._exec("SELECT * FROM warrants WHERE id = ?", (warrant_id,)).fetchone()
        if row is None:
            return None
        keys = ("id", "principal", "parent", "decision_index", "expires", "issued", "issued_index", "token")
        return dict(zip(keys, row, strict=True))

    def warrant_chain(self, warrant_id: str, *, limit: int = 32) -> list[str]:
        """The warrant and its ancestors, nearest first (bounded by ``limit``)."""
        chain: list[str] = []
        current = warrant_id
        while current and len(chain) < limit:
            chain.append(current)
            row = self._exec("SELECT parent FROM warrants WHERE id = ?", (current,)).fetchone()
            current = "" if row is None else str(row[0])
        return chain

    def warrant_times(self, principal: str, since: int) -> list[int]:
        """Issue times (unix seconds) of the principal's warrants since ``since``, oldest first."""
        rows = self._exec(
            "SELECT issued FROM warrants WHERE principal = ? AND issued >= ? ORDER BY issued",
            (principal, since),
        )
        return [int(t) for (t,) in rows]

    def count_warrants(self, principal: str, since: int) -> int:
        """Warrants issued to ``principal`` at or after unix time ``since``."""
        row = self._exec(
            "SELECT count(*) FROM warrants WHERE principal = ? AND issued >= ?", (principal, since)
        ).fetchone()
        return int(row[0])

    # -- executions ------------------------------------------------------------

    def start_execution(self, record: dict[str, Any]) -> bool:
        """Record a started execution; ``False`` if its warrant already started one."""
        try:
            cur = self._conn().execute(
                "INSERT OR IGNORE INTO executions (id, warrant, principal, status, reason, bundle, request, "
                "started_index, indices, lease_expires_ms, ttl_ms, started) "
                "VALUES (?, ?, ?, 'running', '', ?, ?, ?, ?, ?, ?, ?)",
                (
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
                ),
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot record execution {record.get('id')}: {e}") from e
        return cur.rowcount == 1

    def claim_warrant(self, warrant_id: str) -> bool:
        """Whether the warrant has not started an execution yet."""
        row = self._exec("SELECT 1 FROM executions WHERE warrant = ?", (warrant_id,)).fetchone()
        return row is None

    def execution(self, execution_id: str) -> dict[str, Any] | None:
        """The execution's row, with ``indices`` decoded."""
        cur = self._exec("SELECT * FROM executions WHERE id = ?", (execution_id,))
        row = cur.fetchone()
        if row is None:
            return None
        record = dict(zip([d[0] for d in cur.description], row, strict=True))
        record["indices"] = orjson.loads(record["indices"])
        return record

    def update_execution(self, execution_id: str, **fields: Any) -> None:
        """Change some columns of an execution (``indices`` is encoded)."""
        allowed = {"status", "reason", "bundle", "indices", "lease_expires_ms", "ended"}
        if not fields or not set(fields) <= allowed:
            raise StoreError(f"cannot update execution columns {sorted(fields)}")
        if "indices" in fields:
            fields["indices"] = orjson.dumps(fields["indices"]).decode()
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE executions SET {assignments} WHERE id = ?", (*fields.values(), execution_id))  # noqa: S608 - column names are from the allow-list above

    def running_executions(self) -> list[tuple[str, str]]:
        """``(execution id, principal)`` of every execution with status ``running``."""
        rows = self._exec("SELECT id, principal FROM executions WHERE status = 'running'")
        return [(str(i), str(p)) for i, p in rows]

    def running_leases(self) -> list[tuple[str, int]]:
        """``(execution id, lease deadline ms)`` of every running execution."""
        rows = self._exec(
            "SELECT id, lease_expires_ms FROM executions WHERE status IN ('running', 'terminating')"
        )
        return [(str(i), int(e)) for i, e in rows]

    def set_meta(self, key: str, value: str) -> None:
        """Store a small named value (e.g. the index of the warrant key declaration)."""
        self._exec("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        """A named value stored with :meth:`set_meta`."""
        row = self._exec("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- replay protection and failures ---------------------------------------

    def live_nonces(self, now: int) -> list[tuple[str, str, int]]:
        """The stored request nonces that have not expired at ``now``: ``(keyid, nonce,
        expires)``. (The governor keeps the live set in memory and persists it through
        the log writer, :class:`proctor.governor.nonces.NonceCache`.)"""
        rows = self._exec("SELECT keyid, nonce, expires FROM nonces WHERE expires >= ?", (now,))
        return [(str(k), str(n), int(e)) for k, n, e in rows]

    @staticmethod
    def auth_failure_writer(now: int, keyid: str, reason: str, detail: str) -> Callable[..., None]:
        """The insert of a rejected request's record (bounded to the newest
        :data:`MAX_AUTH_FAILURES`), to run in any transaction."""
        row = (now, keyid[:128], reason[:64], detail[:512])

        def write(conn: sqlite3.Connection, index: int = -1) -> None:
            conn.execute("INSERT INTO auth_failures (time, keyid, reason, detail) VALUES (?, ?, ?, ?)", row)
            conn.execute(
                "DELETE FROM auth_failures WHERE id <= (SELECT max(id) FROM auth_failures) - ?",
                (MAX_AUTH_FAILURES,),
            )

        return write

    def auth_failures(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent rejected requests, newest first."""
        rows = self._exec(
            "SELECT time, keyid, reason, detail FROM auth_failures ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [{"time": t, "keyid": k, "reason": r, "detail": d} for t, k, r, d in rows]

    def close(self) -> None:
        """Close every connection."""
        self._connections.close()


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
