"""SQL that runs on both SQLite and PostgreSQL (the common subset, ``?`` placeholders).

The state store's queries (the ``proctor.store.state_*`` modules) and the writers the
lineage log commits with its events are written once, against :class:`Connection`,
in the subset both databases run unchanged (ADR 0013):

1. ``?`` placeholders only (the PostgreSQL adapter, :mod:`proctor.store._pg`,
   rewrites them to ``%s``); no ``?1`` or ``:name``.
2. ``INSERT … ON CONFLICT (columns) DO NOTHING`` or ``DO UPDATE SET c = excluded.c``,
   never ``INSERT OR IGNORE`` or ``INSERT OR REPLACE`` (a replace deletes whichever row
   is in the way, under any unique index).
3. An explicit column list on every ``INSERT`` and ``SELECT`` (no ``SELECT *``: a
   column added by an upgrade is not at the same position everywhere); no ``rowid``.
4. Functions both have: ``lower``, ``coalesce``, ``substr``, ``length``, the
   aggregates ``count`` and ``max``, ``CAST(… AS BIGINT)``, ``||``; ``CASE`` where
   SQLite would use a two-argument ``max``. No JSON functions (the caller decodes),
   no ``LIKE`` (its case rules differ), no ``TRUE``/``FALSE`` (integers for booleans).
5. Each value of the type of its column: text for ``TEXT`` (a number meant for a text
   column is passed as ``str``), integers for ``INTEGER``, ``bytes`` only for bytes.

Opening connections, ``BEGIN IMMEDIATE`` or ``BEGIN``, the DDL (indexes on
expressions, triggers), schema creation and version checks differ between the two and
belong to a backend (:mod:`proctor.store.state_backend`).

Errors: a ``sqlite3`` connection raises :class:`sqlite3.Error`
(:class:`sqlite3.IntegrityError` for a constraint). An adapted connection raises
:class:`IntegrityViolation` for a constraint and, for any other failure, either its
driver's error (which the store that owns the connection wraps in
:class:`~proctor.errors.StoreError`) or a ``StoreError`` itself. Query code catches
:data:`INTEGRITY_ERRORS` where a constraint violation is an answer (a second start of
one warrant), and the state store wraps :data:`DRIVER_ERRORS` (and its backend's own)
in ``StoreError``: neither ever leaves :mod:`proctor.store`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from proctor.errors import StoreIntegrityError

__all__ = ["IntegrityViolation", "INTEGRITY_ERRORS", "DRIVER_ERRORS", "Cursor", "Connection", "not_in"]


IntegrityViolation = StoreIntegrityError
"""A constraint refused the statement (:class:`proctor.errors.StoreIntegrityError`):
what the PostgreSQL adapter raises for ``psycopg.IntegrityError``."""


INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, IntegrityViolation)
"""A constraint refused the statement, on either backend."""

DRIVER_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, IntegrityViolation)
"""Any failure of a statement that the state store wraps in ``StoreError`` (a backend
adds its driver's own errors: :attr:`proctor.store.state_backend.StateBackend.errors`)."""


class Cursor(Protocol):
    """What a statement returns: its rows, fetched (the shared code never iterates a
    cursor itself, so an adapter need not support that)."""

    def fetchone(self) -> Any:
        """The next row as a tuple, or ``None``."""
        ...

    def fetchall(self) -> list[Any]:
        """Every remaining row, as tuples."""
        ...

    @property
    def rowcount(self) -> int:
        """Rows changed by the statement (-1 if the driver cannot tell)."""
        ...


class Connection(Protocol):
    """A connection that runs the common subset (module docstring): a
    :class:`sqlite3.Connection` is one, and so is :class:`proctor.store._pg.PgConnection`.

    Inside a transaction a statement refused by a constraint leaves the transaction
    usable (SQLite's behaviour; the PostgreSQL adapter runs each write under a
    savepoint to match), so a writer may catch :data:`INTEGRITY_ERRORS` and go on.
    """

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor:
        """Run one statement with ``?`` placeholders."""
        ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> object:
        """Run one statement once per row of parameters."""
        ...


def not_in(column: str, values: Sequence[str]) -> str:
    """``AND column NOT IN (?, …)`` with one placeholder per value (the values go in the
    parameters), or ``""`` for none."""
    return f" AND {column} NOT IN ({', '.join('?' * len(values))})" if values else ""
