"""One consistent, read-only view of a data directory's SQLite file: the log's entries,
its latest checkpoint and every governance state row, from a single snapshot.

The state check (:mod:`proctor.governor.state_audit`) replays the log against the state
tables; both must come from the same moment, or an admin change committed in between
(its event and its rows in one transaction) would show as a discrepancy. A
:class:`StateSnapshot` opens one read transaction (WAL: writers go on meanwhile) and
reads everything through it; the rows come back as typed records, each column checked
for the type the governor reads it as (a text column that holds bytes is decoded, an
integer column that holds anything else is a :class:`~proctor.errors.StoreError`
naming the row and column).

Large tables (entries, warrants) are streamed page by page, in index order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from proctor.errors import StoreError
from proctor.store.state import RevocationRecord

__all__ = [
    "BundleRow",
    "PrincipalRow",
    "RevocationRow",
    "StateRows",
    "StateSnapshot",
    "WarrantRow",
    "has_state",
]

_PAGE = 4096


@dataclass(frozen=True)
class PrincipalRow:
    """A ``principals`` row as the governor reads it (``attrs``: the stored JSON text)."""

    name: str
    public_key: str
    attrs: str
    zone: str
    status: str


@dataclass(frozen=True)
class BundleRow:
    """A ``bundles`` row."""

    digest: str
    version: int
    doc: str
    log_index: int


RevocationRow = RevocationRecord
"""A ``revocations`` row: the store's own record (the same columns, read the same way)."""


@dataclass(frozen=True)
class WarrantRow:
    """A ``warrants`` row (the columns the log vouches for)."""

    id: str
    principal: str
    parent: str
    decision_index: int
    expires: int
    issued_index: int
    token: str


@dataclass(frozen=True)
class StateRows:
    """The state tables to check.

    ``warrants`` may be a one-pass iterator (the table can be large); it must come in
    ascending ``issued_index`` order, so that it is matched against the log as both
    stream by.
    """

    principals: Sequence[PrincipalRow]
    bundles: Sequence[BundleRow]
    active_bundle: str | None
    revocations: Sequence[RevocationRow]
    warrants: Iterable[WarrantRow]


def has_state(db_path: str | Path) -> bool:
    """Whether the database holds governance state tables (``proctor init`` made it,
    not a bare log).

    Raises:
        StoreError: the database cannot be read.
    """
    conn = _connect(db_path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'state_schema'").fetchone()
    except sqlite3.Error as e:
        raise StoreError(f"cannot read {db_path}: {e}") from e
    finally:
        conn.close()
    return row is not None


class StateSnapshot:
    """A read transaction over ``db_path``; use as a context manager.

    Every method raises :class:`~proctor.errors.StoreError` when the database cannot be
    read or a column holds a value of the wrong type. Iterators must be consumed before
    the snapshot is closed. (PostgreSQL: :class:`proctor.store.state_pg.PostgresStateSnapshot`.)
    """

    _errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    """What a failed read raises on this snapshot's connection (wrapped in StoreError)."""

    def __init__(self, db_path: str | Path) -> None:
        """Open the snapshot.

        Raises:
            StoreError: the database cannot be opened.
        """
        self._path = db_path
        self._conn = _connect(db_path)
        try:
            self._conn.execute("BEGIN")  # one snapshot for everything read through it
        except sqlite3.Error as e:
            self._conn.close()
            raise StoreError(f"cannot read {db_path}: {e}") from e

    def __enter__(self) -> StateSnapshot:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the read transaction."""
        self._conn.close()

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        try:
            return self._conn.execute(sql, params)
        except self._errors as e:
            raise StoreError(f"cannot read the state and the log of {self._path}: {e}") from e

    def _pages(self, cursor: Any) -> Iterator[list[Any]]:
        try:
            while rows := cursor.fetchmany(_PAGE):
                yield rows
        except self._errors as e:
            raise StoreError(f"cannot read the state and the log of {self._path}: {e}") from e

    def _one(self, sql: str) -> Any:
        row = self._query(sql).fetchone()
        return None if row is None else row[0]

    def tree_size(self) -> int:
        """The log's size as the store records it (``meta.tree_size``)."""
        return _int(self._one("SELECT value FROM meta WHERE key = 'tree_size'"), "meta tree_size")

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The largest stored checkpoint: (its stored size, its note text), or ``None``."""
        row = self._query("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return _int(row[0], "checkpoints.size"), _text(row[1])

    def entries(self, size: int) -> Iterator[tuple[int, bytes]]:
        """The entries with index below ``size``, in index order, as stored (a gap is the
        caller's to find: indices are returned as they are)."""
        cursor = self._query("SELECT idx, data FROM entries WHERE idx < ? ORDER BY idx", (size,))
        for rows in self._pages(cursor):
            for idx, data in rows:
                yield _int(idx, "entries.idx"), bytes(data)

    def tile(self, level: int, index: int) -> tuple[int, bytes] | None:
        """The stored tile at (``level``, ``index``) as (its width, its hashes), or ``None``."""
        sql = "SELECT width, hashes FROM tiles WHERE level = ? AND idx = ?"
        row = self._query(sql, (level, index)).fetchone()
        if row is None:
            return None
        return _int(row[0], f"tiles[{level}/{index}].width"), bytes(row[1])

    def tile_count(self) -> int:
        """How many tiles are stored."""
        return _int(self._one("SELECT count(*) FROM tiles"), "the count of tiles")

    def rows(self) -> StateRows:
        """Every state table (warrants streamed, in ``issued_index`` order)."""
        principals = [
            PrincipalRow(_text(n), _text(k), _text(a), _text(z), _text(s))
            for n, k, a, z, s in self._query(
                "SELECT name, public_key, attrs, zone, status FROM principals ORDER BY name"
            )
        ]
        bundles = [
            BundleRow(
                _text(d), _int(v, f"bundles[{d}].version"), _text(doc), _int(i, f"bundles[{d}].log_index")
            )
            for d, v, doc, i in self._query("SELECT digest, version, doc, log_index FROM bundles")
        ]
        active = self._one("SELECT value FROM meta WHERE key = 'active_bundle'")
        revocations = [
            RevocationRow(
                _text(k), _text(t), _text(r), _text(b), _text(tm), _int(i, f"revocations[{k}/{t}].log_index")
            )
            for k, t, r, b, tm, i in self._query(
                "SELECT kind, target, reason, by, time, log_index FROM revocations ORDER BY log_index"
            )
        ]
        return StateRows(
            principals=principals,
            bundles=bundles,
            active_bundle=None if active is None else _text(active),
            revocations=revocations,
            warrants=self._warrants(),
        )

    def _warrants(self) -> Iterator[WarrantRow]:
        cursor = self._query(
            "SELECT id, principal, parent, decision_index, expires, issued_index, token FROM warrants "
            "ORDER BY issued_index, id"
        )
        for rows in self._pages(cursor):
            for wid, principal, parent, decision, expires, issued, token in rows:
                where = f"warrants[{wid}]"
                yield WarrantRow(
                    _text(wid),
                    _text(principal),
                    _text(parent),
                    _int(decision, where + ".decision_index"),
                    _int(expires, where + ".expires"),
                    _int(issued, where + ".issued_index"),
                    _text(token),
                )


def _connect(db_path: str | Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {db_path}: {e}") from e
    return conn


def _text(value: Any) -> str:
    """A column as the governor reads it (``str(...)``), bytes decoded."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _int(value: Any, where: str) -> int:
    if type(value) is int:
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StoreError(f"{where}: expected an integer, found {value!r}") from None
