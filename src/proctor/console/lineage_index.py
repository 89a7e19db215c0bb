"""A derived, rebuildable index of the lineage log for the explorer's searches.

The log can be read by leaf index only; searching it by principal, execution, warrant,
type or time needs an index. This one is a SQLite file in the data directory
(:data:`INDEX_FILE`) that maps each leaf index to the facts the explorer searches by.
It is filled from the log itself (:meth:`Log.leaf`), catching up from the last leaf it
indexed, and works the same whatever store holds the log (SQLite or PostgreSQL).

Invariants:

1. The index is never trusted over the log. It only says *which* leaves to read: every
   event the explorer shows is read from the log, and its facts are checked again
   against the query (:func:`facts` on the log's bytes). When they disagree the index
   is thrown away and rebuilt, and nothing it answered is shown (the caller raises
   :class:`~proctor.errors.LogIntegrityError` naming the leaf: the index, not the log,
   is what broke).
2. It is bound to one log: its ``meta`` holds the log's verifier key and the leaf hash
   of the last leaf it indexed. A different key, a hash the log does not have at that
   index, an unknown schema, a file SQLite cannot read: the file is deleted and rebuilt
   (fail closed), never read.
3. Deleting the file is always safe: it is rebuilt from the log.
4. Bounded: every column is cut to :data:`MAX_FACT_CHARS` characters, catching up
   writes :data:`CHUNK` leaves per transaction, and a lookup returns at most its limit.

The time column is the log's *clock*: the latest event time recorded at or before the
leaf. It never decreases along the log, so a time range is a leaf range (two indexed
lookups), whatever the order of the events' own times (several nodes' clocks).

Several processes may share one data directory (``proctor serve --workers``, governor
nodes): every write is one ``BEGIN IMMEDIATE`` transaction that reads how far the index
got inside it, and a process that finds the file replaced (another rebuilt it) reopens
it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from proctor.errors import LogIntegrityError, ProctorError
from proctor.lineage.log import Log
from proctor.lineage.merkle import leaf_hash

__all__ = [
    "CHUNK",
    "INDEX_FILE",
    "MAX_FACT_CHARS",
    "SCHEMA",
    "EventFacts",
    "LineageIndex",
    "Query",
    "facts",
    "time_ms",
]

_log = logging.getLogger("proctor.console.lineage")

INDEX_FILE = "lineage-index.sqlite"
"""The index's file name in the data directory."""
SCHEMA = "proctor-lineage-index-1"
"""The index format; any other value in the file's ``meta`` rebuilds it."""
MAX_FACT_CHARS = 256
"""The longest value a column holds (longer ones are cut: a search then misses them)."""
CHUNK = 1000
"""Leaves indexed per transaction."""
SYNC_LAG = 2000
"""At most this many leaves behind, a request catches the index up itself; further
behind, a background thread does (and searches cover what is indexed so far)."""

_SQL = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ev (
  leaf INTEGER PRIMARY KEY, type TEXT NOT NULL, clock INTEGER NOT NULL,
  principal TEXT, execution TEXT, warrant TEXT, parent_warrant TEXT);
CREATE INDEX IF NOT EXISTS ev_type ON ev(type, leaf);
CREATE INDEX IF NOT EXISTS ev_clock ON ev(clock, leaf);
CREATE INDEX IF NOT EXISTS ev_principal ON ev(principal, leaf) WHERE principal IS NOT NULL;
CREATE INDEX IF NOT EXISTS ev_execution ON ev(execution, leaf) WHERE execution IS NOT NULL;
CREATE INDEX IF NOT EXISTS ev_warrant ON ev(warrant, leaf) WHERE warrant IS NOT NULL;
CREATE INDEX IF NOT EXISTS ev_parent ON ev(parent_warrant, leaf) WHERE parent_warrant IS NOT NULL;
"""
_COLUMNS = ("principal", "execution", "warrant", "parent_warrant", "type")


def time_ms(text: Any) -> int | None:
    """An event's RFC 3339 UTC ``time`` as unix milliseconds, or ``None`` if malformed."""
    if type(text) is not str or not text.endswith("Z"):
        return None
    try:
        when = datetime.fromisoformat(text[:-1][:26]).replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class EventFacts:
    """What the explorer searches an event by (``None``: the event does not say)."""

    type: str
    time: int | None
    principal: str | None
    execution: str | None
    warrant: str | None
    parent_warrant: str | None
    derived: str | None = None
    """``"execution"`` or ``"warrant"``: the principal is not in the event but that of
    the execution or warrant it names (resolved through ``resolve``)."""


