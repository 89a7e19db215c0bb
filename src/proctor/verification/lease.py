"""Lease arithmetic, shared by the governor and the enforcer.

A lease is how long an execution may run without a successful renewal. Each side keeps
it on its own clock and never compares it with the other's:

- the **governor** in wall-clock unix milliseconds (integers, persisted with the
  execution), against the ``now`` its clock gives;
- the **enforcer** (``proctor run``) in seconds of its own monotonic clock, which no
  clock step moves.

The rules, numbered as the functions below cite them:

1. A lease renewed (or started) at ``t`` seconds with a TTL of ``ttl_ms`` ends at
   ``millis(t) + ttl_ms`` (:func:`lease_expiry_ms`); ``millis`` truncates.
2. At the governor a lease has lapsed once ``now_ms > expiry``: a renewal that arrives
   in the very millisecond the lease ends still counts (:func:`lease_lapsed`).
3. The governor records ``supervisor-lost`` for a lease that lapsed ``grace_ms`` ago
   with neither renewal nor finish: it has lapsed at ``millis(now) - grace_ms``
   (:func:`sweep_cutoff_ms`).
4. The enforcer runs on a TTL of at least :data:`MIN_ENFORCER_TTL_MS` whatever the
   governor answers (:func:`enforcer_ttl_s`), renews every TTL/3 — so two renewals in a
   row may fail before the lease ends — and gives up on one renewal after TTL/3, but
   not sooner than :data:`MIN_RENEWAL_TIMEOUT_S` (:func:`renewal_interval_s`,
   :func:`renewal_timeout_s`).
5. A successful renewal moves the enforcer's deadline to the time the request was
   *sent* plus the TTL (:func:`lease_deadline`): the governor's extension began no
   earlier. (The first deadline counts from when the start's answer arrived, a round
   trip after the governor's; the sweep's grace, rule 3, covers that.)
6. The enforcer kills the tree once no time remains, ``remaining <= 0``
   (:func:`lease_remaining_s`): at its deadline, with no grace beyond it.

Pure: no clock is read; callers pass the times.
"""

from __future__ import annotations

__all__ = [
    "MIN_ENFORCER_TTL_MS",
    "MIN_RENEWAL_TIMEOUT_S",
    "RENEWALS_PER_TTL",
    "enforcer_ttl_s",
    "lease_deadline",
    "lease_expiry_ms",
    "lease_lapsed",
    "lease_remaining_s",
    "millis",
    "renewal_interval_s",
    "renewal_timeout_s",
    "sweep_cutoff_ms",
]

MIN_ENFORCER_TTL_MS = 300
"""The shortest lease the enforcer keeps, in milliseconds (rule 4): a shorter one would
leave no time for a renewal's round trip."""

RENEWALS_PER_TTL = 3
"""How many renewals the enforcer schedules per TTL (rule 4)."""

MIN_RENEWAL_TIMEOUT_S = 0.2
"""The shortest time the enforcer waits for one renewal's answer, in seconds (rule 4)."""


def millis(seconds: float) -> int:
    """``seconds`` in whole milliseconds, truncated (rule 1).

    Args:
        seconds: a time or duration in seconds.

    Returns:
        ``int(seconds * 1000)``.
    """
    return int(seconds * 1000)


def lease_expiry_ms(renewed_at: float, ttl_ms: int) -> int:
    """When a lease renewed or started at ``renewed_at`` ends (rule 1).

    Args:
        renewed_at: unix time of the renewal or start, in seconds.
        ttl_ms: the lease's TTL in milliseconds.

    Returns:
        The lease's end, in unix milliseconds.
    """
    return millis(renewed_at) + ttl_ms


def lease_lapsed(expires_ms: int, now_ms: int) -> bool:
    """Whether a lease that ends at ``expires_ms`` has lapsed at ``now_ms`` (rule 2).

    Args:
        expires_ms: the lease's end, unix milliseconds.
        now_ms: the time asked about, unix milliseconds.

    Returns:
        ``True`` once ``now_ms`` is past the end.
    """
    return now_ms > expires_ms


def sweep_cutoff_ms(now: float, grace_ms: int) -> int:
    """The time at which a lease must have lapsed for the governor to close its
    execution as ``supervisor-lost`` (rule 3).

    Args:
        now: unix time, in seconds.
        grace_ms: how long past its end a lease may go unrenewed and unfinished.

    Returns:
        ``millis(now) - grace_ms``; pass it to :func:`lease_lapsed` as ``now_ms``.
    """
    return millis(now) - grace_ms


def enforcer_ttl_s(lease_ttl_ms: int) -> float:
    """The TTL the enforcer keeps for a lease the governor granted (rule 4).

    Args:
        lease_ttl_ms: the TTL the governor answered, in milliseconds.

    Returns:
        The TTL in seconds, at least ``MIN_ENFORCER_TTL_MS / 1000``.
    """
    return max(lease_ttl_ms, MIN_ENFORCER_TTL_MS) / 1000.0


def renewal_interval_s(ttl_s: float) -> float:
    """How long the enforcer waits between scheduled renewals (rule 4).

    Args:
        ttl_s: the enforcer's TTL (:func:`enforcer_ttl_s`).

    Returns:
        ``ttl_s / RENEWALS_PER_TTL``.
    """
    return ttl_s / RENEWALS_PER_TTL


def renewal_timeout_s(ttl_s: float) -> float:
    """How long the enforcer waits for one renewal's answer (rule 4).

    Args:
        ttl_s: the enforcer's TTL.

    Returns:
        ``max(ttl_s / RENEWALS_PER_TTL, MIN_RENEWAL_TIMEOUT_S)``.
    """
    return max(ttl_s / RENEWALS_PER_TTL, MIN_RENEWAL_TIMEOUT_S)


def lease_deadline(renewed_at: float, ttl_s: float) -> float:
    """The enforcer's deadline after a start or a successful renewal (rule 5).

    Args:
        renewed_at: the monotonic time the start's answer arrived, or the renewal
            request was sent.
        ttl_s: the enforcer's TTL.

    Returns:
        The deadline on the same monotonic clock.
    """
    return renewed_at + ttl_s


def lease_remaining_s(deadline: float, now: float) -> float:
    """How much of the enforcer's lease remains (rule 6: it is over at ``<= 0``).

    Args:
        deadline: the enforcer's deadline (:func:`lease_deadline`).
        now: the same monotonic clock now.

    Returns:
        Seconds left; zero or less means the lease is over.
    """
    return deadline - now
