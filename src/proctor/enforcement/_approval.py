"""``proctor run`` under a policy that requires approval (``@approval("required")``,
:mod:`proctor.governor.approvals`): the enforcer waits for an admin, then asks again.

An allow that requires approval comes with no warrant, so nothing can start on it:
the answer names a pending approval instead. :class:`ApprovingGovernors` is the
supervisor's :class:`~proctor.enforcement._failover.Governors` with one step added to
``POST /v1/authorize``: on such an answer it says which approval to give (``proctor
approve ID``), polls ``GET /v1/approvals/{id}`` (signed by the same principal) until an
admin decided or the approval expired, and, once approved, repeats the same request
naming the approval; the governor mints the warrant only then, once. Denied, expired,
used, or any answer it cannot read: the original answer stands (no warrant: nothing
starts, exit 77), its reason saying why. The wait is bounded by the approval's own
expiry (``@approval_timeout_s``).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from proctor.enforcement._failover import Governors, governor_urls
from proctor.errors import GovernorError

__all__ = ["POLL_S", "ApprovingGovernors", "governor_urls"]

POLL_S = 1.0
"""Seconds between two looks at a pending approval."""


class ApprovingGovernors(Governors):
    """:class:`Governors` that wait for a required approval at authorization (module docstring)."""

    def json(self, method: str, target: str, body: Any = None, **kw: Any) -> Any:
        """:meth:`Governors.json`; an authorization that waits for an approval is
        waited for (and asked again once approved)."""
        answer = super().json(method, target, body, **kw)
        if (method, target) != ("POST", "/v1/authorize") or not isinstance(answer, dict):
            return answer
        approval = answer.get("approval")
        if answer.get("allow") or "warrant" in answer or not isinstance(approval, dict) or body is None:
            return answer
        return self._wait(body, answer, approval)

    def _wait(self, body: dict[str, Any], answer: dict[str, Any], approval: dict[str, Any]) -> Any:
        approval_id = str(approval.get("id", ""))
        expires = approval.get("expires_at")
        if not approval_id or type(expires) is not int:
            return _refused(answer, "the governor asked for an approval without naming it; nothing started")
        self._note(
            f"approval required: {approval_id} waits for an admin until {_utc(expires)} "
            f"(proctor approve {approval_id}); waiting"
        )
        status = "pending"
        while status == "pending" and time.time() < expires + POLL_S:
            time.sleep(POLL_S)
            try:
                seen = super().json("GET", f"/v1/approvals/{quote(approval_id, safe='')}")
            except (GovernorError, ValueError) as e:
                self._note(f"cannot read approval {approval_id}: {e}; asking again")
                continue
            status = str(seen.get("status", "")) if isinstance(seen, dict) else ""
        if status != "approved":
            return _refused(
                answer, f"approval {approval_id} is {status or 'unreadable'}, not approved; nothing started"
            )
        self._note(f"approval {approval_id} approved; authorizing again with it")
        return super().json("POST", "/v1/authorize", {**body, "approval": approval_id})


def _refused(answer: dict[str, Any], reason: str) -> dict[str, Any]:
    decision = dict(answer.get("decision") or {})
    decision.update(allow=False, reason=reason)
    return {**{k: v for k, v in answer.items() if k != "warrant"}, "allow": False, "decision": decision}


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
