"""The locks between governor nodes on PostgreSQL (:mod:`proctor.store.locks_pg`): the
executions' transition lock is one per database whatever the data directory, and apart
from the log's sequencer lock; a lost session is reported and replaced; the serving
mode keeps exclusive and shared governors apart across hosts; lock sessions ask the
server to probe them with keepalives.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import psycopg
import pytest

from proctor.errors import LogLockedError
from proctor.governor.registry import transition_lock
from proctor.store.locks_pg import (
    KEEPALIVES,
    PgSequencer,
    PgServingMode,
    dedicated_session,
    pg_transition_lock,
)

pytestmark = pytest.mark.postgres


def test_the_transition_lock_is_one_per_database_whatever_the_data_directory(
    tmp_path: Path, pg_dsn: str
) -> None:
    here, there = transition_lock(tmp_path / "a", pg_dsn), transition_lock(tmp_path / "b", pg_dsn)
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with here.held():
            held.set()
            done.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        with pytest.raises(LogLockedError, match="transition lock"), there.held():
            pass
    finally:
        done.set()
        holder.join(60)
    with there.held():  # given back
        pass
    here.close()
    there.close()


def test_the_transition_lock_is_not_the_sequencer_lock(pg_dsn: str) -> None:
    sequencer, transitions = PgSequencer(pg_dsn, shared=True), pg_transition_lock(pg_dsn)
    try:
        sequencer.acquire(0)
        transitions.acquire(0)  # another key: a node may hold both, or either
        other = pg_transition_lock(pg_dsn)
        with pytest.raises(LogLockedError, match="another governor node is changing an execution"):
            other.acquire(0)
        other.close()
    finally:
        transitions.close()
        sequencer.close()


def test_a_lost_transition_lock_session_is_reported_and_replaced(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    lost, other = pg_transition_lock(pg_dsn), pg_transition_lock(pg_dsn)
    try:
        lost.acquire(0)
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'proctor-transitions' AND datname = current_database()"
            )
        other.acquire(10)  # the server released it with the session
        other.release()
        with caplog.at_level(logging.WARNING, logger="proctor.store"):
            lost.release()
        assert "was lost while held" in caplog.text
        lost.acquire(10)  # a new session
    finally:
        lost.close()
        other.close()


def test_exclusive_and_shared_governors_never_serve_one_database(pg_dsn: str) -> None:
    first, second = PgServingMode(pg_dsn, shared=True), PgServingMode(pg_dsn, shared=True)
    with pytest.raises(LogLockedError, match="other governors serve the database"):
        PgServingMode(pg_dsn, shared=False)
    first.close()
    second.close()
    alone = PgServingMode(pg_dsn, shared=False)
    try:
        with pytest.raises(LogLockedError, match="an exclusive governor serves the database"):
            PgServingMode(pg_dsn, shared=True)
        with pytest.raises(LogLockedError, match="other governors serve"):
            PgServingMode(pg_dsn, shared=False)
    finally:
        alone.close()


def test_lock_sessions_ask_the_server_for_keepalives(pg_dsn: str) -> None:
    with dedicated_session(pg_dsn, application_name="proctor-test", connect_timeout=30) as conn:
        for name, value in KEEPALIVES.items():
            row = conn.execute(f"SHOW tcp_{name}").fetchone()
            assert row is not None
            assert row[0] == f"{value}s" or row[0] == str(value), (name, row)


def test_a_lock_whose_idle_session_the_server_ended_is_taken_on_a_new_session_at_once(pg_dsn: str) -> None:
    # As after a database restart: the first change after it must not fail.
    lock = pg_transition_lock(pg_dsn)
    try:
        lock.acquire(5)
        lock.release()  # the session is kept between turns
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'proctor-transitions' AND datname = current_database()"
            )
        lock.acquire(5)
        lock.release()
    finally:
        lock.close()
