"""The PostgreSQL sequencer lock tells its holder whether another session waits for it
(``pg_locks``), as the flock one does: a busy writer alone keeps its turn, and gives it
back only when someone waits."""

from __future__ import annotations

import threading
import time

import pytest

from proctor.store.locks_pg import PgSequencer

pytestmark = [pytest.mark.postgres]


def test_the_holder_sees_a_session_waiting_for_the_sequencer_lock(pg_dsn: str) -> None:
    holder, waiter = PgSequencer(pg_dsn, shared=True), PgSequencer(pg_dsn, shared=True)
    try:
        assert not holder.contended()  # not held: nothing to say
        holder.acquire(5)
        assert not holder.contended()
        got = threading.Event()

        def wait() -> None:
            waiter.acquire(30)
            got.set()

        thread = threading.Thread(target=wait)
        thread.start()
        deadline = time.monotonic() + 20
        while not holder.contended():
            assert time.monotonic() < deadline, "the waiting session never showed in pg_locks"
            time.sleep(0.01)
        assert not got.is_set()
        holder.release()
        assert got.wait(20)
        thread.join(20)
        assert not waiter.contended()
    finally:
        holder.close()
        waiter.close()
