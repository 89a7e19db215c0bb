"""The governance state tables in PostgreSQL: a :class:`~proctor.store.state_backend.StateBackend`.

The state store's queries run here unchanged (the common subset of
:mod:`proctor.store.sql`, through :class:`~proctor.store._pg.PgConnection`); this module
adds only what PostgreSQL says differently (ADR 0013, decision 3):

1. **DDL** (:data:`PG_STATE_SCHEMA`, state schema version 1; version 2 adds the
   ``nodes`` table in the common subset, :mod:`proctor.store.state_nodes`): the tables, columns,
   keys and indexes of :mod:`proctor.store._state_schema`, with ``BIGINT`` for integers
   (SQLite's are 64-bit), an identity column for ``auth_failures.id``, and every text
   column ``COLLATE "C"``, so that text compares and sorts bytewise as SQLite's
   ``BINARY`` does, whatever the database's locale. Principal names are unique ignoring
   case (a unique index on ``lower(name)``; names are ASCII, which ``lower`` folds in
   the ``C`` collation as SQLite's does). The bundle rules are triggers that raise
   ``check_violation``, so a refused activation arrives as an integrity error, as
   SQLite's ``RAISE(ABORT)`` does; inserts take turns on a transaction advisory lock,
   so that "above every stored version" sees every committed bundle (SQLite has one
   writer at a time; PostgreSQL's READ COMMITTED would let two inserts each miss the
   other's).
2. **Connections** from a ``psycopg_pool`` pool, by default the log store's own
   (:mod:`proctor.store.open`: one pool per process, and the state rows that commit
   with an event use the log's connection anyway). :meth:`PostgresStateBackend.conn`
   borrows a pooled connection for each statement (autocommit, as SQLite's
   connections are), or, inside :meth:`PostgresStateBackend.transaction` on this
   thread, returns that transaction's connection. Rows are fetched before the
   connection goes back.
3. **Schema versions** through :mod:`proctor.store.migrations`, under a transaction
   advisory lock.
4. **A read snapshot** for the state check: :class:`PostgresStateSnapshot`, one
   ``REPEATABLE READ READ ONLY`` transaction.

Every message names the database by its DSN with the password replaced
(:func:`proctor.store._pg.redact`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import psycopg_pool

from proctor.errors import StoreError
from proctor.store._pg import PgConnection, StorePool, redact
from proctor.store._state_schema import NODES_SUMMARY
from proctor.store.migrations import Migration, MigrationPlan, Schema, run_migrations
from proctor.store.snapshot import StateSnapshot
from proctor.store.sql import IntegrityViolation
from proctor.store.state_approvals import APPROVALS_DDL, APPROVALS_SUMMARY
from proctor.store.state_nodes import NODES_DDL

__all__ = [
    "PG_STATE_SCHEMA",
    "PostgresStateBackend",
    "PostgresStateSnapshot",
    "pg_has_state",
]

# Serialises schema changes of the state tables (migrations, first creation) between
# processes: "proc-mig" in ASCII. The log store's schema lock is another key.
_MIGRATION_LOCK = 0x70726F632D6D6967

_TEXT = 'TEXT COLLATE "C"'

_V1 = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TABLE principals (
        name {_TEXT} PRIMARY KEY, public_key {_TEXT} NOT NULL, attrs {_TEXT} NOT NULL,
        zone {_TEXT} NOT NULL, status {_TEXT} NOT NULL, created {_TEXT} NOT NULL,
        updated {_TEXT} NOT NULL)""",
    "CREATE UNIQUE INDEX principals_name_nocase ON principals (lower(name))",
    "CREATE UNIQUE INDEX principals_public_key ON principals (public_key)",
    f"""CREATE TABLE bundles (
        digest {_TEXT} PRIMARY KEY, version BIGINT NOT NULL, doc {_TEXT} NOT NULL,
        activated {_TEXT} NOT NULL, log_index BIGINT NOT NULL)""",
    """CREATE FUNCTION proctor_bundles_version_forward() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- One insert at a time, each seeing the versions committed before it
            -- (the lock's key is "bundles" in ASCII).
            PERFORM pg_advisory_xact_lock(27713664709322099);
            IF NEW.version <= (SELECT max(version) FROM bundles) THEN
                RAISE EXCEPTION 'bundle versions only go forward' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$""",
    """CREATE FUNCTION proctor_bundles_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'bundle activations are append-only' USING ERRCODE = 'check_violation';
        END $$""",
    """CREATE TRIGGER bundles_version_forward BEFORE INSERT ON bundles
        FOR EACH ROW EXECUTE FUNCTION proctor_bundles_version_forward()""",
    """CREATE TRIGGER bundles_no_update BEFORE UPDATE ON bundles
        FOR EACH ROW EXECUTE FUNCTION proctor_bundles_append_only()""",
    """CREATE TRIGGER bundles_no_delete BEFORE DELETE ON bundles
        FOR EACH ROW EXECUTE FUNCTION proctor_bundles_append_only()""",
    # A row-level trigger does not see TRUNCATE: refuse it too (SQLite has none).
    """CREATE TRIGGER bundles_no_truncate BEFORE TRUNCATE ON bundles
        FOR EACH STATEMENT EXECUTE FUNCTION proctor_bundles_append_only()""",
    f"""CREATE TABLE revocations (
        kind {_TEXT} NOT NULL, target {_TEXT} NOT NULL, reason {_TEXT} NOT NULL,
        by {_TEXT} NOT NULL, time {_TEXT} NOT NULL, log_index BIGINT NOT NULL,
        PRIMARY KEY (kind, target))""",
    f"""CREATE TABLE warrants (
        id {_TEXT} PRIMARY KEY, principal {_TEXT} NOT NULL, parent {_TEXT} NOT NULL,
        decision_index BIGINT NOT NULL, expires BIGINT NOT NULL, issued BIGINT NOT NULL,
        issued_index BIGINT NOT NULL DEFAULT -1, token {_TEXT} NOT NULL DEFAULT '')""",
    f"""CREATE TABLE executions (
        id {_TEXT} PRIMARY KEY, warrant {_TEXT} NOT NULL UNIQUE, principal {_TEXT} NOT NULL,
        status {_TEXT} NOT NULL, reason {_TEXT} NOT NULL, bundle {_TEXT} NOT NULL,
        request {_TEXT} NOT NULL, started_index BIGINT NOT NULL, indices {_TEXT} NOT NULL,
        lease_expires_ms BIGINT NOT NULL, ttl_ms BIGINT NOT NULL, started BIGINT NOT NULL,
        ended BIGINT NOT NULL DEFAULT 0, presented {_TEXT} NOT NULL DEFAULT '')""",
    "CREATE INDEX executions_by_principal ON executions (principal, status)",
    "CREATE INDEX warrants_by_principal ON warrants (principal, issued)",
    f"""CREATE TABLE nonces (
        keyid {_TEXT} NOT NULL, nonce {_TEXT} NOT NULL, expires BIGINT NOT NULL,
        PRIMARY KEY (keyid, nonce))""",
    "CREATE INDEX nonces_by_expiry ON nonces (expires)",
    f"""CREATE TABLE auth_failures (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, time BIGINT NOT NULL,
        keyid {_TEXT} NOT NULL, reason {_TEXT} NOT NULL, detail {_TEXT} NOT NULL)""",
    f"CREATE TABLE openings (decision_index BIGINT PRIMARY KEY, opening {_TEXT} NOT NULL)",
)


