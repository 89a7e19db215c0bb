"""Nonce claims on PostgreSQL (``proctor.store.nonces_pg``): one round trip whose commit
does not wait for its own flush, yet a replay is refused on every node at once and a
claim is durable as soon as any later synchronous commit is (the request's effect)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from pg_support import PgCluster
from proctor.store import nonces_pg
from proctor.store._pg import PgConnection
from proctor.store.postgres import PostgresLogStore
from proctor.store.state import StateStore
from proctor.store.state_pg import PostgresStateBackend

pytestmark = pytest.mark.postgres


@pytest.fixture
def nodes(pg_dsn: str) -> Iterator[tuple[StateStore, StateStore]]:
    """Two state stores on one database, as two governor nodes (pools of their own)."""
    PostgresLogStore(pg_dsn, create=True).close()
    a = StateStore(backend=PostgresStateBackend(pg_dsn))
    b = StateStore(backend=PostgresStateBackend(pg_dsn))
    yield a, b
    a.close()
    b.close()


def test_a_nonce_claimed_on_one_node_is_refused_on_another_at_once(
    nodes: tuple[StateStore, StateStore],
) -> None:
    a, b = nodes
    assert a.claim_nonces([("ka", "n1", 500)]) == ([True], 0)
    assert b.claim_nonces([("ka", "n1", 500), ("ka", "n2", 500)]) == ([False, True], 0)
    assert a.claim_nonces([("ka", "n2", 500)]) == ([False], 0)


def test_a_nonce_twice_in_one_batch_is_claimed_once(nodes: tuple[StateStore, StateStore]) -> None:
    a, _ = nodes
    assert a.claim_nonces([("ka", "n1", 500), ("kb", "n1", 500), ("ka", "n1", 500)]) == (
        [True, True, False],
        0,
    )


def test_a_claim_below_the_floor_is_refused_and_the_floor_reported(
    nodes: tuple[StateStore, StateStore],
) -> None:
    a, b = nodes
    assert a.claim_nonces([("ka", "old", 150)], 200) == ([False], 200)  # purged to 200 first
    assert b.claim_nonces([("ka", "n", 199), ("ka", "m", 200)]) == ([False, True], 200)
    assert b.claim_nonces([("ka", "p", 300)], 100) == ([True], 200)  # the floor never goes down


def test_the_claim_commits_without_waiting_for_its_flush(pg_dsn: str) -> None:
    PostgresLogStore(pg_dsn, create=True).close()
    StateStore(backend=PostgresStateBackend(pg_dsn)).close()
    with psycopg.connect(pg_dsn, autocommit=True) as raw:
        with raw.transaction():
            assert nonces_pg.claim_nonces(PgConnection(raw), [("ka", "n", 9)]) == ([True], 0)
            assert raw.execute("SHOW synchronous_commit").fetchone() == ("off",)
        # SET LOCAL: the connection (pooled, in the store) keeps the server's setting.
        assert raw.execute("SHOW synchronous_commit").fetchone() == ("on",)


def test_a_claim_is_durable_once_a_later_synchronous_commit_is(pg_cluster: PgCluster, pg_dsn: str) -> None:
    # The request's effect (here a log append, committed with synchronous_commit = on
    # on another connection after the claim) flushes the WAL past the claim's commit
    # record: a crash right after it (an immediate stop: no shutdown checkpoint, the
    # WAL buffers not written) keeps the claim, and its replay is refused.
    log = PostgresLogStore(pg_dsn, create=True)
    state = StateStore(backend=PostgresStateBackend(pg_dsn, pool=log.pool))
    try:
        assert state.claim_nonces([("ka", "effect", 10**10)]) == ([True], 0)
        log.append(0, [b"the request's effect"], [])
    finally:
        state.close()
        log.close()
    pg_cluster.stop("immediate")
    pg_cluster.start()
    again = StateStore(backend=PostgresStateBackend(pg_dsn))
    try:
        assert again.claim_nonces([("ka", "effect", 10**10)]) == ([False], 0)
    finally:
        again.close()
