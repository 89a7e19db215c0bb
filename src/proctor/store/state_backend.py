"""Where the governance state lives: everything about it that depends on the database.

:class:`~proctor.store.state.StateStore` runs the same SQL on every database
(:mod:`proctor.store.sql`, ADR 0013). What differs sits behind one small object, a
:class:`StateBackend`: how connections are opened, how a write transaction begins
(SQLite's ``BEGIN IMMEDIATE`` takes the write lock at once, so two writers never
deadlock upgrading a read lock), the DDL (expression indexes, triggers), and schema
creation, upgrades and the version check. A PostgreSQL backend adds only those.

Invariants every backend keeps:

- :meth:`StateBackend.create_or_check_schema` creates the tables of an empty database,
  upgrades an older one when every pending step is safe (adds, never drops or
  rewrites), and refuses a database of an unknown state schema version, all in one
  transaction under the migration lock: a refused open changes nothing
  (:mod:`proctor.store.migrations`; :meth:`StateBackend.migrate` applies the rest).
- :meth:`StateBackend.conn` returns this thread's connection in autocommit mode: each
  statement outside :meth:`StateBackend.transaction` commits on its own.
- :meth:`StateBackend.transaction` commits when its block ends normally and rolls back
  on any exception (then re-raised).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from proctor.errors import StoreError
from proctor.store._connections import ThreadConnections
from proctor.store._state_schema import SQLITE_STATE_SCHEMA
from proctor.store.migrations import MigrationPlan, Schema, run_migrations
from proctor.store.sql import DRIVER_ERRORS, Connection

__all__ = ["StateBackend", "SQLiteStateBackend"]


class StateBackend(Protocol):
    """The database under a :class:`~proctor.store.state.StateStore` (module docstring)."""

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """The exceptions a failed statement raises on this backend's connections (the
        state store wraps them in :class:`~proctor.errors.StoreError`)."""
        ...

    def conn(self) -> Connection:
        """This thread's connection, in autocommit mode.

        Raises:
            StoreError: the backend is closed, or the database cannot be reached.
        """
        ...

    def transaction(self) -> AbstractContextManager[Connection]:
        """A write transaction on this thread's connection: committed when the block
        ends, rolled back if it raises."""
        ...

    def create_or_check_schema(self) -> None:
        """Create, upgrade or check the state tables, in one transaction: a store with
        no state tables gets them; pending steps are applied only if all are safe
        (:mod:`proctor.store.migrations`).

        Raises:
            StoreError: the database cannot be opened, has an unknown (newer) state
                schema version, or needs a step that is not safe ("run proctor migrate").
            StoreConflictError: stored rows break a rule added since they were written
                (nothing is changed).
        """
        ...

    def migrate(self, *, on_start: bool = False, dry_run: bool = False) -> MigrationPlan:
        """Apply every pending step of the state schema, safe or not (``proctor
        migrate``), in one transaction under the migration lock; ``on_start``: only
        if every pending step is safe, as :meth:`create_or_check_schema`.

        Returns:
            The plan: the version found, the steps pending, whether they were applied
            (never with ``dry_run``, which rolls back).

        Raises:
            StoreError: the database failed, or its version is unknown (newer), or
                (``on_start``) a pending step is not safe.
        """
        ...

    def close(self) -> None:
        """Close every connection; later calls to :meth:`conn` fail."""
        ...


class SQLiteStateBackend:
    """The state tables in the data directory's SQLite file, beside the log's tables
    (whose ``meta`` table they share)."""

    def __init__(self, path: str | Path, *, schema: Schema[sqlite3.Connection] = SQLITE_STATE_SCHEMA) -> None:
        """Prepare per-thread connections to ``path`` (nothing is opened yet);
        ``schema``: the state schema's steps (tests pass others)."""
        self._path = str(path)
        self._schema = schema
        self._connections = ThreadConnections(path, what="state store")

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """``sqlite3.Error`` (and :class:`~proctor.store.sql.IntegrityViolation`)."""
        return DRIVER_ERRORS

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit: transactions are explicit)."""
        return self._connections.get()

    def transaction(self) -> AbstractContextManager[Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` if the block raises."""
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def create_or_check_schema(self) -> None:
        """Create the state tables if ``meta`` has no ``state_schema``, apply pending
        steps that are safe, refuse an unknown version or a pending step that is not
        safe (:mod:`proctor.store.migrations`), and complete a version 1 database
        written before some of its parts existed (:mod:`proctor.store._state_schema`).

        Raises:
            StoreError: as :meth:`StateBackend.create_or_check_schema`.
            StoreConflictError: as :meth:`StateBackend.create_or_check_schema`.
        """
        self.migrate(on_start=True)

    def migrate(self, *, on_start: bool = False, dry_run: bool = False) -> MigrationPlan:
        """Bring the state schema to the newest version, in one ``BEGIN IMMEDIATE``
        transaction (SQLite's write lock is the migration lock).

        Raises:
            StoreError: as :meth:`StateBackend.migrate`.
            StoreConflictError: stored rows break a rule added since (nothing changed).
        """
        conn = self.conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                plan = run_migrations(
                    self._schema, conn, conn, where=self._path, on_start=on_start, dry_run=dry_run
                )
                conn.execute("ROLLBACK" if dry_run else "COMMIT")
                return plan
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the governance state in {self._path}: {e}") from e

    def close(self) -> None:
        """Close every connection."""
        self._connections.close()
