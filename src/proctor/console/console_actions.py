"""The console's actions: what each does, said before it is confirmed, and done through
the governor's own operations (the code paths of the HTTP API), ``by`` the admin
signed in.

============================ ==================================================== ========================
action                       what happens                                         the governor's operation
============================ ==================================================== ========================
``revoke-execution``         a revocation is recorded; the enforcer kills the     ``Governor.revoke``
                             execution's process tree; its lease is not renewed   (kind ``execution``)
``revoke-warrant``           the warrant and every warrant attenuated from it     ``Governor.revoke``
                             are revoked; executions under them die               (kind ``warrant``)
``revoke-principal``         every warrant of the principal is revoked and it is  ``Governor.revoke``
                             suspended, in one commit                             (kind ``principal``)
``suspend`` / ``resume``     the principal loses (regains) every right            ``set_principal_status``
``approve`` / ``deny``       a pending approval is decided                        ``Approvals.decide``
============================ ==================================================== ========================

Each returns the log event it recorded and its leaf index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proctor.console.console_data import event_at, find_event
from proctor.errors import NoSuchTargetError, RequestShapeError

if TYPE_CHECKING:
    from proctor.governor.service import Governor

__all__ = ["ACTIONS", "Action", "Done", "perform"]


@dataclass(frozen=True)
class Action:
    """One console action: its button, what confirming it does, and what its target is."""

    label: str
    effect: str
    target: str
    danger: bool = True
    reason: bool = True
    """Whether the event records a reason (a suspension or resumption records none)."""


ACTIONS: dict[str, Action] = {
    "revoke-execution": Action(
        "Revoke execution",
        "records the revocation of execution {target} in the log; its enforcer kills the "
        "execution's whole process tree at once, and its lease is never renewed.",
        "execution id",
    ),
    "revoke-warrant": Action(
        "Revoke warrant",
        "records the revocation of warrant {target} in the log: it and every warrant "
        "attenuated from it stop working, and executions running under them are killed.",
        "warrant id",
    ),
    "revoke-principal": Action(
        "Revoke principal",
        "records the revocation of principal {target} in the log: every warrant it holds is "
        "revoked, its running executions are killed, and it is suspended in the same commit.",
        "principal name",
    ),
    "suspend": Action(
        "Suspend",
        "suspends principal {target}: it loses every right (no decision, start or renewal "
        "succeeds, its console session ends) until an admin resumes it.",
        "principal name",
        reason=False,
    ),
    "resume": Action(
        "Resume",
        "resumes principal {target}: its rights are those of its attributes again.",
        "principal name",
        danger=False,
        reason=False,
    ),
    "approve": Action(
        "Approve",
        "approves request {target}: its requester may use it once, for exactly the call "
        "it asked for, until it expires.",
        "approval id",
        danger=False,
    ),
    "deny": Action(
        "Deny",
        "denies request {target}: its requester is refused.",
        "approval id",
    ),
}

_REVOKE = {"revoke-execution": "execution", "revoke-warrant": "warrant", "revoke-principal": "principal"}


@dataclass(frozen=True)
class Done:
    """What an action recorded: the leaf index of its event, and the event."""

    index: int
    event: dict[str, Any]


def perform(governor: Governor, action: str, target: str, *, reason: str, by: str) -> Done:
    """Do ``action`` on ``target`` as admin ``by`` (the caller checked the session).

    Raises:
        RequestShapeError: an unknown action or an empty target.
        ProctorError: whatever the governor's operation raises (no such target, the
            last admin, not pending ...): nothing was done.
    """
    if action not in ACTIONS:
        raise RequestShapeError(f"expected an action in {sorted(ACTIONS)}, found {action[:40]!r}")
    if not target or len(target) > 200:
        raise RequestShapeError(f"expected a {ACTIONS[action].target} of 1 to 200 characters")
    if action in _REVOKE:
        index = int(governor.revoke(_REVOKE[action], target, reason=reason, by=by)["log_index"])
    elif action in ("approve", "deny"):
        decided = governor.authorizer.approvals.decide(
            target, approve=action == "approve", by=by, reason=reason
        )
        index = int(decided["log_index"])
    else:
        change = "suspended" if action == "suspend" else "resumed"
        governor.set_principal_status(target, "suspended" if action == "suspend" else "active", by=by)
        found = find_event(
            governor, {"type": "principal.changed", "principal": target, "change": change, "by": by}
        )
        if found is None:
            raise NoSuchTargetError(f"the {change} event of {target!r} is not among the log's newest entries")
        return Done(*found)
    event = event_at(governor, index)
    return Done(index, event if event is not None else {})
