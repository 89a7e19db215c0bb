"""One SQLite connection per thread on one database file, as every store here uses it.

Each connection runs in autocommit mode (transactions are explicit), WAL journaling,
``synchronous=FULL`` and a 30 s busy timeout. Connections are not shared between
threads; :meth:`ThreadConnections.close` closes all of them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

from proctor.errors import StoreError

__all__ = ["ThreadConnections"]


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
            raise StoreError(f"cannot open {self._path}: {e}") from e
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