def _create_v1(conn: psycopg.Connection[Any], where: str) -> None:
    for statement in _V1:
        conn.execute(statement.encode())


PG_STATE_SCHEMA: Schema[psycopg.Connection[Any]] = Schema(
    "PostgreSQL",
    (
        Migration(
            1,
            "the state tables: principals, bundles, revocations, warrants, executions, openings, "
            "nonces, auth_failures; the identity indexes and the bundle rules",
            safe=True,
            apply=_create_v1,
        ),
        Migration(2, NODES_SUMMARY, safe=True, apply=lambda conn, where: _run(conn, NODES_DDL)),
        Migration(3, APPROVALS_SUMMARY, safe=True, apply=lambda conn, where: _run(conn, *APPROVALS_DDL)),
    ),
)
"""The state schema's steps on PostgreSQL (version 1: the tables of SQLite's version 1;
version 2: the ``nodes`` table; version 3: ``approvals`` and ``calls``; the same DDL as SQLite's)."""


def _run(conn: psycopg.Connection[Any], *statements: str) -> None:
    for statement in statements:
        conn.execute(statement.encode())


class _Rows:
    """A statement's rows, fetched before its connection went back to the pool."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._at = 0
        self._rowcount = rowcount

    def fetchone(self) -> Any:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[Any]:
        rest, self._at = self._rows[self._at :], len(self._rows)
        return rest

    @property
    def rowcount(self) -> int:
        return self._rowcount


class _PooledConnection:
    """The :class:`~proctor.store.sql.Connection` that :meth:`PostgresStateBackend.conn`
    returns outside a transaction: each statement on a connection borrowed from the
    pool, in autocommit mode."""

    def __init__(self, backend: PostgresStateBackend) -> None:
        self._backend = backend

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Rows:
        with self._backend.borrow() as conn:
            cur = PgConnection(conn).execute(sql, parameters)
            rows = cur.fetchall() if cur.description is not None else []
            return _Rows(rows, cur.rowcount)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        with self._backend.borrow() as conn:
            PgConnection(conn).executemany(sql, parameters)


class PostgresStateBackend:
    """The state tables in a PostgreSQL database, beside the log's tables (whose
    ``meta`` table they share, as in SQLite)."""

    def __init__(
        self,
        dsn: str,
        *,
        pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] | None = None,
        pool_size: int = 4,
        timeout: float = 30.0,
        schema: Schema[psycopg.Connection[Any]] = PG_STATE_SCHEMA,
    ) -> None:
        """Connect to the database at ``dsn`` (nothing is created yet:
        :meth:`create_or_check_schema` does that).

        Args:
            dsn: where the database is (a libpq URI or ``key=value`` string).
            pool: a pool to borrow connections from (the log store's); it stays
                open when this backend closes. ``None``: a pool of this backend's own.
            pool_size: the most connections of a pool of its own.
            timeout: seconds to wait for a connection.
            schema: the state schema's steps (tests pass others).

        Raises:
            StoreError: the database cannot be reached.
        """
        self._dsn = dsn
        self._where = redact(dsn)
        self._timeout = timeout
        self._schema = schema
        self._local = threading.local()
        self._closed = False
        self._own_pool = pool is None
        if pool is None:
            pool = _open_pool(dsn, pool_size=pool_size, timeout=timeout, where=self._where)
        self._pool = pool

    @property
    def where(self) -> str:
        """The database, as messages name it (no password)."""
        return self._where

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """``psycopg.Error`` (pool timeouts included) and
        :class:`~proctor.store.sql.IntegrityViolation`."""
        return (psycopg.Error, IntegrityViolation)

    @contextmanager
    def borrow(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection for the block (autocommit).

        Raises:
            StoreError: the backend is closed.
            psycopg.Error: no connection came within the timeout (the state store
                wraps it).
        """
        if self._closed:
            raise StoreError("the state store is closed")
        with self._pool.connection(timeout=self._timeout) as conn:
            yield conn

    def conn(self) -> PgConnection | _PooledConnection:
        """This thread's transaction's connection inside :meth:`transaction`; otherwise
        one that borrows a pooled connection per statement (each commits on its own)."""
        current: PgConnection | None = getattr(self._local, "conn", None)
        if current is not None:
            return current
        if self._closed:
            raise StoreError("the state store is closed")
        return _PooledConnection(self)

    def transaction(self) -> AbstractContextManager[PgConnection]:
        """``BEGIN`` … ``COMMIT`` on one pooled connection, or ``ROLLBACK`` if the block
        raises (then re-raised)."""
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[PgConnection]:
        if getattr(self._local, "conn", None) is not None:
            raise StoreError("expected no state transaction open on this thread, found one (nested)")
        with self.borrow() as raw, raw.transaction():
            adapted = PgConnection(raw)
            self._local.conn = adapted
            try:
                yield adapted
            finally:
                self._local.conn = None

    def create_or_check_schema(self) -> None:
        """Create the state tables of a database that has none, apply pending steps
        that are safe, and refuse an unknown (newer) version or a pending step that is
        not safe (:mod:`proctor.store.migrations`), in one transaction.

        Raises:
            StoreError: as :meth:`~proctor.store.state_backend.StateBackend.create_or_check_schema`.
        """
        self.migrate(on_start=True)

    def migrate(self, *, on_start: bool = False, dry_run: bool = False) -> MigrationPlan:
        """Bring the state schema to the newest version this proctor knows, in one
        transaction under the migration lock (``proctor migrate``; ``on_start``: only
        safe steps, as :meth:`create_or_check_schema`).

        Returns:
            What was found and what was (or, with ``dry_run``, would be) applied.

        Raises:
            StoreError: the database failed, its version is unknown, or (``on_start``)
                a pending step is not safe: run ``proctor migrate``.
        """
        try:
            with self.borrow() as raw, raw.transaction(force_rollback=dry_run):
                raw.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                raw.execute(b"CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                return run_migrations(
                    self._schema,
                    raw,
                    PgConnection(raw),
                    where=self._where,
                    on_start=on_start,
                    dry_run=dry_run,
                )
        except psycopg.Error as e:
            raise StoreError(f"cannot open the governance state in {self._where}: {e}") from e

    def close(self) -> None:
        """Stop lending connections; close the pool if it is this backend's own."""
        self._closed = True
        if self._own_pool:
            self._pool.close()


def _open_pool(
    dsn: str, *, pool_size: int, timeout: float, where: str
) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
    """A pool of autocommit connections to ``dsn``, open.

    Raises:
        StoreError: the first connection is refused (the server's reason is given).
    """
    if pool_size < 1:
        raise StoreError(f"expected a pool of at least 1 connection, found {pool_size}")
    try:  # a plain first connection: a refusal is reported as the server said it
        psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, round(timeout))).close()
    except psycopg.Error as e:
        raise StoreError(f"cannot connect to {where}: {str(e).strip()}") from e
    pool = StorePool(dsn, name="proctor-state", max_size=pool_size, timeout=timeout)
    try:
        pool.open(wait=True, timeout=timeout)
    except psycopg.Error as e:
        pool.close()
        raise StoreError(f"cannot connect to {where}: {str(e).strip()}") from e
    return pool


