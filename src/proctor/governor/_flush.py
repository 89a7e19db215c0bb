"""Batched persistence through the log writer: one queued side write saves everything
pending at the time it runs, so a burst of changes queues one write, not one each."""

from __future__ import annotations

import time

__all__ = ["FlushClaim"]


class FlushClaim:
    """Whether a new side write must be queued.

    One is queued when none is, or when the queued one has not run within ``stale_s``
    (its commit failed and dropped it). Not thread-safe on its own: the owner calls it
    under the lock that guards what is pending.
    """

    def __init__(self, stale_s: float = 1.0) -> None:
        self._stale_s = stale_s
        self._queued = 0.0  # when the pending write was queued (0: none)

    def claim(self) -> bool:
        """``True``: the caller queues a write now."""
        now = time.monotonic()
        if self._queued and now - self._queued < self._stale_s:
            return False
        self._queued = now
        return True

    def ran(self) -> None:
        """The queued write ran (and took everything pending)."""
        self._queued = 0.0
