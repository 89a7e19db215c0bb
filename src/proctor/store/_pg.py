"""PostgreSQL plumbing shared by the PostgreSQL stores: SQL in SQLite's dialect run
through psycopg 3, DSNs safe to print, and the connection pool (:class:`StorePool`).

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
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from proctor.errors import StoreError
from proctor.store.sql import IntegrityViolation

__all__ = ["KEEPALIVES", "PgConnection", "StorePool", "client_keepalives", "redact", "translate"]

_log = logging.getLogger("proctor.store")

# Statements that only read need no savepoint (they cannot violate a constraint).
_READS = ("SELECT", "SHOW", "VALUES")


KEEPALIVES = {"keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
"""TCP keepalives of every session (pooled, a lock's, the listener's): a peer silent for
about 11 s (5 + 3 x 2) is dead. On a lock's session the server probes too (ADR 0016),
and releases what the session held; on a pooled one the client stops waiting for a
statement sent into a partition, and fails it."""


def client_keepalives(dsn: str) -> dict[str, Any]:
    """libpq's keepalive parameters for a connection to ``dsn``: :data:`KEEPALIVES`,
    except those the DSN sets itself."""
    given = conninfo_to_dict(dsn)
    return {"keepalives": 1} | {k: v for k, v in KEEPALIVES.items() if k not in given}


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


class StorePool(psycopg_pool.ConnectionPool[psycopg.Connection[Any]]):
    """The stores' pool of autocommit connections: it replaces broken connections and
    fails fast while the server is unreachable.

    A plain ``psycopg_pool`` pool makes every caller wait its whole ``timeout`` (30 s)
    for a connection while the server is down: authorizations, renewals and ``/readyz``
    would all hang that long before failing. Here:

    1. Each connection is checked before it is handed out
       (:meth:`~psycopg_pool.ConnectionPool.check_connection`): one broken by a server
       restart is discarded and a new one opened, so a restart fails no call once the
       server is back.
    2. A caller waits in slices of ``down_wait`` seconds. When a slice ends without a
       connection, one direct connection attempt tells why: refused (the server is down
       or unreachable) and the call fails at once, naming the database and the cause;
       the server answers (every pooled connection is busy) and the caller waits on, up
       to its timeout.
    3. While the server is down the pool goes on reconnecting in the background with a
       growing delay, giving up after ``reconnect_timeout``; a later caller makes it try
       again at once, so the store is back within moments of the server.
    4. The change from reachable to unreachable and back is logged once each (the
       ``proctor.store`` logger), not per call; no message carries the password.
    """

    def __init__(
        self,
        dsn: str,
        *,
        name: str,
        max_size: int,
        timeout: float,
        down_wait: float = 2.0,
    ) -> None:
        """A pool of at most ``max_size`` connections to ``dsn``, not yet open (``open``).

        Args:
            dsn: the database.
            name: the pool's name in psycopg_pool's log.
            max_size: the most connections it holds.
            timeout: seconds a caller waits for a connection while the server answers
                (and the connection timeout of each new connection).
            down_wait: seconds a caller waits before the pool checks whether the
                server answers at all (point 2).
        """
        if down_wait <= 0:
            raise ValueError(f"expected down_wait > 0, found {down_wait}")
        super().__init__(
            dsn,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(timeout))} | client_keepalives(dsn),
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=timeout,
            reconnect_timeout=min(timeout, 5.0),
            open=False,
            name=name,
        )
        self._dsn = dsn
        self.where = redact(dsn)
        """The database, as messages name it (no password)."""
        self.down_wait = down_wait
        self._unreachable = threading.Event()

    @property
    def unreachable(self) -> bool:
        """Whether the last caller that found no connection found the server refusing."""
        return self._unreachable.is_set()

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        """A checked connection (module docstring of the class, points 1 and 2).

        Raises:
            psycopg_pool.PoolTimeout: none within ``timeout`` (the pool's by default),
                or the server refuses connections; the message names the database and
                the cause.
            psycopg_pool.PoolClosed: the pool is closed.
        """
        wait = self.timeout if timeout is None else timeout
        start = time.monotonic()
        deadline = start + wait
        while True:
            step = max(0.001, min(self.down_wait, deadline - time.monotonic()))
            try:
                conn = super().getconn(step)
            except psycopg_pool.PoolTimeout as e:
                refused = self._probe()
                if refused is None and time.monotonic() < deadline:
                    continue  # the server answers: the pool is busy, wait on
                cause = refused or "the server answers, but every pooled connection is busy"
                if refused is not None and not self._unreachable.is_set():
                    self._unreachable.set()
                    _log.warning("the store %s is unreachable: %s", self.where, refused)
                raise psycopg_pool.PoolTimeout(
                    f"no connection to {self.where} after {time.monotonic() - start:.1f} s: {cause}"
                ) from e
            if self._unreachable.is_set():
                self._unreachable.clear()
                _log.warning("the store %s is reachable again", self.where)
            return conn

    def _probe(self) -> str | None:
        """``None`` if a direct connection succeeds, else why it failed."""
        try:
            with psycopg.connect(self._dsn, connect_timeout=max(1, round(self.down_wait))):
                return None
        except psycopg.Error as e:
            return " ".join(str(e).split()) or type(e).__name__
