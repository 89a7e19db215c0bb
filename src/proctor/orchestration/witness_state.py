"""A witness's durable state: the logs it trusts, the last checkpoint it cosigned for
each, its own events (``witness.cosigned``, ``witness.alarm``) and its open alarms.

One SQLite file (``witness.db`` in the witness's data directory), WAL mode,
``synchronous=FULL``: a write has reached the disk when its method returns.

Invariants (c2sp.org/tlog-witness, "add-checkpoint"; each has a test named after it):

1. The record of the latest cosigned checkpoint of a log only moves forward, and only
   from the state the caller checked: :meth:`WitnessState.advance` compares the stored
   (size, root) with what the consistency check ran against and writes the new one in
   the same ``BEGIN IMMEDIATE`` transaction, so two concurrent requests (or two
   processes on one directory) cannot roll the record back.
2. The record is durable before a cosignature is returned: the caller signs only after
   :meth:`advance` committed (the spec's "MUST persist the new checkpoint before
   responding").
3. An alarm and the event that explains it commit together, and stay open until an
   operator clears them (:meth:`clear_alarms`, which records who and why); nothing
   deletes an event.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from proctor.errors import ConfigError, KeyFormatError, StoreConflictError, StoreError
from proctor.lineage.events import Event
from proctor.note import NoteVerifier

__all__ = ["STATE_VERSION", "LatestCheckpoint", "Alarm", "WitnessState"]

STATE_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT NOT NULL, vkey TEXT NOT NULL, added TEXT NOT NULL, PRIMARY KEY (origin, vkey));
CREATE TABLE IF NOT EXISTS latest (
    origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL,
    cosigned_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, origin TEXT NOT NULL, event BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT, origin TEXT NOT NULL, raised TEXT NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL, event_seq INTEGER NOT NULL,
    cleared TEXT, cleared_reason TEXT);
"""


@dataclass(frozen=True)
class LatestCheckpoint:
    """The last checkpoint a witness cosigned for one log.

    Attributes:
        origin: the log's origin.
        size: its tree size.
        root: its root hash.
        note: the checkpoint with the log's verified signature(s) and the witness's
            cosignature (what the monitoring endpoint serves).
        cosigned_at: the cosignature's POSIX time.
    """

    origin: str
    size: int
    root: bytes
    note: str
    cosigned_at: int


@dataclass(frozen=True)
class Alarm:
    """An inconsistency a witness saw: evidence that a log showed two views.

    Attributes:
        id: its number in this witness's state.
        origin: the log.
        raised: when (RFC 3339 UTC).
        reason: ``fork`` (two checkpoints of one size with different roots) or
            ``inconsistent-proof`` (no valid proof from the cosigned checkpoint).
        detail: one sentence.
        event: the ``witness.alarm`` event that holds the evidence.
        cleared: when an operator cleared it (``None`` while open).
        cleared_reason: why.
    """

    id: int
    origin: str
    raised: str
    reason: str
    detail: str
    event: dict[str, Any]
    cleared: str | None
    cleared_reason: str | None

    def to_json(self) -> dict[str, Any]:
        """The alarm as JSON (the event included)."""
        return {
            "id": self.id,
            "origin": self.origin,
            "raised": self.raised,
            "reason": self.reason,
            "detail": self.detail,
            "cleared": self.cleared,
            "cleared_reason": self.cleared_reason,
            "event": self.event,
        }


