"""Who may see which executions, and what of them: ``GET /v1/executions`` and
``GET /v1/executions/{id}`` (and ``proctor executions list|show`` on a data directory).

Rules:

- Only an active principal may ask (a suspended or revoked one has lost every right:
  403, before anything is looked up).
- An admin sees every execution; any other principal only its own. Asking for another
  principal's list without being an admin is refused (403), whatever exists.
- One execution is shown to its principal or an admin. For anyone else it does not
  exist: the answer is the same 404 ``no such execution`` as for an unknown id, so
  that the answer never tells whether another principal's execution exists.
- What is shown is the summary the store reads (:class:`~proctor.store.state.ExecutionSummary`):
  never the arguments (the log has only their commitment) nor the warrant token.
- Lists are bounded (:data:`MAX_LIMIT`) and newest first; ``status=running`` (the
  default) means still ``running`` or ``terminating`` (its process tree may live).

The lease deadline is the governor's own (memory first: the table lags behind renewals).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proctor.errors import NoSuchTargetError, PrincipalError, RequestShapeError
from proctor.governor._events import rfc3339
from proctor.store.state import ExecutionSummary

if TYPE_CHECKING:
    from proctor.governor.service import Governor

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "STATUSES", "execution_json", "list_executions", "show_execution"]

DEFAULT_LIMIT = 100
"""How many executions a list holds unless asked for fewer or more."""
MAX_LIMIT = 1000
"""The most executions one list may hold."""
STATUSES = ("running", "all")
"""What ``status=`` may ask for: live executions (``running`` or ``terminating``), or all."""
_LIVE = ("running", "terminating")


def execution_json(summary: ExecutionSummary, *, lease_expires_ms: int, now: float) -> dict[str, Any]:
    """One execution as the API shows it.

    Times are given twice, as RFC 3339 UTC and as unix time. While the execution lives,
    ``lease_age_ms`` is how long ago its lease was last granted or renewed and
    ``lease_remaining_ms`` how long until it runs out (negative: lapsed); once it ended,
    both are ``null``.
    """
    now_ms = int(now * 1000)
    live = summary.status in _LIVE
    ended = summary.ended if summary.ended > 0 else None
    return {
        "id": summary.id,
        "principal": summary.principal,
        "action": summary.action,
        "resource": summary.resource,
        "zone": summary.zone,
        "status": summary.status,
        "reason": summary.reason,
        "started": rfc3339(summary.started),
        "started_unix": summary.started,
        "ended": None if ended is None else rfc3339(ended),
        "ended_unix": ended,
        "lease_ttl_ms": summary.ttl_ms,
        "lease_expires_ms": lease_expires_ms,
        "lease_age_ms": now_ms - (lease_expires_ms - summary.ttl_ms) if live else None,
        "lease_remaining_ms": lease_expires_ms - now_ms if live else None,
        "bundle": summary.bundle,
        "warrant": summary.warrant,
        "log_indices": list(summary.indices),
    }


def _shown(gov: Governor, summary: ExecutionSummary, now: float) -> dict[str, Any]:
    deadline = gov.executions.registry.lease_deadline(summary.id, summary.lease_expires_ms)
    return execution_json(summary, lease_expires_ms=deadline, now=now)


def _active(gov: Governor, caller: str) -> None:
    record = gov.principal(caller)
    if record is None or record.status != "active":
        raise PrincipalError(f"principal {caller!r} is not active")


def list_executions(
    gov: Governor,
    caller: str,
    *,
    status: str = "running",
    principal: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """The executions ``caller`` may see, newest first.

    Args:
        gov: the governor.
        caller: the authenticated principal asking.
        status: ``running`` (still running or terminating) or ``all``.
        principal: only this principal's; for a caller who is not an admin, only its
            own name is accepted (``None``: an admin sees everyone's, others their own).
        limit: at most this many, 1 to :data:`MAX_LIMIT`.

    Returns:
        ``{"executions": [...], "status", "principal", "limit", "truncated"}``;
        ``truncated`` says that more executions match than were returned.

    Raises:
        RequestShapeError: an unknown ``status`` or a ``limit`` out of range (422).
        PrincipalError: the caller is not active, or is not an admin and asked for
            another principal's (403).
    """
    _active(gov, caller)
    if status not in STATUSES:
        raise RequestShapeError(f"status: expected one of {', '.join(STATUSES)}, found {status!r}")
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise RequestShapeError(f"limit: expected an integer from 1 to {MAX_LIMIT}, found {limit!r}")
    if not gov.is_admin(caller):
        if principal not in (None, caller):
            raise PrincipalError(f"{caller!r} is not an admin: it may list only its own executions")
        principal = caller
    now = gov.now()
    found = gov.state.execution_summaries(principal=principal, live_only=status == "running", limit=limit + 1)
    return {
        "executions": [_shown(gov, s, now) for s in found[:limit]],
        "status": status,
        "principal": principal,
        "limit": limit,
        "truncated": len(found) > limit,
    }


def show_execution(gov: Governor, caller: str, execution_id: str) -> dict[str, Any]:
    """One execution, for its principal or an admin.

    Raises:
        PrincipalError: the caller is not active (403).
        NoSuchTargetError: no such execution, or not one ``caller`` may see (404, the
            same answer for both).
    """
    _active(gov, caller)
    summary = gov.state.execution_summary(execution_id) if len(execution_id) <= 64 else None
    if summary is None or (summary.principal != caller and not gov.is_admin(caller)):
        raise NoSuchTargetError(f"no such execution: {execution_id[:64]!r}")
    return _shown(gov, summary, gov.now())
