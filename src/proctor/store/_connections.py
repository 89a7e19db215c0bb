"""One SQLite connection per thread on one database file, as every store here uses it.

Each connection runs in autocommit mode (transactions are explicit), WAL journaling,
``synchronous=FULL`` and a 30 s busy timeout. Connections are not shared between
threads; :meth:`ThreadConnections.close` closes all of them.

Threads come and go (a server's worker threads end when idle and new ones start for
the next burst), so a connection must not outlive its thread: each time a thread opens
its connection, the connections of threads that have ended are closed first. A thread
that has ended runs no more code, and its connection was used by it alone, so nothing
can be using that connection any more; a live thread's connection is never touched.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

from proctor.errors import StoreError

__all__ = ["ThreadConnections", "unwritable_note"]


def unwritable_note(path: str | Path) -> str:
    """Why the database at ``path`` (or its write-ahead log) cannot be written, as
    ``" (<file> cannot be written: <reason>)"``, or ``""`` when both open for writing.

    SQLite says only that it cannot open the file, or that a write failed with an I/O
    error; the operator needs the reason (a read-only file system, an immutable file).
    Opening a file for writing and closing it again changes nothing in it.
    """
    for candidate in (Path(path), Path(f"{path}-wal")):
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as e:
            return f" ({candidate.name} cannot be written: {e.strerror})"
        os.close(fd)
    return ""


class ThreadConnections:
    """Per-thread connections to ``path``."""

    def __init__(self, path: str | Path, *, what: str) -> None:
        self._path = str(path)
        self._what = what
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []  # owner, connection
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use.

        Raises:
            StoreError: closed, or the file cannot be opened.
        """
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreError(f"the {self._what} is closed")
        self._close_ended()
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open {self._path}: {e}{unwritable_note(self._path)}") from e
        with self._lock:
            closed = self._closed
            if not closed:
                self._all.append((threading.current_thread(), conn))
        if closed:  # close() ran meanwhile: it did not see this connection
            conn.close()
            raise StoreError(f"the {self._what} is closed")
        self._local.conn = conn
        return conn

    def _close_ended(self) -> None:
        """Close the connections of threads that have ended (their thread-local slot went
        with them). ``is_alive()`` is false only once a started thread has finished, so a
        live thread's connection is never closed; an error closing one is not raised."""
        live: list[tuple[threading.Thread, sqlite3.Connection]] = []
        ended: list[sqlite3.Connection] = []
        with self._lock:
            for thread, conn in self._all:  # one is_alive() each: none can fall between
                if thread.is_alive():
                    live.append((thread, conn))
                else:
                    ended.append(conn)
            self._all = live
        for conn in ended:  # check_same_thread=False: any thread may close it
            with contextlib.suppress(Exception):  # best effort; its thread left nothing pending
                conn.close()

    def close(self) -> None:
        """Close every connection; later :meth:`get` calls fail."""
        with self._lock:
            self._closed = True
            owned, self._all = self._all, []
        for _, conn in owned:
            with contextlib.suppress(sqlite3.Error):  # best effort; nothing is pending
                conn.close()
        self._local = threading.local()
