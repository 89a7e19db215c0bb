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
A held call is counted once: its stored rows are left out of the store's count by
warrant id (known from the moment its rows are written, before they commit), and the
count and the exclusion are one statement, one snapshot. (It used to be counted twice
between its commit and the release of its hold: a burst of 10 under a limit of 3 could
get 2.) The one instant left: a check that read the holds just before a hold learned its
warrant id, and queried just after that hold's commit, counts it twice (stricter, never
looser).
"""

from __future__ import annotations

import threading
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

    __slots__ = ("args_digest", "principal", "released", "resource", "warrant")

    def __init__(self, principal: str, resource: str, args_digest: str) -> None:
        self.principal = principal
        self.resource = resource
        self.args_digest = args_digest
        self.released = False
        self.warrant = ""  # set when its rows are written (counted), before they commit


class CallLimits:
    """Checks and counts call limits for one governor (module docstring)."""

    def __init__(self, state: StateStore) -> None:
        """Args:
        state: where calls and warrants are counted.
        """
        self._state = state
        self._lock = threading.Lock()
        self._live: set[CallHold] = set()  # calls in flight on this node

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
            self._live.add(hold)
            return hold

    def _held(self, principal: str, resource: str | None = None) -> list[CallHold]:
        return [h for h in self._live if h.principal == principal and resource in (None, h.resource)]

    def _over(
        self, limit: CallLimit, principal: str, resource: str, args_digest: str, now_s: int
    ) -> str | None:
        since = now_s - limit.window_s + 1
        if limit.kind == "rate":
            held = self._held(principal, resource)
            besides = [h.warrant for h in held if h.warrant]
            found = len(held) + self._state.run(
                state_approvals.count_calls, principal, resource, since, besides=besides
            )
            what = f"calls of {resource}"
        elif limit.kind == "budget":
            held = self._held(principal)
            besides = [h.warrant for h in held if h.warrant]
            found = len(held) + self._state.count_warrants(principal, since, besides=besides)
            what = "calls"
        else:  # blast_radius: the union of the stored and the held digests
            digests = sorted({h.args_digest for h in self._held(principal, resource)})
            found, seen = self._state.run(
                state_approvals.distinct_arguments, principal, resource, since, args_digest, also=digests
            )
            if seen or args_digest in digests:
                return None  # the same arguments again: nothing new is touched
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
            self._live.discard(hold)

    @staticmethod
    def counted(hold: CallHold, now_s: int) -> Callable[[Any, int, str], None]:
        """The ``calls`` row of the held call, in its warrant's commit:
        ``write(conn, warrant.issued index, warrant id)``; the hold learns the warrant
        id first, so that a check leaves its rows out once they are stored."""
        row = state_approvals.call_writer(hold.principal, hold.resource, hold.args_digest, now_s)

        def write(conn: Any, index: int, warrant_id: str) -> None:
            hold.warrant = warrant_id
            row(conn, index, warrant_id)

        return write
