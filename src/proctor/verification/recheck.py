"""The re-check of a running execution at each lease renewal.

Each renewal re-verifies everything that let the execution start. The steps, in this
order — the first that fails decides, and its reason is the one the enforcer kills the
tree with and the log records (``execution.terminated``):

1. the execution itself is not revoked (``revoked``);
2. the warrant it presented at start still verifies (``revoked`` if not); none of its
   ids is revoked — the warrant, its ancestors, its principal since issue
   (:mod:`~proctor.verification.revocation`), and each block of the presented copy (an
   attenuated copy can be revoked alone) (``revoked``); and its effective expiry,
   attenuated ones included, has not passed (``expired``);
3. its principal is still active (``revoked``);
4. the lease did not lapse before this renewal (``lease-lost``; the enforcer must
   already have killed it) (:func:`~proctor.verification.lease.lease_lapsed`);
5. the enforcer's own integrity check of the measured files passed (``integrity``);
6. the policy still allows it: no valid bundle denies (``policy``); a bundle other than
   the one that last allowed it re-evaluates the logged request (``policy`` if denied).
   A re-evaluation is reported in the :class:`Verdict` either way, so that the
   governor records ``execution.verified``.

Pure: :func:`recheck` does no I/O and reads no clock. The caller passes ``now``, an
:class:`ExecutionRecord` of what the check needs from the execution's row, and a
:class:`TrustView`: a read-only view of its state (revocations, principals, the active
policy) at this moment. The caller does the I/O the verdict asks for: recording the
re-evaluation, marking the execution terminating, extending the lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from proctor.errors import VerificationError, WarrantError
from proctor.verification.lease import lease_lapsed, millis

if TYPE_CHECKING:
    from proctor.authorization.warrants import VerifiedWarrant

__all__ = [
    "RECHECK_REASONS",
    "ExecutionRecord",
    "PolicyAnswer",
    "Reevaluation",
    "RenewalReport",
    "TrustView",
    "Verdict",
    "recheck",
]

RECHECK_REASONS = ("revoked", "expired", "policy", "integrity", "lease-lost")
"""The reasons a re-check can give to terminate (a subset of the log's termination reasons)."""

_MAX_DETAIL = 1000


@dataclass(frozen=True)
class ExecutionRecord:
    """What the re-check needs from a running execution's row.

    Attributes:
        execution_id: the execution's id (``ex_…``).
        principal: the principal it runs for.
        warrant_id: the warrant it started under.
        bundle: the digest of the policy bundle that last allowed it.
        request: the full policy request (arguments included) as JSON, for a
            re-evaluation under a new bundle.
        lease_expires_ms: the end of its current lease, unix milliseconds.

    Raises:
        VerificationError: a field is not of its type (a malformed row).
    """

    execution_id: str
    principal: str
    warrant_id: str
    bundle: str
    request: str
    lease_expires_ms: int

    def __post_init__(self) -> None:
        for name in ("execution_id", "principal", "warrant_id", "bundle", "request"):
            value = getattr(self, name)
            if type(value) is not str:
                raise VerificationError(
                    f"execution record {name}: expected str, found {type(value).__name__}"
                )
        found = type(self.lease_expires_ms).__name__
        if type(self.lease_expires_ms) is not int:
            raise VerificationError(f"execution record lease_expires_ms: expected int, found {found}")


@dataclass(frozen=True)
class RenewalReport:
    """What the enforcer reports with a renewal: its re-hash of the measured files.

    Attributes:
        violated: whether the enforcer found the measured files changed.
        detail: its words on what changed (at most 1000 characters).
    """

    violated: bool = False
    detail: str = ""

    @classmethod
    def from_json(cls, body: Any) -> RenewalReport:
        """The report in a renewal's body.

        ``integrity`` absent, ``null`` or ``"ok"`` is no violation; anything else is
        one, described by ``integrity_detail``. A body that is not an object carries no
        report.

        Args:
            body: the renewal's JSON body.

        Returns:
            The report.
        """
        if not isinstance(body, Mapping) or body.get("integrity") in (None, "ok"):
            return cls()
        return cls(True, str(body.get("integrity_detail", "integrity violated"))[:_MAX_DETAIL])


class PolicyAnswer(Protocol):
    """What the re-check reads of a policy decision (:class:`proctor.policy.Decision` is one)."""

    @property
    def allow(self) -> bool:
        """Whether the policy allowed the request."""
        ...

    @property
    def reason(self) -> str:
        """One sentence saying why."""
        ...


class TrustView(Protocol):
    """A read-only view of the trust state for the re-check of one execution.

    Every method may read state; none may change it. Exceptions other than the
    :class:`~proctor.errors.WarrantError` of :meth:`presented_warrant` propagate out of
    :func:`recheck`: the renewal fails and the lease is not extended (fail closed).
    """

    def is_revoked(self, kind: str, target: str) -> bool:
        """Whether ``(kind, target)`` is revoked (``"execution"``, ``"warrant"``, ...)."""
        ...

    def warrant_revoked(self, warrant_id: str) -> bool:
        """Whether the warrant is revoked through its chain: itself, an ancestor, or its
        principal since issue (:func:`~proctor.verification.revocation.find_revoked`)."""
        ...

    def principal_active(self, name: str) -> bool:
        """Whether the principal exists and is active."""
        ...

    def presented_warrant(self) -> VerifiedWarrant:
        """The warrant the execution's enforcer presented at start, verified.

        Raises:
            WarrantError: it no longer verifies.
        """
        ...

    def active_bundle(self) -> str | None:
        """The digest of the active policy bundle; ``None`` if no valid bundle is active."""
        ...

    def decide(self, request: str, now: int) -> PolicyAnswer:
        """The decision of the bundle :meth:`active_bundle` named on a logged request.

        Args:
            request: the request as JSON (:attr:`ExecutionRecord.request`).
            now: unix seconds.
        """
        ...


@dataclass(frozen=True)
class Reevaluation:
    """A re-evaluation of the execution's request under a new bundle (step 6).

    Attributes:
        bundle: the digest of the bundle that decided.
        allowed: its answer.
        reason: its reason.
    """

    bundle: str
    allowed: bool
    reason: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`recheck`.

    Attributes:
        terminate: the reason to terminate with (one of :data:`RECHECK_REASONS`), or
            ``None`` to keep the execution running.
        detail: why, in one sentence (``""`` when it keeps running).
        reevaluation: the re-evaluation under a new bundle if one happened (the caller
            records ``execution.verified``), else ``None``.

    Raises:
        VerificationError: the fields contradict each other.
    """

    terminate: str | None = None
    detail: str = ""
    reevaluation: Reevaluation | None = None

    def __post_init__(self) -> None:
        if self.terminate is not None and self.terminate not in RECHECK_REASONS:
            raise VerificationError(
                f"verdict: expected a reason in {RECHECK_REASONS}, found {self.terminate!r}"
            )
        denied = self.reevaluation is not None and not self.reevaluation.allowed
        if denied and self.terminate != "policy":
            raise VerificationError(
                f"verdict: a denied re-evaluation must terminate for policy, found {self.terminate!r}"
            )

    @property
    def ok(self) -> bool:
        """Whether the execution may keep running (the lease is extended)."""
        return self.terminate is None


def recheck(record: ExecutionRecord, view: TrustView, now: float, report: RenewalReport) -> Verdict:
    """Re-verify a running execution (the numbered steps of the module docstring).

    Args:
        record: the execution.
        view: the trust state now.
        now: unix time, in seconds.
        report: what the enforcer reported with this renewal.

    Returns:
        The verdict: keep running, or the first failed step's reason and detail.
    """
    # 1. The execution itself is not revoked.
    if view.is_revoked("execution", record.execution_id):
        return Verdict("revoked", "the execution was revoked")
    # 2. The warrant it presented: re-read (it verified at start), then none of its ids
    #    is revoked, and no expiry, attenuated ones included, has passed.
    try:
        presented = view.presented_warrant()
    except WarrantError as e:
        return Verdict("revoked", f"the presented warrant no longer verifies: {e}")
    if view.warrant_revoked(record.warrant_id) or any(
        view.is_revoked("warrant", rid) for rid in presented.revocation_ids
    ):
        return Verdict("revoked", "its warrant (a copy, an ancestor, or its principal) was revoked")
    if presented.expires <= int(now):
        return Verdict("expired", f"the warrant expired at {presented.expires}")
    # 3. The principal is still active.
    if not view.principal_active(record.principal):
        return Verdict("revoked", f"principal {record.principal!r} is not active")
    # 4. The lease did not lapse (the enforcer must already have killed it then).
    if lease_lapsed(record.lease_expires_ms, millis(now)):
        return Verdict("lease-lost", "the lease expired before this renewal")
    # 5. The enforcer's own integrity check.
    if report.violated:
        return Verdict("integrity", report.detail)
    # 6. The policy: no valid bundle denies; a new bundle re-evaluates the request.
    bundle = view.active_bundle()
    if bundle is None:
        return Verdict("policy", "no valid policy bundle is active")
    if bundle == record.bundle:
        return Verdict()
    answer = view.decide(record.request, int(now))
    reevaluation = Reevaluation(bundle, bool(answer.allow), str(answer.reason))
    if not reevaluation.allowed:
        return Verdict("policy", f"re-evaluated under {bundle}: {answer.reason}", reevaluation)
    return Verdict(reevaluation=reevaluation)
