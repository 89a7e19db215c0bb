"""Stateful constraints for policies: how many warrants a principal got recently,
and how many executions it started.

``context.counters`` gives policies ``rate_1m``, ``rate_1h`` and ``budget_used`` (warrants
since 00:00 UTC) from :class:`RateCounters`, and ``concurrency`` and ``starts_1m`` from
the execution registry, which counts starts in a :class:`StartWindow` per principal.
Counting rows in SQL on every request grows with the history; these counters load a
principal's recent issue times once and then move in memory, O(1) amortized per
request. One process per data directory keeps them exact here.

Several governor processes on one store (shared mode, ADR 0016): each process's windows
count every process's warrants, itself included, as its trust follower reads their
``warrant.issued`` events from the log (:meth:`RateCounters.observed`), a few
milliseconds after they are recorded; the authorizer's own :meth:`RateCounters.issued`
is then ignored (it would count its own twice). A window loaded from the store while the
follower still had some of that principal's warrants to read counts those twice, once:
an over-count, so a policy's rate limit is only ever stricter for it.
"""

from __future__ import annotations

import threading
from collections import deque

from proctor.store.state import StateStore

__all__ = ["STARTS_WINDOW_S", "RateCounters", "StartWindow"]

_HOUR = 3600
_DAY = 86400
_OBSERVED_SLACK_S = _HOUR
"""Counting a warrant at second ``at`` (:meth:`RateCounters.observed`) forgets the buckets
before ``at - 1 h -`` this: another node whose clock is ahead of this one's, by less than
this, never makes it drop a bucket this node's hour still counts."""
STARTS_WINDOW_S = 60
"""``starts_1m`` counts the starts of the last this many seconds: at ``now``, those at
``now - 59`` … ``now`` (whole seconds)."""


class _Window:
    """One principal's issues: per-second buckets of the last hour and today's count."""

    __slots__ = ("buckets", "day", "hour_total", "today")

    def __init__(self, day: int) -> None:
        self.buckets: deque[list[int]] = deque()  # [second, count], oldest first
        self.hour_total = 0
        self.day = day
        self.today = 0

    def add(self, t: int, day: int) -> None:
        buckets = self.buckets
        if buckets and buckets[-1][0] == t:
            buckets[-1][1] += 1
        elif buckets and buckets[-1][0] > t:  # an older time (clock step): keep order
            for i, bucket in enumerate(buckets):
                if bucket[0] >= t:
                    if bucket[0] == t:
                        bucket[1] += 1
                    else:
                        buckets.insert(i, [t, 1])
                    break
        else:
            buckets.append([t, 1])
        self.hour_total += 1
        if t >= day:
            if self.day != day:
                self.day, self.today = day, 0
            self.today += 1

    def forget(self, before: int) -> None:
        """Drop the buckets of seconds before ``before`` (oldest first: O(1) amortized)."""
        buckets = self.buckets
        while buckets and buckets[0][0] < before:
            self.hour_total -= buckets.popleft()[1]

    def counts(self, now: int, day: int) -> dict[str, int]:
        buckets = self.buckets
        self.forget(now - _HOUR)
        if self.day != day:
            self.day, self.today = day, 0
        minute = 0
        for second, count in reversed(buckets):  # at most 61 buckets: newest first
            if second < now - 60:
                break
            minute += count
        return {"rate_1m": minute, "rate_1h": self.hour_total, "budget_used": self.today}


class RateCounters:
    """Per-principal issue counts of the last minute and hour, and today's count.

    Cost per request is bounded by the buckets of one minute (at most 61), however
    many warrants the principal got.
    """

    def __init__(self, state: StateStore, *, followed: bool = False) -> None:
        """Args:
        state: where a principal's recent warrants are read on first use.
        followed: shared mode: every warrant is counted through :meth:`observed`.
        """
        self._state = state
        self._followed = followed
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def _load(self, principal: str, now: int) -> _Window:
        day = now - now % _DAY
        window = _Window(day)
        for t in self._state.warrant_times(principal, min(now - _HOUR, day)):
            if t >= now - _HOUR:
                window.add(t, day)
            elif t >= day:
                window.today += 1
        self._windows[principal] = window
        return window

    def counts(self, principal: str, now: int) -> dict[str, int]:
        """``{"rate_1m", "rate_1h", "budget_used"}`` for ``principal`` at ``now``."""
        with self._lock:
            window = self._windows.get(principal)
            if window is None:
                window = self._load(principal, now)
            return window.counts(now, now - now % _DAY)

    def issued(self, principal: str, now: int) -> None:
        """Count a warrant just issued to ``principal`` (shared mode: the follower does)."""
        if not self._followed:
            self.observed(principal, now)

    def observed(self, principal: str, at: int) -> None:
        """Count a warrant issued to ``principal`` at unix second ``at``, by this process
        or (shared mode, read from the log) another.

        Buckets too old for any count are dropped here too, not only when the principal's
        counts are read (shared mode: maybe never on this node): a window holds at most
        the seconds of :data:`_OBSERVED_SLACK_S` plus an hour.
        """
        now = at
        with self._lock:
            window = self._windows.get(principal)
            if window is None:
                return  # loaded from the store (which has the new row) on first use
            window.forget(now - _HOUR - _OBSERVED_SLACK_S)
            window.add(now, now - now % _DAY)


class StartWindow:
    """One principal's execution starts of the last :data:`STARTS_WINDOW_S` seconds.

    Per-second counts, so the cost of :meth:`count` is bounded by the window (at most
    60 entries) however many starts there were. Not thread-safe: the execution
    registry holds its lock around every call. A start recorded at a time later than
    ``now`` (the clock stepped back) keeps counting until it is older than the window
    measured from ``now``: a clock step never frees quota early.

    :meth:`add` forgets too (shared mode, the window may never be read), once its oldest
    second left the window, so it holds at most the window's seconds (and any later than
    ``now``) however long it is not read.
    """

    __slots__ = ("_oldest", "_seconds")

    def __init__(self) -> None:
        self._seconds: dict[int, int] = {}  # second → starts in it
        self._oldest = 0  # while any second is held: no held second is older

    def count(self, now: int) -> int:
        """Starts in the window ending at ``now`` (those older are forgotten)."""
        seconds = self._seconds
        oldest = now - STARTS_WINDOW_S
        total = 0
        stale = False
        for second, count in seconds.items():
            if second > oldest:
                total += count
            else:
                stale = True
        if stale:
            self._forget(oldest)
        return total

    def add(self, now: int) -> None:
        """Count one start at ``now`` (forgetting those older than the window, as
        :meth:`count` at ``now`` would)."""
        seconds = self._seconds
        if seconds and self._oldest <= now - STARTS_WINDOW_S:
            self._forget(now - STARTS_WINDOW_S)
        if not seconds or now < self._oldest:
            self._oldest = now
        seconds[now] = seconds.get(now, 0) + 1

    def _forget(self, oldest: int) -> None:
        """Forget the starts of the seconds at or before ``oldest``."""
        seconds = self._seconds
        for second in [s for s in seconds if s <= oldest]:
            del seconds[second]
        if seconds:
            self._oldest = min(seconds)

    def remove(self, at: int) -> None:
        """Take back one start counted at ``at`` (a start that was not recorded after all)."""
        count = self._seconds.get(at, 0)
        if count > 1:
            self._seconds[at] = count - 1
        elif count == 1:
            del self._seconds[at]

    def __bool__(self) -> bool:
        """Whether any start is still held (a window that holds none can be dropped)."""
        return bool(self._seconds)