def pg_has_state(dsn: str) -> bool:
    """Whether the database holds governance state tables (``meta.state_schema``).

    Raises:
        StoreError: the database cannot be read.
    """
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=30) as conn:
            if conn.execute("SELECT to_regclass('meta')").fetchone() in (None, (None,)):
                return False
            row = conn.execute("SELECT value FROM meta WHERE key = 'state_schema'").fetchone()
    except psycopg.Error as e:
        raise StoreError(f"cannot read {redact(dsn)}: {e}") from e
    return row is not None


class PostgresStateSnapshot(StateSnapshot):
    """One ``REPEATABLE READ READ ONLY`` transaction over a PostgreSQL store: the log's
    entries, its latest checkpoint and every state row from the same moment (the state
    check's step 1, :mod:`proctor.governor.state_audit`)."""

    _errors: tuple[type[Exception], ...] = (psycopg.Error, IntegrityViolation)

    def __init__(self, dsn: str) -> None:
        """Open the snapshot.

        Raises:
            StoreError: the database cannot be reached.
        """
        where = redact(dsn)
        self._path = where
        try:
            raw = psycopg.connect(dsn, autocommit=True, connect_timeout=30)
        except psycopg.Error as e:
            raise StoreError(f"cannot read {where}: {e}") from e
        try:
            raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        except psycopg.Error as e:
            raw.close()
            raise StoreError(f"cannot read {where}: {e}") from e
        self._raw = raw
        self._conn = PgConnection(raw)  # type: ignore[assignment]

    def close(self) -> None:
        """End the read transaction and close its connection."""
        self._raw.close()

    def tree_size(self) -> int:
        """The log's size as the store records it (``log_head.tree_size``).

        Raises:
            StoreError: no log here (or more than one head row).
        """
        rows = self._query("SELECT tree_size FROM log_head").fetchall()
        if len(rows) != 1:
            raise StoreError(f"expected one log_head row in {self._path}, found {len(rows)}")
        return int(rows[0][0])
