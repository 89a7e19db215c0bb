"""Lease arithmetic (proctor.verification.lease), the governor's and the enforcer's,
tested rule by rule (the numbers are the module docstring's)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.verification.lease import (
    MIN_ENFORCER_TTL_MS,
    MIN_RENEWAL_TIMEOUT_S,
    RENEWALS_PER_TTL,
    enforcer_ttl_s,
    lease_deadline,
    lease_expiry_ms,
    lease_lapsed,
    lease_remaining_s,
    millis,
    renewal_interval_s,
    renewal_timeout_s,
    sweep_cutoff_ms,
)

T = 1_700_000_000.1239  # unix seconds, with a fraction below a millisecond

# -- the governor (unix milliseconds) --------------------------------------------------


def test_rule_1_millis_truncates() -> None:
    assert millis(T) == 1_700_000_000_123
    assert millis(0.0009) == 0
    assert millis(2) == 2000


def test_rule_1_a_lease_ends_ttl_after_its_renewal() -> None:
    assert lease_expiry_ms(T, 5000) == 1_700_000_005_123


def test_rule_2_a_lease_lapses_only_after_its_last_millisecond() -> None:
    expires = lease_expiry_ms(T, 5000)
    assert not lease_lapsed(expires, expires - 1)
    assert not lease_lapsed(expires, expires)  # a renewal in the very millisecond still counts
    assert lease_lapsed(expires, expires + 1)


@settings(max_examples=200, deadline=None)
@given(renewed=st.floats(min_value=0, max_value=4e9), ttl=st.integers(min_value=1, max_value=10**9))
def test_rule_2_a_fresh_lease_holds_for_exactly_its_ttl(renewed: float, ttl: int) -> None:
    expires = lease_expiry_ms(renewed, ttl)
    now_ms = millis(renewed)
    assert not lease_lapsed(expires, now_ms)
    assert not lease_lapsed(expires, now_ms + ttl)
    assert lease_lapsed(expires, now_ms + ttl + 1)


def test_a_zero_or_negative_ttl_is_already_over_a_millisecond_later() -> None:
    """Fail closed: no TTL gives more than the moment of renewal."""
    for ttl in (0, -5):
        expires = lease_expiry_ms(T, ttl)
        assert lease_lapsed(expires, millis(T) + 1)


def test_rule_3_the_sweep_closes_a_lease_only_once_its_grace_has_passed() -> None:
    renewed = 1_700_000_000.25  # binary fractions: the float arithmetic below is exact
    expires = lease_expiry_ms(renewed, 5000)
    grace = 1000
    at_grace = renewed + 6  # the sweep's clock exactly one grace past the end
    assert sweep_cutoff_ms(at_grace, grace) == expires
    assert not lease_lapsed(expires, sweep_cutoff_ms(at_grace, grace))
    assert lease_lapsed(expires, sweep_cutoff_ms(at_grace + 0.0625, grace))
    assert not lease_lapsed(expires, sweep_cutoff_ms(renewed + 5.5, grace))  # within the grace


# -- the enforcer (monotonic seconds) --------------------------------------------------


@pytest.mark.parametrize(
    ("ttl_ms", "ttl_s"),
    [(5000, 5.0), (300, 0.3), (299, 0.3), (1, 0.3), (0, 0.3), (-1000, 0.3), (1234, 1.234)],
    ids=["5s", "minimum", "below-minimum", "1ms", "zero", "negative", "odd"],
)
def test_rule_4_the_enforcer_keeps_at_least_the_minimum_ttl(ttl_ms: int, ttl_s: float) -> None:
    assert MIN_ENFORCER_TTL_MS == 300
    assert enforcer_ttl_s(ttl_ms) == pytest.approx(ttl_s)


def test_rule_4_three_renewals_per_ttl() -> None:
    assert RENEWALS_PER_TTL == 3
    assert renewal_interval_s(6.0) == pytest.approx(2.0)
    # Two renewals may fail in a row and the third still comes before the deadline.
    ttl = enforcer_ttl_s(300)
    assert 2 * renewal_interval_s(ttl) < ttl


@pytest.mark.parametrize(
    ("ttl_s", "timeout"),
    [(6.0, 2.0), (0.6, 0.2), (0.3, 0.2), (0.9, 0.3)],
    ids=["long", "at-the-floor", "below-the-floor", "above-the-floor"],
)
def test_rule_4_a_renewal_times_out_after_a_third_but_never_under_the_floor(
    ttl_s: float, timeout: float
) -> None:
    assert MIN_RENEWAL_TIMEOUT_S == 0.2
    assert renewal_timeout_s(ttl_s) == pytest.approx(timeout)


def test_rule_5_a_renewal_moves_the_deadline_from_when_it_was_sent() -> None:
    sent = 100.0
    assert lease_deadline(sent, 5.0) == 105.0


def test_rule_6_the_enforcer_kills_at_its_deadline_with_no_grace() -> None:
    deadline = lease_deadline(100.0, 5.0)
    assert lease_remaining_s(deadline, 104.5) == pytest.approx(0.5)
    assert lease_remaining_s(deadline, 105.0) <= 0  # the deadline itself: over
    assert lease_remaining_s(deadline, 106.0) < 0
