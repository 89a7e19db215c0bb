"""The authorization flow of the governor (``docs/architecture.md``, "One ``proctor
run``, from measurement to receipt", step 2, "Authorize"): :class:`Authorizer`, built by
:class:`~proctor.governor.service.Governor` with the collaborators it reads and writes
through (a :class:`~proctor.governor.trust.TrustView`, a
:class:`~proctor.governor.recorder.Recorder`, a
:class:`~proctor.governor.issuance.WarrantIssuer`, the execution registry, the rate
counters and the nonce cache).

1. The caller is authenticated before this module is reached (signed request, HTTP
   layer) or is the local admin.
2. The principal must exist, be active and not revoked; a parent warrant, if given,
   must verify, be unrevoked, and cover the new request (delegation only narrows).
3. The active policy engine decides; no valid bundle means deny; a state that
   disagrees with the log means deny. Any exception is a deny that records the error.
4. The ``decision`` event is queued for the log, which assigns its index at once.
5. On allow, the warrant is minted for that index (on the calling thread, or, under
   ``proctor serve`` while the log is busy, in the minting helper process) and its
   ``warrant.issued`` event and row are queued right behind the decision: one commit,
   so nothing is authorized unrecorded. If the commit fails, the answer is deny; if
   minting fails, the decision is recorded with ``warrant.failed`` behind it (its
   reason says what failed: the minting, or the helper) and the answer is deny.
6. Call obligations, between the decision and its event (:meth:`Authorizer._gate`): an
   allow over one of its call limits (:mod:`proctor.governor.call_limits`) is a deny;
   an allow that requires approval mints nothing and records the approval asked for
   (``approval.requested``) behind the decision, unless the request names an approved
   approval for exactly it, which is claimed and then marked used in the warrant's
   commit (:mod:`proctor.governor.approvals`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from proctor.authorization.warrants import (
    VerifiedWarrant,
    WarrantRequest,
    args_digest,
    verify_warrant_bounds,
)
from proctor.config import QuotaConfig
from proctor.errors import EventError, LineageError, LogAppendError, ProctorError, StoreError, WarrantError
from proctor.governor._events import digest, rfc3339
from proctor.governor._fair import PerPrincipal
from proctor.governor._wake import Waker
from proctor.governor.approvals import Approvals, requires_approval
from proctor.governor.call_limits import CallHold, CallLimits
from proctor.governor.counters import RateCounters
from proctor.governor.issuance import DEFAULT_LEASE_TTL_MS, Authorization, WarrantIssuer
from proctor.governor.model import AuthorizeRequest, AuthorizeResult
from proctor.governor.nonces import NonceCache
from proctor.governor.quotas import running_refusal
from proctor.governor.recorder import Recorder
from proctor.governor.registry import ExecutionRegistry
from proctor.governor.trust import TrustView
from proctor.lineage.log import Deferred, Notify, Side
from proctor.policy import Decision, PolicyRequest, deny_all
from proctor.policy.commitment import ArgumentOpening, redact
from proctor.store.state import StateStore
from proctor.store.state_approvals import StoredApproval

__all__ = ["DEFAULT_LEASE_TTL_MS", "DELEGATIONS_PER_PRINCIPAL", "Authorizer", "Gate"]

DELEGATIONS_PER_PRINCIPAL = 2
"""Delegated authorizations (a parent warrant to verify) one principal may have in
verification at once; more wait for their turn, off the event loop."""


@dataclasses.dataclass(frozen=True)
class Gate:
    """What the call obligations made of a decision (:meth:`Authorizer._gate`)."""

    decision: Decision
    hold: CallHold | None = None
    """The call counted against call limits until its warrant commits (or not)."""
    asked: StoredApproval | None = None
    """An approval to ask for (no warrant)."""
    claimed: StoredApproval | None = None
    """The approved approval this warrant uses (claimed; marked used in its commit)."""


class Authorizer:
    """Decides, records and issues warrants for one governor."""

    def __init__(
        self,
        *,
        trust: TrustView,
        recorder: Recorder,
        issuer: WarrantIssuer,
        registry: ExecutionRegistry,
        counters: RateCounters,
        nonces: NonceCache,
        state: StateStore,
        quotas: QuotaConfig,
        node: str,
        clock: Callable[[], float],
        warrant_public_key: bytes,
    ) -> None:
        """Args:
        trust: principals, revocations and the active engine, as they stand.
        recorder: appends the decision with its warrant, nonces and opening.
        issuer: builds and mints the warrant of an allowed decision.
        registry: the running executions (concurrency and start counts, quotas).
        counters: warrants issued per principal (rate and budget counters).
        nonces: the replay cache, persisted with each decision's commit.
        state: where a decision's argument opening is written (its commit).
        quotas: the operator's limits (``max_running``).
        node: the governor's node name, in every event.
        clock: the governor's clock (seconds).
        warrant_public_key: the warrant root's public key (verifies parent warrants).
        """
        self._trust = trust
        self._recorder = recorder
        self._issuer = issuer
        self._registry = registry
        self._counters = counters
        self._nonces = nonces
        self._state = state
        self._quotas = quotas
        self._node = node
        self._clock = clock
        self._warrant_public_key = warrant_public_key
        self._delegations = PerPrincipal(DELEGATIONS_PER_PRINCIPAL)
        self.approvals = Approvals(state, recorder=recorder, node=node, clock=clock)
        """The approvals asked for, decided and used (routes ``/v1/approvals``)."""
        self.calls = CallLimits(state)

    def authorize(self, principal: str, request: AuthorizeRequest) -> AuthorizeResult:
        """Decide on ``request`` by ``principal``; log it; issue a warrant on allow.

        Blocks until the decision (and warrant) are durable. Never raises for a policy,
        state or log failure: those are denies.
        """
        op = self._begin(principal, request, None)
        if isinstance(op, AuthorizeResult):
            return op
        op.pending.wait_quietly()
        return self._finish(op)

    async def authorize_async(self, principal: str, request: AuthorizeRequest) -> AuthorizeResult:
        """:meth:`authorize` for an event loop: decides and mints on the loop's thread
        and awaits the group commit without holding a thread (the log writer wakes the
        loop). The writer thread then only commits, which mostly runs without the GIL."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        notify = self._recorder.waker(loop).notifier(done)
        if request.parent_warrant or request.approval:
            # Verifying a presented warrant is the one costly step a caller controls:
            # never on the event loop, and at most a few at once per principal, so a
            # principal that sends many waits behind itself, not others. (Using an
            # approval claims it in the store: off the loop too.)
            async with self._delegations.slot(principal):
                op = await loop.run_in_executor(None, self._begin, principal, request, notify)
        else:
            op = self._begin(principal, request, notify)
        if isinstance(op, AuthorizeResult):
            return op
        await done
        return self._finish(op)

    def queue(
        self, principal: str, request: AuthorizeRequest, notify: Notify
    ) -> Authorization | AuthorizeResult:
        """Steps 2-5 on this thread, without waiting for the commit (``notify`` is told
        when it is resolved; then :meth:`settle` answers): the queued authorization, or
        the result when nothing was queued. For a request without a parent warrant or
        an approval (those are verified off the event loop by :meth:`authorize_async`).
        A warrant minted here announces a follower (``Log.submit(followed=True)``): the
        caller queues it or calls ``op.pending.followed()`` before it waits."""
        return self._begin(principal, request, notify, followed=True)

    def waker(self, loop: asyncio.AbstractEventLoop) -> Waker:
        """The waker whose notifiers settle futures of ``loop`` (:meth:`queue`'s ``notify``)."""
        return self._recorder.waker(loop)

    def settle(self, op: Authorization) -> AuthorizeResult:
        r"""The answer to a :meth:`queue`\ d authorization once its commit is resolved."""
        return self._finish(op)

    def _begin(
        self, principal: str, request: AuthorizeRequest, notify: Notify | None, *, followed: bool = False
    ) -> Authorization | AuthorizeResult:
        """Steps 2-5: decide; queue the decision event and, on allow, the warrant minted
        for the decision's index (assigned when queued) with its ``warrant.issued`` event,
        its row and the nonces seen so far: one commit, all or nothing."""
        now = self._clock()
        now_s = int(now)
        try:
            policy_request, decision, parent = self._decide(principal, request, now_s)
            gate = self._gate(principal, request, policy_request, decision, now_s)
        except Exception as e:  # noqa: BLE001 - any failure while deciding is a deny (fail closed)
            policy_request, parent = None, None
            decision = deny_all(f"the decision failed ({type(e).__name__}: {e}); denied")
            gate = Gate(decision)
        decision = gate.decision
        # The log is public: it gets the request with its arguments committed, not shown
        # (proctor.policy.commitment); the opening commits privately with the event.
        opening = (
            ArgumentOpening.new(policy_request.argv, policy_request.arguments) if policy_request else None
        )
        event = self.decision_event(
            principal,
            policy_request,
            decision,
            now=now,
            now_s=now_s,
            parent_id=parent.claims.warrant_id if parent is not None else "",
            opening=opening,
        )
        # The answer names the same request digest as the log.
        decision = dataclasses.replace(decision, request_digest=str(event["request_digest"]))
        op = Authorization(principal, request, policy_request, decision, parent, now, now_s)
        op.gate, op.opening = gate, opening
        if gate.claimed is not None:
            op.approval_id = gate.claimed.id
            op.with_warrant.append(Approvals.used(gate.claimed.id))
        if gate.hold is not None:
            op.with_warrant.append(CallLimits.counted(gate.hold, now_s))
        side: list[Side] = [self._nonces.persist]
        if opening is not None:
            side.append(self._state.opening_writer(opening.to_json()))
        asked = None
        if gate.asked is not None:
            asked, ask_row = self.approvals.requested(gate.asked, now)
            side.append(ask_row)

        def warrant(index: int, leaf: bytes) -> dict[str, Any]:
            # A failure here (minting) is recorded as warrant.failed behind the
            # decision, in the same commit: the log says what the answer says, deny.
            try:
                issued, row = self._issuer.mint_here(op, index, leaf)
            except Exception as e:  # noqa: BLE001 - any minting failure is a recorded deny
                op.claims, op.token, op.mint_error = None, "", e
                return self._issuer.failed_event(op, index, leaf, f"the warrant could not be minted ({e})")
            side.append(row)
            return issued

        def later(index: int, leaf: bytes, deferred: Deferred) -> dict[str, Any]:
            return self._issuer.mint_later(op, index, leaf, deferred)

        mint = decision.allow and asked is None
        # The helper keeps minting off this thread when the log is busy (throughput);
        # otherwise the hand-off and the helper's answer cost more than minting here
        # (a lone caller waits for them: latency). A helper that is not running is
        # started in the background meanwhile (WarrantIssuer.helper_ready).
        helper = mint and self._recorder.busy and self._issuer.helper_ready()
        try:
            op.pending = self._recorder.submit(
                [event],
                then=asked if asked is not None else warrant if mint and not helper else None,
                later=later if helper else None,
                side=side,
                notify=notify,
                followed=followed and mint and not helper,
            )
        except (LineageError, EventError, StoreError) as e:
            return self._unrecorded(op, e)
        return op

    def _gate(
        self,
        principal: str,
        request: AuthorizeRequest,
        policy_request: PolicyRequest | None,
        decision: Decision,
        now_s: int,
    ) -> Gate:
        """Step 6: the call obligations of an allow. Raises (a deny) only before it
        holds anything."""
        if not decision.allow or policy_request is None:
            return Gate(decision)
        digest = args_digest(request.arguments if request.arguments is not None else request.argv)
        bundle = decision.bundle_digest
        hold = self.calls.check(principal, policy_request, digest, decision, now_s)
        if isinstance(hold, str):
            return Gate(deny_all(hold, bundle_digest=bundle, request=policy_request))
        if not requires_approval(decision):
            return Gate(decision, hold=hold)
        wanted = self.approvals.new(principal, policy_request, decision, digest, now_s)
        if not request.approval:
            self.calls.release(hold)  # nothing is issued until it is approved
            return Gate(decision, asked=wanted)
        try:
            claimed = self.approvals.claim_use(request.approval, wanted, now_s)
        except BaseException:
            self.calls.release(hold)
            raise
        if isinstance(claimed, str):
            self.calls.release(hold)
            return Gate(deny_all(claimed, bundle_digest=bundle, request=policy_request))
        return Gate(decision, hold=hold, claimed=claimed)

    def _settle(self, op: Authorization, *, issued: bool) -> None:
        """After the commit (or its failure): the held call no longer needs holding
        (its row committed, or it was not issued); a claimed approval whose warrant
        was not issued is given back (no warrant uses it)."""
        gate = op.gate
        if not isinstance(gate, Gate):
            return
        self.calls.release(gate.hold)
        if gate.claimed is not None and not issued:
            self.approvals.release(gate.claimed.id, "using")

    def _finish(self, op: Authorization) -> AuthorizeResult:
        decision = op.decision
        try:
            indices = op.pending.result()
        except (LineageError, EventError, StoreError) as e:
            return self._unrecorded(op, e)
        op.decision_index = indices[0]
        if not decision.allow:
            self._settle(op, issued=False)
            return AuthorizeResult(decision, op.decision_index)
        asked = op.gate.asked
        if asked is not None:
            if len(indices) < 2:  # the approval.requested event could not be built: deny
                return self._not_issued(op, op.pending.then_error)
            approval = {
                "id": asked.id,
                "status": "pending",
                "expires_at": asked.expires,
                "args_digest": asked.args_digest,
                "log_index": indices[1],
            }
            return AuthorizeResult(decision, op.decision_index, approval=approval)
        claims = op.claims
        deferred = op.deferred
        if deferred is not None and deferred.used_fallback:
            if isinstance(deferred.error, LogAppendError):
                self._issuer.helper_timed_out()  # the next warrant goes to a fresh helper
            return self._not_issued(op, deferred.error)
        if len(indices) < 2 or claims is None:
            return self._not_issued(op, op.mint_error or op.pending.then_error)
        self._settle(op, issued=True)
        self._counters.issued(op.principal, op.now_s)
        return AuthorizeResult(
            decision,
            op.decision_index,
            warrant=op.token,
            warrant_id=claims.warrant_id,
            warrant_index=indices[1],
            expires=claims.expires,
            lease_ttl_ms=claims.lease_ttl_ms,
            zone=claims.zone,
        )

    def _not_issued(self, op: Authorization, error: BaseException | None) -> AuthorizeResult:
        self._settle(op, issued=False)
        return AuthorizeResult(
            deny_all(
                f"the warrant could not be issued and recorded ({error}); denied",
                bundle_digest=op.decision.bundle_digest,
            ),
            op.decision_index,
        )

    def _unrecorded(self, op: Authorization, error: BaseException) -> AuthorizeResult:
        self._settle(op, issued=False)
        return AuthorizeResult(
            deny_all(
                f"the decision could not be recorded ({error}); nothing is authorized unrecorded",
                bundle_digest=op.decision.bundle_digest,
                request=op.policy_request,
            ),
            None,
        )

    def _decide(
        self, principal: str, request: AuthorizeRequest, now_s: int
    ) -> tuple[PolicyRequest | None, Decision, VerifiedWarrant | None]:
        trust = self._trust
        if trust.state_problem is not None:
            # Raising here is a deny that the decision event records (_begin).
            raise StoreError(
                "the governance state disagrees with the log (see /readyz or proctor log verify); "
                "nothing is authorized until it is repaired"
            )
        record = trust.principal(principal)
        engine = trust.engine
        bundle = engine.bundle_digest if engine is not None else ""
        if record is None:
            return None, deny_all(f"unknown principal {principal!r}", bundle_digest=bundle), None
        # Stateful constraints policies can reference (context.counters): warrants
        # issued in the last minute and hour, and today (UTC) as the daily budget.
        # Concurrency counts the principal's running executions, starts_1m its starts
        # in the last 60 s (one reading of the registry, which enforces the quotas).
        usage = self._registry.usage(principal, now_s)
        counters = {
            **self._counters.counts(principal, now_s),
            "concurrency": usage.running,
            "starts_1m": usage.starts_1m,
        }
        attrs = dict(record.attrs)
        attrs.setdefault("role", "")
        attrs["zone"] = record.zone
        try:
            policy_request = PolicyRequest(
                principal=principal,
                principal_attrs=attrs,
                action=request.action,
                resource=request.resource,
                argv=request.argv,
                arguments=request.arguments,
                zone=request.zone or record.zone,
                executable_digest=request.executable_digest,
                parent_warrant="",
                counters=counters,
            )
        except (ProctorError, ValueError, TypeError) as e:
            return None, deny_all(f"malformed request: {e}", bundle_digest=bundle), None
        if record.status != "active":
            reason = f"principal {principal!r} is {record.status}"
            return policy_request, deny_all(reason, bundle_digest=bundle, request=policy_request), None
        if request.action == "exec" and not request.executable_digest:
            # An exec warrant that binds no executable would start whatever its holder
            # measures: none is issued.
            reason = "an exec request must bind the measured executable (executable_digest); denied"
            return policy_request, deny_all(reason, bundle_digest=bundle, request=policy_request), None
        # At max_running no warrant is issued that could not start now (quotas).
        refusal = running_refusal(self._quotas.limits(principal), principal, usage.running + usage.starting)
        if refusal is not None:
            return policy_request, deny_all(refusal, bundle_digest=bundle, request=policy_request), None
        parent = None
        if request.parent_warrant:
            try:
                parent = self._verify_parent(request, policy_request, now_s)
            except WarrantError as e:
                reason = f"parent warrant rejected ({e.reason}): {e}"
                return policy_request, deny_all(reason, bundle_digest=bundle, request=policy_request), None
            policy_request = dataclasses.replace(policy_request, parent_warrant=parent.claims.warrant_id)
        if engine is None:
            reason = f"no valid policy bundle is active ({trust.bundle_error}); everything is denied"
            return policy_request, deny_all(reason, request=policy_request), parent
        return policy_request, engine.decide(policy_request, now=now_s), parent

    def _verify_parent(
        self, request: AuthorizeRequest, policy_request: PolicyRequest, now_s: int
    ) -> VerifiedWarrant:
        wanted = WarrantRequest(
            action=request.action,
            resource=request.resource,
            args_digest=args_digest(request.arguments if request.arguments is not None else request.argv),
            zone=policy_request.zone,
            executable_digest=request.executable_digest,
        )
        return verify_warrant_bounds(
            request.parent_warrant,
            root_public_key=self._warrant_public_key,
            now=now_s,
            request=wanted,
            revoked=self._trust.warrant_revoked,
        )

    def decision_event(
        self,
        principal: str,
        policy_request: PolicyRequest | None,
        decision: Decision,
        *,
        now: float,
        now_s: int,
        parent_id: str,
        opening: ArgumentOpening | None,
    ) -> dict[str, Any]:
        """The ``decision`` event of ``decision``: the request with its arguments
        committed by ``opening``, not shown, and its digest."""
        logged = None
        if policy_request is not None and opening is not None:
            logged = redact(policy_request.to_json(), opening)
        event: dict[str, Any] = {
            "v": 1,
            "type": "decision",
            "time": rfc3339(now),
            "node": self._node,
            "principal": principal,
            "now": now_s,
            "decision": "allow" if decision.allow else "deny",
            "policies": list(decision.policies),
            "errors": list(decision.errors),
            "obligations": dict(decision.obligations),
            "bundle": decision.bundle_digest,
            # orjson with sorted keys is RFC 8785 on the canonical subset (ADR 0001); the
            # event that carries ``logged`` is checked against that subset when it is
            # appended, so a request outside it is never recorded (deny), and the
            # unchecked serialisation here saves a second full check on the hot path.
            "request_digest": digest(orjson.dumps(logged, option=orjson.OPT_SORT_KEYS))
            if logged is not None
            else decision.request_digest,
            "reason": decision.reason,
        }
        if logged is not None:
            event["request"] = logged
        if parent_id:
            event["parent_warrant"] = parent_id
        return event
