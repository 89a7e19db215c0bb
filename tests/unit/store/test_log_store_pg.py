"""What only the PostgreSQL log store has to get right: its schema, its server's
settings, connections that break, and several processes at once.

The contract both stores share is tested in ``test_log_store.py``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest

from pg_support import PgCluster
from proctor.errors import StoreError, StoreIntegrityError
from proctor.store.base import Tile
from proctor.store.postgres import PostgresLogStore

pytestmark = pytest.mark.postgres

T = TypeVar("T")


def tile(width: int, fill: int = 1) -> Tile:
    return Tile(0, 0, width, bytes([fill]) * 32 * sum(width >> r for r in range(8)))


def sql(dsn: str, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement.encode())
        return cur.fetchall() if cur.description else []


def back_within(seconds: float, call: Callable[[], T]) -> T:
    """``call()``'s result once it stops failing with StoreError (the pool may still be
    waiting to retry a connection when the server comes back)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def store(pg_dsn: str) -> Iterator[PostgresLogStore]:
    s = PostgresLogStore(pg_dsn, create=True)
    yield s
    s.close()


def test_postgres_refuses_a_database_without_the_schema(pg_dsn: str) -> None:
    with pytest.raises(StoreError, match="expected a proctor database, found no schema"):
        PostgresLogStore(pg_dsn)


