"""Replay protection for signed requests: the nonces seen within the signature window.

The governor process that holds the log's append lock is the only one that accepts
requests for its data directory, so its memory is the authority on which nonces were
seen: a check is a dictionary lookup, not a write under SQLite's lock (ADR 0006).

Nonces are also persisted, so that a restarted governor still refuses requests
captured before the restart. They ride in the log writer's next transaction (the
authorization's own commit, or a side write queued for requests that append nothing);
no request waits for them. A crash loses at most the nonces of requests accepted since
the last commit, which only reopens the replay window for those few, as before.
Expired nonces leave memory and the table at most once a second.

Clock steps: a nonce is forgotten once the clock passed its expiry, so a clock that
steps forward and back again would accept a captured request a second time. The cache
therefore keeps a *floor*, the latest time at which nonces were forgotten (persisted
with them, so a restart keeps it too), and the governor judges freshness against
``max(clock, floor)`` (:meth:`effective_now`): a request older than the window before the
floor is stale even if the clock went back — refused, never replayed.
"""

from __future__ import annotations

import heapq
import threading
from typing import Any

from proctor.errors import StoreError
from proctor.governor._flush import FlushClaim
from proctor.store.state import StateStore

__all__ = ["NonceCache"]


class NonceCache:
    """The live nonces, in memory, persisted in batches through the log writer."""

    def __init__(self, state: StateStore, *, now: int) -> None:
        """Load the nonces that are still live at ``now`` from the state store.

        Raises:
            StoreError: the stored nonces cannot be read (the governor must not start
                without them: a replay would pass).
        """
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        self._expiry: list[tuple[int, str, str]] = []
        self._unsaved: list[tuple[str, str, int]] = []
        self._next_purge = 0
        self._purge_before = 0
        self._flush = FlushClaim()
        self._floor = state.nonce_floor()
        for keyid, nonce, expires in state.live_nonces(min(now, self._floor) if self._floor else now):
            self._seen[(keyid, nonce)] = expires
            self._expiry.append((expires, keyid, nonce))
        heapq.heapify(self._expiry)

    def __len__(self) -> int:
        return len(self._seen)

    def effective_now(self, now: int) -> int:
        """The time freshness is judged at: the clock, never earlier than the floor."""
        return max(now, self._floor)

    def remember(self, keyid: str, nonce: str, expires: int, *, now: int) -> bool:
        """Record a nonce until ``expires``; ``False`` if it is live already (a replay)."""
        key = (keyid, nonce)
        with self._lock:
            if now >= self._next_purge:
                self._next_purge = now + 1
                self._purge(now)
            seen = self._seen.get(key)
            if seen is not None and seen >= now:
                return False
            self._seen[key] = expires
            heapq.heappush(self._expiry, (expires, keyid, nonce))
            self._unsaved.append((keyid, nonce, expires))
            return True

    def _purge(self, now: int) -> None:
        expiry, seen = self._expiry, self._seen
        while expiry and expiry[0][0] < now:
            expires, keyid, nonce = heapq.heappop(expiry)
            if seen.get((keyid, nonce)) == expires:
                del seen[(keyid, nonce)]
        self._purge_before = now
        self._floor = max(self._floor, now)

    def pending(self) -> bool:
        """Whether some nonces are not persisted yet."""
        return bool(self._unsaved)

    def claim_flush(self) -> bool:
        """``True`` once per batch of unsaved nonces: the caller queues :meth:`persist`
        (until it runs, further calls say ``False``; after a second without it
        running, say a failed commit dropped it, the next call says ``True`` again)."""
        with self._lock:
            return bool(self._unsaved) and self._flush.claim()

    def persist(self, conn: Any, index: int = -1) -> None:
        """A side write for the log's next transaction: persists every nonce not saved
        yet (taken when the transaction runs, so one write serves all requests so far)
        and drops the expired rows. On failure the nonces are kept for the next one.

        Raises:
            StoreError: the rows cannot be written (the whole commit fails).
        """
        with self._lock:
            rows, self._unsaved = self._unsaved, []
            purge_before = self._purge_before
            self._flush.ran()
        if not rows:
            return
        try:
            StateStore.write_nonces(conn, rows, purge_before)  # the floor goes with the deletion
        except StoreError:
            with self._lock:
                self._unsaved[:0] = rows
            raise
        with self._lock:
            if self._purge_before == purge_before:
                self._purge_before = 0
