"""Replay protection for signed requests: the nonces seen within the signature window.

The governor process that holds the log's append lock is the only one that accepts
requests for its data directory, so its memory is the authority on which nonces were
seen: a check is a dictionary lookup, not a write under SQLite's lock (ADR 0006).

Nonces are also persisted, so that a restarted governor still refuses requests
captured before the restart. They ride in the log writer's next transaction (the
authorization's own commit, or a side write queued for requests that append nothing);
no request waits for them. A crash loses at most the nonces of requests accepted since
the last commit, which only reopens the replay window for those few, as before.
Expired nonces leave memory and the table at most once a second, and the nonces still
to persist with them: an expired nonce is refused as stale anyway (and the next write
deletes it with the purge it carries), so a log writer that stopped committing leaves
only the live nonces waiting, not every one since.

Clock steps: a nonce is forgotten once the clock passed its expiry, so a clock that
steps forward and back again would accept a captured request a second time. The cache
therefore keeps a *floor*, the latest time at which nonces were forgotten (persisted
with them, so a restart keeps it too), and the governor judges freshness against
``max(clock, floor)`` (:meth:`effective_now`): a request older than the window before the
floor is stale even if the clock went back — refused, never replayed.

Several processes on one store (``proctor serve --shared``, ADR 0016): memory is no
longer the authority, only the first, cheap filter. A nonce this process has not seen
is then *claimed* in the store (:meth:`NonceCache.claim`: an insert that does nothing on
a conflict, batched with the other requests waiting, :class:`WriteBatcher`) before its
request is served; no row inserted means another process saw it first, a replay. The
floor is kept in the store too: every claim is refused if it expires before the stored
floor, and a process's floor follows the stored one, so a process whose clock is behind
another's judges freshness no earlier than the latest purge by any of them. The
exclusive mode's path is unchanged (no claim, no thread).
"""

from __future__ import annotations

import heapq
import threading
from concurrent.futures import Future
from typing import Any

from proctor.errors import StoreError
from proctor.governor._flush import FlushClaim
from proctor.governor.batching import WriteBatcher
from proctor.store.state import StateStore

__all__ = ["NonceCache"]


class NonceCache:
    """The live nonces, in memory, persisted in batches through the log writer."""

    def __init__(self, state: StateStore, *, now: int, shared: bool = False) -> None:
        """Load the nonces that are still live at ``now`` from the state store.

        ``shared``: other governor processes serve the same store; every new nonce is
        claimed there (:meth:`claim`) and none is persisted through the log writer.

        Raises:
            StoreError: the stored nonces cannot be read (the governor must not start
                without them: a replay would pass).
        """
        self._state = state
        self._shared = shared
        self._claims: WriteBatcher[tuple[str, str, int], bool] | None = None
        if shared:
            self._claims = WriteBatcher(self._claim_batch, name="nonce-claims")
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
            if not self._shared:  # shared: claimed in the store instead (claim)
                self._unsaved.append((keyid, nonce, expires))
            return True

    @property
    def shared(self) -> bool:
        """Whether nonces are claimed in a store other governor processes share."""
        return self._shared

    @property
    def floor(self) -> int:
        """The nonce floor as this process knows it (its own, or the store's if higher)."""
        return self._floor

    def claim(self, keyid: str, nonce: str, expires: int) -> Future[bool]:
        """Shared mode: claim a nonce that :meth:`remember` accepted in the store, with the
        other claims waiting (one transaction); the future says ``True`` if this process
        claimed it, ``False`` if another did first or it expires before the stored floor,
        or raises :class:`~proctor.errors.StoreError` (refuse the request).

        Raises:
            StoreError: not in shared mode.
        """
        if self._claims is None:
            raise StoreError(
                "expected a nonce cache shared with other governor processes, found an exclusive one"
            )
        return self._claims.submit((keyid, nonce, expires))

    def _claim_batch(self, rows: list[tuple[str, str, int]]) -> list[bool]:
        """One transaction for the claims waiting; purges with it once a second."""
        with self._lock:
            purge_before = self._purge_before
        claimed, floor = self._state.claim_nonces(rows, purge_before)
        with self._lock:
            if self._purge_before == purge_before:
                self._purge_before = 0
            self._floor = max(self._floor, floor)
        return claimed

    def close(self) -> None:
        """Stop claiming (shared mode): claims still queued are answered first."""
        if self._claims is not None:
            self._claims.close()

    def _purge(self, now: int) -> None:
        expiry, seen = self._expiry, self._seen
        while expiry and expiry[0][0] < now:
            expires, keyid, nonce = heapq.heappop(expiry)
            if seen.get((keyid, nonce)) == expires:
                del seen[(keyid, nonce)]
        if self._unsaved:  # the next write deletes them with this purge: do not write them
            self._unsaved = [row for row in self._unsaved if row[2] >= now]
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
            with self._lock:  # but not those a purge since (or this one) forgot
                self._unsaved[:0] = [row for row in rows if row[2] >= self._purge_before]
            raise
        with self._lock:
            if self._purge_before == purge_before:
                self._purge_before = 0
