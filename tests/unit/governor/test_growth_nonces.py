"""The nonces waiting to be persisted stay bounded by the live ones when the log writer
has failed (its side write never runs, or fails and puts them back): an expired nonce
is refused as stale anyway, so persisting it is pointless, and only the live ones are
kept, in memory for the replay check and in the queue for the next commit."""

from __future__ import annotations

import pytest

from proctor.errors import StoreError
from proctor.governor.nonces import NonceCache
from proctor.store.state import StateStore

WINDOW = 300  # seconds a signed request's nonce is remembered (verify_request's default)


def test_unsaved_nonces_stay_bounded_while_the_writer_never_runs(state: StateStore) -> None:
    cache = NonceCache(state, now=1000)
    for i in range(36_000):  # 5 requests a second for two hours; no persist ever runs
        now = 1000 + i // 5
        assert cache.remember("alice", f"n{i}", now + WINDOW, now=now)
    now = 1000 + 35_999 // 5
    live = sum(1 for i in range(36_000) if 1000 + i // 5 + WINDOW >= now)
    assert len(cache) == live  # memory keeps every live nonce (the replay check)
    assert len(cache._unsaved) <= live + 5  # at most one second of nonces past their expiry
    assert not cache.remember("alice", "n35999", now + WINDOW, now=now)  # still a replay
    assert not cache.remember("alice", f"n{36_000 - live}", now + WINDOW, now=now)  # the oldest live one


def test_a_purge_drops_expired_unsaved_nonces_and_the_live_ones_persist(state: StateStore) -> None:
    cache = NonceCache(state, now=1000)
    cache.remember("alice", "old", 1100, now=1000)
    cache.remember("alice", "live", 1500, now=1000)
    cache.remember("alice", "new", 1600, now=1200)  # purges "old" from memory (1100 < 1200)
    conn = state._conn()
    conn.execute("DROP TABLE nonces")
    with pytest.raises(StoreError, match="cannot persist request nonces"):
        cache.persist(conn)
    assert sorted(n for _, n, _ in cache._unsaved) == ["live", "new"]
    conn.execute("CREATE TABLE nonces (keyid TEXT, nonce TEXT, expires INTEGER, PRIMARY KEY (keyid, nonce))")
    conn.execute("BEGIN IMMEDIATE")
    cache.persist(conn)
    conn.execute("COMMIT")
    assert sorted(r[0] for r in conn.execute("SELECT nonce FROM nonces").fetchall()) == ["live", "new"]
    assert state.nonce_floor() >= 1200  # the purge that dropped "old" is persisted with them
    again = NonceCache(state, now=1201)  # a restart still refuses the live ones
    assert not again.remember("alice", "live", 1500, now=1201)
    assert not again.remember("alice", "new", 1600, now=1201)


def test_putting_back_drops_nonces_that_expired_meanwhile(
    state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = NonceCache(state, now=1000)
    cache.remember("alice", "short", 1100, now=1000)
    cache.remember("alice", "long", 1500, now=1000)

    def failing(conn: object, rows: object, purge_before: int) -> None:
        # A request served while this commit runs: its purge forgets "short" (1100 < 1200).
        assert cache.remember("alice", "during", 1600, now=1200)
        raise StoreError("cannot persist request nonces: disk full")

    monkeypatch.setattr(StateStore, "write_nonces", staticmethod(failing))
    with pytest.raises(StoreError, match="disk full"):
        cache.persist(state._conn())
    assert sorted(n for _, n, _ in cache._unsaved) == ["during", "long"]
    assert not cache.remember("alice", "long", 1500, now=1200)  # live: still a replay
    monkeypatch.undo()
    conn = state._conn()
    conn.execute("BEGIN IMMEDIATE")
    cache.persist(conn)
    conn.execute("COMMIT")
    assert sorted(r[0] for r in conn.execute("SELECT nonce FROM nonces").fetchall()) == ["during", "long"]
    assert state.nonce_floor() >= 1200
