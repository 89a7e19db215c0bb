"""Claiming request nonces on PostgreSQL: one round trip, no flush of its own.

Governor nodes that share a database claim each request's nonce before serving it
(:func:`proctor.store.state_requests.claim_nonces`, ADR 0016). On PostgreSQL the claim
runs here, and differs from the common-subset version in two ways; neither weakens
what the claim guarantees.

1. **It commits without waiting for its WAL flush** (``SET LOCAL synchronous_commit =
   off``). What refuses a replay on every node is that the claimed row is *visible*,
   and a transaction is visible to every session once its ``COMMIT`` returns, flushed
   or not. Durability follows from the order of the WAL, which is one stream: a
   request's effect (its log append, committed with ``synchronous_commit = on`` after
   the claim returned) has a commit record later in the WAL than the claim's, and
   PostgreSQL flushes the WAL up to a record before it acknowledges that record's
   commit — so once the effect is durable, so is its claim. A crash of the server can
   therefore lose a claim only together with an effect that was never acknowledged, or
   for a request that has no durable effect (a read, a refusal), and only within the
   WAL writer's interval (``wal_writer_delay``, at most three times it); the server's
   background writer or any other node's synchronous commit flushes it sooner. That
   reopens a replay window only for a request that had nothing to repeat, which is
   less than the exclusive mode already allows (ADR 0006: its nonces ride in the log
   writer's *next* transaction). Revocation on node A is the case this was measured
   for: the claim's flush was one of the two fsyncs in the request (docs/benchmarks-history.md).
2. **One statement** claims the whole batch against the stored floor
   (``INSERT … SELECT FROM unnest(…) … ON CONFLICT DO NOTHING RETURNING``), read in the
   same snapshot as the floor it reports, sent with the purge in one pipeline: one
   round trip where the common version takes one per row plus savepoints.

The SQL here is PostgreSQL's own (``::`` casts, ``unnest``), which is why it is not in a
``state_*`` module (those hold the common subset, ``tests/unit/store/test_state_sql.py``).
"""

from __future__ import annotations

from typing import Any, TypeGuard

from proctor.store._pg import PgConnection

__all__ = ["claim_nonces", "is_postgresql"]

_FLOOR_UP = (
    "INSERT INTO meta (key, value) VALUES ('nonce_floor', %s) ON CONFLICT (key) DO UPDATE SET "
    "value = CASE WHEN CAST(meta.value AS BIGINT) > CAST(excluded.value AS BIGINT) "
    "THEN meta.value ELSE excluded.value END"
)
# The floor and the claims in one statement, so that both are read in one snapshot: a
# row that expires before the floor is not inserted (its twin may have been purged).
_CLAIM = (
    "WITH floor AS (SELECT coalesce((SELECT CAST(value AS BIGINT) FROM meta "
    "WHERE key = 'nonce_floor'), 0) AS f), "
    "claimed AS (INSERT INTO nonces (keyid, nonce, expires) "
    "SELECT r.k, r.n, r.e FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS r (k, n, e), floor "
    "WHERE r.e >= floor.f ON CONFLICT (keyid, nonce) DO NOTHING RETURNING keyid, nonce) "
    "SELECT floor.f, claimed.keyid, claimed.nonce FROM floor LEFT JOIN claimed ON true"
)


def is_postgresql(conn: object) -> TypeGuard[PgConnection]:
    """Whether ``conn`` is a PostgreSQL state connection (then use :func:`claim_nonces`)."""
    return isinstance(conn, PgConnection)


def claim_nonces(
    conn: PgConnection, rows: list[tuple[str, str, int]], purge_before: int = 0
) -> tuple[list[bool], int]:
    """In the caller's transaction on ``conn``: purge before ``purge_before`` (raising
    the floor to it) and claim ``rows`` ``(keyid, nonce, expires)``, as
    :func:`proctor.store.state_requests.claim_nonces` does, in one round trip and with
    the transaction's commit not waiting for its flush (module docstring).

    Returns:
        Whether each row was claimed (in order; a row repeated within ``rows`` is
        claimed once, at its first place), and the floor the claims were judged by.

    Raises:
        psycopg.Error: the database failed (the state store wraps it; nothing is
            claimed, the transaction rolls back).
    """
    raw: Any = conn.raw
    with raw.pipeline():
        raw.execute("SET LOCAL synchronous_commit = off")
        if purge_before:
            raw.execute("DELETE FROM nonces WHERE expires < %s", (purge_before,))
            raw.execute(_FLOOR_UP, (str(purge_before),))
        cursor = raw.execute(_CLAIM, ([r[0] for r in rows], [r[1] for r in rows], [int(r[2]) for r in rows]))
    found = cursor.fetchall()
    floor = int(found[0][0]) if found else 0
    won = {(str(keyid), str(nonce)) for _, keyid, nonce in found if keyid is not None}
    claimed = []
    for keyid, nonce, _ in rows:
        claimed.append((keyid, nonce) in won)
        won.discard((keyid, nonce))  # a second copy in this batch is a replay of the first
    return claimed, floor