class WitnessState:
    """The SQLite state of one witness. Thread-safe: one connection behind a lock."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        """Open (or with ``create``, create) the state at ``path``.

        Raises:
            ConfigError: no state at ``path``, or of another version.
            StoreError: the file cannot be opened or created.
        """
        self._path = Path(path)
        if not create and not self._path.is_file():
            raise ConfigError(f"no witness state at {self._path} (run proctor witness init)")
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                str(self._path), isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the witness state {self._path}: {e}") from e
        with self._transaction() as conn:
            if create:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (str(STATE_VERSION),))
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            except sqlite3.OperationalError:
                row = None
            if row is None or row[0] != str(STATE_VERSION):
                found = "no version" if row is None else repr(row[0])
                raise ConfigError(
                    f"{self._path}: expected witness state version {STATE_VERSION}, found {found}"
                )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreError(f"witness state {self._path}: {e}") from e

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"witness state {self._path}: {e}") from e

    # -- logs ------------------------------------------------------------------------

    def add_log(self, vkey: NoteVerifier, *, added: str) -> bool:
        """Trust ``vkey`` for the log whose origin is its name.

        Returns:
            Whether it was new (``False``: already trusted).
        """
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO logs (origin, vkey, added) VALUES (?, ?, ?)",
                (vkey.name, vkey.to_string(), added),
            )
            return cursor.rowcount == 1

    def log_keys(self, origin: str) -> list[NoteVerifier]:
        """The keys trusted for ``origin`` (empty: an unknown log).

        Raises:
            StoreError: the state cannot be read, or a stored key does not parse.
        """
        rows = self._read("SELECT vkey FROM logs WHERE origin = ? ORDER BY vkey", (origin,))
        try:
            return [NoteVerifier.from_string(str(r[0])) for r in rows]
        except KeyFormatError as e:
            raise StoreError(f"a stored log key of {origin!r} does not parse: {e}") from e

    def logs(self) -> list[dict[str, Any]]:
        """Every trusted log key, with the latest checkpoint cosigned for its origin."""
        rows = self._read(
            "SELECT l.origin, l.vkey, l.added, c.size, c.cosigned_at FROM logs l "
            "LEFT JOIN latest c ON c.origin = l.origin ORDER BY l.origin, l.vkey"
        )
        return [
            {"origin": r[0], "vkey": r[1], "added": r[2], "cosigned_size": r[3], "cosigned_at": r[4]}
            for r in rows
        ]

    # -- the latest cosigned checkpoint ------------------------------------------------

    def latest(self, origin: str) -> LatestCheckpoint | None:
        """The last checkpoint cosigned for ``origin``, or ``None`` if none was."""
        rows = self._read("SELECT size, root, note, cosigned_at FROM latest WHERE origin = ?", (origin,))
        if not rows:
            return None
        size, root, note, at = rows[0]
        return LatestCheckpoint(origin, int(size), bytes(root), str(note), int(at))

    def latest_all(self) -> list[LatestCheckpoint]:
        """The last cosigned checkpoint of every log."""
        rows = self._read("SELECT origin, size, root, note, cosigned_at FROM latest ORDER BY origin")
        return [LatestCheckpoint(str(o), int(s), bytes(r), str(n), int(a)) for o, s, r, n, a in rows]

    def advance(self, expected: LatestCheckpoint | None, new: LatestCheckpoint, event: Event) -> None:
        """Record ``new`` as the latest cosigned checkpoint of its log, with its event,
        if the stored record is still ``expected`` (invariant 1).

        Raises:
            StoreConflictError: the record moved since ``expected`` was read (another
                request cosigned first); nothing was written.
            StoreError: the write failed; nothing was written.
        """
        with self._transaction() as conn:
            row = conn.execute("SELECT size, root FROM latest WHERE origin = ?", (new.origin,)).fetchone()
            now = None if row is None else (int(row[0]), bytes(row[1]))
            was = None if expected is None else (expected.size, expected.root)
            if now != was:
                size = 0 if now is None else now[0]
                raise StoreConflictError(f"the latest cosigned size of {new.origin!r} moved to {size}")
            conn.execute(
                "INSERT OR REPLACE INTO latest (origin, size, root, note, cosigned_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (new.origin, new.size, new.root, new.note, new.cosigned_at),
            )
            conn.execute(
                "INSERT INTO events (type, origin, event) VALUES (?, ?, ?)",
                (event.type, new.origin, event.to_bytes()),
            )

    # -- alarms --------------------------------------------------------------------------

    def raise_alarm(self, origin: str, event: Event) -> int:
        """Record a ``witness.alarm`` event and open an alarm for it (invariant 3).

        Returns:
            The alarm's id.
        """
        data = event.data
        with self._transaction() as conn:
            seq = conn.execute(
                "INSERT INTO events (type, origin, event) VALUES (?, ?, ?)",
                (event.type, origin, event.to_bytes()),
            ).lastrowid
            cursor = conn.execute(
                "INSERT INTO alarms (origin, raised, reason, detail, event_seq) VALUES (?, ?, ?, ?, ?)",
                (origin, data["time"], data["reason"], data["detail"], seq),
            )
            return int(cursor.lastrowid or 0)

    def alarms(self, *, open_only: bool = False) -> list[Alarm]:
        """The alarms, oldest first (only those not cleared with ``open_only``)."""
        rows = self._read(
            "SELECT a.id, a.origin, a.raised, a.reason, a.detail, e.event, a.cleared, a.cleared_reason "
            "FROM alarms a JOIN events e ON e.seq = a.event_seq ORDER BY a.id"
        )
        if open_only:
            rows = [r for r in rows if r[6] is None]
        return [
            Alarm(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), orjson.loads(r[5]), r[6], r[7])
            for r in rows
        ]

    def open_alarm_count(self) -> int:
        """How many alarms no operator has cleared."""
        return int(self._read("SELECT count(*) FROM alarms WHERE cleared IS NULL")[0][0])

    def clear_alarms(self, *, reason: str, at: str, alarm_id: int | None = None) -> int:
        """Clear one open alarm (or all of them): an operator looked at the evidence.

        Returns:
            How many were cleared.
        """
        with self._transaction() as conn:
            if alarm_id is None:
                cursor = conn.execute(
                    "UPDATE alarms SET cleared = ?, cleared_reason = ? WHERE cleared IS NULL", (at, reason)
                )
            else:
                cursor = conn.execute(
                    "UPDATE alarms SET cleared = ?, cleared_reason = ? WHERE cleared IS NULL AND id = ?",
                    (at, reason, alarm_id),
                )
            return cursor.rowcount

    def events(self) -> list[dict[str, Any]]:
        """Every event this witness recorded, in order."""
        return [orjson.loads(r[0]) for r in self._read("SELECT event FROM events ORDER BY seq")]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
