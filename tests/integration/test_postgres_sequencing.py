"""Several writers on one log in PostgreSQL, taking turns with the sequencer lock as a
session advisory lock (:class:`proctor.store.locks_pg.PgSequencer`, ADR 0015): one
tree, no gaps, no duplicate indices, every checkpoint consistent with every later one;
and a writer whose session died (so the server released its lock) cannot fork the log.

The same rules for files: ``tests/unit/lineage/test_shared_sequencing.py``.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_support import PgCluster
from proctor.errors import LogAppendError, LogLockedError, StoreError
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.log import Log
from proctor.lineage.proofs import ConsistencyProof
from proctor.store.locks_pg import PgSequencer
from proctor.store.postgres import PostgresLogStore

pytestmark = pytest.mark.postgres

ORIGIN = "test.example/pg-shared"


def ev(writer: str, i: int) -> dict[str, Any]:
    return {"v": 1, "type": "decision", "time": "2026-12-03T13:00:00Z", "writer": writer, "n": i}


@pytest.fixture
def data(tmp_path: Path, pg_dsn: str) -> Path:
    """A data directory's keys, its log in PostgreSQL (signed empty), no file of its own."""
    Log.initialize(tmp_path / "d", origin=ORIGIN).close()
    (tmp_path / "d" / "proctor.db").unlink()
    PostgresLogStore(pg_dsn, create=True).close()
    with Log.open(tmp_path / "d", store=pg_dsn) as log:
        log.start_writing()  # signs the empty tree
    return tmp_path / "d"


def check_one_tree(data: Path, dsn: str, expected: int) -> None:
    """Every entry once, the log verifies, every stored checkpoint is consistent with
    the latest (RFC 9162 §2.1.4.2)."""
    with Log.open(data, store=dsn) as log:
        assert log.size == expected
        log.verify_all()
        latest = open_checkpoint(log.checkpoint(), log.verifier)
        assert latest.size == expected
        for size, note in list(log._store.checkpoints()):
            cp = open_checkpoint(note, log.verifier)
            ConsistencyProof.from_json(log.consistency_proof(size, expected)).verify(
                cp.root_hash, latest.root_hash
            )


def _process_writer(data: str, dsn: str, name: str, count: int, start: Any) -> None:
    start.wait(30)
    with Log.open(data, shared=True, store=dsn) as log:
        log.sequencer_timeout = 60.0  # a loaded machine: wait for the others as long as it takes
        for i in range(count):
            log.append(ev(name, i))


def test_three_processes_append_to_one_tree_on_postgresql(data: Path, pg_dsn: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_process_writer, args=(str(data), pg_dsn, f"p{n}", 60, start)) for n in range(3)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0
    check_one_tree(data, pg_dsn, 180)
    with Log.open(data, store=pg_dsn) as log:
        writers = [log.leaf(i).split(b'"writer":"')[1][:2] for i in range(180)]
    assert {w: writers.count(w) for w in set(writers)} == {b"p0": 60, b"p1": 60, b"p2": 60}


def test_a_postgresql_writer_waits_at_most_its_timeout_for_the_lock(data: Path, pg_dsn: str) -> None:
    holder = PgSequencer(pg_dsn, shared=True)
    holder.acquire(0)
    try:
        with Log.open(data, shared=True, store=pg_dsn) as log:
            log.sequencer_timeout = 0.2
            with pytest.raises(LogLockedError, match=r"sequencer lock .* is held"):
                log.append(ev("a", 0))
            holder.release()
            assert log.append(ev("a", 1)) == 0  # nothing of the refused append was kept
    finally:
        holder.close()


def test_an_exclusive_postgresql_writer_keeps_the_lock_from_the_others(data: Path, pg_dsn: str) -> None:
    with Log.open(data, store=pg_dsn) as first:
        first.append(ev("first", 0))
        with Log.open(data, shared=True, store=pg_dsn) as second:
            second.sequencer_timeout = 0.1
            with pytest.raises(LogLockedError):
                second.append(ev("second", 0))
    with Log.open(data, shared=True, store=pg_dsn) as third:  # given back on close
        assert third.append(ev("third", 0)) == 1


def test_a_writer_that_lost_its_postgresql_session_cannot_fork_the_log(data: Path, pg_dsn: str) -> None:
    stale = Log.open(data, shared=True, store=pg_dsn)
    stale.hold_idle = stale.hold_max = 60.0  # it keeps believing it holds the lock
    try:
        assert stale.append(ev("stale", 0)) == 0
        with psycopg.connect(pg_dsn, autocommit=True) as admin:  # its session dies: the lock is free
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'proctor-sequencer' AND datname = current_database()"
            ).fetchall()
        assert killed == [(True,)]
        with Log.open(data, shared=True, store=pg_dsn) as honest:
            honest.sequencer_timeout = 30.0
            assert honest.append(ev("honest", 0)) == 1
        # The stale writer still assigns 1: the store refuses the commit.
        with pytest.raises(LogAppendError, match="not committed"):
            stale.append(ev("stale", 1))
        # It dropped its hold: the next append takes the lock again (a new session) and reloads.
        assert stale.append(ev("stale", 2)) == 2
    finally:
        stale.close()
    check_one_tree(data, pg_dsn, 3)


def test_the_postgresql_sequencer_lock_excludes_and_is_given_back(pg_dsn: str) -> None:
    a, b = PgSequencer(pg_dsn, shared=True), PgSequencer(pg_dsn, shared=True)
    try:
        a.acquire(0)
        a.acquire(0)  # held already: nothing more (not a second, stacked lock)
        with pytest.raises(LogLockedError):
            b.acquire(0.05)
        a.release()
        b.acquire(5)
        with pytest.raises(LogLockedError):
            a.acquire(0)
        b.close()
        a.acquire(5)
    finally:
        a.close()
        b.close()


def test_a_sequencer_error_never_shows_the_password(pg_cluster: PgCluster, pg_dsn: str) -> None:
    wrong = pg_dsn.replace(pg_cluster.password, "not-the-password-42")
    with pytest.raises(StoreError) as refused:
        PgSequencer(wrong).acquire(0)
    assert "not-the-password-42" not in str(refused.value)
