"""Rate and budget counters agree with counting the warrant rows, at any point in time."""

from __future__ import annotations

import random

import pytest

from proctor.governor.counters import RateCounters
from proctor.store.state import StateStore

DAY = 86400


def naive(times: list[int], now: int) -> dict[str, int]:
    day = now - now % DAY
    return {
        "rate_1m": sum(1 for t in times if now - 60 <= t <= now),
        "rate_1h": sum(1 for t in times if now - 3600 <= t <= now),
        "budget_used": sum(1 for t in times if day <= t <= now),
    }


def issue(state: StateStore, counters: RateCounters, times: list[int], t: int) -> None:
    state.put_warrant(
        f"wr_{len(times)}", principal="alice", parent="", decision_index=0, expires=t + 9, issued=t
    )
    counters.issued("alice", t)
    times.append(t)


@pytest.mark.parametrize("seed", range(5))
def test_counters_match_the_rows_over_time(state: StateStore, seed: int) -> None:
    rng = random.Random(seed)
    start = 20 * DAY + DAY - 5400  # 90 minutes before a UTC midnight
    times: list[int] = []
    for _ in range(300):  # history before the counters first look
        issue(state, RateCounters(state), times, start + rng.randrange(0, 3000))
    times.sort()
    counters = RateCounters(state)
    now = start + 3000
    for _ in range(400):
        now += rng.choice((0, 0, 1, 2, 7, 30, 61, 400))
        assert counters.counts("alice", now) == naive(times, now), now
        for _ in range(rng.randrange(0, 4)):
            issue(state, counters, times, now)


def test_a_principal_with_many_warrants_counts_in_bounded_buckets(state: StateStore) -> None:
    counters = RateCounters(state)
    counters.counts("bob", 1000)
    for i in range(50_000):
        counters.issued("bob", 1000 + i // 20)  # 20 per second for 2,500 s
    now = 1000 + 2500
    assert counters.counts("bob", now) == {"rate_1m": 20 * 60, "rate_1h": 50_000, "budget_used": 50_000}
    assert len(counters._windows["bob"].buckets) == 2500
