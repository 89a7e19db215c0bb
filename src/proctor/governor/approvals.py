"""Approvals: an allow whose obligations say ``approval_required`` issues no warrant
until an admin, out of band, approves that exact call (issue 13, "Obligations").

The flow, and the rule each step keeps:

1. **Requested.** ``POST /v1/authorize`` with no ``approval``: the policy allows and an
   obligation requires approval, so no warrant is minted. The ``decision`` event, an
   ``approval.requested`` event (who, action, resource, argument digest, executable
   digest, policies, expiry) and the ``approvals`` row commit together; the answer is
   the allow with ``approval: {id, status: "pending", expires_at, args_digest}`` and no
   warrant. The id is 120 random bits: it names the request, and grants nothing.
2. **Decided by an admin, never by the requester.** ``POST /v1/approvals/{id}/approve``
   (or ``/deny``) must be signed by an admin (a principal's key cannot make an admin's
   signature), and an admin's own request cannot be approved by that admin (four
   eyes). Only a pending, unexpired approval can be decided, once: the move is claimed
   by one conditional update (``deciding``) that a second approve, a replayed request or
   another node finds taken; the ``approval.decided`` event and the row's decision then
   commit together (a failed commit gives the claim back).
3. **Used once, for exactly what was approved.** The requester repeats the same
   authorize body with ``"approval": "ap_…"``. The policy decides again (a policy
   changed since can deny, or no longer ask); if it still requires approval, the
   warrant is minted only if the approval is approved, unexpired, unused, and bound to
   this principal, action, resource, argument digest, executable digest and zone. The
   use is claimed by one conditional update (``using``) before the warrant is queued,
   and the ``warrant.issued`` event (naming the approval) commits with the row marked
   ``used``: two requests with one approval get one warrant. A commit that fails gives
   the claim back (no warrant exists).
4. **Expiry denies.** ``@approval_timeout_s`` (default
   :data:`~proctor.policy.obligations.DEFAULT_APPROVAL_TIMEOUT_S`) bounds both the wait
   for an admin and the use: past ``expires_at`` the approval reads ``expired`` and
   every claim refuses it.

State lives in the store (:mod:`proctor.store.state_approvals`), not in memory, so
every governor node on one store sees and decides the same approvals.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import Callable
from typing import Any

from proctor.errors import (
    ExecutionConflictError,
    NoSuchTargetError,
    PrincipalError,
    ProctorError,
    RequestShapeError,
)
from proctor.governor._events import rfc3339
from proctor.governor.recorder import Recorder
from proctor.lineage.log import Chain, Side
from proctor.policy import Decision, PolicyRequest
from proctor.policy.obligations import APPROVAL_TIMEOUT, DEFAULT_APPROVAL_TIMEOUT_S
from proctor.store import state_approvals
from proctor.store.state import StateStore
from proctor.store.state_approvals import APPROVAL_STATUSES, StoredApproval

__all__ = ["APPROVAL_ID", "Approvals", "requires_approval"]

APPROVAL_ID = "ap_"
"""The prefix of an approval id (then 24 base32 characters, 120 random bits)."""


def requires_approval(decision: Decision) -> bool:
    """Whether ``decision`` is an allow that must wait for an approval."""
    return decision.allow and decision.obligations.get("approval_required") is True


def _link(index: int, leaf: bytes) -> dict[str, Any]:
    return {"index": index, "leaf_hash": base64.b64encode(leaf).decode()}


class Approvals:
    """The approvals of one governor: asked for, decided, used (module docstring)."""

    def __init__(
        self,
        state: StateStore,
        *,
        recorder: Recorder,
        node: str,
        clock: Callable[[], float],
    ) -> None:
        """Args:
        state: the store holding the approvals.
        recorder: commits a decision's event with its row.
        node: the governor's node name, in every event.
        clock: the governor's clock (seconds).
        """
        self._state = state
        self._recorder = recorder
        self._node = node
        self._clock = clock

    # -- 1. requested ------------------------------------------------------------

    def new(
        self, principal: str, request: PolicyRequest, decision: Decision, args_digest: str, now_s: int
    ) -> StoredApproval:
        """The approval an allow asks for (not yet stored)."""
        timeout = decision.obligations.get(APPROVAL_TIMEOUT)
        seconds = timeout if type(timeout) is int and timeout > 0 else DEFAULT_APPROVAL_TIMEOUT_S
        return StoredApproval(
            id=APPROVAL_ID + base64.b32encode(secrets.token_bytes(15)).decode().lower(),
            principal=principal,
            action=request.action,
            resource=request.resource,
            args_digest=args_digest,
            executable_digest=request.executable_digest,
            zone=request.zone,
            policies=tuple(decision.policies),
            stored="pending",
            requested=now_s,
            expires=now_s + seconds,
            decision_index=-1,
            requested_index=-1,
            decided_by="",
            decided=0,
            decided_index=-1,
            warrant="",
            used_index=-1,
        )

    def requested(self, asked: StoredApproval, now: float) -> tuple[Chain, Side]:
        """The ``approval.requested`` event, chained behind its decision, and the row's
        insert: both in the decision's commit."""

        def event(index: int, leaf: bytes) -> dict[str, Any]:
            return {
                "v": 1,
                "type": "approval.requested",
                "time": rfc3339(now),
                "node": self._node,
                "approval": asked.id,
                "principal": asked.principal,
                "action": asked.action,
                "resource": asked.resource,
                "args_digest": asked.args_digest,
                "executable_digest": asked.executable_digest,
                "zone": asked.zone,
                "policies": list(asked.policies),
                "expires": asked.expires,
                "decision_index": index,
                "parent": _link(index, leaf),
            }

        return event, state_approvals.approval_writer(asked)

    # -- 3. used -------------------------------------------------------------------

    def claim_use(self, approval_id: str, asked: StoredApproval, now_s: int) -> StoredApproval | str:
        """Claim approval ``approval_id`` for a warrant of the request ``asked`` describes
        (its principal, action, resource, digests and zone): the claimed approval, or why
        not (the caller denies with it)."""
        found = self._state.run(state_approvals.approval, approval_id) if _well_formed(approval_id) else None
        if found is None or found.principal != asked.principal:
            return f"approval {approval_id!r} is not one of {asked.principal!r}'s; denied"
        status = found.status_at(now_s)
        if status != "approved":
            return f"approval {approval_id} is {status}, not approved; denied"
        for what in ("action", "resource", "args_digest", "executable_digest", "zone"):
            if getattr(found, what) != getattr(asked, what):
                return (
                    f"approval {approval_id} was given for {what} {getattr(found, what)!r}, "
                    f"not {getattr(asked, what)!r}; denied"
                )
        if not self._state.run(state_approvals.claim_use, found, now_s):
            return f"approval {approval_id} was used or expired meanwhile; denied"
        return found

    @staticmethod
    def used(approval_id: str) -> Callable[[Any, int, str], None]:
        """The write marking a claimed approval used, in its warrant's commit:
        ``write(conn, warrant.issued index, warrant id)``."""

        def write(conn: Any, index: int, warrant_id: str) -> None:
            state_approvals.used_writer(approval_id, warrant_id)(conn, index)

        return write

    def release(self, approval_id: str, claimed: str) -> None:
        """Give a claim back after a commit that failed (no warrant, no decision
        exists); a failure to do so leaves the approval unusable (fail closed)."""
        with contextlib.suppress(ProctorError):  # best effort: a stuck claim only refuses
            self._state.run(state_approvals.release, approval_id, claimed)

    # -- 2. decided ------------------------------------------------------------------

    def decide(self, approval_id: str, *, approve: bool, by: str, reason: str = "") -> dict[str, Any]:
        """An admin's decision on a pending approval (the route checked ``by`` is an admin).

        Raises:
            NoSuchTargetError: no such approval (404).
            PrincipalError: ``by`` asked for it: no one approves their own request (403).
            ExecutionConflictError: it is not pending (decided, used or expired) (409).
            LineageError, StoreError: the decision could not be recorded (nothing changed).
        """
        found = self._state.run(state_approvals.approval, approval_id) if _well_formed(approval_id) else None
        if found is None:
            raise NoSuchTargetError(f"no approval {approval_id!r}")
        if found.principal == by:
            raise PrincipalError(
                f"{by!r} asked for approval {approval_id}: it must be decided by another admin"
            )
        now = self._clock()
        now_s = int(now)
        if not self._state.run(state_approvals.claim_decision, approval_id, now_s):
            now_row = self._state.run(state_approvals.approval, approval_id)
            shown = now_row.status_at(now_s) if now_row is not None else "gone"
            raise ExecutionConflictError(
                f"approval {approval_id} is {shown}, not pending: it cannot be decided again"
            )
        status = "approved" if approve else "denied"
        event = {
            "v": 1,
            "type": "approval.decided",
            "time": rfc3339(now),
            "node": self._node,
            "approval": approval_id,
            "status": status,
            "by": by,
            "principal": found.principal,
            "reason": reason[:500],
            "requested_index": found.requested_index,
        }
        write = state_approvals.decided_writer(approval_id, status=status, by=by, at=now_s)
        try:
            index = self._recorder.record([event], [write])
        except BaseException:
            self.release(approval_id, "deciding")
            raise
        return {"id": approval_id, "status": status, "decided_by": by, "log_index": index}

    # -- reads ---------------------------------------------------------------------------

    def show(self, approval_id: str, *, caller: str, admin: bool) -> dict[str, Any]:
        """The approval, to its requester or an admin (to anyone else, the same 404 as
        an unknown id: no existence oracle)."""
        found = self._state.run(state_approvals.approval, approval_id) if _well_formed(approval_id) else None
        if found is None or (found.principal != caller and not admin):
            raise NoSuchTargetError(f"no approval {approval_id!r} of {caller!r}")
        return found.to_json(int(self._clock()))

    def listed(self, status: str | None) -> dict[str, Any]:
        """Approvals (admins), newest first; only those in ``status`` if given.

        Raises:
            RequestShapeError: ``status`` is not one of :data:`APPROVAL_STATUSES`.
        """
        if status is not None and status not in APPROVAL_STATUSES:
            raise RequestShapeError(
                f"status: expected one of {', '.join(APPROVAL_STATUSES)}, found {status!r:.40}"
            )
        now_s = int(self._clock())
        rows = self._state.run(state_approvals.approvals, status=status, now=now_s)
        return {"approvals": [a.to_json(now_s) for a in rows]}


def _well_formed(approval_id: str) -> bool:
    return (
        len(approval_id) == len(APPROVAL_ID) + 24
        and approval_id.startswith(APPROVAL_ID)
        and all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in approval_id[len(APPROVAL_ID) :])
    )
