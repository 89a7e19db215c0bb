"""The governor's replay cache: memory is the authority, the table survives restarts."""

from __future__ import annotations

import pytest

from proctor.errors import StoreError
from proctor.governor.nonces import NonceCache
from proctor.store.state import StateStore


def persist(cache: NonceCache, state: StateStore) -> None:
    conn = state._conn()
    conn.execute("BEGIN IMMEDIATE")
    cache.persist(conn)
    conn.execute("COMMIT")


def test_a_nonce_is_accepted_once_per_key(state: StateStore) -> None:
    cache = NonceCache(state, now=1000)
    assert cache.remember("alice", "n1", 1300, now=1000)
    assert not cache.remember("alice", "n1", 1300, now=1001)
    assert cache.remember("bob", "n1", 1300, now=1001)  # per key
    assert len(cache) == 2


def test_expired_nonces_leave_memory_and_may_be_reused(state: StateStore) -> None:
    cache = NonceCache(state, now=1000)
    assert cache.remember("alice", "n1", 1100, now=1000)
    assert cache.remember("alice", "n2", 1500, now=1000)
    assert cache.remember("alice", "n1", 1400, now=1200)  # the first n1 expired at 1100
    assert len(cache) == 2


def test_a_restarted_cache_refuses_what_was_persisted(state: StateStore) -> None:
    cache = NonceCache(state, now=1000)
    assert cache.remember("alice", "n1", 1300, now=1000)
    assert cache.pending()
    persist(cache, state)
    assert not cache.pending()
    again = NonceCache(state, now=1010)
    assert not again.remember("alice", "n1", 1300, now=1010)
    assert NonceCache(state, now=1400).remember("alice", "n1", 1700, now=1400)  # expired by then


def test_persisting_drops_expired_rows(state: StateStore) -> None:
    cache = NonceCache(state, now=1000)
    cache.remember("alice", "old", 1001, now=1000)
    persist(cache, state)
    cache.remember("alice", "new", 1500, now=1200)  # purges "old" from memory
    persist(cache, state)
    rows = state._conn().execute("SELECT nonce FROM nonces ORDER BY nonce").fetchall()
    assert rows == [("new",)]


def test_a_failed_persist_keeps_the_nonces_for_the_next(state: StateStore) -> None:
    cache = NonceCache(state, now=1000)
    cache.remember("alice", "n1", 1300, now=1000)
    conn = state._conn()
    conn.execute("DROP TABLE nonces")
    with pytest.raises(StoreError, match="cannot persist request nonces"):
        cache.persist(conn)
    assert cache.pending()
    conn.execute("CREATE TABLE nonces (keyid TEXT, nonce TEXT, expires INTEGER, PRIMARY KEY (keyid, nonce))")
    persist(cache, state)
    assert conn.execute("SELECT nonce FROM nonces").fetchall() == [("n1",)]


def test_an_unreadable_table_stops_the_cache_from_starting(state: StateStore) -> None:
    state._conn().execute("DROP TABLE nonces")
    with pytest.raises(StoreError):
        NonceCache(state, now=1000)


def test_a_flush_that_never_ran_is_claimed_again_after_a_second(
    state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    cache = NonceCache(state, now=1000)
    assert not cache.claim_flush()  # nothing to save
    cache.remember("alice", "n1", 1300, now=1000)
    assert cache.claim_flush()
    assert not cache.claim_flush()  # one queued write saves them all
    clock[0] += 1.5  # it never ran (its commit failed): queue another
    assert cache.claim_flush()
    persist(cache, state)
    cache.remember("alice", "n2", 1300, now=1000)
    assert cache.claim_flush()  # the write ran: the next batch gets its own
