"""Locks between governor processes on PostgreSQL: session advisory locks, each on a
connection of its own.

- :class:`PgSequencer` (a :class:`~proctor.store.locks.Sequencer`): the log's sequencer
  lock. Writers on one log take turns assigning indices with it (ADR 0015,
  :mod:`proctor.store.locks`).
- :func:`pg_transition_lock`: the lock every change of an execution's status takes in
  turns across the governor nodes of one database (ADR 0016, the transition lock; the
  :class:`~proctor.governor.registry.TransitionLock` around it).
- :class:`PgServingMode`: how a governor serves the database, held for its life: shared
  by every ``proctor serve --shared`` node, exclusively by an exclusive one, so the two
  kinds never serve one database at once from any host (the ``governors.lock`` file of
  a data directory excludes only the processes of one host).

Advisory locks belong to a database, so one log per database has one of each; the keys
differ (:data:`SEQUENCER_KEY`, :data:`TRANSITION_KEY`, :data:`SERVING_KEY`).

A session that dies (the server restarted, the connection was terminated, the network
dropped) releases what it held, and another process may take it. What then keeps the
store consistent is not the lock: for the log, the store's size check in each append
(:class:`~proctor.store.postgres.PostgresLogStore`) fails the old holder's next commit
instead of forking the log; for the transitions, the rows' own constraints (a warrant
starts one execution: ``executions.warrant`` is unique). The sessions ask the server
to probe the client with TCP keepalives (:data:`KEEPALIVES`), so a node cut off from
the database loses its locks within seconds rather than at the operating system's
default of two hours, and the other nodes go on.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import psycopg

from proctor.errors import LogLockedError, StoreError
from proctor.store._pg import KEEPALIVES, client_keepalives, redact

__all__ = [
    "KEEPALIVES",
    "SEQUENCER_KEY",
    "SERVING_KEY",
    "TRANSITION_KEY",
    "PgAdvisoryLock",
    "PgSequencer",
    "PgServingMode",
    "dedicated_session",
    "pg_transition_lock",
]

_log = logging.getLogger("proctor.store")

SEQUENCER_KEY = 0x70726F632D736571
"""The log's sequencer lock: "proc-seq" in ASCII."""
TRANSITION_KEY = 0x70726F632D657865
"""The executions' transition lock: "proc-exe" in ASCII."""
SERVING_KEY = 0x70726F632D737276
"""The serving mode (shared or exclusive): "proc-srv" in ASCII."""


def dedicated_session(dsn: str, *, application_name: str, connect_timeout: float) -> psycopg.Connection[Any]:
    """An autocommit connection of its own (a lock's, the listener's), with
    :data:`KEEPALIVES` on the client unless ``dsn`` sets them, and on the server as the
    session's ``tcp_keepalives_*`` settings (``SET``, not a startup option, so a
    connection pooler in session mode passes it).

    Raises:
        psycopg.Error: the connection failed (callers wrap it).
    """
    client = client_keepalives(dsn)
    conn = psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=max(1, round(connect_timeout)),
        application_name=application_name,
        **client,
    )
    try:
        conn.execute(
            "SELECT set_config('tcp_keepalives_idle', %s, false), "
            "set_config('tcp_keepalives_interval', %s, false), set_config('tcp_keepalives_count', %s, false)",
            tuple(str(KEEPALIVES[k]) for k in ("keepalives_idle", "keepalives_interval", "keepalives_count")),
        )
    except BaseException:
        conn.close()
        raise
    return conn