def _cut(value: Any) -> str | None:
    return value[:MAX_FACT_CHARS] if type(value) is str and value else None


def facts(event: dict[str, Any], resolve: Callable[[str, str], str | None]) -> EventFacts:
    """The search facts of one event (the same function indexes and re-checks).

    Args:
        event: the parsed event.
        resolve: ``resolve(kind, id)``, the principal of the execution or warrant
            ``id`` (``kind`` ``"execution"`` or ``"warrant"``), or ``None``.
    """
    kind = str(event.get("type", ""))[:MAX_FACT_CHARS]
    principal = _cut(event.get("principal"))
    execution = _cut(event.get("execution"))
    warrant = _cut(event.get("warrant"))
    parent_warrant = _cut(event.get("parent_warrant"))
    derived = None
    if kind == "revocation" and type(target := event.get("target")) is dict:
        what, ident = target.get("kind"), _cut(target.get("id"))
        if what == "principal":
            principal = ident
        elif what == "execution":
            execution = ident
        elif what == "warrant":
            warrant = ident
    if principal is None and execution is not None:
        principal, derived = resolve("execution", execution), "execution"
    elif principal is None and warrant is not None:
        principal, derived = resolve("warrant", warrant), "warrant"
    return EventFacts(
        kind, time_ms(event.get("time")), principal, execution, warrant, parent_warrant, derived
    )


@dataclass(frozen=True)
class Query:
    """A search: every given field must match; ``before``/``after`` page by leaf index."""

    principal: str | None = None
    execution: str | None = None
    warrant: str | None = None
    parent_warrant: str | None = None
    type: str | None = None
    since: int | None = None
    """Unix ms: leaves whose log clock is at or after it."""
    until: int | None = None
    """Unix ms: leaves whose log clock is before it."""

    @property
    def needs_index(self) -> bool:
        """Whether only the index can answer (a field other than the time range)."""
        return any(getattr(self, c) is not None for c in _COLUMNS)


