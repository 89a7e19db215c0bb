"""The connection an append's ``also`` writes run on, on PostgreSQL
(:class:`AppendConnection`, used by :class:`~proctor.store.postgres.PostgresLogStore`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from proctor.store._pg import PgConnection, translate
from proctor.store.sql import IntegrityViolation

__all__ = ["AppendConnection"]

_READS = ("SELECT", "SHOW", "VALUES")  # as store/_pg.py: no savepoint for a read


class AppendConnection(PgConnection):
    """What an append's ``also`` writes run on: :class:`~proctor.store._pg.PgConnection`
    with its savepoint per write statement (``store/_pg.py``, point 3: code written for
    both databases may catch a constraint violation and go on) sent in the statement's
    own round trip — ``SAVEPOINT``, the statement, ``RELEASE`` in one pipeline — instead
    of three. A failed statement is rolled back to its savepoint (one more round trip,
    only then) and raised as before (:class:`~proctor.store.sql.IntegrityViolation` for a
    constraint). These statements are never prepared: a prepared statement skipped in
    an aborted pipeline would stay in psycopg's cache (``executemany`` keeps the
    parent's way).
    """

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement with ``?`` placeholders in the append's transaction.

        Raises:
            IntegrityViolation: a constraint refused it (the transaction goes on).
            psycopg.Error: any other driver error.
        """
        if sql.lstrip().upper().startswith(_READS):
            return super().execute(sql, params)  # no savepoint, as the parent
        raw = self.raw
        cur = raw.cursor()
        try:
            with raw.pipeline():
                raw.execute("SAVEPOINT proctor_write", prepare=False)
                cur.execute(translate(sql), tuple(params), prepare=False)
                raw.execute("RELEASE SAVEPOINT proctor_write", prepare=False)
        except psycopg.Error as e:
            raw.execute("ROLLBACK TO SAVEPOINT proctor_write", prepare=False)
            if isinstance(e, psycopg.IntegrityError):
                raise IntegrityViolation(str(e).strip()) from e
            raise
        return cur
