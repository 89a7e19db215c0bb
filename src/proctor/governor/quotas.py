"""Per-principal quotas at the governor: how much one principal may hold at once.

A principal with a valid key could otherwise start thousands of executions, or hold
every event stream, and starve everyone else of the governor. The limits come from
the data directory's configuration (:class:`proctor.config.QuotaConfig`, read once
when the governor opens; an invalid one stops it from starting). This module decides;
the execution registry counts (:class:`~proctor.governor.registry.ExecutionRegistry`).

Invariants:

1. **A start is admitted under the registry's lock, before anything is recorded.**
   ``Executions.start`` asks the registry for a start slot after the warrant has
   verified and before the ``execution.started`` event is queued; the registry counts
   the principal's running executions *and* the starts still being recorded, and its
   starts of the last 60 s, and reserves the slot in the same critical section. So
   concurrent starts can never overshoot a quota, and a refused start (HTTP 429,
   :class:`~proctor.errors.QuotaError` with ``quota``, ``limit`` and ``found``) leaves
   its warrant unused: it can start once there is room.
2. **A start that is not recorded gives its slot back** (its running slot and its
   count in the minute); one that is recorded turns its slot into a running execution.
3. **Authorization agrees with start:** a principal at ``max_running`` is denied, and
   the deny is recorded with a reason naming the quota, so no warrant is issued that
   could not start now. (``max_starts_per_minute`` is not checked there: a warrant
   lives longer than a minute.)
4. **Policies see the counts**: ``context.counters.concurrency`` (running) and
   ``context.counters.starts_1m`` (starts in the last 60 s), read in one critical
   section of the registry.
5. **No one is exempt**, admins included, unless the configuration names the
   principal with limits of its own.
6. **Signed requests are rate-limited per principal, right after the signature**
   (:class:`RequestRate`): every signed request counts against
   ``max_requests_per_second`` and authorizations against
   ``max_authorizations_per_second`` too, before the body is parsed, a parent warrant
   looked at, a stream opened or anything logged. The key is the authenticated name, so
   no one can spend another principal's allowance; a refusal is not counted against the
   allowance (a client that backs off gets through as soon as the window allows) and is
   not logged (a flood must not fill the log); its nonce is kept, so the refused request
   cannot be replayed later to get through. The refusal says when to send again
   (``retry_after``), and the HTTP layer holds it back that long before answering (a
   tarpit costing the governor a timer, not CPU; at least a quarter second): a flood
   gets at most four refusals a second per connection.
7. **Several governor processes share each rate** (shared mode, ADR 0016): a principal
   could otherwise send its limit to every node. Each process admits
   ``floor(limit / N)`` (at least 1), N being the nodes the store lists as live (not
   stopped, heartbeat fresh: :class:`RateShare`, kept by the node's heartbeat), so the
   nodes together admit at most the limit, whichever nodes a principal spreads its
   requests over. Counting the nodes errs high (a node not ready still counts), which
   only lowers each share; a node not yet listed (its first second) and limits below N
   are the two ways the sum can exceed the limit, by at most one window of one node.

Pure but for :class:`QuotaStreamSlots` and :class:`RequestRate` (a lock each);
the rate's clock is injected.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from proctor.config import QuotaConfig, QuotaLimits
from proctor.errors import QuotaError
from proctor.governor.stream import StreamSlots

__all__ = ["RateShare", "RequestRate", "QuotaStreamSlots", "check_start", "running_refusal"]


def check_start(limits: QuotaLimits, principal: str, *, running: int, starts_1m: int) -> QuotaError | None:
    """Whether ``principal`` may start one more execution now.

    Args:
        limits: the principal's quotas.
        principal: who starts.
        running: its executions running or being started.
        starts_1m: its starts in the last 60 seconds.

    Returns:
        ``None`` to admit, or the refusal for the caller to raise.
    """
    if running >= limits.max_running:
        return QuotaError(
            f"quota max_running: {principal!r} runs {running} executions (at most "
            f"{limits.max_running}); start again when one has ended",
            quota="max_running",
            limit=limits.max_running,
            found=running,
        )
    if starts_1m >= limits.max_starts_per_minute:
        return QuotaError(
            f"quota max_starts_per_minute: {principal!r} started {starts_1m} executions in the "
            f"last 60 s (at most {limits.max_starts_per_minute}); start again later",
            quota="max_starts_per_minute",
            limit=limits.max_starts_per_minute,
            found=starts_1m,
        )
    return None


def running_refusal(limits: QuotaLimits, principal: str, running: int) -> str | None:
    """The reason of an authorization denied because ``principal`` is at
    ``max_running`` (``running``: its executions running or being started), or ``None``."""
    if running < limits.max_running:
        return None
    return (
        f"quota max_running: {principal!r} runs {running} executions (at most "
        f"{limits.max_running}); denied until one ends"
    )


class QuotaStreamSlots(StreamSlots):
    """:class:`~proctor.governor.stream.StreamSlots` whose per-principal cap is each
    principal's ``max_streams`` quota (its override, or the default).

    Admission is serialised by a lock of its own around the check and the parent's
    :meth:`acquire`; a release in between can only lower the count, so the check can
    never admit past a principal's cap.
    """

    def __init__(self, quotas: QuotaConfig, *, total: int, per_principal: int | None = None) -> None:
        """Args:
        quotas: the configured quotas.
        total: the most streams open at once, all principals together.
        per_principal: the cap of principals without an override (default: the
            configuration's ``max_streams``; ``proctor serve --max-streams-per-principal``).

        Raises:
            ValueError: a cap below 1.
        """
        self._quotas = quotas
        self._default = quotas.default.max_streams if per_principal is None else per_principal
        highest = max((limits.max_streams for limits in quotas.principals.values()), default=self._default)
        super().__init__(total=total, per_principal=max(self._default, highest))
        self._admit = threading.Lock()

    def cap(self, principal: str) -> int:
        """How many streams ``principal`` may hold open."""
        override = self._quotas.principals.get(principal.casefold()) if self._quotas.principals else None
        return override.max_streams if override is not None else self._default

    def acquire(self, principal: str) -> str | None:
        """Take a slot for ``principal``; ``None`` if taken, else why not."""
        cap = self.cap(principal)
        with self._admit:
            held = self.open(principal)
            if held >= cap:
                return f"{principal!r} already holds {held} open streams (at most {cap}, quota max_streams)"
            return super().acquire(principal)


class RateShare:
    """How many governor processes share each per-second quota (invariant 7): 1 for an
    exclusive governor; in shared mode, the live nodes the store lists, set by the
    node's heartbeat (:mod:`proctor.governor.nodes`). Thread-safe (one int)."""

    def __init__(self) -> None:
        self._nodes = 1

    @property
    def nodes(self) -> int:
        """The processes sharing each quota (at least 1)."""
        return self._nodes

    def set(self, nodes: int) -> None:
        """The live nodes as last read (below 1 counts as 1: this process serves)."""
        self._nodes = max(1, int(nodes))

    def of(self, limit: int) -> int:
        """This process's part of ``limit``: ``floor(limit / nodes)``, at least 1."""
        return max(1, limit // self._nodes)


class RequestRate:
    """One per-second quota of every principal (``max_requests_per_second`` or
    ``max_authorizations_per_second``), over a sliding one-second window; this
    process's part of it when several share it (:class:`RateShare`).

    The window is estimated from two fixed one-second windows, the current and the
    previous (the previous weighted by how much of it still lies in the last second),
    so each principal costs two counters whatever its rate. A principal can thus send
    its limit in a burst, and never more than twice its limit in any second.
    """

    def __init__(
        self,
        quotas: QuotaConfig,
        quota: str,
        *,
        what: str,
        clock: Callable[[], float] = time.monotonic,
        share: RateShare | None = None,
    ) -> None:
        """Args:
        quotas: the configured quotas.
        quota: which field of :class:`~proctor.config.QuotaLimits` is the limit.
        what: what is counted, for the refusal's message ("signed requests").
        clock: monotonic seconds (tests step it).
        share: the processes sharing the quota (default: this one alone).

        Raises:
            ValueError: ``quota`` is not a per-second quota.
        """
        if quota not in _PER_SECOND:
            raise ValueError(f"expected one of {', '.join(_PER_SECOND)}, found {quota!r}")
        self.quota = quota
        self._quotas = quotas
        self._what = what
        self._clock = clock
        self.share = share or RateShare()
        self._windows: dict[str, tuple[int, int, int]] = {}  # name -> (second, previous, current)
        self._lock = threading.Lock()

    def admit(self, principal: str) -> QuotaError | None:
        """Count one request of ``principal`` (authenticated), or refuse it.

        Returns:
            ``None`` to go on, or the refusal (not counted) for the caller to answer 429.
        """
        configured: int = getattr(self._quotas.limits(principal), self.quota)
        limit = self.share.of(configured)
        now = self._clock()
        second = math.floor(now)
        with self._lock:
            start, previous, current = self._windows.get(principal, (second, 0, 0))
            if second != start:  # the window moved on: one second, or more
                previous, current = (current if second == start + 1 else 0), 0
            seen = previous * (1.0 - (now - second)) + current
            if seen + 1 > limit:
                self._windows[principal] = (second, previous, current)
                found = math.ceil(seen)
                wait = _until_admitted(now - second, previous, current, limit)
                nodes = self.share.nodes
                shared = f", this node's part of {configured} shared by {nodes} nodes" if nodes > 1 else ""
                return QuotaError(
                    f"quota {self.quota}: {principal!r} sent {found} {self._what} in the last "
                    f"second (at most {limit}{shared}); send again in {wait:.3f} s",
                    quota=self.quota,
                    limit=limit,
                    found=found,
                    retry_after=wait,
                )
            self._windows[principal] = (second, previous, current + 1)
        return None


_PER_SECOND = ("max_requests_per_second", "max_authorizations_per_second")
RETRY_BOUNDS = (0.01, 1.0)
"""The shortest and longest ``retry_after`` of a rate refusal (seconds)."""


def _until_admitted(into: float, previous: int, current: int, limit: int) -> float:
    """Seconds from ``into`` (seconds into the current window) until the sliding
    estimate ``previous * (1 - t) + current`` leaves room for one more request."""
    if current + 1 <= limit and previous > 0:
        # previous * (1 - t) + current + 1 <= limit  <=>  t >= 1 - (limit - 1 - current) / previous
        wait = 1.0 - (limit - 1 - current) / previous - into
    else:  # not in this window: in the next, where ``current`` is the previous window
        wait = (1.0 - into) + max(0.0, 1.0 - (limit - 1) / current if current else 0.0)
    low, high = RETRY_BOUNDS
    return min(high, max(low, wait))
