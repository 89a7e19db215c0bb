"""The shared store: the lineage log in a PostgreSQL database (psycopg 3, pooled).

Several governor processes, on one host or several, may append to one log here: the
database serialises them. Schema (version ``schema`` in ``meta``, as in SQLite)::

    meta         (key TEXT PRIMARY KEY, value TEXT)         schema version; the state store's keys
    log_head     (id BOOLEAN PRIMARY KEY CHECK (id), tree_size BIGINT)   exactly one row
    entries      (idx BIGINT PRIMARY KEY, data BYTEA)
    tiles        (level INTEGER, idx BIGINT, width INTEGER, hashes BYTEA, PRIMARY KEY (level, idx))
    checkpoints  (size BIGINT PRIMARY KEY, note TEXT)
    cosignatures (size, name, key_id, timestamp, line)  created on first write (store.cosignatures)

Ordering and locking (the :class:`~proctor.store.base.LogStore` contract):

1. An append is one transaction: lock the ``log_head`` row (``SELECT … FOR UPDATE``),
   check that its size is ``first_index`` (else :class:`StoreConflictError`, nothing
   written), insert the entries, upsert the tiles, set the new size, run the ``also``
   writes on the same connection, commit with ``synchronous_commit = on``. The row
   lock makes appenders on every node take turns; the size check makes a writer whose
   view is stale fail instead of overwriting.
2. Indices are never a SEQUENCE or IDENTITY: those are not transactional, so a rolled
   back append would leave a gap. The index is the locked head's size.
3. A batch's signed checkpoint commits in its transaction; one stored alone
   (``put_checkpoint``) uses ``synchronous_commit = off`` (a lost one is re-signed
   byte-identically from durable entries, as the contract allows).
4. Every psycopg or pool error is wrapped in :class:`StoreError`, and no message
   carries the DSN's password (:func:`proctor.store._pg.redact`).

The server must run with ``fsync = on``: a store over a server that does not is
refused when it opens, since nothing it acknowledged would survive a crash.

Why one module: it is the one implementation of the ``LogStore`` interface on
PostgreSQL, method for method beside ``store.sqlite``; the append's pipelined round trips
already live in ``store._pg_append`` and the connection handling in ``store._pg``, and
what remains are the interface's methods, which read best next to the schema above.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg import pq

from proctor.errors import StoreConflictError, StoreError
from proctor.store._pg import PgConnection, StorePool, redact
from proctor.store._pg_append import AppendConnection
from proctor.store.base import Tile
from proctor.store.cosignatures import PG_COSIGNATURES, StoredCosignature
from proctor.store.notify_pg import LOG_CHANNEL
from proctor.store.sql import IntegrityViolation

__all__ = ["PG_SCHEMA_VERSION", "PostgresLogStore"]

PG_SCHEMA_VERSION = 1
"""The version of this schema, stored as ``meta.schema``; any other is refused."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS log_head (
        id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
        tree_size BIGINT NOT NULL CHECK (tree_size >= 0))""",
    "CREATE TABLE IF NOT EXISTS entries (idx BIGINT PRIMARY KEY CHECK (idx >= 0), data BYTEA NOT NULL)",
    """CREATE TABLE IF NOT EXISTS tiles (
        level INTEGER NOT NULL, idx BIGINT NOT NULL, width INTEGER NOT NULL,
        hashes BYTEA NOT NULL, PRIMARY KEY (level, idx))""",
    "CREATE TABLE IF NOT EXISTS checkpoints (size BIGINT PRIMARY KEY, note TEXT NOT NULL)",
)

# Two processes creating the schema at once take turns on this advisory lock
# (CREATE TABLE IF NOT EXISTS alone races on the catalog). Any constant will do;
# this one is "proctor" in ASCII.
_SCHEMA_LOCK = 0x70726F63746F72

_PAGE = 4096  # entries per read
_TILE_PAGE = 256  # tiles (up to 16 KiB each) per read
_CHECKPOINT_PAGE = 1024


class _HeadMoved(Exception):  # noqa: N818 - private control flow, never leaves this module
    """The log head was not at the append's first index (the transaction rolls back)."""


