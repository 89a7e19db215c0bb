"""Witnesses' cosignatures of stored checkpoints, kept beside them in the log's database.

A cosignature is a C2SP tlog-cosignature/v1 note signature line by one witness over the
checkpoint of one size (ADR 0014). Both log stores keep them in a ``cosignatures``
table keyed by (size, witness name, key ID):

- SQLite (:class:`~proctor.store.sqlite.SQLiteStore`):
  ``size INTEGER, name TEXT, key_id BLOB, timestamp INTEGER, line TEXT``.
- PostgreSQL (:class:`~proctor.store.postgres.PostgresLogStore`):
  ``size BIGINT, name TEXT, key_id BYTEA, timestamp BIGINT, line TEXT``.

Rules, the same on both (``tests/unit/store/test_log_store.py``):

1. The table was added after the log's schema version 1 shipped, so it is created on
   first write (under the store's write lock: SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's
   schema advisory lock) and a database without it reads as holding none. Existing
   databases keep version 1.
2. A write is durable when it returns; a later cosignature by the same key for the same
   size replaces an older one (a larger timestamp), never a newer one.
3. The store keeps bytes: the caller verified the line against the stored checkpoint of
   its size. Readers verify again (:func:`proctor.orchestration.cosigning.check_witnessed`).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from proctor.store.base import LogStore

__all__ = ["StoredCosignature", "CosignatureStore", "WitnessedLogStore", "PG_COSIGNATURES"]


class StoredCosignature(NamedTuple):
    """One witness's cosignature of the checkpoint of ``size``, as its note signature line."""

    size: int
    name: str
    key_id: bytes
    timestamp: int
    line: str


@runtime_checkable
class CosignatureStore(Protocol):
    """A log store that also keeps cosignatures (both stores are)."""

    def put_cosignature(self, cosignature: StoredCosignature) -> None:
        """Store ``cosignature`` durably (module docstring, rules 1-2).

        Raises:
            StoreError: it cannot be stored.
        """
        ...

    def cosignatures(self, size: int | None = None) -> list[StoredCosignature]:
        """The stored cosignatures of the checkpoint of ``size`` (of every size if
        ``None``), by size, then name, then key ID.

        Raises:
            StoreError: they cannot be read.
        """
        ...


class WitnessedLogStore(LogStore, CosignatureStore, Protocol):
    """A log store that keeps cosignatures beside its checkpoints: what witnessing needs."""


PG_COSIGNATURES = """CREATE TABLE IF NOT EXISTS cosignatures (
    size BIGINT NOT NULL CHECK (size >= 0), name TEXT NOT NULL, key_id BYTEA NOT NULL,
    timestamp BIGINT NOT NULL, line TEXT NOT NULL,
    PRIMARY KEY (size, name, key_id))"""
"""The PostgreSQL table (rule 1: created on first write)."""
