"""Where the governance state lives: everything about it that depends on the database.

:class:`~proctor.store.state.StateStore` runs the same SQL on every database
(:mod:`proctor.store.sql`, ADR 0013). What differs sits behind one small object, a
:class:`StateBackend`: how connections are opened, how a write transaction begins
(SQLite's ``BEGIN IMMEDIATE`` takes the write lock at once, so two writers never
deadlock upgrading a read lock), the DDL (expression indexes, triggers), and schema
creation, upgrades and the version check. A PostgreSQL backend adds only those.

Invariants every backend keeps:

- :meth:`StateBackend.create_or_check_schema` creates the tables of an empty database,
  upgrades an older one (adds, never drops or rewrites), and refuses a database of an
  unknown state schema version, all in one transaction: a refused open changes nothing.
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
from proctor.store._state_schema import SCHEMA, STATE_SCHEMA_VERSION, add_columns, add_constraints
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
        """Create, upgrade or check the state tables, in one transaction.

        Raises:
            StoreError: the database cannot be opened or has an unknown state schema.
            StoreConflictError: stored rows break a rule added since they were written
                (nothing is changed).
        """
        ...

    def close(self) -> None:
        """Close every connection; later calls to :meth:`conn` fail."""
        ...


class SQLiteStateBackend:
    """The state tables in the data directory's SQLite file, beside the log's tables
    (whose ``meta`` table they share)."""

    def __init__(self, path: str | Path) -> None:
        """Prepare per-thread connections to ``path`` (nothing is opened yet)."""
        self._path = str(path)
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
        """Create the state tables if ``meta`` has no ``state_schema``, refuse another
        version, and add what was added since (:mod:`proctor.store._state_schema`).

        Raises:
            StoreError: as :meth:`StateBackend.create_or_check_schema`.
            StoreConflictError: as :meth:`StateBackend.create_or_check_schema`.
        """
        try:
            with self._transaction() as conn:
                row = conn.execute("SELECT value FROM meta WHERE key = 'state_schema'").fetchone()
                if row is None:
                    for statement in SCHEMA:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('state_schema', ?)",
                        (str(STATE_SCHEMA_VERSION),),
                    )
                elif row[0] != str(STATE_SCHEMA_VERSION):
                    expected = STATE_SCHEMA_VERSION
                    raise StoreError(
                        f"{self._path}: expected state schema version {expected}, found {row[0]!r}"
                    )
                add_columns(conn)
                add_constraints(conn, self._path)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the governance state in {self._path}: {e}") from e

    def close(self) -> None:
        """Close every connection."""
        self._connections.close()
