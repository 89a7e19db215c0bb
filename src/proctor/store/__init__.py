"""Persistence behind one interface: SQLite (embedded default); PostgreSQL comes later."""

from proctor.store.base import LogStore
from proctor.store.sqlite import SQLiteStore

__all__ = ["LogStore", "SQLiteStore"]
