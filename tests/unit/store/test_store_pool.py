"""The stores' connection pool (:class:`proctor.store._pg.StorePool`) on a real server that
the tests stop and start: it fails fast, naming the database and the cause, while the
server is down (not after its whole timeout); it replaces connections broken by a
restart, so the first call after the server is back succeeds; a busy pool whose server
answers makes its callers wait, and says so when they give up."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg_pool
import pytest
from psycopg.conninfo import conninfo_to_dict

from pg_support import PgCluster
from proctor.store._pg import KEEPALIVES, StorePool

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TIMEOUT = 60.0  # the pool's own timeout: what a plain pool would make each caller wait


@pytest.fixture
def pool(pg_dsn: str) -> Iterator[StorePool]:
    made = StorePool(pg_dsn, name="test", max_size=1, timeout=TIMEOUT, down_wait=1.0)
    made.open(wait=True, timeout=TIMEOUT)
    yield made
    made.close()


def test_a_pool_whose_server_is_down_fails_fast_naming_the_store_and_the_cause(
    pool: StorePool, pg_cluster: PgCluster, pg_dsn: str
) -> None:
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    pg_cluster.stop()
    try:
        started = time.monotonic()
        with pytest.raises(psycopg_pool.PoolTimeout) as failed, pool.connection() as conn:
            conn.execute("SELECT 1")
        # Well under the pool's timeout: the outage was found, not waited out.
        assert time.monotonic() - started < TIMEOUT / 2
        message = str(failed.value)
        assert pool.where in message
        assert "refused" in message.lower()
        assert str(conninfo_to_dict(pg_dsn)["password"]) not in message
        assert pool.unreachable
    finally:
        pg_cluster.start()


def test_after_a_restart_the_first_call_gets_a_working_connection(
    pool: StorePool, pg_cluster: PgCluster
) -> None:
    with pool.connection() as conn:
        before = conn.execute("SELECT pg_backend_pid()").fetchone()
    pg_cluster.stop()
    pg_cluster.start()
    with pool.connection() as conn:  # the broken one is checked, discarded and replaced
        after = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert after is not None
    assert after != before
    assert not pool.unreachable


def test_a_busy_pool_whose_server_answers_says_so(pg_dsn: str) -> None:
    busy = StorePool(pg_dsn, name="test-busy", max_size=1, timeout=2.0, down_wait=0.5)
    busy.open(wait=True, timeout=TIMEOUT)
    try:
        with busy.connection():
            with pytest.raises(psycopg_pool.PoolTimeout, match="every pooled connection is busy"):
                busy.getconn(timeout=2.0)
            assert not busy.unreachable
    finally:
        busy.close()


def test_a_pool_refuses_a_wait_of_zero(pg_dsn: str) -> None:
    with pytest.raises(ValueError, match="expected down_wait > 0, found 0"):
        StorePool(pg_dsn, name="test-bad", max_size=1, timeout=1.0, down_wait=0)


def test_pooled_connections_probe_the_server_with_keepalives(pool: StorePool) -> None:
    # A statement sent into a network partition fails after about 11 s of silence, not
    # the operating system's two hours (D's outage residual).
    with pool.connection() as conn:
        params = conn.info.get_parameters()
    assert params.get("keepalives") == "1"
    for name, value in KEEPALIVES.items():
        assert params.get(name) == str(value), (name, params)
