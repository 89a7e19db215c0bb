"""PostgreSQL plumbing shared by the PostgreSQL stores: SQL in SQLite's dialect run
through psycopg 3, and DSNs safe to print.

The stores write their SQL once, in the common subset of SQLite and PostgreSQL with
``?`` placeholders (:mod:`proctor.store.sql`). :class:`PgConnection` runs that SQL on
a psycopg connection:

1. ``?`` outside string literals, quoted identifiers and comments becomes psycopg's
   ``%s``; every ``%`` becomes ``%%`` (psycopg reads ``%`` everywhere in a query that
   has parameters, literals included), and parameters are always passed, so the
   query is always parsed the same way.
2. A statement that violates a constraint raises
   :class:`~proctor.store.sql.IntegrityViolation` (the driver's
   ``psycopg.IntegrityError`` is its ``__cause__``).
3. Inside a transaction, each statement that may write runs under a savepoint: a
   failed statement aborts a PostgreSQL transaction, but not an SQLite one, and code
   written for both catches an integrity violation and goes on (a replayed nonce is
   an answer, not the end of the transaction). The savepoint gives PostgreSQL
   SQLite's behaviour.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from proctor.errors import StoreError
from proctor.store.sql import IntegrityViolation

__all__ = ["PgConnection", "redact", "translate"]

# Statements that only read need no savepoint (they cannot violate a constraint).
_READS = ("SELECT", "SHOW", "VALUES")


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """SQLite-dialect SQL with ``?`` placeholders as psycopg SQL with ``%s``.

    Raises:
        StoreError: a numbered or named SQLite placeholder (``?1``), which this
            subset does not allow.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":  # a string literal or a quoted identifier; '' and "" stay inside
            end = sql.find(c, i + 1)
            while end != -1 and end + 1 < n and sql[end + 1] == c:
                end = sql.find(c, end + 2)
            if end == -1:
                raise StoreError(f"expected a closing {c} in SQL, found none: {sql!r}")
            out.append(sql[i : end + 1].replace("%", "%%"))
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end == -1:
                raise StoreError(f"expected */ to close a comment in SQL, found none: {sql!r}")
            out.append(sql[i : end + 2].replace("%", "%%"))
            i = end + 2
        elif c == "?":
            if i + 1 < n and sql[i + 1].isdigit():
                raise StoreError(f"expected plain ? placeholders, found a numbered one in {sql!r}")
            out.append("%s")
            i += 1
        elif c == "%":
            out.append("%%")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def redact(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***``, for messages and logs.

    A DSN that cannot be parsed is not echoed at all (it may hold a password in a
    form this cannot see).
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(an unparseable PostgreSQL DSN)"
    if "password" in params:
        params["password"] = "***"  # noqa: S105 - the redaction marker, not a password
    return make_conninfo("", **params)


class PgConnection:
    """A psycopg connection seen through the SQLite-dialect ``execute`` (module docstring).

    What the store hands to ``also`` writes and what the PostgreSQL state store runs its
    SQL on. Rows come back as tuples, ``bytea`` as :class:`bytes`.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The psycopg connection itself (for what the common subset cannot say)."""
        return self._conn

    def _guarded(self, sql: str) -> bool:
        in_transaction = self._conn.info.transaction_status == pq.TransactionStatus.INTRANS
        return in_transaction and not sql.lstrip().upper().startswith(_READS)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement with ``?`` placeholders; the cursor has ``fetchone``,
        ``fetchall`` and ``rowcount``.

        Raises:
            IntegrityViolation: a constraint refused the statement (in a transaction,
                the transaction is still usable).
            psycopg.Error: any other driver error (the stores wrap it in StoreError).
        """
        query = translate(sql)
        cur = self._conn.cursor()
        try:
            if self._guarded(sql):
                with self._conn.transaction():  # a savepoint (point 3)
                    cur.execute(query, tuple(params))
            else:
                cur.execute(query, tuple(params))
        except psycopg.IntegrityError as e:
            raise IntegrityViolation(str(e).strip()) from e
        return cur

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per row of parameters (all or, on error, none).

        Raises:
            IntegrityViolation, psycopg.Error: as :meth:`execute`.
        """
        query = translate(sql)
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.executemany(query, [tuple(r) for r in rows])
        except psycopg.IntegrityError as e:
            raise IntegrityViolation(str(e).strip()) from e
