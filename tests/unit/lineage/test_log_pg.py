"""The lineage log on PostgreSQL: the rules of ``test_log.py`` that go through the
:class:`~proctor.store.base.LogStore` — appends, proofs, reopening, tamper and crash —
on a :class:`~proctor.store.postgres.PostgresLogStore` in a real server.

``test_log.py`` runs the same rules on SQLite (and the rest: data directories, the
append lock, the writer's sequencing).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pg_support import PgCluster
from proctor.errors import LogAppendError, LogIntegrityError, StoreError
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.log import Log
from proctor.lineage.merkle import leaf_hash
from proctor.lineage.proofs import ConsistencyProof, InclusionProof
from proctor.lineage.tiles import TreeBuilder
from proctor.note import NoteSigner, generate_signer
from proctor.store._pg import PgConnection
from proctor.store.postgres import PostgresLogStore

pytestmark = pytest.mark.postgres

ORIGIN = "test.example/pg-log"


def ev(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "type": "decision", "time": "2026-11-26T06:00:00Z", "n": i, **extra}


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return generate_signer(ORIGIN)


@pytest.fixture
def open_log(pg_dsn: str, signer: NoteSigner) -> Callable[..., Log]:
    """Open a log over a new store on this test's database (as another process would)."""

    def make(timeout: float = 30.0, **options: Any) -> Log:
        return Log(PostgresLogStore(pg_dsn, create=True, timeout=timeout), signer, **options)

    return make


@pytest.fixture
def log(open_log: Callable[..., Log]) -> Iterator[Log]:
    with open_log() as lg:
        yield lg