class PgAdvisoryLock:
    """A session advisory lock (``pg_advisory_lock``) on ``key``, held on a connection
    of its own; a :class:`~proctor.store.locks.Sequencer`.

    Waiting uses the server's lock queue (waiters are served in turn) bounded by
    ``lock_timeout``; a timeout of 0 tries once (``pg_try_advisory_lock``). If the
    session dies the server releases the lock and another process may take it; the
    holder learns only when it next talks to the database (module docstring: what then
    keeps the store consistent). The next :meth:`acquire` after a lost session opens a
    new one.
    """

    def __init__(
        self,
        dsn: str,
        *,
        key: int,
        what: str,
        busy: str,
        application_name: str,
        shared: bool = False,
        connect_timeout: float = 30.0,
    ) -> None:
        """Prepare the lock ``key`` in the database at ``dsn`` (nothing is opened yet).

        Args:
            dsn: the database.
            key: the advisory lock's 64-bit key.
            what: the lock, for messages ("the log's sequencer lock").
            busy: the message of :class:`~proctor.errors.LogLockedError` when another
                process holds it (the database is appended, redacted).
            application_name: the session's name in ``pg_stat_activity``.
            shared: holders take turns (``True``), or the first keeps it until close.
            connect_timeout: seconds to wait for the lock's connection.
        """
        self._dsn = dsn
        self._where = redact(dsn)
        self._key = key
        self._what = what
        self._busy = busy
        self._name = application_name
        self._shared = shared
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False
        self._lock_timeout = ""  # the session's lock_timeout as last set ("" for a new session)

    @property
    def shared(self) -> bool:
        """Whether holders take turns."""
        return self._shared

    def _session(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self._discard()
            conn = dedicated_session(
                self._dsn, application_name=self._name, connect_timeout=self._connect_timeout
            )
            self._conn = conn
            self._lock_timeout = ""
        return conn

    def _discard(self) -> None:
        """Drop the session (the server releases whatever it held)."""
        conn, self._conn = self._conn, None
        self._held = False
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting at most ``timeout`` seconds (0: try once). A kept
        session that turns out dead (the server restarted since it was last used) is
        replaced at once, and the lock tried on the new one: only a new session that
        fails is an error.

        Raises:
            LogLockedError: another process holds it (past the timeout).
            StoreError: the database cannot be reached.
        """
        if self._held:
            return
        kept = self._conn is not None and not (self._conn.closed or self._conn.broken)
        try:
            got = self._take(timeout)
        except psycopg.Error as e:
            self._discard()
            if not kept:
                raise StoreError(f"cannot take {self._what} in {self._where}: {e}") from e
            try:
                got = self._take(timeout)
            except psycopg.Error as again:
                self._discard()
                raise StoreError(f"cannot take {self._what} in {self._where}: {again}") from again
        if not got:
            raise LogLockedError(f"{self._busy} in {self._where} is held)")
        self._held = True

    def _take(self, timeout: float) -> bool:
        """One attempt on the session (opened if there is none); whether it got the lock.

        Raises:
            psycopg.Error: the session failed.
        """
        conn = self._session()
        if timeout <= 0:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
            return bool(row and row[0])
        wait = f"{max(1, round(timeout * 1000))}ms"
        if wait != self._lock_timeout:  # once per session and timeout: a round trip saved per turn
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (wait,))
            self._lock_timeout = wait
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (self._key,))
        except psycopg.errors.LockNotAvailable:
            return False
        return True

    def release(self) -> None:
        """Give the lock back (nothing if not held). If the session cannot say so, it
        is closed instead, which releases the lock as surely."""
        if not self._held or self._conn is None:
            self._held = False
            return
        try:
            row = self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,)).fetchone()
            lost = not (row and row[0])
        except psycopg.Error:
            self._discard()
            lost = True
        self._held = False
        if lost:  # what was done under it may have raced another holder (module docstring)
            _log.warning("%s in %s was lost while held (its session ended)", self._what, self._where)

    def contended(self) -> bool:
        """Whether another session waits for this lock (a lock not granted in
        ``pg_locks``; a 64-bit advisory key shows as two 32-bit halves). Unsure (the
        query fails): ``True``, so that a waiter is never starved."""
        if not self._held or self._conn is None:
            return False
        try:
            row = self._conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND classid = %s::oid AND objid = %s::oid AND objsubid = 1)",
                (self._key >> 32, self._key & 0xFFFFFFFF),
            ).fetchone()
        except psycopg.Error:
            return True
        return bool(row and row[0])

    def close(self) -> None:
        """Release the lock and close its connection."""
        self.release()
        self._discard()


class PgSequencer(PgAdvisoryLock):
    """The log's sequencer lock on PostgreSQL (:data:`SEQUENCER_KEY`).

    If the session dies the server releases the lock and another writer may take it:
    the writer that held it learns only at its next commit, which the store's size
    check refuses (ADR 0015, decision 3).
    """

    def __init__(self, dsn: str, *, shared: bool = False, connect_timeout: float = 30.0) -> None:
        """Prepare the lock of the log in the database at ``dsn`` (nothing is opened yet).

        Args:
            dsn: where the log is.
            shared: writers take turns (``True``), or the first keeps it until close.
            connect_timeout: seconds to wait for the lock's connection.
        """
        super().__init__(
            dsn,
            key=SEQUENCER_KEY,
            what="the log's sequencer lock",
            busy="another process is appending to this log (the sequencer lock",
            application_name="proctor-sequencer",
            shared=shared,
            connect_timeout=connect_timeout,
        )


def pg_transition_lock(dsn: str, *, connect_timeout: float = 30.0) -> PgAdvisoryLock:
    """The executions' transition lock of the governor nodes on the database at ``dsn``
    (:data:`TRANSITION_KEY`, taken in turns; session ``proctor-transitions``).

    Failing closed when its session is lost: the server releases the lock, and another
    node may start or end an execution while this one still believes it holds it.
    A warrant still starts one execution (the second start's commit breaks the unique
    ``executions.warrant`` and fails); what the lost lock no longer guarantees until the
    holder's change is durable is that a count of running executions read under it is
    exact (``max_running`` may be passed by the one start in flight), nor that an
    execution's end is recorded once (its row's update is not conditional on the
    status). The window is the holder's change in flight when its session died: the
    holder's release then finds the session gone and says so (a warning in the
    ``proctor.store`` log). Sessions are probed by keepalives (:data:`KEEPALIVES`), and
    the holder's next :meth:`acquire <PgAdvisoryLock.acquire>` opens a new session.
    """
    return PgAdvisoryLock(
        dsn,
        key=TRANSITION_KEY,
        what="the executions' transition lock",
        busy="another governor node is changing an execution (the transition lock",
        application_name="proctor-transitions",
        shared=True,
        connect_timeout=connect_timeout,
    )


class PgServingMode:
    """How this governor serves the database: shared with other ``--shared`` nodes, or
    alone; held for the life of the process (:data:`SERVING_KEY`: a shared advisory
    lock for a shared governor, an exclusive one for an exclusive governor).

    An exclusive governor trusts its memory for nonces and leases, which shared nodes
    do not write, so the two kinds must never serve one database at once, whatever
    host each runs on. If the session dies (the server restarted) the claim is gone
    until the process restarts; the other locks and the store's checks still hold.
    """

    def __init__(self, dsn: str, *, shared: bool, connect_timeout: float = 30.0) -> None:
        """Claim the database for this governor's mode.

        Raises:
            LogLockedError: a governor of the other kind serves the database (or an
                exclusive one already does).
            StoreError: the database cannot be reached.
        """
        where = redact(dsn)
        try:
            conn = dedicated_session(dsn, application_name="proctor-serving", connect_timeout=connect_timeout)
        except psycopg.Error as e:
            raise StoreError(f"cannot claim the database {where} for this governor: {e}") from e
        take = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        try:
            row = conn.execute(f"SELECT {take}(%s)", (SERVING_KEY,)).fetchone()
        except psycopg.Error as e:
            with contextlib.suppress(psycopg.Error):
                conn.close()
            raise StoreError(f"cannot claim the database {where} for this governor: {e}") from e
        if not (row and row[0]):
            conn.close()
            other = "an exclusive governor serves" if shared else "other governors serve"
            hint = "" if shared else " (start each with --shared to serve it together)"
            raise LogLockedError(f"{other} the database {where}{hint}")
        self._conn: psycopg.Connection[Any] | None = conn

    def close(self) -> None:
        """Give the claim back."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
