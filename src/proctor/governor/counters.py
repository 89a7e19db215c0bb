"""Stateful constraints for policies: how many warrants a principal got recently.

``context.counters`` gives policies ``rate_1m``, ``rate_1h`` and ``budget_used`` (warrants
since 00:00 UTC). Counting rows in SQL on every request grows with the history; these
counters load a principal's recent issue times once and then move in memory, O(1)
amortized per request. (With several governor nodes they will be kept in the shared
store instead; one process per data directory keeps them exact here.)
"""

from __future__ import annotations

import threading
from collections import deque

from proctor.store.state import StateStore

__all__ = ["RateCounters"]

_HOUR = 3600
_DAY = 86400


class RateCounters:
    """Per-principal issue times of the last hour, and today's count."""

    def __init__(self, state: StateStore) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._recent: dict[str, deque[int]] = {}
        self._today: dict[str, tuple[int, int]] = {}

    def _load(self, principal: str, now: int) -> deque[int]:
        day = now - now % _DAY
        times = self._state.warrant_times(principal, min(now - _HOUR, day))
        recent = deque(t for t in times if t >= now - _HOUR)
        self._recent[principal] = recent
        self._today[principal] = (day, sum(1 for t in times if t >= day))
        return recent

    def counts(self, principal: str, now: int) -> dict[str, int]:
        """``{"rate_1m", "rate_1h", "budget_used"}`` for ``principal`` at ``now``."""
        with self._lock:
            recent = self._recent.get(principal)
            if recent is None:
                recent = self._load(principal, now)
            while recent and recent[0] < now - _HOUR:
                recent.popleft()
            day = now - now % _DAY
            start, count = self._today.get(principal, (day, 0))
            if start != day:
                count = 0
                self._today[principal] = (day, 0)
            minute = 0
            for t in reversed(recent):  # newest first; stops at the minute's edge
                if t < now - 60:
                    break
                minute += 1
            return {"rate_1m": minute, "rate_1h": len(recent), "budget_used": count}

    def issued(self, principal: str, now: int) -> None:
        """Count a warrant just issued to ``principal``."""
        with self._lock:
            recent = self._recent.get(principal)
            if recent is None:
                return  # loaded from the store (which has the new row) on first use
            recent.append(now)
            day = now - now % _DAY
            start, count = self._today.get(principal, (day, 0))
            self._today[principal] = (day, count + 1 if start == day else 1)
