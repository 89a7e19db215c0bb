"""The one place that opens a store: the data directory's SQLite file, or a PostgreSQL
database named by URL (``--store URL``, ``PROCTOR_STORE``).

Without a URL the stores are today's: the log (:class:`~proctor.store.sqlite.SQLiteStore`)
and the state tables in the data directory's ``proctor.db``, the sequencer lock a
``flock`` on its ``log.lock`` (:class:`~proctor.store.locks.FileSequencer`). With a
``postgresql://`` URL both live in that database: the log in
:class:`~proctor.store.postgres.PostgresLogStore`, the state in a
:class:`~proctor.store.state.StateStore` over
:class:`~proctor.store.state_pg.PostgresStateBackend` borrowing the log store's pool
(one pool per process), the sequencer lock a session advisory lock
(:class:`~proctor.store.locks_pg.PgSequencer`). The data directory then holds only
keys and configuration.

The callers pass the data directory's file names (this layer does not read data
directories: :mod:`proctor.datadir` is its sibling). PostgreSQL's modules load only
when a URL is given, so a command on SQLite never imports psycopg.

Messages never carry the URL's password (:func:`describe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proctor.errors import StoreError
from proctor.store.base import LogStore
from proctor.store.locks import FileSequencer, Sequencer
from proctor.store.migrations import MigrationPlan
from proctor.store.snapshot import StateSnapshot, has_state
from proctor.store.sqlite import SQLiteStore
from proctor.store.state import StateStore
from proctor.store.state_backend import SQLiteStateBackend

__all__ = [
    "STORE_ENV",
    "OpenStores",
    "check_store_url",
    "describe",
    "migrate_state",
    "open_log_store",
    "open_snapshot",
    "open_stores",
    "store_has_state",
]

STORE_ENV = "PROCTOR_STORE"
"""The environment variable that names the store when ``--store`` is not given."""

_SCHEMES = ("postgresql://", "postgres://")
_POOL_SIZE = 8
"""Connections of one process's pool: the log's appends and reads and the state's
statements borrow from it (each for one statement or one transaction)."""


def check_store_url(url: str) -> str:
    """``url`` if it names a PostgreSQL database (a libpq URI).

    Raises:
        StoreError: anything else (only the scheme is shown, never the rest).
    """
    if not url.startswith(_SCHEMES):
        scheme = url.split("://", 1)[0] if "://" in url else "no scheme"
        shown = scheme if len(scheme) <= 20 and scheme.isascii() else "an unreadable one"
        raise StoreError(f"expected a store URL starting postgresql://, found {shown!r}")
    return url


def describe(url: str | None, db_path: str | Path) -> str:
    """Where the store is, for messages: the URL with its password as ``***``, or the file."""
    if url is None:
        return str(db_path)
    from proctor.store._pg import redact  # noqa: PLC0415 - psycopg only with a URL

    return redact(url)


def open_log_store(
    url: str | None, *, db_path: Path, lock_path: Path, shared: bool = False, create: bool = False
) -> tuple[LogStore, Sequencer]:
    """The log's store and its sequencer lock.

    Args:
        url: a ``postgresql://`` URL, or ``None`` for the data directory's file.
        db_path: the data directory's SQLite file.
        lock_path: the data directory's lock file.
        shared: writers take turns on the sequencer lock (:mod:`proctor.store.locks`).
        create: create the log's schema if there is none.

    Raises:
        StoreError: the store cannot be opened (no database, no schema, another
            version, an unreachable server, a URL that is not PostgreSQL's).
    """
    if url is None:
        if not create:
            _require_file(db_path)
        return SQLiteStore(db_path, create=create), FileSequencer(lock_path, shared=shared)
    from proctor.store.locks_pg import PgSequencer  # noqa: PLC0415
    from proctor.store.postgres import PostgresLogStore  # noqa: PLC0415

    dsn = check_store_url(url)
    return PostgresLogStore(dsn, create=create, pool_size=_POOL_SIZE), PgSequencer(dsn, shared=shared)


@dataclass(frozen=True)
class OpenStores:
    """A log store, its sequencer lock and the state store beside it (one pool on
    PostgreSQL). Close the state first, then the log store (which owns the pool)."""

    log: LogStore
    sequencer: Sequencer
    state: StateStore


def open_stores(
    url: str | None,
    *,
    db_path: Path,
    lock_path: Path,
    shared: bool = False,
    create: bool = False,
    empty: bool = False,
) -> OpenStores:
    """The log's store, its sequencer and the state store, as :func:`open_log_store`.

    Args:
        url: as :func:`open_log_store`.
        db_path: as :func:`open_log_store`.
        lock_path: as :func:`open_log_store`.
        shared: as :func:`open_log_store`.
        create: as :func:`open_log_store` (the state tables are created when missing
            in any case, as a safe migration step).
        empty: refuse a log that already has entries or checkpoints (``proctor init
            --store``: a new log key over an existing log would sign nothing it can
            verify).

    Raises:
        StoreError: as :func:`open_log_store`, or the state schema is refused
            (:mod:`proctor.store.migrations`), or ``empty`` and the log is not.
        StoreConflictError: stored state rows break a rule added since.
    """
    log, sequencer = open_log_store(url, db_path=db_path, lock_path=lock_path, shared=shared, create=create)
    try:
        if empty and (log.tree_size() != 0 or log.latest_checkpoint() is not None):
            raise StoreError(
                f"{describe(url, db_path)} already holds a log ({log.tree_size()} entries): expected an "
                "empty database. A second governor node uses a copy of the data directory that made "
                "it (its keys), not a new one"
            )
        if url is None:
            state = StateStore(db_path)
        else:
            from proctor.store.postgres import PostgresLogStore  # noqa: PLC0415
            from proctor.store.state_pg import PostgresStateBackend  # noqa: PLC0415

            pool = log.pool if isinstance(log, PostgresLogStore) else None
            state = StateStore(backend=PostgresStateBackend(url, pool=pool))
    except BaseException:
        sequencer.close()
        log.close()
        raise
    return OpenStores(log, sequencer, state)


def open_snapshot(url: str | None, db_path: Path) -> StateSnapshot:
    """One read transaction over the log and the state tables (the state check).

    Raises:
        StoreError: the store cannot be read.
    """
    if url is None:
        return StateSnapshot(db_path)
    from proctor.store.state_pg import PostgresStateSnapshot  # noqa: PLC0415

    return PostgresStateSnapshot(check_store_url(url))


def store_has_state(url: str | None, db_path: Path) -> bool:
    """Whether the store holds governance state tables (not a bare log).

    Raises:
        StoreError: the store cannot be read.
    """
    if url is None:
        return has_state(db_path)
    from proctor.store.state_pg import pg_has_state  # noqa: PLC0415

    return pg_has_state(check_store_url(url))


def migrate_state(url: str | None, db_path: Path | None = None, *, dry_run: bool = False) -> MigrationPlan:
    """``proctor migrate``: apply every pending step of the state schema, safe or not,
    in one transaction under the migration lock (:mod:`proctor.store.migrations`).

    Args:
        url: a ``postgresql://`` URL, or ``None`` for ``db_path``.
        db_path: the data directory's SQLite file (without ``url``).
        dry_run: report what would be applied, change nothing.

    The log must exist (``proctor init``); its own schema is checked, not changed.

    Raises:
        StoreError: no log here, the state schema is newer than this proctor, or a
            step failed (nothing was changed).
        StoreConflictError: stored rows break a rule the migration adds.
    """
    if url is None:
        if db_path is None:
            raise StoreError("expected a store URL or a data directory's database, found neither")
        _require_file(db_path)
        SQLiteStore(db_path).close()  # the log's schema: there, and a version this proctor knows
        backend = SQLiteStateBackend(db_path)
        try:
            return backend.migrate(dry_run=dry_run)
        finally:
            backend.close()
    from proctor.store.postgres import PostgresLogStore  # noqa: PLC0415
    from proctor.store.state_pg import PostgresStateBackend  # noqa: PLC0415

    log = PostgresLogStore(check_store_url(url))
    try:
        pg = PostgresStateBackend(url, pool=log.pool)
        try:
            return pg.migrate(dry_run=dry_run)
        finally:
            pg.close()
    finally:
        log.close()


def _require_file(db_path: Path) -> None:
    if not db_path.exists():
        raise StoreError(
            f"no database at {db_path}: this data directory has no store of its own; if its "
            "store is PostgreSQL, name it with --store URL (or PROCTOR_STORE)"
        )
