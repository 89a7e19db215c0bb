"""Governance state beside the log, in the same SQLite file: principals, policy
bundles, revocations, issued warrants, request nonces and authentication failures.

Why one module: :class:`StateStore` is the only code that holds SQL for the state
tables, behind one typed interface that the governor, the state check and the CLI read;
its writers, which the log writer commits in one transaction with the events that
explain them, share one connection per thread. Splitting it by table would split that
interface too; it is the next candidate for a split if it keeps growing.

The lineage log is the record of what happened; this is the current state derived
from it, kept for fast lookups. Every change here is made by the governor right after
the corresponding log append, so the log can always explain the state.

Tables (schema version ``state_schema`` in ``meta``):

- ``principals``: name, public key, attributes (canonical JSON), zone, status. Names
  are unique ignoring case and a public key belongs to one principal (unique indexes).
- ``bundles``: every accepted signed bundle by digest, with the log index of its one
  ``policy.activated`` event; ``meta.active_bundle`` names the active one. Append-only
  and version-forward (triggers refuse an update, a delete, or an insert whose version
  is not above every stored one): activation history is never rewritten.
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
from typing import Any, TypedDict

import orjson

from proctor.errors import StoreConflictError, StoreError
from proctor.store._connections import ThreadConnections
from proctor.store._state_schema import SCHEMA, STATE_SCHEMA_VERSION, add_columns, add_constraints

__all__ = [
    "STATE_SCHEMA_VERSION",
    "ExecutionSummary",
    "PrincipalRecord",
    "RevocationRecord",
    "StateStore",
    "StoredExecution",
    "StoredWarrant",
]

MAX_AUTH_FAILURES = 10_000


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


@dataclass(frozen=True)
class ExecutionSummary:
    """What may be shown of a stored execution: no arguments, no warrant token.

    Attributes:
        id: the execution id (``ex_…``).
        principal: whose it is.
        warrant: the warrant id it started with.
        action: the request's action (``exec`` …).
        resource: the request's resource (the measured file, for ``exec``).
        zone: the zone it runs in (``""``: none).
        status: ``running``, ``terminating``, ``completed``, ``terminated`` or ``failed``.
        reason: why it is terminating or was terminated (``""`` otherwise).
        bundle: the digest of the policy bundle it runs under.
        started: unix seconds of its start.
        ended: unix seconds of its end (0 while it runs).
        lease_expires_ms: the lease deadline as stored (the governor's memory is newer).
        ttl_ms: the lease's time to live.
        indices: the log indices of its events, in order.
    """

    id: str
    principal: str
    warrant: str
    action: str
    resource: str
    zone: str
    status: str
    reason: str
    bundle: str
    started: int
    ended: int
    lease_expires_ms: int
    ttl_ms: int
    indices: tuple[int, ...]


class StoredWarrant(TypedDict):
    """An issued warrant's row (``warrants``)."""

    id: str
    principal: str
    parent: str
    decision_index: int
    expires: int
    issued: int
    issued_index: int
    token: str


class StoredExecution(TypedDict):
    """An execution's row (``executions``), ``indices`` decoded: the log indices of its
    events, in order. The governor updates ``indices`` and ``bundle`` in a copy it holds
    while it records (the row itself changes only through the writers below)."""

    id: str
    warrant: str
    principal: str
    status: str
    reason: str
    bundle: str
    request: str
    started_index: int
    indices: list[int]
    lease_expires_ms: int
    ttl_ms: int
    started: int
    ended: int
    presented: str


class StateStore:
    """Governance state in the data directory's SQLite file."""

    def __init__(self, path: str | Path) -> None:
        """Open the state tables, creating them if needed.

        Raises:
            StoreError: the database cannot be opened or has an unknown state schema.
            StoreConflictError: stored principals break a rule added since they were
                registered (names equal ignoring case, a shared public key); nothing
                is changed.
        """
        self._path = str(path)
        self._connections = ThreadConnections(path, what="state store")
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT value FROM meta WHERE key = 'state_schema'").fetchone()
            if row is None:
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('state_schema', ?)", (str(STATE_SCHEMA_VERSION),)
                )
            elif row[0] != str(STATE_SCHEMA_VERSION):
                conn.execute("ROLLBACK")
                raise StoreError(
                    f"{path}: expected state schema version {STATE_SCHEMA_VERSION}, found {row[0]!r}"
                )
            add_columns(conn)
            add_constraints(conn, path)
            conn.execute("COMMIT")
        except StoreConflictError:
            conn.execute("ROLLBACK")
            raise
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
        """Insert a principal, or update the one with this exact name.

        Raises:
            StoreConflictError: another principal has this name ignoring case, or this
                public key (nothing is replaced).
            StoreError: the database failed.
        """
        try:
            self.principal_writer(record)(self._conn())
        except sqlite3.IntegrityError as e:
            raise StoreConflictError(_principal_conflict(record, e)) from e
        except sqlite3.Error as e:
            raise StoreError(f"state store: {e}") from e

    @staticmethod
    def principal_writer(record: PrincipalRecord) -> Callable[..., None]:
        """:meth:`put_principal` to run inside another transaction as ``write(conn,
        index=...)`` (the log commit of the principal's event: both or neither).

        An upsert on the name, never ``INSERT OR REPLACE``: replacing would silently
        delete whichever *other* principal a unique index found in the way.
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

        def write(conn: sqlite3.Connection, index: int = -1) -> None:
            try:
                conn.execute(
                    "INSERT INTO principals VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                    "public_key = excluded.public_key, attrs = excluded.attrs, zone = excluded.zone, "
                    "status = excluded.status, created = excluded.created, updated = excluded.updated",
                    row,
                )
            except sqlite3.IntegrityError as e:
                raise StoreConflictError(_principal_conflict(record, e)) from e

        return write

    def principal_like(self, name: str) -> PrincipalRecord | None:
        """The principal whose name equals ``name`` ignoring (ASCII) case, if any."""
        row = self._exec("SELECT * FROM principals WHERE lower(name) = lower(?)", (name,)).fetchone()
        return None if row is None else _principal(row)

    def principal_with_key(self, public_key: str) -> PrincipalRecord | None:
        """The principal registered with this public key (canonical base64), if any."""
        row = self._exec("SELECT * FROM principals WHERE public_key = ?", (public_key,)).fetchone()
        return None if row is None else _principal(row)

    def principal(self, name: str) -> PrincipalRecord | None:
        """The principal named ``name``."""
        row = self._exec("SELECT * FROM principals WHERE name = ?", (name,)).fetchone()
        return None if row is None else _principal(row)

    def principals(self) -> list[PrincipalRecord]:
        """Every principal, by name."""
        return [_principal(r) for r in self._exec("SELECT * FROM principals ORDER BY name")]

    # -- policy bundles --------------------------------------------------------

    def put_bundle(self, digest: str, version: int, doc: str, activated: str, log_index: int) -> None:
        """Store an accepted bundle and make it the active one, in one transaction.

        Raises:
            StoreConflictError: the digest is stored already, or ``version`` is not
                above every stored version (activation history is append-only).
            StoreError: the database failed.
        """
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.bundle_writer(digest, version, doc, activated)(conn, index=log_index)
            conn.execute("COMMIT")
        except (sqlite3.Error, StoreConflictError) as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, StoreConflictError):
                raise
            raise StoreError(f"cannot store bundle {digest}: {e}") from e

    @staticmethod
    def bundle_writer(digest: str, version: int, doc: str, activated: str) -> Callable[..., None]:
        """:meth:`put_bundle` to run inside another transaction as ``write(conn,
        index=...)``, with the index of the bundle's ``policy.activated`` event (the log
        commit that records the activation: both or neither)."""

        def write(conn: sqlite3.Connection, index: int = -1) -> None:
            try:
                conn.execute(
                    "INSERT INTO bundles VALUES (?, ?, ?, ?, ?)", (digest, version, doc, activated, index)
                )
            except sqlite3.IntegrityError as e:
                raise StoreConflictError(
                    f"cannot store bundle {digest} (version {version}): expected a new digest with a "
                    f"version above every stored one ({e}); activation history is append-only"
                ) from e
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('active_bundle', ?)", (digest,))

        return write

    def highest_bundle(self) -> tuple[int, str] | None:
        """``(version, digest)`` of the stored bundle with the highest version, or ``None``."""
        row = self._exec(
            "SELECT version, digest FROM bundles ORDER BY version DESC, log_index DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

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

    def revocation(self, kind: str, target: str) -> RevocationRecord | None:
        """The latest revocation of (kind, target), or ``None``."""
        row = self._exec("SELECT * FROM revocations WHERE kind = ? AND target = ?", (kind, target)).fetchone()
        if row is None:
            return None
        k, t, r, b, tm, i = row
        return RevocationRecord(str(k), str(t), str(r), str(b), str(tm), int(i))

    def exists(self, kind: str, target: str) -> bool:
        """Whether the governor knows a ``warrant`` (issued by it), an ``execution``, a
        ``principal`` or a ``policy`` bundle (stored) of this id.

        Raises:
            StoreError: ``kind`` is none of those, or the database failed.
        """
        query = _EXISTS.get(kind)
        if query is None:
            raise StoreError(f"expected a kind in {sorted(_EXISTS)}, found {kind!r}")
        return self._exec(query, (target,)).fetchone() is not None

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

    def warrant(self, warrant_id: str) -> StoredWarrant | None:
        """The issued warrant's record."""
        row = self._exec("SELECT * FROM warrants WHERE id = ?", (warrant_id,)).fetchone()
        if row is None:
            return None
        wid, principal, parent, decision_index, expires, issued, issued_index, token = row
        try:
            return StoredWarrant(
                id=str(wid),
                principal=str(principal),
                parent=str(parent),
                decision_index=int(decision_index),
                expires=int(expires),
                issued=int(issued),
                issued_index=int(issued_index),
                token=str(token),
            )
        except (TypeError, ValueError) as e:  # a row written by something else
            raise StoreError(f"warrants[{warrant_id}]: a column holds an unexpected value: {e}") from e

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
        """Record a started execution on its own; ``False`` if its warrant already
        started one (the governor writes the row inside the log commit of its
        ``execution.started`` event instead: :meth:`execution_writer`)."""
        try:
            self.execution_writer(record)(self._conn())
        except sqlite3.IntegrityError:
            return False
        except sqlite3.Error as e:
            raise StoreError(f"cannot record execution {record.get('id')}: {e}") from e
        return True

    @staticmethod
    def execution_writer(record: dict[str, Any]) -> Callable[..., None]:
        """The insert of a started execution's row, to run inside the log commit of its
        ``execution.started`` event as ``write(conn, index=...)``. A second start of the
        same warrant violates the row's uniqueness and fails that commit: both or neither."""
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

        def write(conn: sqlite3.Connection, index: int = -1) -> None:
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

    @staticmethod
    def execution_update_writer(
        execution_id: str, *, event_index: bool = True, **fields: Any
    ) -> Callable[..., None]:
        """:meth:`update_execution` inside the log commit of the event that changes it,
        as ``write(conn, index=...)``; with ``event_index`` the event's index is appended
        to the execution's ``indices`` in the same statement."""
        sql, params = _execution_update(fields)

        def write(conn: sqlite3.Connection, index: int = -1) -> None:
            if event_index and index >= 0:
                conn.execute(
                    "UPDATE executions SET indices = json_insert(indices, '$[#]', ?) WHERE id = ?",
                    (index, execution_id),
                )
            if sql:
                conn.execute(sql, (*params, execution_id))

        return write

    def nonce_floor(self) -> int:
        """The latest time request nonces were forgotten at (0 if never)."""
        value = self.meta("nonce_floor")
        return int(value) if value is not None else 0

    @staticmethod
    def write_nonces(conn: sqlite3.Connection, rows: list[tuple[str, str, int]], purge_before: int) -> None:
        """On the log writer's connection (a side write): store request nonces
        ``(keyid, nonce, expires)`` (a nonce already stored is kept); with
        ``purge_before``, drop those expired before it and raise the ``nonce_floor`` to
        it in the same transaction (the floor explains the deletion: a request older
        than the floor is refused, since its nonce may have been forgotten).

        Raises:
            StoreError: the rows cannot be written (the whole commit fails).
        """
        try:
            conn.executemany("INSERT OR IGNORE INTO nonces VALUES (?, ?, ?)", rows)
            if purge_before:
                conn.execute("DELETE FROM nonces WHERE expires < ?", (purge_before,))
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('nonce_floor', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), excluded.value)",
                    (purge_before,),
                )
        except sqlite3.Error as e:
            raise StoreError(f"cannot persist request nonces: {e}") from e

    @staticmethod
    def write_leases(conn: sqlite3.Connection, deadlines: dict[str, int]) -> None:
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
        except sqlite3.Error as e:
            raise StoreError(f"cannot persist lease deadlines: {e}") from e

    @staticmethod
    def probe_writer(now: int) -> Callable[..., None]:
        """A small real write (one ``meta`` row), to learn whether the disk takes writes."""

        def write(conn: sqlite3.Connection, index: int = -1) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('durability_probe', ?)", (str(now),)
            )

        return write

    @staticmethod
    def opening_writer(opening: dict[str, Any]) -> Callable[..., None]:
        """The opening of a decision's argument commitment, written in the commit of the
        ``decision`` event as ``write(conn, index=...)`` (the decision's index)."""
        text = orjson.dumps(opening).decode()

        def write(conn: sqlite3.Connection, index: int = -1) -> None:
            conn.execute("INSERT INTO openings (decision_index, opening) VALUES (?, ?)", (index, text))

        return write

    def opening(self, decision_index: int) -> dict[str, Any] | None:
        """The opening of the decision at ``decision_index``, if one was kept."""
        row = self._exec(
            "SELECT opening FROM openings WHERE decision_index = ?", (decision_index,)
        ).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    def claim_warrant(self, warrant_id: str) -> bool:
        """Whether the warrant has not started an execution yet."""
        row = self._exec("SELECT 1 FROM executions WHERE warrant = ?", (warrant_id,)).fetchone()
        return row is None

    def execution(self, execution_id: str) -> StoredExecution | None:
        """The execution's row, with ``indices`` decoded."""
        cur = self._exec("SELECT * FROM executions WHERE id = ?", (execution_id,))
        row = cur.fetchone()
        if row is None:
            return None
        raw = dict(zip([d[0] for d in cur.description], row, strict=True))
        try:
            return StoredExecution(
                id=str(raw["id"]),
                warrant=str(raw["warrant"]),
                principal=str(raw["principal"]),
                status=str(raw["status"]),
                reason=str(raw["reason"]),
                bundle=str(raw["bundle"]),
                request=str(raw["request"]),
                started_index=int(raw["started_index"]),
                indices=[int(i) for i in orjson.loads(raw["indices"])],
                lease_expires_ms=int(raw["lease_expires_ms"]),
                ttl_ms=int(raw["ttl_ms"]),
                started=int(raw["started"]),
                ended=int(raw["ended"]),
                presented=str(raw.get("presented", "")),
            )
        except (KeyError, TypeError, ValueError) as e:  # a row written by something else
            raise StoreError(f"executions[{execution_id}]: a column holds an unexpected value: {e}") from e

    def execution_summary(self, execution_id: str) -> ExecutionSummary | None:
        """The summary of one execution, or ``None`` if there is none by that id."""
        row = self._exec(f"{_SUMMARY} WHERE id = ?", (execution_id,)).fetchone()
        return None if row is None else _summary(row)

    def execution_summaries(
        self, *, principal: str | None, live_only: bool, limit: int
    ) -> list[ExecutionSummary]:
        """Summaries of executions, newest start first.

        Args:
            principal: only this principal's (``None``: everyone's).
            live_only: only those still ``running`` or ``terminating``.
            limit: at most this many (1 or more).

        Raises:
            StoreError: ``limit`` is below 1, or the database cannot be read.
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
        rows = self._exec(
            f"{_SUMMARY}{clause} ORDER BY started DESC, rowid DESC LIMIT ?",
            (*params, limit),
        )
        return [_summary(row) for row in rows]

    def update_execution(self, execution_id: str, **fields: Any) -> None:
        """Change some columns of an execution (``indices`` is encoded)."""
        if not fields:
            raise StoreError("expected at least one execution column to update")
        sql, params = _execution_update(fields)
        self._exec(sql, (*params, execution_id))

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


_EXECUTION_COLUMNS = frozenset({"status", "reason", "bundle", "indices", "lease_expires_ms", "ended"})


def _execution_update(fields: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """``UPDATE executions SET … WHERE id = ?`` for ``fields`` (``indices`` encoded)."""
    if not set(fields) <= _EXECUTION_COLUMNS:
        raise StoreError(f"cannot update execution columns {sorted(fields)}")
    if not fields:
        return "", ()
    if "indices" in fields:
        fields = {**fields, "indices": orjson.dumps(fields["indices"]).decode()}
    assignments = ", ".join(f"{k} = ?" for k in fields)
    return f"UPDATE executions SET {assignments} WHERE id = ?", tuple(fields.values())  # noqa: S608 - column names are from the allow-list above


# The summary columns; the request's action, resource and zone are read inside SQLite,
# so its arguments never leave the store.
_SUMMARY = (
    "SELECT id, principal, warrant, coalesce(json_extract(request, '$.action'), ''), "
    "coalesce(json_extract(request, '$.resource'), ''), coalesce(json_extract(request, '$.zone'), ''), "
    "status, reason, bundle, started, ended, lease_expires_ms, ttl_ms, indices FROM executions"
)


def _summary(row: tuple[Any, ...]) -> ExecutionSummary:
    ex, principal, warrant, action, resource, zone, status, reason, bundle = (str(v) for v in row[:9])
    try:
        started, ended, expires, ttl = (int(v) for v in row[9:13])
        indices = tuple(int(i) for i in orjson.loads(row[13]))
    except (orjson.JSONDecodeError, TypeError, ValueError) as e:
        raise StoreError(f"execution {ex!r}: expected integer times and log indices, found {e}") from e
    return ExecutionSummary(
        ex, principal, warrant, action, resource, zone, status, reason, bundle,
        started, ended, expires, ttl, indices,
    )  # fmt: skip


_EXISTS = {
    "warrant": "SELECT 1 FROM warrants WHERE id = ?",
    "execution": "SELECT 1 FROM executions WHERE id = ?",
    "principal": "SELECT 1 FROM principals WHERE name = ?",
    "policy": "SELECT 1 FROM bundles WHERE digest = ?",
}


def _principal_conflict(record: PrincipalRecord, error: sqlite3.IntegrityError) -> str:
    return (
        f"cannot store principal {record.name!r}: expected a name unique ignoring case and a "
        f"public key no other principal has ({error})"
    )


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