def sql(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL straight on the database, as someone with access to it would."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = PgConnection(conn).execute(statement, params)
        return cur.fetchall() if cur.description else []


def test_pg_appends_get_consecutive_indices_and_survive_reopen(open_log: Callable[..., Log]) -> None:
    with open_log() as log:
        assert log.append(ev(0)) == 0
        assert log.append_many([ev(1), ev(2), ev(3)]) == [1, 2, 3]
        note = log.checkpoint()
    with open_log() as log:
        assert log.size == 4
        assert log.checkpoint() == note
        assert log.leaf(2) == b'{"n":2,"time":"2026-11-26T06:00:00Z","type":"decision","v":1}'
        assert log.append(ev(4)) == 4
        assert log.verify_all().size == 5


@pytest.mark.parametrize("size", [1, 257, 600])
def test_pg_every_proof_verifies_against_the_signed_checkpoint(log: Log, size: int) -> None:
    log.start_writing()  # signs the empty tree, as Log.create does for a data directory
    log.append_many([ev(i) for i in range(size // 2)])
    old = open_checkpoint(log.checkpoint(), log.verifier)
    log.append_many([ev(i) for i in range(size // 2, size)])
    cp = open_checkpoint(log.checkpoint(), log.verifier)
    assert cp.size == size
    for i in range(size):
        InclusionProof.from_json(log.inclusion_proof(i)).verify(leaf_hash(log.leaf(i)), cp.root_hash)
    ConsistencyProof.from_json(log.consistency_proof(old.size)).verify(old.root_hash, cp.root_hash)


def test_pg_concurrent_appends_are_group_committed(log: Log) -> None:
    results: list[list[int]] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        mine = [log.append(ev(w * 1000 + i)) for i in range(60)]
        with lock:
            results.append(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert sorted(i for r in results for i in r) == list(range(360))
    report = log.verify_all()
    assert report.size == 360
    assert report.checkpoints < 360  # several appends shared a commit and a signature


def test_pg_never_sign_over_a_tree_that_contradicts_the_checkpoint(
    open_log: Callable[..., Log], pg_dsn: str
) -> None:
    with open_log() as log:
        log.append_many([ev(i) for i in range(10)])
        note = log.checkpoint()
    ((blob,),) = sql(pg_dsn, "SELECT hashes FROM tiles WHERE level = 0 AND idx = 0")
    sql(pg_dsn, "UPDATE tiles SET hashes = ? WHERE level = 0 AND idx = 0", (b"\x00" + bytes(blob)[1:],))
    with open_log() as log:
        with pytest.raises(LogIntegrityError, match="not internally consistent"):
            log.append(ev(10))
        assert log.checkpoint() == note
    # A consistently rewritten tile (as if other events had been logged) contradicts
    # the signed root instead.
    forged = TreeBuilder()
    for i in range(10):
        forged.append(leaf_hash(b"forged %d" % i))
    (tile,) = forged.take_dirty()
    sql(pg_dsn, "UPDATE tiles SET hashes = ? WHERE level = 0 AND idx = 0", (tile.data,))
    with open_log() as log:
        with pytest.raises(LogIntegrityError, match="signed checkpoint says"):
            log.append(ev(10))
        assert log.checkpoint() == note


def test_pg_a_rewritten_entry_is_named_by_the_audit(open_log: Callable[..., Log], pg_dsn: str) -> None:
    with open_log() as log:
        log.append_many([ev(i) for i in range(10)])
    sql(
        pg_dsn,
        "UPDATE entries SET data = ? WHERE idx = 7",
        (b'{"n":70,"time":"2026-11-26T06:00:00Z","type":"decision","v":1}',),
    )
    with open_log() as log:
        report = log.check_all()
    assert not report.ok
    assert report.index == 7


def test_pg_entries_lost_after_a_signed_checkpoint_refuse_appends(
    open_log: Callable[..., Log], pg_dsn: str
) -> None:
    with open_log() as log:
        log.append_many([ev(i) for i in range(10)])
    sql(pg_dsn, "DELETE FROM entries WHERE idx >= 8")
    sql(pg_dsn, "UPDATE log_head SET tree_size = 8")
    with open_log() as log, pytest.raises(LogIntegrityError, match="only 8 entries"):
        log.append(ev(10))


def test_pg_lost_checkpoint_is_resigned_byte_identically(open_log: Callable[..., Log], pg_dsn: str) -> None:
    with open_log() as log:
        log.append_many([ev(i) for i in range(10)])
        note = log.checkpoint()
    sql(pg_dsn, "DELETE FROM checkpoints WHERE size = 10")
    with open_log() as log:
        log.append(ev(10))
    assert sql(pg_dsn, "SELECT note FROM checkpoints WHERE size = 10") == [(note,)]


# -- side writes: state rows that commit with their events --------------------------


def test_pg_side_writes_commit_with_their_events(log: Log, pg_dsn: str) -> None:
    sql(pg_dsn, "CREATE TABLE side (k TEXT PRIMARY KEY)")

    def then(index: int, leaf: bytes) -> dict[str, Any]:
        return ev(9, parent={"index": index, "leaf_hash": base64.b64encode(leaf).decode()})

    side = [lambda conn, index: conn.execute("INSERT INTO side (k) VALUES (?)", (f"at-{index}",))]
    assert log.submit([ev(1)], then=then, side=side).wait() == [0, 1]
    assert sql(pg_dsn, "SELECT k FROM side") == [("at-0",)]
    assert log.check_all().ok


def test_pg_a_failing_side_write_fails_the_batch_and_commits_nothing(log: Log, pg_dsn: str) -> None:
    sql(pg_dsn, "CREATE TABLE side (k TEXT PRIMARY KEY)")
    log.append(ev(0))
    note = log.checkpoint()

    def broken(conn: Any, index: int) -> None:
        conn.execute("INSERT INTO side (k) VALUES ('x')")
        conn.execute("INSERT INTO side (k) VALUES ('x')")  # a constraint refuses it

    with pytest.raises(LogAppendError, match="not committed"):
        log.submit([ev(1)], side=[broken]).wait()
    assert (log.size, log.checkpoint()) == (1, note)
    assert sql(pg_dsn, "SELECT count(*) FROM side") == [(0,)]
    assert sql(pg_dsn, "SELECT count(*) FROM entries") == [(1,)]
    assert log.append(ev(2)) == 1  # no gap: the failed batch's index is taken again
    assert log.check_all().ok


# -- several writers, and the server going away ---------------------------------------


def test_pg_a_stale_writer_conflicts_acknowledges_nothing_and_resyncs(open_log: Callable[..., Log]) -> None:
    """Two writers on one database, no sequencer lock: the one whose view is stale
    fails its batch on the store's size check (never a fork, a gap or an index given
    twice), reloads, and appends after the other's entries."""
    with open_log() as a, open_log() as b:
        b.start_writing()  # b's view: size 0
        assert a.append_many([ev(0), ev(1), ev(2)]) == [0, 1, 2]
        with pytest.raises(LogAppendError, match="expected the stored tree size to be 0, found 3"):
            b.append(ev(100))
        assert b.append(ev(101)) == 3
        assert b.verify_all().size == 4
        assert b.leaf(3) == b'{"n":101,"time":"2026-11-26T06:00:00Z","type":"decision","v":1}'
        assert [b.leaf(i) for i in range(3)] == [a.leaf(i) for i in range(3)]


def test_pg_server_stopped_mid_run_acknowledges_nothing_and_loses_nothing(
    open_log: Callable[..., Log], pg_cluster: PgCluster
) -> None:
    """The server dies (an immediate stop: recovery from the WAL on restart): appends
    fail and nothing is acknowledged; after the restart the same log goes on from the
    stored state (its pool reconnects, its writer reloads), everything acknowledged is
    there, and a reopened log continues."""
    log = open_log(timeout=2)
    try:
        assert log.append_many([ev(i) for i in range(5)]) == [0, 1, 2, 3, 4]
        acknowledged = [log.leaf(i) for i in range(5)]
        pg_cluster.stop("immediate")
        with pytest.raises(LogAppendError):
            log.append(ev(5))
        pg_cluster.start()
        assert log.append(ev(6)) == 5
    finally:
        log.close()
    with open_log() as again:
        assert again.size == 6
        assert [again.leaf(i) for i in range(5)] == acknowledged
        assert again.append(ev(7)) == 6
        assert again.verify_all().size == 7


def test_pg_unreachable_database_is_a_store_error_at_open(signer: NoteSigner, pg_cluster: PgCluster) -> None:
    with pytest.raises(StoreError, match="cannot connect"):
        Log(PostgresLogStore(pg_cluster.dsn("no_such_database"), timeout=2), signer)
