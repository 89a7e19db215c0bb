"""Per-thread SQLite connections do not outlive their threads.

A server's worker threads end when idle and new ones start for the next burst; each
opens its own connection. Those of ended threads must be closed (else file descriptors
pile up until "too many open files"), and a live thread's connection never.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from proctor.errors import StoreError
from proctor.store._connections import ThreadConnections
from proctor.store.sqlite import SQLiteStore
from proctor.store.state import StateStore

THREADS = 50


def _open_fds(path: Path) -> int:
    """This process's open file descriptors on the database file, its WAL and its
    shared-memory index."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # the descriptor of the listing itself, gone by now
            continue
        if target.startswith(str(path)):
            count += 1
    return count


def _in_threads(work: Callable[[], object], n: int = THREADS) -> None:
    """``work`` in ``n`` short-lived threads, one after another (each started, joined)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as e:
            errors.append(e)

    for _ in range(n):
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    assert errors == []


def _is_open(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1").fetchone()
    except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
        return False
    return True


@pytest.mark.parametrize("which", ["log store", "state store"])
def test_short_lived_threads_leave_few_descriptors_open(tmp_path: Path, which: str) -> None:
    path = tmp_path / "p.db"
    log = SQLiteStore(path, create=True)
    state = StateStore(path) if which == "state store" else None
    query: Callable[[], object] = state.ping if state is not None else log.tree_size
    try:
        query()
        before = _open_fds(path)
        _in_threads(query)
        after = _open_fds(path)
        # Before the fix: one connection (a database and a WAL descriptor) per thread
        # that ever queried, about 100 descriptors here. Now: the stores' connections
        # on this thread, and the last ended thread's (closed when another thread
        # next opens one).
        assert after <= before + 3, (before, after)
    finally:
        if state is not None:
            state.close()
        log.close()
    assert _open_fds(path) == 0


def test_only_the_connections_of_ended_threads_are_closed(tmp_path: Path) -> None:
    connections = ThreadConnections(tmp_path / "p.db", what="store")
    seen: list[sqlite3.Connection] = []

    def query() -> None:
        conn = connections.get()
        conn.execute("SELECT 1").fetchone()
        seen.append(conn)

    try:
        query()  # this thread's, alive throughout
        _in_threads(query)
        assert len(seen) == THREADS + 1
        still_open = [conn for conn in seen if _is_open(conn)]
        # Each thread's get() closed its ended predecessor's connection; the last
        # ended thread's stays open until another thread opens one.
        assert still_open == [seen[0], seen[-1]]
        _in_threads(query, 1)
        assert [conn for conn in seen if _is_open(conn)] == [seen[0], seen[-1]]
    finally:
        connections.close()
    assert not any(_is_open(conn) for conn in seen)


def test_a_live_threads_connection_stays_open_while_others_come_and_go(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    connections = ThreadConnections(path, what="store")
    connections.get().execute("CREATE TABLE t (x INTEGER)")
    in_transaction = threading.Event()
    others_done = threading.Event()
    outcome: list[object] = []

    def long_lived() -> None:
        try:
            conn = connections.get()
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
            conn.execute("BEGIN IMMEDIATE")  # in the middle of a write transaction
            conn.execute("INSERT INTO t VALUES (1)")
            in_transaction.set()
            assert others_done.wait(30)
            assert connections.get() is conn
            conn.execute("INSERT INTO t VALUES (2)")
            conn.execute("COMMIT")
            outcome.append(conn.execute("SELECT count(*) FROM t").fetchone())
        except BaseException as e:
            outcome.append(e)
            raise

    thread = threading.Thread(target=long_lived)
    thread.start()
    try:
        assert in_transaction.wait(30)
        # Readers on short-lived threads (WAL: the writer does not block them); each
        # opens a connection, closing those of ended threads.
        _in_threads(lambda: connections.get().execute("SELECT count(*) FROM t").fetchone())
    finally:
        others_done.set()
        thread.join(30)
    try:
        assert outcome == [(2,)]
        assert connections.get().execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
    finally:
        connections.close()
    assert _open_fds(path) == 0


def test_close_closes_every_connection_even_a_live_threads(tmp_path: Path) -> None:
    connections = ThreadConnections(tmp_path / "p.db", what="store")
    got: list[sqlite3.Connection] = []
    release = threading.Event()

    def live() -> None:
        got.append(connections.get())
        release.wait(30)

    thread = threading.Thread(target=live)
    thread.start()
    try:
        while not got:
            thread.join(0.01)
        mine = connections.get()
        connections.close()
        assert not _is_open(got[0])
        assert not _is_open(mine)
        with pytest.raises(StoreError, match="the store is closed"):
            connections.get()
    finally:
        release.set()
        thread.join(30)


class _CloseFails(sqlite3.Connection):
    """Closes, then reports a failure."""

    def close(self) -> None:
        super().close()
        raise sqlite3.OperationalError("injected close failure")


def test_a_failure_closing_an_ended_threads_connection_is_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect = sqlite3.connect
    # The module calls sqlite3.connect: every connection it opens now fails to close.
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: connect(*a, factory=_CloseFails, **kw))
    connections = ThreadConnections(tmp_path / "p.db", what="store")
    try:
        _in_threads(lambda: connections.get().execute("SELECT 1").fetchone(), 3)
        assert connections.get().execute("SELECT 1").fetchone() == (1,)
    finally:
        connections.close()
