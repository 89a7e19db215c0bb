"""The log's sequencer lock on PostgreSQL: a session advisory lock on a connection of
its own (:class:`PgSequencer`, a :class:`~proctor.store.locks.Sequencer`).

Writers on one log take turns assigning indices with the sequencer lock (ADR 0015,
:mod:`proctor.store.locks`). Advisory locks belong to a database, so one log per
database has one lock. What keeps the log consistent is not this lock but the store's
size check in each append (:class:`~proctor.store.postgres.PostgresLogStore`): a writer
whose session died, and with it the lock, fails its next commit instead of forking the
log.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from proctor.errors import LogLockedError, StoreError
from proctor.store._pg import redact

__all__ = ["PgSequencer"]

# The lock's key: "proc-seq" in ASCII.
_SEQUENCER_LOCK = 0x70726F632D736571


class PgSequencer:
    """The log's sequencer lock on PostgreSQL: a session advisory lock
    (``pg_advisory_lock``) held on a connection of its own.

    Waiting uses the server's lock queue (waiters are served in turn) bounded by
    ``lock_timeout``; a timeout of 0 tries once (``pg_try_advisory_lock``). If the
    session dies (the server restarted, the connection dropped) the server releases
    the lock and another writer may take it: the writer that held it learns only at
    its next commit, which the store's size check refuses (ADR 0015, decision 3). The
    next :meth:`acquire` after :meth:`release` opens a new session.
    """

    def __init__(self, dsn: str, *, shared: bool = False, connect_timeout: float = 30.0) -> None:
        """Prepare the lock of the log in the database at ``dsn`` (nothing is opened yet).

        Args:
            dsn: where the log is.
            shared: writers take turns (``True``), or the first keeps it until close.
            connect_timeout: seconds to wait for the lock's connection.
        """
        self._dsn = dsn
        self._where = redact(dsn)
        self._shared = shared
        self._connect_timeout = max(1, round(connect_timeout))
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False

    @property
    def shared(self) -> bool:
        """Whether writers take turns."""
        return self._shared

    def _session(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self._discard()
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                application_name="proctor-sequencer",
            )
            self._conn = conn
        return conn

    def _discard(self) -> None:
        """Drop the session (the server releases whatever it held)."""
        conn, self._conn = self._conn, None
        self._held = False
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting at most ``timeout`` seconds (0: try once).

        Raises:
            LogLockedError: another writer holds it (past the timeout).
            StoreError: the database cannot be reached.
        """
        if self._held:
            return
        try:
            conn = self._session()
            if timeout <= 0:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_SEQUENCER_LOCK,)).fetchone()
                got = bool(row and row[0])
            else:
                wait = f"{max(1, round(timeout * 1000))}ms"
                conn.execute("SELECT set_config('lock_timeout', %s, false)", (wait,))
                try:
                    conn.execute("SELECT pg_advisory_lock(%s)", (_SEQUENCER_LOCK,))
                    got = True
                except psycopg.errors.LockNotAvailable:
                    got = False
        except psycopg.Error as e:
            self._discard()
            raise StoreError(f"cannot take the log's sequencer lock in {self._where}: {e}") from e
        if not got:
            raise LogLockedError(
                f"another process is appending to this log (the sequencer lock in {self._where} is held)"
            )
        self._held = True

    def release(self) -> None:
        """Give the lock back (nothing if not held). If the session cannot say so, it
        is closed instead, which releases the lock as surely."""
        if not self._held or self._conn is None:
            self._held = False
            return
        try:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (_SEQUENCER_LOCK,))
        except psycopg.Error:
            self._discard()
        self._held = False

    def close(self) -> None:
        """Release the lock and close its connection."""
        self.release()
        self._discard()
