"""Call limits at authorization: ``@rate``, ``@budget`` and ``@blast_radius``
(:mod:`proctor.policy.obligations`), per principal, counted in the store.

An allow whose obligations carry call limits is checked against what the principal
already got before anything is minted; one limit over is a deny whose reason names
the limit, what was counted and the window:

- ``rate N/Ws``: warrants for this resource (tool, executable) in the last W seconds;
- ``budget N/Ws``: warrants of any resource in the last W seconds (the ``warrants`` table);
- ``blast_radius N/Ws``: distinct argument digests for this resource in the last W
  seconds, the request's own included; repeating a call already counted does not
  widen it, a new target does.

Counting: each issued warrant of a tool call (``mcp.call``, ``tool.call``), or of any
call an allow limited, writes a ``calls`` row in the commit of its ``warrant.issued``
event (:mod:`proctor.store.state_approvals`), so every governor node on the store
counts every node's calls. Calls allowed but not yet committed on this node are held
here and counted too (a burst on one node cannot overshoot); calls in flight on
*other* nodes at the same instant are the residual: at most one per node per burst.
Between a call's commit and the release of its hold it is counted twice: a check in
that instant may deny a call the limit had room for (stricter, never looser); once the
hold is released the room is back.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from proctor.policy import Decision, PolicyRequest
from proctor.policy.obligations import CallLimit, call_limits
from proctor.store import state_approvals
from proctor.store.state import StateStore

__all__ = ["COUNTED_ACTIONS", "CallHold", "CallLimits"]

COUNTED_ACTIONS = frozenset({"mcp.call", "tool.call"})
"""Actions whose every issued warrant is counted (other actions: when a limit applies)."""


class CallHold:
    """One allowed call between its check and its commit (:meth:`CallLimits.check`)."""

    __slots__ = ("args_digest", "principal", "released", "resource")

    def __init__(self, principal: str, resource: str, args_digest: str) -> None:
        self.principal = principal
        self.resource = resource
        self.args_digest = args_digest
        self.released = False


class CallLimits:
    """Checks and counts call limits for one governor (module docstring)."""

    def __init__(self, state: StateStore) -> None:
        """Args:
        state: where calls and warrants are counted.
        """
        self._state = state
        self._lock = threading.Lock()
        self._held: Counter[tuple[str, str]] = Counter()  # (principal, resource) -> calls in flight
        self._held_all: Counter[str] = Counter()
        self._held_args: Counter[tuple[str, str, str]] = Counter()

    def check(
        self, principal: str, request: PolicyRequest, args_digest: str, decision: Decision, now_s: int
    ) -> CallHold | str | None:
        """Whether the allowed call may go on under the allow's call limits.

        Returns:
            ``None``: not counted (no limit, not a tool call); a :class:`CallHold` to
            :meth:`release` once the warrant is committed or refused; or the reason of a
            deny (a limit is reached).

        Raises:
            ValueError: a malformed call limit (the caller denies).
            StoreError: the store cannot count (the caller denies).
        """
        limits = call_limits(decision.obligations)
        resource = request.resource
        if not limits and request.action not in COUNTED_ACTIONS:
            return None
        with self._lock:
            for limit in limits:
                refusal = self._over(limit, principal, resource, args_digest, now_s)
                if refusal is not None:
                    return refusal
            hold = CallHold(principal, resource, args_digest)
            self._held[(principal, resource)] += 1
            self._held_all[principal] += 1
            self._held_args[(principal, resource, args_digest)] += 1
            return hold

    def _over(
        self, limit: CallLimit, principal: str, resource: str, args_digest: str, now_s: int
    ) -> str | None:
        since = now_s - limit.window_s + 1
        if limit.kind == "rate":
            found = self._state.run(state_approvals.count_calls, principal, resource, since)
            found += self._held[(principal, resource)]
            what = f"calls of {resource}"
        elif limit.kind == "budget":
            found = self._state.count_warrants(principal, since) + self._held_all[principal]
            what = "calls"
        else:  # blast_radius
            distinct, seen = self._state.run(
                state_approvals.distinct_arguments, principal, resource, since, args_digest
            )
            held = {a for (p, r, a) in self._held_args if (p, r) == (principal, resource)}
            if seen or args_digest in held:
                return None  # the same arguments again: nothing new is touched
            # A held call's row may already be stored too: counted twice, stricter.
            found = distinct + len(held)
            what = f"distinct argument sets for {resource}"
        if found + 1 <= limit.calls:
            return None
        return (
            f"obligation {limit.kind} {limit}: {principal!r} has {found} {what} in the last "
            f"{limit.window_s} s (at most {limit.calls}); denied"
        )

    def release(self, hold: CallHold | None) -> None:
        """The held call was committed (its ``calls`` row now counts) or refused."""
        if hold is None or hold.released:
            return
        with self._lock:
            hold.released = True
            _take(self._held, (hold.principal, hold.resource))
            _take(self._held_all, hold.principal)
            _take(self._held_args, (hold.principal, hold.resource, hold.args_digest))

    @staticmethod
    def counted(hold: CallHold, now_s: int) -> Callable[[Any, int, str], None]:
        """The ``calls`` row of the held call, in its warrant's commit:
        ``write(conn, warrant.issued index, warrant id)``."""
        return state_approvals.call_writer(hold.principal, hold.resource, hold.args_digest, now_s)


def _take(counter: Counter[Any], key: Any) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
