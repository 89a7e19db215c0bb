"""Counting for quotas: the start window, start slots in the registry, stream slots."""

from __future__ import annotations

import random
import threading
from typing import cast

import pytest

from proctor.authorization.warrants import VerifiedWarrant
from proctor.config import Config, QuotaLimits
from proctor.errors import QuotaError
from proctor.governor.counters import STARTS_WINDOW_S, StartWindow
from proctor.governor.quotas import QuotaStreamSlots, check_start, running_refusal
from proctor.governor.registry import ExecutionRegistry, Usage

OPAQUE = cast(VerifiedWarrant, object())  # the registry only keeps it


def naive(times: list[int], now: int) -> int:
    return sum(1 for t in times if now - STARTS_WINDOW_S < t)


@pytest.mark.parametrize("seed", range(5))
def test_the_start_window_matches_a_naive_count(seed: int) -> None:
    rng = random.Random(seed)
    window, times, now = StartWindow(), [], 10_000
    for _ in range(2000):
        now += rng.choice((0, 0, 1, 3, 20, 59, 60, 61, -5))  # -5: the clock steps back
        op = rng.random()
        if op < 0.45:
            window.add(now)
            times.append(now)
        elif op < 0.55 and times:
            at = rng.choice(times)
            window.remove(at)
            times.remove(at)
        assert window.count(now) == naive(times, now), now
        times = [t for t in times if t > now - STARTS_WINDOW_S]  # forgotten, as the window does


def test_the_start_window_holds_at_most_a_minute_of_seconds() -> None:
    window = StartWindow()
    for t in range(100_000):
        window.add(t)
        assert window.count(t) == min(t + 1, STARTS_WINDOW_S)
    assert len(window._seconds) == STARTS_WINDOW_S
    assert window.count(10**6) == 0
    assert not window


def test_a_clock_step_back_frees_no_start_early() -> None:
    window = StartWindow()
    window.add(1000)
    assert window.count(900) == 1  # "in the future": still counted
    assert window.count(1059) == 1
    assert window.count(1060) == 0


def registry() -> ExecutionRegistry:
    return ExecutionRegistry([], [("ex_old", "alice")], lambda write: None)


def test_a_reserved_start_counts_until_it_is_settled() -> None:
    reg = registry()
    limits = QuotaLimits(max_running=3, max_starts_per_minute=10)
    a = reg.admit_start("alice", 100, limits)
    assert reg.usage("alice", 100) == Usage(running=1, starting=1, starts_1m=1)
    b = reg.admit_start("alice", 100, limits)
    with pytest.raises(QuotaError) as refused:
        reg.admit_start("alice", 100, limits)
    assert (refused.value.quota, refused.value.limit, refused.value.found) == ("max_running", 3, 3)
    reg.started("ex_a", "alice", 0, OPAQUE, a)
    reg.abandon_start(a)  # settled already: nothing
    assert reg.usage("alice", 100) == Usage(running=2, starting=1, starts_1m=2)
    reg.abandon_start(b)  # not recorded: its slot and its minute count come back
    reg.abandon_start(b)
    assert reg.usage("alice", 100) == Usage(running=2, starting=0, starts_1m=1)
    assert reg.usage("bob", 100) == Usage(0, 0, 0)


def test_starts_per_minute_are_refused_with_their_evidence() -> None:
    reg = registry()
    limits = QuotaLimits(max_running=100, max_starts_per_minute=2)
    for _ in range(2):
        reg.started(f"ex_{_}", "alice", 0, OPAQUE, reg.admit_start("alice", 500, limits))
    with pytest.raises(QuotaError) as refused:
        reg.admit_start("alice", 559, limits)
    assert (refused.value.quota, refused.value.limit, refused.value.found) == ("max_starts_per_minute", 2, 2)
    assert "max_starts_per_minute" in str(refused.value)
    reg.admit_start("alice", 560, limits)


def test_concurrent_admissions_never_overshoot() -> None:
    reg = registry()
    limits = QuotaLimits(max_running=5, max_starts_per_minute=1000)
    barrier = threading.Barrier(16)
    admitted: list[object] = []

    def admit() -> None:
        barrier.wait(timeout=30)
        for _ in range(50):
            try:
                admitted.append(reg.admit_start("alice", 7, limits))
            except QuotaError:
                pass

    threads = [threading.Thread(target=admit) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(admitted) == 4  # ex_old runs already
    assert reg.usage("alice", 7).starting == 4


def test_pure_checks_name_the_quota() -> None:
    limits = QuotaLimits(max_running=2, max_starts_per_minute=5)
    assert check_start(limits, "a", running=1, starts_1m=4) is None
    error = check_start(limits, "a", running=2, starts_1m=5)
    assert error is not None
    assert error.quota == "max_running"
    assert running_refusal(limits, "a", 1) is None
    reason = running_refusal(limits, "a", 2)
    assert reason is not None
    assert reason.startswith("quota max_running:")


def test_stream_slots_follow_the_principal_quota() -> None:
    quotas = Config.from_toml(
        "[quotas]\nmax_streams = 2\n[quotas.principals.admin]\nmax_streams = 5\n"
    ).quotas
    slots = QuotaStreamSlots(quotas, total=6)
    assert [slots.acquire("alice") for _ in range(2)] == [None, None]
    refused = slots.acquire("alice")
    assert refused is not None
    assert "at most 2, quota max_streams" in refused
    assert [slots.acquire("admin") for _ in range(4)] == [None] * 4
    refused = slots.acquire("admin")  # its own cap is 5, but only 6 in all
    assert refused is not None
    assert "6 streams are open (at most 6)" in refused
    slots.release("alice")
    assert slots.acquire("admin") is None
    assert slots.open("admin") == 5


def test_the_serve_flag_replaces_the_default_stream_cap_only() -> None:
    quotas = Config.from_toml("[quotas.principals.admin]\nmax_streams = 3\n").quotas
    slots = QuotaStreamSlots(quotas, total=100, per_principal=1)
    assert (slots.cap("alice"), slots.cap("ADMIN")) == (1, 3)


def test_concurrent_stream_admissions_never_overshoot() -> None:
    quotas = Config.from_toml("[quotas]\nmax_streams = 3\n").quotas
    slots = QuotaStreamSlots(quotas, total=1000)
    barrier = threading.Barrier(8)
    taken: list[None] = []

    def take() -> None:
        barrier.wait(timeout=30)
        for _ in range(20):
            if slots.acquire("alice") is None:
                taken.append(None)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(taken) == 3 == slots.open("alice")
