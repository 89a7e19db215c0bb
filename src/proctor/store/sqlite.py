"""The embedded store: one SQLite file in WAL mode with ``synchronous=FULL``.

One connection per thread (SQLite connections are not shared between threads here);
readers never block the writer and see only committed transactions (WAL). Appends run
``BEGIN IMMEDIATE`` so two writers cannot interleave, and check the stored size first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from proctor.errors import StoreConflictError, StoreError
from proctor.store._connections import ThreadConnections, unwritable_note
from proctor.store.base import Tile
from proctor.store.cosignatures import StoredCosignature

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "StoredCosignature"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, width INTEGER NOT NULL,
    hashes BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL);
"""
# Witnesses' cosignatures of stored checkpoints (C2SP tlog-cosignature signature lines),
# added after schema 1 shipped: created on first use, so older databases keep version 1.
_COSIGNATURES = """
CREATE TABLE IF NOT EXISTS cosignatures (
    size INTEGER NOT NULL, name TEXT NOT NULL, key_id BLOB NOT NULL,
    timestamp INTEGER NOT NULL, line TEXT NOT NULL,
    PRIMARY KEY (size, name, key_id)) WITHOUT ROWID
"""


class SQLiteStore:
    """A :class:`~proctor.store.base.LogStore` on one SQLite file."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        """Open (or with ``create``, create) the database at ``path``.

        Raises:
            StoreError: the file cannot be opened, or its schema version is unknown.
        """
        self._path = str(path)
        self._connections = ThreadConnections(path, what="store")
        if not create and not Path(path).exists():
            raise StoreError(f"no database at {path}")
        conn = self._conn()
        try:
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.OperationalError:
            version = None
        if version is None:
            if not create:
                raise StoreError(f"{path}: expected a proctor database, found no schema")
            try:
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema', ?), ('tree_size', '0')",
                    (str(SCHEMA_VERSION),),
                )
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise StoreError(f"cannot create the schema in {path}: {e}") from e
        elif version[0] != str(SCHEMA_VERSION):
            raise StoreError(f"{path}: expected schema version {SCHEMA_VERSION}, found {version[0]!r}")

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def tree_size(self) -> int:
        """The number of committed entries."""
        try:
            row = self._conn().execute("SELECT value FROM meta WHERE key = 'tree_size'").fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the tree size: {e}") from e
        if row is None:
            raise StoreError("the tree size is missing from the database")
        return int(row[0])

    def append(
        self,
        first_index: int,
        entries: Sequence[bytes],
        tiles: Sequence[Tile],
        *,
        also: Sequence[Callable[[sqlite3.Connection], None]] = (),
        checkpoint: tuple[int, str] | None = None,
    ) -> None:
        """Commit entries, tiles, the new size and its signed checkpoint in one durable
        transaction.

        ``also`` are further writes (state rows derived from these entries) that run
        inside the same transaction, after the entries: all commit or none does.
        """
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'tree_size'").fetchone()
                if row is None or int(row[0]) != first_index:
                    found = None if row is None else row[0]
                    raise StoreConflictError(
                        f"expected the stored tree size to be {first_index}, found {found}"
                    )
                conn.executemany(
                    "INSERT INTO entries (idx, data) VALUES (?, ?)",
                    zip(range(first_index, first_index + len(entries)), entries, strict=True),
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO tiles (level, idx, width, hashes) VALUES (?, ?, ?, ?)",
                    [(t.level, t.index, t.width, t.data) for t in tiles],
                )
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'tree_size'",
                    (str(first_index + len(entries)),),
                )
                for write in also:
                    write(conn)
                if checkpoint is not None:
                    conn.execute(
                        "INSERT INTO checkpoints (size, note) VALUES (?, ?) ON CONFLICT (size) DO NOTHING",
                        checkpoint,
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            note = unwritable_note(self._path)
            raise StoreError(f"append of {len(entries)} entries at {first_index} failed: {e}{note}") from e

    def entry(self, index: int) -> bytes | None:
        """The stored bytes of entry ``index``."""
        try:
            row = self._conn().execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read entry {index}: {e}") from e
        return None if row is None else bytes(row[0])

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """Stored entries in ``[start, end)``, in index order, read in pages."""
        page = 4096
        pos = start
        while pos < end:
            try:
                rows = (
                    self._conn()
                    .execute(
                        "SELECT idx, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx LIMIT ?",
                        (pos, end, page),
                    )
                    .fetchall()
                )
            except sqlite3.Error as e:
                raise StoreError(f"cannot read entries from {pos}: {e}") from e
            if not rows:
                return
            for idx, data in rows:
                yield int(idx), bytes(data)
            pos = int(rows[-1][0]) + 1

    def tile(self, level: int, index: int) -> Tile | None:
        """The stored tile at (``level``, ``index``)."""
        try:
            row = (
                self._conn()
                .execute("SELECT width, hashes FROM tiles WHERE level = ? AND idx = ?", (level, index))
                .fetchone()
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot read tile {level}/{index}: {e}") from e
        return None if row is None else Tile(level, index, int(row[0]), bytes(row[1]))

    def tiles(self) -> Iterator[Tile]:
        """Every stored tile, by level then index."""
        try:
            rows = self._conn().execute("SELECT level, idx, width, hashes FROM tiles ORDER BY level, idx")
            for level, idx, width, data in rows:
                yield Tile(int(level), int(idx), int(width), bytes(data))
        except sqlite3.Error as e:
            raise StoreError(f"cannot read tiles: {e}") from e

    def put_checkpoint(self, size: int, note: str) -> None:
        """Store a checkpoint without forcing an fsync (see the base module's contract)."""
        conn = self._conn()
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            try:
                conn.execute("INSERT OR IGNORE INTO checkpoints (size, note) VALUES (?, ?)", (size, note))
            finally:
                conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as e:
            raise StoreError(f"cannot store the checkpoint of size {size}: {e}") from e

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The checkpoint with the largest size."""
        try:
            row = (
                self._conn()
                .execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
                .fetchone()
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the latest checkpoint: {e}") from e
        return None if row is None else (int(row[0]), str(row[1]))

    def checkpoint_at(self, size: int) -> str | None:
        """The checkpoint for exactly ``size``."""
        try:
            row = self._conn().execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the checkpoint of size {size}: {e}") from e
        return None if row is None else str(row[0])

    def checkpoints(self) -> Iterator[tuple[int, str]]:
        """Every checkpoint by increasing size."""
        try:
            for size, note in self._conn().execute("SELECT size, note FROM checkpoints ORDER BY size"):
                yield int(size), str(note)
        except sqlite3.Error as e:
            raise StoreError(f"cannot read checkpoints: {e}") from e

    # -- cosignatures (C2SP tlog-cosignature; written by ``proctor log cosign``) -----------

    def put_cosignature(self, cosignature: StoredCosignature) -> None:
        """Store a witness's cosignature durably; a later one by the same key replaces it.

        The caller has verified it against the stored checkpoint of its size: the store
        keeps bytes and does not know what they sign.
        """
        c = cosignature
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_COSIGNATURES)
                conn.execute(
                    "INSERT INTO cosignatures (size, name, key_id, timestamp, line) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (size, name, key_id) DO UPDATE SET timestamp = excluded.timestamp, "
                    "line = excluded.line WHERE excluded.timestamp > cosignatures.timestamp",
                    (c.size, c.name, c.key_id, c.timestamp, c.line),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"cannot store the cosignature of {c.name} on size {c.size}: {e}") from e

    def _has_cosignatures(self) -> bool:
        row = (
            self._conn()
            .execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cosignatures'")
            .fetchone()
        )
        return row is not None

    def cosignatures(self, size: int | None = None) -> list[StoredCosignature]:
        """The stored cosignatures of the checkpoint of ``size`` (of every size if ``None``),
        by size, then name."""
        columns = "SELECT size, name, key_id, timestamp, line FROM cosignatures"
        try:
            if not self._has_cosignatures():
                return []
            if size is None:
                cursor = self._conn().execute(f"{columns} ORDER BY size, name, key_id")
            else:
                cursor = self._conn().execute(f"{columns} WHERE size = ? ORDER BY name, key_id", (size,))
            rows = cursor.fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read cosignatures: {e}") from e
        return [StoredCosignature(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]), str(r[4])) for r in rows]

    def close(self) -> None:
        """Close every connection this store opened."""
        self._connections.close()
