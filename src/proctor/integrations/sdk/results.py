"""The SDK's typed answers: what the governor said, read into frozen dataclasses.

Each parser reads the governor's JSON strictly and fails closed: an answer that does
not have the expected shape is not an allow. :class:`Authorization` is ``allowed`` only
when the governor's answer says ``allow``, its decision says ``allow`` *and* it carries
a warrant token; anything else (a deny, a pending approval, a malformed answer, no
answer at all) is a denial with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proctor.errors import DeniedError

__all__ = ["Approval", "Authorization", "Finished", "Lease", "Renewal"]


def _str(doc: Any, name: str) -> str:
    value = doc.get(name) if isinstance(doc, dict) else None
    return value if type(value) is str else ""


def _int(doc: Any, name: str) -> int | None:
    value = doc.get(name) if isinstance(doc, dict) else None
    return value if type(value) is int else None


@dataclass(frozen=True)
class Approval:
    """An approval a decision requires before a warrant is issued (obligation
    ``approval_required``), given out of band by an admin (``proctor approve ID``).

    Attributes:
        id: ``ap_…``.
        status: ``pending``, ``approved``, ``denied``, ``expired`` or ``used``.
        expires_at: unix seconds after which it can no longer be approved (0: unknown).
        args_digest: the exact argument digest it is bound to.
    """

    id: str
    status: str
    expires_at: int = 0
    args_digest: str = ""

    @classmethod
    def from_json(cls, doc: Any) -> Approval | None:
        """Read ``{"id", "status", "expires_at", "args_digest"}``; ``None`` if it is not one."""
        ident, status = _str(doc, "id"), _str(doc, "status")
        if not ident.startswith("ap_") or not status:
            return None
        return cls(ident, status, _int(doc, "expires_at") or 0, _str(doc, "args_digest"))


@dataclass(frozen=True)
class Authorization:
    """The answer to one ``POST /v1/authorize``.

    Attributes:
        allowed: a warrant was issued (the only state in which anything may run).
        reason: the decision's reason, or why there was no decision.
        policies: the ids of the policies that decided.
        warrant: the warrant token (``None`` unless allowed).
        warrant_id: its id.
        expires: the warrant's expiry, unix seconds, as the governor said it.
        lease_ttl_ms: the lease TTL, as the governor said it (the SDK runs on the
            warrant's own claim, read from the verified token).
        log_index: where the decision was logged (``None``: no decision was logged).
        approval: the approval this decision waits for, if any.
        decision: the governor's decision as JSON (``None`` when there was none).
        obligations: the decision's obligations.
    """

    allowed: bool
    reason: str
    policies: tuple[str, ...] = ()
    warrant: str | None = field(default=None, repr=False)
    warrant_id: str | None = None
    expires: int | None = None
    lease_ttl_ms: int | None = None
    log_index: int | None = None
    approval: Approval | None = None
    decision: dict[str, Any] | None = None
    obligations: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def denied(cls, reason: str) -> Authorization:
        """A denial the governor did not decide (it refused the request, could not be
        reached, or answered something else than an authorization)."""
        return cls(allowed=False, reason=reason)

    @classmethod
    def from_json(cls, answer: Any) -> Authorization:
        """Read the governor's answer; anything unexpected is a denial saying what was found."""
        if not isinstance(answer, dict) or not isinstance(answer.get("decision"), dict):
            return cls.denied(f"expected an authorization answer with a decision, found {answer!r:.120}")
        decision: dict[str, Any] = answer["decision"]
        policies = decision.get("policies")
        obligations = decision.get("obligations")
        warrant = answer.get("warrant")
        token = warrant.get("token") if isinstance(warrant, dict) else None
        allowed = answer.get("allow") is True and decision.get("allow") is True and type(token) is str
        return cls(
            allowed=allowed,
            reason=_str(decision, "reason"),
            policies=tuple(p for p in policies if type(p) is str) if isinstance(policies, list) else (),
            warrant=token if allowed else None,
            warrant_id=_str(warrant, "id") or None,
            expires=_int(warrant, "expires"),
            lease_ttl_ms=_int(warrant, "lease_ttl_ms"),
            log_index=_int(answer, "log_index"),
            approval=Approval.from_json(answer.get("approval")),
            decision=decision,
            obligations=dict(obligations) if isinstance(obligations, dict) else {},
        )

    def denial(self, tool: str) -> DeniedError:
        """The :class:`~proctor.errors.DeniedError` that says why this was not allowed."""
        by = f" (policies: {', '.join(self.policies)})" if self.policies else ""
        return DeniedError(
            f"{tool}: denied: {self.reason or 'no reason given'}{by}",
            reason=self.reason,
            policies=self.policies,
            tool=tool,
            decision=self.decision,
        )


@dataclass(frozen=True)
class Lease:
    """A started execution and its lease (the verified start answer).

    Attributes:
        execution: the execution's id.
        warrant: the warrant token it started on.
        warrant_id: that warrant's id.
        lease_ttl_ms: the warrant's lease TTL (its claim, as the signed answer granted).
        lease_expires_ms: when the lease ends unless renewed (governor's clock, ms).
        log_index: the index of ``execution.started``.
    """

    execution: str
    warrant: str = field(repr=False)
    warrant_id: str
    lease_ttl_ms: int
    lease_expires_ms: int
    log_index: int | None = None


@dataclass(frozen=True)
class Renewal:
    """The answer to one lease renewal.

    Attributes:
        ok: the lease was renewed (a signed answer); ``False``: the execution must end.
        terminate: why it must end (``revoked``, ``lease-lost`` …), ``""`` when ok.
        lease_expires_ms: the new end of the lease (0 on a refusal).
    """

    ok: bool
    terminate: str = ""
    lease_expires_ms: int = 0


@dataclass(frozen=True)
class Finished:
    """The governor's record of an execution's end.

    Attributes:
        execution: the execution's id.
        status: ``completed``, ``terminated`` or ``failed`` as recorded (a call that
            ended after governance had terminated it is recorded ``terminated``).
        log_index: the index of the end event.
    """

    execution: str
    status: str
    log_index: int | None = None

    @classmethod
    def from_json(cls, answer: Any, execution: str) -> Finished:
        """Read ``{"execution", "log_index", "status"}``."""
        return cls(execution, _str(answer, "status") or "unknown", _int(answer, "log_index"))