class LineageIndex:
    """The index of one log, in one file (see the module docstring for the rules)."""

    def __init__(self, path: Path, log: Log) -> None:
        """Bind the index at ``path`` to ``log``; nothing is opened until first use."""
        self.path = path
        self._log = log
        self._key = log.verifier_key()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._inode: tuple[int, int] | None = None
        self._worker: threading.Thread | None = None
        self.rebuilds = 0
        """How many times this process threw the file away and started again."""

    # -- opening, checking, rebuilding --------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # derived data: a lost tail is re-indexed
            conn.executescript(_SQL)
            meta = dict(conn.execute("SELECT k, v FROM meta").fetchall())
            if not meta:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                    [("schema", SCHEMA), ("log_key", self._key), ("next", "0"), ("last", "")],
                )
                conn.execute("COMMIT")
                meta = dict(conn.execute("SELECT k, v FROM meta").fetchall())
            self._check_meta(conn, meta)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_meta(self, conn: sqlite3.Connection, meta: dict[str, str]) -> None:
        """Rule 2: the file is this log's index, and its last leaf is the log's."""
        if meta.get("schema") != SCHEMA or meta.get("log_key") != self._key:
            raise LogIntegrityError(f"expected an index of {self._key!r} in format {SCHEMA}, found {meta!r}")
        count = int(meta.get("next", "x"))
        if count > 0:
            if count > self._log.size:
                raise LogIntegrityError(f"the index holds {count} leaves, the log only {self._log.size}")
            if meta.get("last") != self._log.leaf_hash(count - 1).hex():
                raise LogIntegrityError(f"the index's leaf {count - 1} is not the log's")
        top = conn.execute("SELECT coalesce(max(leaf), -1) FROM ev").fetchone()[0]
        if top != count - 1:
            raise LogIntegrityError(f"the index says {count} leaves but holds up to {top}")

    def _open(self) -> sqlite3.Connection:
        """The connection, (re)opened if the file changed; a bad file is rebuilt."""
        try:
            st = os.stat(self.path)
            inode: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            inode = None
        if self._conn is not None and inode == self._inode:
            return self._conn
        self._close()
        try:
            self._conn = self._connect()
        except (sqlite3.Error, LogIntegrityError, ValueError) as e:
            self._discard(f"the index file could not be used ({e})")
            self._conn = self._connect()
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn, self._inode = None, None

    def _discard(self, why: str) -> None:
        """Delete the file (and its WAL) so that it is rebuilt from the log."""
        _log.warning("lineage index %s: %s; rebuilding it from the log", self.path, why)
        self._close()
        self.rebuilds += 1
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    def close(self) -> None:
        """Close the file (the next use opens it again)."""
        with self._lock:
            self._close()

    def discard(self, why: str) -> None:
        """Throw the index away (it disagreed with the log); the next use rebuilds it."""
        with self._lock:
            self._discard(why)

    @contextlib.contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock; a SQLite error discards the file (rule 2)."""
        with self._lock:
            conn = self._open()
            try:
                yield conn
            except sqlite3.DatabaseError as e:
                self._discard(f"SQLite: {e}")
                raise LogIntegrityError(f"the index file is damaged ({e}); it is being rebuilt") from e

    # -- catching up -----------------------------------------------------------------

    def indexed(self) -> int:
        """How many leaves (from 0) the index covers."""
        with self._using() as conn:
            return int(conn.execute("SELECT v FROM meta WHERE k = 'next'").fetchone()[0])

    def catch_up(self, limit: int | None = None) -> int:
        """Index the log's new leaves (at most ``limit``); returns how many the index covers."""
        done = 0
        while limit is None or done < limit:
            step = CHUNK if limit is None else min(CHUNK, limit - done)
            added, covered = self._chunk(step)
            done += added
            if added == 0:
                return covered
        return self.indexed()

    def _chunk(self, most: int) -> tuple[int, int]:
        with self._using() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                start = int(conn.execute("SELECT v FROM meta WHERE k = 'next'").fetchone()[0])
                end = min(self._log.size, start + most)
                if end <= start:
                    conn.execute("COMMIT")
                    return 0, start
                row = conn.execute("SELECT clock FROM ev WHERE leaf = ?", (start - 1,)).fetchone()
                clock = int(row[0]) if row is not None else 0
                owners: dict[tuple[str, str], str | None] = {}

                def resolve(kind: str, ident: str) -> str | None:
                    if (kind, ident) not in owners:
                        wanted = "execution.started" if kind == "execution" else "warrant.issued"
                        found = conn.execute(
                            f"SELECT principal FROM ev WHERE {kind} = ? AND type = ? LIMIT 1",  # noqa: S608 - kind is one of two names
                            (ident, wanted),
                        ).fetchone()
                        owners[(kind, ident)] = None if found is None else found[0]
                    return owners[(kind, ident)]

                raw = b""
                for leaf in range(start, end):
                    raw = self._log.leaf(leaf)
                    try:
                        event = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        event = {}
                    found = facts(event if type(event) is dict else {}, resolve)
                    clock = max(clock, found.time or 0)
                    conn.execute(
                        "INSERT INTO ev VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (leaf, found.type, clock, found.principal, found.execution, found.warrant,
                         found.parent_warrant),
                    )  # fmt: skip
                    if found.type == "execution.started" and found.execution is not None:
                        owners[("execution", found.execution)] = found.principal
                    elif found.type == "warrant.issued" and found.warrant is not None:
                        owners[("warrant", found.warrant)] = found.principal
                conn.executemany(
                    "UPDATE meta SET v = ? WHERE k = ?", [(str(end), "next"), (leaf_hash(raw).hex(), "last")]
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return end - start, end

    def refresh(self) -> int:
        """Before a search: catch up now when little is missing, else in the background.

        Returns how many leaves the index covers now (a search covers those).
        """
        covered = self.indexed()
        lag = self._log.size - covered
        if lag <= 0:
            return covered
        if lag <= SYNC_LAG:
            return self.catch_up(SYNC_LAG)
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._background, name="lineage-index", daemon=True)
                self._worker.start()
        return covered

    def _background(self) -> None:
        try:
            self.catch_up()
        except (
            ProctorError,
            sqlite3.Error,
            OSError,
        ) as e:  # the log closed, the disk failed: next request retries
            _log.warning("lineage index: catching up stopped: %s", e)

    def wait(self, timeout: float) -> bool:
        """Wait for the background catch-up (tests, the bench); whether it finished."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    # -- searching ---------------------------------------------------------------------

    def clock_bounds(self, since: int | None, until: int | None) -> tuple[int, int | None]:
        """The leaf range ``[lo, hi)`` whose log clock is in ``[since, until)`` (``hi``
        ``None``: no upper bound), from the ``clock`` index."""
        with self._using() as conn:
            lo, hi = 0, None
            if since is not None:
                row = conn.execute(
                    "SELECT leaf FROM ev WHERE clock >= ? ORDER BY clock, leaf LIMIT 1", (since,)
                )
                found = row.fetchone()
                lo = int(found[0]) if found is not None else self.indexed_in(conn)
            if until is not None:
                row = conn.execute(
                    "SELECT leaf FROM ev WHERE clock >= ? ORDER BY clock, leaf LIMIT 1", (until,)
                )
                found = row.fetchone()
                hi = int(found[0]) if found is not None else None
            return lo, hi

    @staticmethod
    def indexed_in(conn: sqlite3.Connection) -> int:
        """How many leaves the index covers, on an open connection."""
        return int(conn.execute("SELECT v FROM meta WHERE k = 'next'").fetchone()[0])

    def search(self, query: Query, *, below: int | None, above: int | None, limit: int) -> list[int]:
        """Leaf indices matching ``query``: the ``limit`` highest below ``below``, or,
        given ``above``, the ``limit`` lowest above it; always returned newest first."""
        where, args = [], []
        for column in _COLUMNS:
            value = getattr(query, column)
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value[:MAX_FACT_CHARS])
        if query.since is not None or query.until is not None:
            lo, hi = self.clock_bounds(query.since, query.until)
            where.append("leaf >= ?")
            args.append(lo)
            if hi is not None:
                where.append("leaf < ?")
                args.append(hi)
        if above is not None:
            where.append("leaf > ?")
            args.append(above)
            order = "ASC"
        else:
            order = "DESC"
            if below is not None:
                where.append("leaf < ?")
                args.append(below)
        # Only fixed column names and placeholders are joined; every value is a parameter.
        sql = "SELECT leaf FROM ev" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608
        sql += f" ORDER BY leaf {order} LIMIT ?"
        with self._using() as conn:
            leaves = [int(r[0]) for r in conn.execute(sql, (*args, limit))]
        return sorted(leaves, reverse=True)

    def first(self, column: str, value: str, kind: str) -> int | None:
        """The first leaf of type ``kind`` whose ``column`` is ``value`` (``column`` one
        of the indexed facts)."""
        if column not in _COLUMNS:
            raise ValueError(f"expected a column in {_COLUMNS}, found {column!r}")
        asked: dict[str, Any] = {column: value, "type": kind}
        found = self.search(Query(**asked), below=None, above=-1, limit=1)
        return found[0] if found else None