class PostgresLogStore:
    """A :class:`~proctor.store.base.LogStore` in a PostgreSQL database."""

    def __init__(
        self,
        dsn: str,
        *,
        create: bool = False,
        pool_size: int = 4,
        timeout: float = 30.0,
    ) -> None:
        """Connect to the database at ``dsn`` (a libpq URI or ``key=value`` string).

        Args:
            dsn: where the database is.
            create: create the schema if the database has none (idempotent, safe
                when several processes do it at once).
            pool_size: the most connections this store holds.
            timeout: seconds to wait for a connection (at open and on each call).

        Raises:
            StoreError: the database cannot be reached, has no proctor schema (and
                ``create`` is false), has another schema version, or runs without
                ``fsync``.
        """
        if pool_size < 1:
            raise ValueError(f"expected pool_size >= 1, found {pool_size}")
        self._dsn = dsn
        self._where = redact(dsn)
        self._timeout = timeout
        self._closed = False
        # The first connection is a plain one: a refusal (wrong password, no such
        # database) is reported as the server said it, not as a pool timeout.
        try:
            first = psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, round(timeout)))
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to {self._where}: {e}") from e
        try:
            with first:
                self._check_schema(first, create=create)
        except psycopg.Error as e:
            raise StoreError(f"cannot read or create the schema in {self._where}: {e}") from e
        # Autocommit connections (a read is its own statement; appends open a
        # transaction), checked before use, failing fast while the server is down.
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = StorePool(
            dsn, name="proctor-log", max_size=pool_size, timeout=timeout
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except (psycopg_pool.PoolTimeout, psycopg.Error) as e:
            self._pool.close()
            raise StoreError(f"cannot connect to {self._where}: {self._reason(e)}") from e

    @property
    def pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        """The store's connection pool (autocommit connections), for the state store
        on the same database to borrow from (:mod:`proctor.store.open`); closed with
        the store."""
        return self._pool

    def _check_schema(self, conn: psycopg.Connection[Any], *, create: bool) -> None:
        """Check (or with ``create``, create) the schema, under the schema lock.

        Raises:
            StoreError: fsync is off, there is no schema, or another version.
            psycopg.Error: the database failed (the caller wraps it).
        """
        (fsync,) = conn.execute("SHOW fsync").fetchone() or ("?",)
        if fsync != "on":
            raise StoreError(
                f"{self._where}: expected a server with fsync = on, found {fsync!r} "
                "(acknowledged appends would not survive a crash)"
            )
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            version = self._schema_version(conn)
            if version is None and create:
                for statement in _SCHEMA:
                    conn.execute(statement.encode())
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', %s) ON CONFLICT DO NOTHING",
                    (str(PG_SCHEMA_VERSION),),
                )
                conn.execute("INSERT INTO log_head (id, tree_size) VALUES (TRUE, 0) ON CONFLICT DO NOTHING")
                version = str(PG_SCHEMA_VERSION)
        if version is None:
            raise StoreError(f"{self._where}: expected a proctor database, found no schema")
        if version != str(PG_SCHEMA_VERSION):
            raise StoreError(f"{self._where}: expected schema version {PG_SCHEMA_VERSION}, found {version!r}")

    def _reason(self, e: BaseException) -> str:
        """What went wrong, for a message: a pool timeout says only that no
        connection came in time, so one direct attempt names the cause (refused,
        bad password, …) — or tells that the server answers and the pool is busy."""
        if not isinstance(e, psycopg_pool.PoolTimeout):
            return str(e).strip()
        try:
            with psycopg.connect(self._dsn, connect_timeout=2):
                cause = "the server answers: every pooled connection is busy"
        except psycopg.Error as probe:
            cause = str(probe).strip()
        return f"{e} ({cause})"

    @staticmethod
    def _schema_version(conn: psycopg.Connection[Any]) -> str | None:
        if conn.execute("SELECT to_regclass('meta')").fetchone() in (None, (None,)):
            return None
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        return None if row is None else str(row[0])

    def _read(self, sql: str, params: tuple[Any, ...], what: str) -> list[tuple[Any, ...]]:
        """Run one read on a pooled connection; every error is a StoreError naming ``what``."""
        if self._closed:
            raise StoreError("the store is closed")
        try:
            with self._pool.connection(timeout=self._timeout) as conn:
                return conn.execute(sql.encode(), params).fetchall()
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as e:
            raise StoreError(f"cannot read {what} from {self._where}: {self._reason(e)}") from e

    def tree_size(self) -> int:
        """The number of committed entries."""
        rows = self._read("SELECT tree_size FROM log_head", (), "the tree size")
        if len(rows) != 1:
            raise StoreError(f"expected one log_head row in {self._where}, found {len(rows)}")
        return int(rows[0][0])

    def head(self) -> tuple[int, tuple[int, str] | None]:
        """The tree size and the latest checkpoint, read in one statement (one snapshot,
        one round trip): what a writer checks when its turn to append begins (ADR 0015;
        :class:`~proctor.lineage._writer.GroupCommit` uses it where a store has it)."""
        rows = self._read(
            "SELECT h.tree_size, c.size, c.note FROM log_head h LEFT JOIN LATERAL "
            "(SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1) c ON true",
            (),
            "the log head",
        )
        if len(rows) != 1:
            raise StoreError(f"expected one log_head row in {self._where}, found {len(rows)}")
        size, latest, note = rows[0]
        return int(size), None if latest is None else (int(latest), str(note))

    def append(
        self,
        first_index: int,
        entries: Sequence[bytes],
        tiles: Sequence[Tile],
        *,
        also: Sequence[Callable[[PgConnection], None]] = (),
        checkpoint: tuple[int, str] | None = None,
    ) -> None:
        """Commit entries, tiles, the new size and its signed checkpoint in one durable
        transaction.

        ``also`` are further writes that run on the same connection (a
        :class:`~proctor.store._pg.PgConnection`), inside the transaction, after the
        entries: all commit or none does. The head row stays locked until the commit,
        so appenders on every node take turns (module docstring, step 1).

        Raises:
            StoreConflictError: the stored size is not ``first_index``; nothing changed.
            StoreError: any database error; nothing changed.
        """
        if self._closed:
            raise StoreError("the store is closed")
        new_size = first_index + len(entries)
        try:
            with self._pool.connection(timeout=self._timeout) as conn:
                try:
                    self._append_on(
                        conn,
                        first_index,
                        new_size,
                        entries=entries,
                        tiles=tiles,
                        also=also,
                        checkpoint=checkpoint,
                    )
                except (_HeadMoved, psycopg.errors.UniqueViolation) as e:
                    # Rolled back. Say why: another writer moved the head (the usual
                    # case), or entries exist beyond the stored size (tampering).
                    row = conn.execute("SELECT tree_size FROM log_head").fetchone()
                    found = None if row is None else int(row[0])
                    if found != first_index:
                        raise StoreConflictError(
                            f"expected the stored tree size to be {first_index}, found {found}"
                        ) from None
                    raise StoreError(
                        f"append of {len(entries)} entries at {first_index} failed in {self._where}: "
                        f"entries are stored beyond the tree size {found} ({self._reason(e)})"
                    ) from e
        except StoreConflictError:
            raise
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed, IntegrityViolation) as e:
            # (A StoreError raised above is not caught here and goes out as it is.)
            # An integrity violation escaping an ``also`` write fails the append, as
            # sqlite3.IntegrityError (an sqlite3.Error) does in the SQLite store.
            raise StoreError(
                f"append of {len(entries)} entries at {first_index} failed in {self._where}: "
                f"{self._reason(e)}"
            ) from e

    @staticmethod
    def _append_on(
        conn: psycopg.Connection[Any],
        first_index: int,
        new_size: int,
        *,
        entries: Sequence[bytes],
        tiles: Sequence[Tile],
        also: Sequence[Callable[[PgConnection], None]],
        checkpoint: tuple[int, str] | None,
    ) -> None:
        """The append's transaction (module docstring, step 1) in as few round trips as
        the ``also`` writes allow: ``BEGIN``, the head row's update — which takes the
        row's lock and moves the size only from ``first_index`` — the entries, the tiles,
        the checkpoint and the notification in one (pipeline mode); then each ``also``
        statement in one (:class:`AppendConnection`: its savepoint in the same round
        trip); then ``COMMIT``. (With ``conn.transaction()`` in the pipeline and a round
        trip for each savepoint, a revocation's append took twelve round trips; now
        five, the pool's check included.) Any failure rolls the transaction back before
        it is raised, so the connection is idle again for the caller's diagnosis and the
        pool; a transaction that a caught failure left aborted is never taken for
        committed (PostgreSQL answers its ``COMMIT`` with a ``ROLLBACK``).

        Raises:
            _HeadMoved: the head was not at ``first_index`` (nothing committed).
        """
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                conn.execute("SET LOCAL synchronous_commit = on")
                head = conn.execute(
                    "UPDATE log_head SET tree_size = %s WHERE tree_size = %s RETURNING tree_size",
                    (new_size, first_index),
                )
                # One statement per table whatever the row count (``executemany`` would
                # open a nested pipeline, whose end is a round trip of its own); the
                # arrays in binary (``%b``): hex-encoding the bytea on the client and
                # decoding it on the server was half the client's CPU per entry (38 ->
                # 18 µs, bench_log_pg).
                if entries:
                    conn.execute(
                        "INSERT INTO entries (idx, data) SELECT * FROM unnest(%b::bigint[], %b::bytea[])",
                        (list(range(first_index, new_size)), list(entries)),
                    )
                if tiles:
                    conn.execute(
                        "INSERT INTO tiles (level, idx, width, hashes) "
                        "SELECT * FROM unnest(%b::integer[], %b::bigint[], %b::integer[], %b::bytea[]) "
                        "ON CONFLICT (level, idx) DO UPDATE "
                        "SET width = EXCLUDED.width, hashes = EXCLUDED.hashes",
                        (
                            [t.level for t in tiles],
                            [t.index for t in tiles],
                            [t.width for t in tiles],
                            [t.data for t in tiles],
                        ),
                    )
                if checkpoint is not None:
                    conn.execute(
                        "INSERT INTO checkpoints (size, note) VALUES (%s, %s) ON CONFLICT (size) DO NOTHING",
                        checkpoint,
                    )
                # Every node's trust follower is woken once this commits (store/notify_pg.py).
                conn.execute("SELECT pg_notify(%s, %s)", (LOG_CHANNEL, str(new_size)))
            # Leaving pipeline mode synced it (an explicit sync first would cost one more).
            if head.fetchone() is None:
                raise _HeadMoved
            adapter = AppendConnection(conn)
            for write in also:
                write(adapter)
            # A write that caught a failed statement without a savepoint (a read) and
            # went on leaves the transaction aborted, and PostgreSQL answers COMMIT of an
            # aborted transaction with a ROLLBACK, not an error: never take that for a
            # commit (acknowledged would not be durable).
            if conn.info.transaction_status != pq.TransactionStatus.INTRANS:
                raise StoreError("a write of the append failed and was not raised; nothing was committed")
            done = conn.execute("COMMIT").statusmessage
            if done != "COMMIT":
                raise StoreError(
                    f"expected the append's COMMIT to commit, found {done!r}; nothing was committed"
                )
        except BaseException:
            # rollback(), not a ROLLBACK statement: it also forgets the statements
            # psycopg prepared in the rolled-back transaction.
            with contextlib.suppress(psycopg.Error):  # a broken connection: the pool drops it
                conn.rollback()
            raise

    def entry(self, index: int) -> bytes | None:
        """The stored bytes of entry ``index``."""
        rows = self._read("SELECT data FROM entries WHERE idx = %s", (index,), f"entry {index}")
        return None if not rows else bytes(rows[0][0])

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """Stored entries in ``[start, end)``, in index order, read in pages (no
        connection is held between pages)."""
        pos = start
        while pos < end:
            rows = self._read(
                "SELECT idx, data FROM entries WHERE idx >= %s AND idx < %s ORDER BY idx LIMIT %s",
                (pos, end, _PAGE),
                f"entries from {pos}",
            )
            if not rows:
                return
            for idx, data in rows:
                yield int(idx), bytes(data)
            pos = int(rows[-1][0]) + 1

    def tile(self, level: int, index: int) -> Tile | None:
        """The stored tile at (``level``, ``index``)."""
        rows = self._read(
            "SELECT width, hashes FROM tiles WHERE level = %s AND idx = %s",
            (level, index),
            f"tile {level}/{index}",
        )
        return None if not rows else Tile(level, index, int(rows[0][0]), bytes(rows[0][1]))

    def tiles(self) -> Iterator[Tile]:
        """Every stored tile, by level then index, read in pages."""
        after = (-1, -1)
        while True:
            rows = self._read(
                "SELECT level, idx, width, hashes FROM tiles WHERE (level, idx) > (%s, %s) "
                "ORDER BY level, idx LIMIT %s",
                (*after, _TILE_PAGE),
                "tiles",
            )
            for level, idx, width, data in rows:
                yield Tile(int(level), int(idx), int(width), bytes(data))
            if len(rows) < _TILE_PAGE:
                return
            after = (int(rows[-1][0]), int(rows[-1][1]))

    def put_checkpoint(self, size: int, note: str) -> None:
        """Store a checkpoint without waiting for it to be durable (see the base
        module's contract); a second one for the same size is ignored."""
        if self._closed:
            raise StoreError("the store is closed")
        try:
            with (
                self._pool.connection(timeout=self._timeout) as conn,
                conn.pipeline(),  # one round trip
                conn.transaction(),
            ):
                conn.execute("SET LOCAL synchronous_commit = off")
                conn.execute(
                    "INSERT INTO checkpoints (size, note) VALUES (%s, %s) ON CONFLICT (size) DO NOTHING",
                    (size, note),
                )
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as e:
            raise StoreError(
                f"cannot store the checkpoint of size {size} in {self._where}: {self._reason(e)}"
            ) from e

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The checkpoint with the largest size."""
        rows = self._read(
            "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1", (), "the latest checkpoint"
        )
        return None if not rows else (int(rows[0][0]), str(rows[0][1]))

    def checkpoint_at(self, size: int) -> str | None:
        """The checkpoint for exactly ``size``."""
        rows = self._read(
            "SELECT note FROM checkpoints WHERE size = %s", (size,), f"the checkpoint of size {size}"
        )
        return None if not rows else str(rows[0][0])

    def checkpoints(self) -> Iterator[tuple[int, str]]:
        """Every checkpoint by increasing size, read in pages."""
        after = -1
        while True:
            rows = self._read(
                "SELECT size, note FROM checkpoints WHERE size > %s ORDER BY size LIMIT %s",
                (after, _CHECKPOINT_PAGE),
                "checkpoints",
            )
            for size, note in rows:
                yield int(size), str(note)
            if len(rows) < _CHECKPOINT_PAGE:
                return
            after = int(rows[-1][0])

    # -- cosignatures (proctor.store.cosignatures: the table, created on first write) ------

    def put_cosignature(self, cosignature: StoredCosignature) -> None:
        """Store a witness's cosignature durably; a later one by the same key replaces it.

        The caller has verified it against the stored checkpoint of its size: the store
        keeps bytes and does not know what they sign.
        """
        c = cosignature
        if self._closed:
            raise StoreError("the store is closed")
        try:
            with self._pool.connection(timeout=self._timeout) as conn, conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = on")
                if conn.execute("SELECT to_regclass('cosignatures')").fetchone() in (None, (None,)):
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    conn.execute(PG_COSIGNATURES.encode())
                conn.execute(
                    "INSERT INTO cosignatures (size, name, key_id, timestamp, line) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (size, name, key_id) DO UPDATE "
                    "SET timestamp = EXCLUDED.timestamp, line = EXCLUDED.line "
                    "WHERE EXCLUDED.timestamp > cosignatures.timestamp",
                    (c.size, c.name, c.key_id, c.timestamp, c.line),
                )
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as e:
            raise StoreError(
                f"cannot store the cosignature of {c.name} on size {c.size} in {self._where}: "
                f"{self._reason(e)}"
            ) from e

    def cosignatures(self, size: int | None = None) -> list[StoredCosignature]:
        """The stored cosignatures of the checkpoint of ``size`` (of every size if ``None``),
        by size, then name, then key ID; none while the table does not exist."""
        if not self._read("SELECT to_regclass('cosignatures') IS NOT NULL", (), "cosignatures")[0][0]:
            return []
        where, params = ("", ()) if size is None else ("WHERE size = %s ", (size,))
        rows = self._read(
            f"SELECT size, name, key_id, timestamp, line FROM cosignatures {where}"  # noqa: S608 - constant
            "ORDER BY size, name, key_id",
            params,
            "cosignatures",
        )
        return [StoredCosignature(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]), str(r[4])) for r in rows]

    def close(self) -> None:
        """Close every connection; later calls fail with :class:`StoreError`."""
        self._closed = True
        self._pool.close()
