"""The LogStore contract, run against every store implementation (SQLite for now)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.errors import StoreConflictError, StoreError
from proctor.store import LogStore, SQLiteStore
from proctor.store.base import Tile


@pytest.fixture(params=["sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogStore]:
    s = SQLiteStore(tmp_path / "p.db", create=True)
    yield s
    s.close()


def tile(width: int, fill: int = 1) -> Tile:
    total = sum(width >> r for r in range(8))
    return Tile(0, 0, width, bytes([fill]) * 32 * total)


def test_append_and_read_back(store: LogStore) -> None:
    assert store.tree_size() == 0
    store.append(0, [b"a", b"b"], [tile(2)])
    store.append(2, [b"c"], [tile(3, 2)])
    assert store.tree_size() == 3
    assert store.entry(1) == b"b"
    assert store.entry(3) is None
    assert list(store.entries(0, 10)) == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert store.tile(0, 0) == tile(3, 2)
    assert store.tile(1, 0) is None
    assert list(store.tiles()) == [tile(3, 2)]


def test_append_at_the_wrong_size_conflicts_and_changes_nothing(store: LogStore) -> None:
    store.append(0, [b"a"], [tile(1)])
    with pytest.raises(StoreConflictError, match="expected the stored tree size to be 5, found 1"):
        store.append(5, [b"x"], [tile(2)])
    assert store.tree_size() == 1
    assert list(store.entries(0, 10)) == [(0, b"a")]
    assert store.tile(0, 0) == tile(1)


def test_failed_append_rolls_back_everything(store: LogStore, tmp_path: Path) -> None:
    store.append(0, [b"a"], [tile(1)])
    # A stray row at index 1 makes the next append fail inside its transaction.
    with sqlite3.connect(tmp_path / "p.db") as conn:
        conn.execute("INSERT INTO entries (idx, data) VALUES (1, x'00')")
    with pytest.raises(StoreError, match="append of 2 entries at 1 failed"):
        store.append(1, [b"b", b"c"], [tile(3)])
    assert store.tree_size() == 1
    assert store.tile(0, 0) == tile(1)
    assert store.entry(2) is None


def test_checkpoints(store: LogStore) -> None:
    assert store.latest_checkpoint() is None
    store.put_checkpoint(0, "zero")
    store.put_checkpoint(5, "five")
    store.put_checkpoint(5, "ignored duplicate")
    assert store.latest_checkpoint() == (5, "five")
    assert store.checkpoint_at(0) == "zero"
    assert store.checkpoint_at(1) is None
    assert list(store.checkpoints()) == [(0, "zero"), (5, "five")]


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


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "p.db", create=True)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.tree_size()