def test_postgres_refuses_unknown_schema_version(pg_dsn: str) -> None:
    PostgresLogStore(pg_dsn, create=True).close()
    sql(pg_dsn, "UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreError, match="expected schema version 1, found '99'"):
        PostgresLogStore(pg_dsn)
    with pytest.raises(StoreError, match="expected schema version 1, found '99'"):
        PostgresLogStore(pg_dsn, create=True)  # create never overwrites another schema


def test_postgres_unreachable_is_a_store_error_without_the_password(pg_cluster: PgCluster) -> None:
    dsn = f"postgresql://postgres:{pg_cluster.password}@127.0.0.1:{pg_cluster.port}/postgres"
    with pytest.raises(StoreError) as wrong_db:
        PostgresLogStore(dsn.replace("/postgres", "/no_such_database"), timeout=5)
    with pytest.raises(StoreError) as wrong_password:
        PostgresLogStore(dsn.replace(pg_cluster.password, "not-the-password-xyz"), timeout=5)
    for caught, secret in ((wrong_db, pg_cluster.password), (wrong_password, "not-the-password-xyz")):
        message = str(caught.value)
        assert "cannot connect to" in message
        assert secret not in message
        assert "password=***" in message


def test_postgres_refuses_a_server_without_fsync(pg_cluster: PgCluster, pg_dsn: str) -> None:
    pg_cluster.sql("ALTER SYSTEM SET fsync = off")
    pg_cluster.sql("SELECT pg_reload_conf()")
    try:
        with pytest.raises(StoreError, match="expected a server with fsync = on, found 'off'"):
            PostgresLogStore(pg_dsn, create=True)
    finally:
        pg_cluster.sql("ALTER SYSTEM RESET fsync")
        pg_cluster.sql("SELECT pg_reload_conf()")
    PostgresLogStore(pg_dsn, create=True).close()


def test_postgres_appends_commit_synchronously_whatever_the_default(pg_dsn: str) -> None:
    """Acknowledged means durable: an append commits with synchronous_commit on even
    where the database's default is off."""
    dbname = pg_dsn.rsplit("/", 1)[1]
    sql(pg_dsn, f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    seen: list[object] = []
    s = PostgresLogStore(pg_dsn, create=True)
    try:
        s.append(
            0,
            [b"a"],
            [tile(1)],
            also=[lambda c: seen.append(c.execute("SHOW synchronous_commit").fetchone())],
        )
    finally:
        s.close()
    assert seen == [("on",)]


def test_postgres_log_indices_use_no_sequence(store: PostgresLogStore, pg_dsn: str) -> None:
    """A SEQUENCE or IDENTITY is not rolled back with its transaction: indices would
    have gaps. The schema has neither."""
    assert sql(pg_dsn, "SELECT sequence_name FROM information_schema.sequences") == []
    assert sql(pg_dsn, "SELECT column_name FROM information_schema.columns WHERE is_identity = 'YES'") == []
    assert sql(pg_dsn, "SELECT tree_size FROM log_head") == [(0,)]


def test_postgres_log_head_has_exactly_one_row(store: PostgresLogStore, pg_dsn: str) -> None:
    with pytest.raises(psycopg.IntegrityError):
        sql(pg_dsn, "INSERT INTO log_head (id, tree_size) VALUES (FALSE, 5)")
    with pytest.raises(psycopg.IntegrityError):
        sql(pg_dsn, "INSERT INTO log_head (id, tree_size) VALUES (TRUE, 5)")


def test_postgres_schema_created_by_several_processes_at_once(pg_dsn: str) -> None:
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []
    stores: list[PostgresLogStore] = []

    def create() -> None:
        barrier.wait(timeout=60)
        try:
            stores.append(PostgresLogStore(pg_dsn, create=True))
        except BaseException as e:  # recorded for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for s in stores:
        s.close()
    assert errors == []
    assert sql(pg_dsn, "SELECT tree_size FROM log_head") == [(0,)]


def test_postgres_acknowledged_appends_survive_a_server_crash(pg_cluster: PgCluster, pg_dsn: str) -> None:
    """The server is killed (``pg_ctl stop -m immediate``: no clean shutdown, recovery
    from the WAL): while it is down every call fails as StoreError; once it is back,
    everything acknowledged is there and the same store appends on."""
    s = PostgresLogStore(pg_dsn, create=True, timeout=2)
    try:
        s.append(0, [b"a", b"b"], [tile(2)])
        s.put_checkpoint(2, "two")
        pg_cluster.stop("immediate")
        with pytest.raises(StoreError, match=r"append of 1 entries at 2 failed.*Connection refused"):
            s.append(2, [b"c"], [tile(3)])
        with pytest.raises(StoreError):
            s.tree_size()
        pg_cluster.start()
        assert back_within(60, s.tree_size) == 2  # the pool reconnects (event, not duration)
        assert list(s.entries(0, 10)) == [(0, b"a"), (1, b"b")]
        assert s.tile(0, 0) == tile(2)
        s.append(2, [b"c"], [tile(3)])
    finally:
        s.close()
    again = PostgresLogStore(pg_dsn)
    try:
        assert list(again.entries(0, 10)) == [(0, b"a"), (1, b"b"), (2, b"c")]
    finally:
        again.close()


def test_postgres_an_append_whose_write_swallowed_a_failure_commits_nothing(
    store: PostgresLogStore, pg_dsn: str
) -> None:
    """A read runs without a savepoint: a write that catches its failure and goes on
    leaves the transaction aborted, and PostgreSQL answers COMMIT with a ROLLBACK — the
    append must fail, never be acknowledged with nothing stored."""

    def swallows(conn: Any) -> None:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT 1 / 0").fetchone()

    with pytest.raises(StoreError, match="nothing was committed"):
        store.append(0, [b"a"], [tile(1)], also=[swallows])
    assert store.tree_size() == 0
    assert sql(pg_dsn, "SELECT count(*) FROM entries") == [(0,)]
    store.append(0, [b"a"], [tile(1)])  # the connection went back to the pool usable
    assert list(store.entries(0, 10)) == [(0, b"a")]


def test_postgres_a_write_goes_on_after_a_caught_violation_many_times(
    store: PostgresLogStore, pg_dsn: str
) -> None:
    """The writes' savepoints ride in their statements' round trips; a violation rolls
    back to its own savepoint only. Enough appends that psycopg would prepare the
    statements (its threshold is 5): none is, so an aborted pipeline leaves no stale
    prepared statement behind."""
    sql(pg_dsn, "CREATE TABLE side (k TEXT PRIMARY KEY)")
    caught: list[BaseException] = []

    def write(n: int) -> Callable[[Any], None]:
        def run(conn: Any) -> None:
            conn.execute("INSERT INTO side (k) VALUES (?)", (f"row{n}",))
            try:
                conn.execute("INSERT INTO side (k) VALUES (?)", ("row0",))
            except StoreIntegrityError as e:
                caught.append(e)
            conn.execute("INSERT INTO side (k) VALUES (?) ON CONFLICT (k) DO NOTHING", (f"after{n}",))

        return run

    for n in range(8):
        store.append(n, [b"e%d" % n], [tile(n + 1)], also=[write(n)])
    assert len(caught) == 8
    assert store.tree_size() == 8
    assert sql(pg_dsn, "SELECT count(*) FROM side") == [(16,)]


def test_postgres_a_failed_write_fails_its_append_with_its_own_error(store: PostgresLogStore) -> None:
    def clashes(conn: Any) -> None:
        try:
            conn.execute("INSERT INTO log_head (id, tree_size) VALUES (TRUE, 0)")
        except StoreIntegrityError as e:
            raise StoreError(f"the write's own message: {e}") from e

    with pytest.raises(StoreError, match=r"the write's own message: .*duplicate key"):
        store.append(0, [b"a"], [tile(1)], also=[clashes])
    assert store.tree_size() == 0
    store.append(0, [b"b"], [tile(1, 2)])
    assert list(store.entries(0, 10)) == [(0, b"b")]


def test_postgres_head_is_the_size_and_latest_checkpoint_in_one_read(store: PostgresLogStore) -> None:
    assert store.head() == (0, None)
    store.append(0, [b"a", b"b"], [tile(2)], checkpoint=(2, "two"))
    store.put_checkpoint(1, "one")
    assert store.head() == (2, (2, "two")) == (store.tree_size(), store.latest_checkpoint())
    store.append(2, [b"c"], [tile(3)])  # no checkpoint of its own yet
    assert store.head() == (3, (2, "two"))
