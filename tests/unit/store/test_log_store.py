"""The LogStore contract, run against every store implementation: SQLite and PostgreSQL.

The PostgreSQL cases run on the throwaway cluster of ``tests/pg_support.py`` (a fresh
database each); they are marked ``postgres``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_support import pg_params
from proctor.errors import StoreConflictError, StoreError
from proctor.store import LogStore, SQLiteStore
from proctor.store._pg import PgConnection
from proctor.store.base import Tile
from proctor.store.cosignatures import CosignatureStore, StoredCosignature
from proctor.store.postgres import PostgresLogStore
from proctor.store.sql import IntegrityViolation


@dataclass
class Backend:
    """One database, and how to reach it besides the store under test."""

    name: str
    open: Callable[..., LogStore]  # open(create=False): another store on the same database
    raw: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]  # committed SQL, ? placeholders


def _sqlite(path: Path) -> Backend:
    def raw(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path, isolation_level=None) as conn:
            return conn.execute(sql, tuple(params)).fetchall()

    return Backend("sqlite", lambda create=False: SQLiteStore(path, create=create), raw)


def _postgres(dsn: str) -> Backend:
    def raw(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = PgConnection(conn).execute(sql, params)
            return cur.fetchall() if cur.description else []

    return Backend("postgresql", lambda create=False: PostgresLogStore(dsn, create=create), raw)


@pytest.fixture(params=pg_params("sqlite", "postgresql"))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return _sqlite(tmp_path / "p.db")
    return _postgres(request.getfixturevalue("pg_dsn"))


@pytest.fixture
def log_store(backend: Backend) -> Iterator[LogStore]:
    s = backend.open(create=True)
    yield s
    s.close()


def tile(width: int, fill: int = 1, index: int = 0) -> Tile:
    total = sum(width >> r for r in range(8))
    return Tile(0, index, width, bytes([fill]) * 32 * total)


def test_append_and_read_back(log_store: LogStore) -> None:
    assert log_store.tree_size() == 0
    log_store.append(0, [b"a", b"b"], [tile(2)])
    log_store.append(2, [b"c"], [tile(3, 2)])
    assert log_store.tree_size() == 3
    assert log_store.entry(1) == b"b"
    assert log_store.entry(3) is None
    assert list(log_store.entries(0, 10)) == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert list(log_store.entries(1, 2)) == [(1, b"b")]
    assert log_store.tile(0, 0) == tile(3, 2)
    assert log_store.tile(1, 0) is None
    assert list(log_store.tiles()) == [tile(3, 2)]


def test_reads_in_pages_return_everything_in_order(log_store: LogStore) -> None:
    entries = [b"%d" % i for i in range(5000)]  # more than one page of entries
    full = [tile(256, i % 250, index=i) for i in range(300)]  # more than one page of tiles
    log_store.append(0, entries, full)
    assert list(log_store.entries(0, 5000)) == list(enumerate(entries))
    assert list(log_store.tiles()) == full
    for size in range(1100):  # more than one page of checkpoints
        log_store.put_checkpoint(size, f"cp {size}")
    assert list(log_store.checkpoints()) == [(s, f"cp {s}") for s in range(1100)]


def test_append_at_the_wrong_size_conflicts_and_changes_nothing(log_store: LogStore) -> None:
    log_store.append(0, [b"a"], [tile(1)])
    with pytest.raises(StoreConflictError, match="expected the stored tree size to be 5, found 1"):
        log_store.append(5, [b"x"], [tile(2)])
    assert log_store.tree_size() == 1
    assert list(log_store.entries(0, 10)) == [(0, b"a")]
    assert log_store.tile(0, 0) == tile(1)


def test_failed_append_rolls_back_everything(log_store: LogStore, backend: Backend) -> None:
    log_store.append(0, [b"a"], [tile(1)])
    # A stray row at index 1 makes the next append fail inside its transaction.
    backend.raw("INSERT INTO entries (idx, data) VALUES (1, ?)", (b"\x00",))
    with pytest.raises(StoreError, match="append of 2 entries at 1 failed"):
        log_store.append(1, [b"b", b"c"], [tile(3)])
    assert log_store.tree_size() == 1
    assert log_store.tile(0, 0) == tile(1)
    assert log_store.entry(2) is None


def test_checkpoints(log_store: LogStore) -> None:
    assert log_store.latest_checkpoint() is None
    log_store.put_checkpoint(0, "zero")
    log_store.put_checkpoint(5, "five")
    log_store.put_checkpoint(5, "ignored duplicate")
    assert log_store.latest_checkpoint() == (5, "five")
    assert log_store.checkpoint_at(0) == "zero"
    assert log_store.checkpoint_at(1) is None
    assert list(log_store.checkpoints()) == [(0, "zero"), (5, "five")]


def test_closed_store_refuses_work(backend: Backend) -> None:
    s = backend.open(create=True)
    s.close()
    for call in (s.tree_size, lambda: s.append(0, [b"a"], [tile(1)]), lambda: s.put_checkpoint(0, "x")):
        with pytest.raises(StoreError, match="closed"):
            call()


# -- appends from several writers -------------------------------------------------


def test_concurrent_appends_at_one_index_one_wins_the_other_conflicts(backend: Backend) -> None:
    """Two stores on one database append at index 0 at the same moment: exactly one
    commits, the other gets StoreConflictError; no gap, no duplicate."""
    stores = [backend.open(create=True), backend.open()]
    barrier = threading.Barrier(2)
    outcomes: dict[int, BaseException | None] = {}

    def writer(n: int) -> None:
        barrier.wait(timeout=60)
        try:
            stores[n].append(0, [b"from %d" % n], [tile(1, n + 1)])
            outcomes[n] = None
        except BaseException as e:  # recorded for the assertions below
            outcomes[n] = e

    threads = [threading.Thread(target=writer, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        winners = [n for n, e in outcomes.items() if e is None]
        losers = [e for e in outcomes.values() if e is not None]
        assert len(winners) == 1, outcomes
        assert len(losers) == 1
        assert isinstance(losers[0], StoreConflictError), losers[0]
        assert stores[1].tree_size() == 1
        assert list(stores[1].entries(0, 10)) == [(0, b"from %d" % winners[0])]
        assert stores[0].tile(0, 0) == tile(1, winners[0] + 1)
    finally:
        for s in stores:
            s.close()


def test_racing_writers_leave_no_gap_and_no_duplicate(backend: Backend) -> None:
    """Four writers, each appending at the size it last read, many times: every append
    either commits at exactly that index or conflicts; the committed entries are
    0..n-1, each once."""
    stores = [backend.open(create=True)] + [backend.open() for _ in range(3)]
    committed: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        s = stores[w]
        for attempt in range(25):
            data = b"w%d-%d" % (w, attempt)
            size = s.tree_size()
            try:
                s.append(size, [data], [])
            except StoreConflictError:
                continue
            except BaseException as e:  # recorded for the assertions below
                errors.append(e)
                return
            with lock:
                committed.append((size, data))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    try:
        assert errors == []
        assert committed
        stored = list(stores[0].entries(0, 1000))
        assert sorted(committed) == stored
        assert [i for i, _ in stored] == list(range(len(stored)))
        assert stores[0].tree_size() == len(stored)
    finally:
        for s in stores:
            s.close()


# -- writes that commit with the entries (also) ---------------------------------------


def _side_table(backend: Backend) -> None:
    backend.raw("CREATE TABLE side (k TEXT PRIMARY KEY)", ())


def test_also_writes_commit_with_the_entries(log_store: LogStore, backend: Backend) -> None:
    _side_table(backend)

    def write(conn: Any) -> None:
        conn.execute("INSERT INTO side (k) VALUES (?)", ("with 0..1",))

    log_store.append(0, [b"a", b"b"], [tile(2)], also=[write])
    assert backend.raw("SELECT k FROM side", ()) == [("with 0..1",)]
    assert log_store.tree_size() == 2


def test_a_failed_also_write_rolls_back_the_entries(log_store: LogStore, backend: Backend) -> None:
    _side_table(backend)
    log_store.append(0, [b"a"], [tile(1)])

    def broken(conn: Any) -> None:
        conn.execute("INSERT INTO side (k) VALUES (?)", ("x",))
        raise StoreError("the derived row cannot be written (simulated)")

    with pytest.raises(StoreError, match="simulated"):
        log_store.append(1, [b"b", b"c"], [tile(3, 2)], also=[broken])
    assert log_store.tree_size() == 1
    assert list(log_store.entries(0, 10)) == [(0, b"a")]
    assert log_store.tile(0, 0) == tile(1)
    assert backend.raw("SELECT count(*) FROM side", ()) == [(0,)]
    # No gap: the next append takes the index the failed one would have had.
    log_store.append(1, [b"b"], [tile(2)])
    assert list(log_store.entries(0, 10)) == [(0, b"a"), (1, b"b")]


def test_an_integrity_violation_in_also_fails_the_append(log_store: LogStore, backend: Backend) -> None:
    _side_table(backend)
    backend.raw("INSERT INTO side (k) VALUES (?)", ("taken",))

    def duplicate(conn: Any) -> None:
        conn.execute("INSERT INTO side (k) VALUES (?)", ("taken",))

    with pytest.raises(StoreError, match="append of 1 entries at 0 failed"):
        log_store.append(0, [b"a"], [tile(1)], also=[duplicate])
    assert log_store.tree_size() == 0
    assert log_store.entry(0) is None


def test_a_caught_integrity_violation_leaves_the_transaction_usable(
    log_store: LogStore, backend: Backend
) -> None:
    """SQL written for both backends may catch a constraint violation and go on (a
    replayed nonce is an answer): on PostgreSQL too the rest of the transaction
    commits."""
    _side_table(backend)
    backend.raw("INSERT INTO side (k) VALUES (?)", ("taken",))
    caught: list[BaseException] = []

    def write(conn: Any) -> None:
        try:
            conn.execute("INSERT INTO side (k) VALUES (?)", ("taken",))
        except (sqlite3.IntegrityError, IntegrityViolation) as e:
            caught.append(e)
        conn.execute("INSERT INTO side (k) VALUES (?)", ("after",))

    log_store.append(0, [b"a"], [tile(1)], also=[write])
    assert len(caught) == 1
    assert backend.raw("SELECT k FROM side ORDER BY k", ()) == [("after",), ("taken",)]
    assert log_store.tree_size() == 1


# -- SQLite only -------------------------------------------------------------------


def test_sqlite_refuses_unknown_schema_version(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "p.db", create=True).close()
    with sqlite3.connect(tmp_path / "p.db") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreError, match="expected schema version 1, found '99'"):
        SQLiteStore(tmp_path / "p.db")


def test_sqlite_refuses_missing_or_foreign_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no database"):
        SQLiteStore(tmp_path / "missing.db")
    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="found no schema"):
        SQLiteStore(tmp_path / "other.db")


def test_sqlite_is_wal_and_full_sync(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "p.db", create=True)
    conn = s._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()


def test_a_checkpoint_commits_with_its_entries_or_not_at_all(log_store: LogStore, backend: Backend) -> None:
    log_store.append(0, [b"a"], [tile(1)], checkpoint=(1, "cp 1"))
    assert log_store.latest_checkpoint() == (1, "cp 1")
    _side_table(backend)
    backend.raw("INSERT INTO side (k) VALUES (?)", ("taken",))

    def duplicate(conn: Any) -> None:
        conn.execute("INSERT INTO side (k) VALUES (?)", ("taken",))

    with pytest.raises(StoreError):
        log_store.append(1, [b"b"], [tile(2)], also=[duplicate], checkpoint=(2, "cp 2"))
    assert log_store.checkpoint_at(2) is None
    with pytest.raises(StoreConflictError):
        log_store.append(5, [b"x"], [tile(3)], checkpoint=(6, "cp 6"))
    assert log_store.checkpoint_at(6) is None
    assert list(log_store.checkpoints()) == [(1, "cp 1")]


# -- cosignatures beside the checkpoints (proctor.store.cosignatures) -----------------


def _cosig(size: int, name: str, ts: int, key_id: bytes = b"\x01\x02\x03\x04") -> StoredCosignature:
    return StoredCosignature(size, name, key_id, ts, f"\u2014 {name} sig-{size}-{ts}\n")


def test_cosignatures_are_stored_and_read_back_in_order(backend: Backend) -> None:
    store = backend.open(create=True)
    assert isinstance(store, CosignatureStore)
    try:
        assert store.cosignatures() == []  # the table does not exist yet: none, not an error
        store.put_cosignature(_cosig(5, "w2", 100))
        store.put_cosignature(_cosig(5, "w1", 100))
        store.put_cosignature(_cosig(3, "w1", 90, key_id=b"\xff\xff\xff\xff"))
        assert store.cosignatures() == [
            _cosig(3, "w1", 90, key_id=b"\xff\xff\xff\xff"), _cosig(5, "w1", 100), _cosig(5, "w2", 100)
        ]  # fmt: skip
        assert store.cosignatures(5) == [_cosig(5, "w1", 100), _cosig(5, "w2", 100)]
        assert store.cosignatures(4) == []
    finally:
        store.close()
    reopened = backend.open()
    try:
        assert isinstance(reopened, CosignatureStore)
        assert len(reopened.cosignatures()) == 3  # durable, and seen by another connection
    finally:
        reopened.close()


def test_a_later_cosignature_replaces_an_older_one_never_the_reverse(backend: Backend) -> None:
    store = backend.open(create=True)
    assert isinstance(store, CosignatureStore)
    try:
        store.put_cosignature(_cosig(7, "w1", 200))
        store.put_cosignature(_cosig(7, "w1", 150))  # older: ignored
        assert store.cosignatures(7) == [_cosig(7, "w1", 200)]
        store.put_cosignature(_cosig(7, "w1", 300))
        assert store.cosignatures(7) == [_cosig(7, "w1", 300)]
    finally:
        store.close()


def test_the_cosignatures_table_leaves_the_schema_version_alone(backend: Backend) -> None:
    store = backend.open(create=True)
    assert isinstance(store, CosignatureStore)
    try:
        store.put_cosignature(_cosig(1, "w1", 1))
    finally:
        store.close()
    assert backend.raw("SELECT value FROM meta WHERE key = 'schema'", ()) == [("1",)]
    backend.open().close()  # still opens


def test_a_closed_store_refuses_cosignatures(backend: Backend) -> None:
    store = backend.open(create=True)
    assert isinstance(store, CosignatureStore)
    store.close()
    with pytest.raises(StoreError):
        store.put_cosignature(_cosig(1, "w1", 1))
    with pytest.raises(StoreError):
        store.cosignatures()
