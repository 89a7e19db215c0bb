"""Counters that only ever count (shared mode: other nodes' warrants and this node's
starts, read rarely or never) stay bounded by their windows, and exact."""

from __future__ import annotations

from typing import cast

from proctor.authorization.warrants import VerifiedWarrant
from proctor.config import QuotaLimits
from proctor.governor.counters import STARTS_WINDOW_S, RateCounters, StartWindow
from proctor.governor.registry import ExecutionRegistry
from proctor.store.state import StateStore

HOUR = 3600
DAY = 86400
OPAQUE = cast(VerifiedWarrant, object())  # the registry only keeps it


def test_observed_warrants_keep_at_most_the_buckets_of_the_windows(state: StateStore) -> None:
    counters = RateCounters(state, followed=True)
    start = 30 * DAY
    assert counters.counts("alice", start) == {"rate_1m": 0, "rate_1h": 0, "budget_used": 0}
    for t in range(start, start + DAY):  # a day of other nodes' warrants, 1 a second, never read
        counters.observed("alice", t)
    buckets = counters._windows["alice"].buckets
    assert len(buckets) <= 2 * HOUR + 1  # was one a second: 86,400
    now = start + DAY - 1
    assert counters.counts("alice", now) == {"rate_1m": 61, "rate_1h": HOUR + 1, "budget_used": DAY}
    assert len(buckets) == HOUR + 1


def test_pruning_an_observed_window_tolerates_a_node_whose_clock_is_ahead(state: StateStore) -> None:
    counters = RateCounters(state, followed=True)
    now = 30 * DAY + 5 * HOUR
    counters.counts("alice", now - HOUR)
    for t in range(now - HOUR, now + 1):
        counters.observed("alice", t)
    counters.observed("alice", now + 1200)  # a node 20 minutes ahead
    assert counters.counts("alice", now)["rate_1h"] == HOUR + 2  # nothing of our hour was dropped


def test_a_start_window_that_is_never_read_holds_at_most_a_minute() -> None:
    window = StartWindow()
    for t in range(DAY):
        window.add(t)
    assert len(window._seconds) <= STARTS_WINDOW_S + 1  # was 86,400
    assert window.count(DAY - 1) == STARTS_WINDOW_S


def test_a_start_in_the_future_does_not_stop_the_pruning() -> None:
    window = StartWindow()
    window.add(10**9)  # the clock stepped far ahead, then back
    for t in range(10_000):
        window.add(t)
    assert len(window._seconds) <= STARTS_WINDOW_S + 2
    assert window.count(9_999) == STARTS_WINDOW_S + 1  # the future start still counts
    window.remove(9_999)
    assert window.count(9_999) == STARTS_WINDOW_S


def test_shared_starts_admitted_and_never_read_stay_bounded(state: StateStore) -> None:
    reg = ExecutionRegistry([], [], lambda write: None, shared=state)
    limits = QuotaLimits()
    for t in range(3_000):
        reg.started(f"ex_{t}", "alice", 0, OPAQUE, reg.admit_start("alice", 1000 + t, limits))
    assert len(reg._starts["alice"]._seconds) <= STARTS_WINDOW_S + 1  # was 3,000
    assert reg.usage("alice", 1000 + 2_999).starts_1m == STARTS_WINDOW_S
    reg.close()


def test_principals_whose_starts_all_aged_out_leave_no_entry() -> None:
    reg = ExecutionRegistry([], [], lambda write: None)
    limits = QuotaLimits()
    for i in range(500):
        reg.started(f"ex_{i}", f"p{i}", 0, OPAQUE, reg.admit_start(f"p{i}", 1000, limits))
    assert len(reg._starts) == 500
    for i in range(500):
        assert reg.usage(f"p{i}", 1000 + STARTS_WINDOW_S).starts_1m == 0
    assert reg._starts == {}  # was 500 empty windows
    assert reg.usage("p0", 1000 + STARTS_WINDOW_S) == (1, 0, 0)
