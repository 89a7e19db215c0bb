"""One SQLite connection per thread on one database file, as every store here uses it.

Each connection runs in autocommit mode (transactions are explicit), WAL journaling,
``synchronous=FULL`` and a 30 s busy timeout. Connections are not shared between
threads; :meth:`ThreadConnections.close` closes all of them.
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
        self._all: list[sqlite3.Connection] = []
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
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open {self._path}: {e}{unwritable_note(self._path)}") from e
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection; later :meth:`get` calls fail."""
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):  # best effort; nothing is pending
                conn.close()
        self._local = threading.local()
