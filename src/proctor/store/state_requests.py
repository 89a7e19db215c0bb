"""Signed requests: the nonces seen (replay protection) and a bounded record of the
requests refused (tables ``nonces`` and ``auth_failures``, and ``meta.nonce_floor``).

The governor keeps the live nonces in memory and persists them through the log writer
(:class:`proctor.governor.nonces.NonceCache`). Forgetting expired nonces raises the
*nonce floor*, the latest time nonces were forgotten at, in the same transaction: a
request older than the window before the floor is refused even if the clock went
back, since its nonce may have been forgotten. The floor therefore never goes down.

Refused requests are not logged in the Merkle log, so that unauthenticated callers
cannot grow it; their table keeps the newest :data:`MAX_AUTH_FAILURES`.

Query functions and writers as in :mod:`proctor.store.state_principals` (common SQL
subset, driver errors pass through unless said otherwise).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from proctor.errors import ProctorError, StoreError
from proctor.store.records import AuthFailure
from proctor.store.sql import Connection

__all__ = [
    "MAX_AUTH_FAILURES",
    "write_nonces",
    "claim_nonces",
    "live_nonces",
    "nonce_floor",
    "auth_failure_writer",
    "auth_failures",
]

MAX_AUTH_FAILURES = 10_000
"""How many refused requests are kept (the newest)."""


def write_nonces(conn: Connection, rows: list[tuple[str, str, int]], purge_before: int) -> None:
    """On the log writer's connection (a side write): store request nonces
    ``(keyid, nonce, expires)`` (a nonce already stored is kept); with
    ``purge_before``, drop those expired before it and raise the ``nonce_floor`` to
    it in the same transaction (the floor explains the deletion: a request older
    than the floor is refused, since its nonce may have been forgotten). A floor
    below the stored one leaves the stored one: the floor never goes down.

    Raises:
        StoreError: the rows cannot be written (the whole commit fails).
    """
    try:
        conn.executemany(
            "INSERT INTO nonces (keyid, nonce, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (keyid, nonce) DO NOTHING",
            rows,
        )
        if purge_before:
            conn.execute("DELETE FROM nonces WHERE expires < ?", (purge_before,))
            # meta.value is text: compare as numbers (a plain max() would compare an
            # integer with text, and SQLite orders every text above every integer).
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('nonce_floor', ?) ON CONFLICT (key) DO UPDATE SET "
                "value = CASE WHEN CAST(meta.value AS BIGINT) > CAST(excluded.value AS BIGINT) "
                "THEN meta.value ELSE excluded.value END",
                (str(purge_before),),
            )
    except ProctorError:
        raise
    except Exception as e:  # any backend's driver error: the caller keeps the rows on StoreError
        raise StoreError(f"cannot persist request nonces: {e}") from e


def claim_nonces(
    conn: Connection, rows: list[tuple[str, str, int]], purge_before: int = 0
) -> tuple[list[bool], int]:
    """In the caller's transaction: claim request nonces for several governor processes
    that share the store (a nonce is claimed once, by whichever process saw it first).

    First, with ``purge_before``, the nonces expired before it are dropped and the floor
    raised to it (as :func:`write_nonces`). Then each ``(keyid, nonce, expires)`` is
    claimed by an insert that does nothing on a conflict: it is refused if it is
    stored already (a replay, on any process) or if it expires before the floor (its
    twin may have been forgotten: the request is older than the window before the
    floor, stale whatever the caller's clock says).

    On PostgreSQL the claim is :func:`proctor.store.nonces_pg.claim_nonces` (the same
    rules in one round trip, its commit not waiting for its own flush: that module says
    why a replay is still refused on every node and a claim is durable once its
    request's effect is).

    Returns:
        Whether each row was claimed (in order), and the floor after the purge.
    """
    if not isinstance(conn, sqlite3.Connection):
        from proctor.store import nonces_pg  # noqa: PLC0415 - psycopg only with a URL

        if nonces_pg.is_postgresql(conn):
            return nonces_pg.claim_nonces(conn, rows, purge_before)
    if purge_before:
        conn.execute("DELETE FROM nonces WHERE expires < ?", (purge_before,))
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('nonce_floor', ?) ON CONFLICT (key) DO UPDATE SET "
            "value = CASE WHEN CAST(meta.value AS BIGINT) > CAST(excluded.value AS BIGINT) "
            "THEN meta.value ELSE excluded.value END",
            (str(purge_before),),
        )
    floor = nonce_floor(conn)
    claimed = []
    for keyid, nonce, expires in rows:
        if expires < floor:
            claimed.append(False)
            continue
        cursor = conn.execute(
            "INSERT INTO nonces (keyid, nonce, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (keyid, nonce) DO NOTHING",
            (keyid, nonce, expires),
        )
        claimed.append(cursor.rowcount == 1)
    return claimed, floor


def live_nonces(conn: Connection, now: int) -> list[tuple[str, str, int]]:
    """The stored request nonces that have not expired at ``now``: ``(keyid, nonce,
    expires)``."""
    rows = conn.execute("SELECT keyid, nonce, expires FROM nonces WHERE expires >= ?", (now,)).fetchall()
    return [(str(k), str(n), int(e)) for k, n, e in rows]


def nonce_floor(conn: Connection) -> int:
    """The latest time request nonces were forgotten at (0 if never)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'nonce_floor'").fetchone()
    return 0 if row is None else int(row[0])


def auth_failure_writer(now: int, keyid: str, reason: str, detail: str) -> Callable[..., None]:
    """The insert of a rejected request's record (bounded to the newest
    :data:`MAX_AUTH_FAILURES`), to run in any transaction as ``write(conn, index=...)``."""
    row = (now, keyid[:128], reason[:64], detail[:512])

    def write(conn: Connection, index: int = -1) -> None:
        conn.execute("INSERT INTO auth_failures (time, keyid, reason, detail) VALUES (?, ?, ?, ?)", row)
        conn.execute(
            "DELETE FROM auth_failures WHERE id <= (SELECT max(id) FROM auth_failures) - ?",
            (MAX_AUTH_FAILURES,),
        )

    return write


def auth_failures(conn: Connection, limit: int = 100) -> list[AuthFailure]:
    """The most recent rejected requests, newest first: ``time``, ``keyid``, ``reason``
    and ``detail`` each."""
    rows = conn.execute(
        "SELECT time, keyid, reason, detail FROM auth_failures ORDER BY id DESC LIMIT ?", (limit,)
    ).fetchall()
    return [{"time": t, "keyid": k, "reason": r, "detail": d} for t, k, r, d in rows]
