"""The authorization flow of the governor (``docs/architecture.md``, "One ``proctor
run``, from measurement to receipt", step 2, "Authorize"), mixed into
:class:`~proctor.governor.service.Governor`.

1. The caller is authenticated before this module is reached (signed request, HTTP
   layer) or is the local admin.
2. The principal must exist, be active and not revoked; a parent warrant, if given,
   must verify, be unrevoked, and cover the new request (delegation only narrows).
3. The active policy engine decides; no valid bundle means deny. Any exception is a
   deny that records the error.
4. The ``decision`` event is queued for the log, which assigns its index at once.
5. On allow, the warrant is minted for that index (on the calling thread, or in the
   minting helper process under ``proctor serve``) and its ``warrant.issued`` event and
   row are queued right behind the decision: one commit, so nothing is authorized
   unrecorded. If the commit fails, the answer is deny; if minting fails, the decision
   is recorded alone (with ``warrant.failed`` from the helper) and the answer is deny.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Iterator
from typing import Any

import orjson

from proctor.authorization.minter import MintHelper
from proctor.authorization.requests import MAX_FUTURE_SKEW
from proctor.authorization.warrants import (
    VerifiedWarrant,
    WarrantClaims,
    WarrantRequest,
    args_digest,
    mint_warrant,
    new_warrant_id,
    verify_warrant_bounds,
)
from proctor.config import QuotaConfig
from proctor.errors import EventError, LineageError, LogAppendError, ProctorError, StoreError, WarrantError
from proctor.governor._events import digest, rfc3339
from proctor.governor._fair import PerPrincipal
from proctor.governor.admin import GovernorAdmin
from proctor.governor.counters import RateCounters
from proctor.governor.model import AuthorizeRequest, AuthorizeResult
from proctor.governor.nonces import NonceCache
from proctor.governor.quotas import running_refusal
from proctor.lineage.log import Append, Deferred, Notify, Side
from proctor.policy import Decision, PolicyRequest, deny_all
from proctor.policy.commitment import ArgumentOpening, redact
from proctor.verification.revocation import ChainLink, find_revoked

__all__ = ["DEFAULT_LEASE_TTL_MS", "GovernorAuthorize"]

DEFAULT_LEASE_TTL_MS = 5000
VALIDITY_SKEW_S = MAX_FUTURE_SKEW
"""How far a warrant's validity starts before its decision: an enforcer whose clock is
behind the governor's by as much as a signed request may be ahead must not find the
warrant it was just given not yet valid."""

# Obligations a delegated warrant inherits from its parent: the stricter value wins.
_LOWEST = ("max_duration_s", "memory_limit_mb", "max_output_bytes", "lease_ttl_s", "max_pids")
_ANY_TRUE = ("no_network", "approval_required")


@dataclasses.dataclass(eq=False)
class _Authorization:
    """One authorization between its decision and its commit."""

    principal: str
    request: AuthorizeRequest
    policy_request: PolicyRequest | None
    decision: Decision
    parent: VerifiedWarrant | None
    now: float
    now_s: int
    pending: Append = dataclasses.field(init=False)

    @property
    def parent_id(self) -> str:
        """The parent warrant's id, ``""`` for none."""
        return self.parent.claims.warrant_id if self.parent is not None else ""

    decision_index: int | None = None
    deferred: Deferred | None = None
    claims: WarrantClaims | None = None
    token: str = ""
    mint_error: BaseException | None = None


class GovernorAuthorize(GovernorAdmin):
    """Authorization, mixed into :class:`~proctor.governor.service.Governor`."""

    counters: RateCounters
    quotas: QuotaConfig
    nonces: NonceCache
    _delegations: PerPrincipal
    minter: MintHelper | None
    warrant_public_key: bytes
    _warrant_key_bytes: bytes
    _warrant_ttl_s: int

    # -- authorization ---------------------------------------------------------

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
        notify = self._waker(loop).notifier(done)
        if request.parent_warrant:
            # Verifying a presented warrant is the one costly step a caller controls:
            # never on the event loop, and at most a few at once per principal, so a
            # principal that sends many waits behind itself, not others.
            async with self._delegations.slot(principal):
                op = await loop.run_in_executor(None, self._begin, principal, request, notify)
        else:
            op = self._begin(principal, request, notify)
        if isinstance(op, AuthorizeResult):
            return op
        await done
        return self._finish(op)

    def _begin(
        self, principal: str, request: AuthorizeRequest, notify: Notify | None
    ) -> _Authorization | AuthorizeResult:
        """Steps 2-5: decide; queue the decision event and, on allow, the warrant minted
        for the decision's index (assigned when queued) with its ``warrant.issued`` event,
        its row and the nonces seen so far: one commit, all or nothing."""
        now = self.now()
        now_s = int(now)
        try:
            policy_request, decision, parent = self._decide(principal, request, now_s)
        except Exception as e:  # noqa: BLE001 - any failure while deciding is a deny (fail closed)
            policy_request, parent = None, None
            decision = deny_all(f"the decision failed ({type(e).__name__}: {e}); denied")
        # The log is public: it gets the request with its arguments committed, not shown
        # (proctor.policy.commitment); the opening commits privately with the event.
        opening = (
            ArgumentOpening.new(policy_request.argv, policy_request.arguments) if policy_request else None
        )
        event = self._decision_event(
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
        op = _Authorization(principal, request, policy_request, decision, parent, now, now_s)
        side: list[Side] = [self.nonces.persist]
        if opening is not None:
            side.append(self.state.opening_writer(opening.to_json()))

        def warrant(index: int, leaf: bytes) -> dict[str, Any]:
            # A failure here (minting) is recorded as warrant.failed behind the
            # decision, in the same commit: the log says what the answer says, deny.
            try:
                issued, row = self._warrant_event(op, index, leaf)
            except Exception as e:  # noqa: BLE001 - any minting failure is a recorded deny
                op.claims, op.token, op.mint_error = None, "", e
                return self._failed_event(op, index, leaf, f"the warrant could not be minted ({e})")
            side.append(row)
            return issued

        def later(index: int, leaf: bytes, deferred: Deferred) -> dict[str, Any]:
            return self._mint_later(op, index, leaf, deferred)

        helper = decision.allow and self.minter is not None
        try:
            op.pending = self.log.submit(
                [event],
                then=warrant if decision.allow and not helper else None,
                later=later if helper else None,
                side=side,
                notify=notify,
            )
        except (LineageError, EventError, StoreError) as e:
            return self._unrecorded(op, e)
        return op

    def _finish(self, op: _Authorization) -> AuthorizeResult:
        decision = op.decision
        try:
            indices = op.pending.result()
        except (LineageError, EventError, StoreError) as e:
            return self._unrecorded(op, e)
        op.decision_index = indices[0]
        if not decision.allow:
            return AuthorizeResult(decision, op.decision_index)
        claims = op.claims
        deferred = op.deferred
        if deferred is not None and deferred.used_fallback:
            if isinstance(deferred.error, LogAppendError) and self.minter is not None:
                self.minter.restart()  # it did not answer in time: the next one starts fresh
            return self._not_issued(op, deferred.error)
        if len(indices) < 2 or claims is None:
            return self._not_issued(op, op.mint_error or op.pending.then_error)
        self.counters.issued(op.principal, op.now_s)
        return AuthorizeResult(
            decision,
            op.decision_index,
            warrant=op.token,
            warrant_id=claims.warrant_id,
            warrant_index=indices[1],
            expires=claims.expires,
            lease_ttl_ms=claims.lease_ttl_ms,
        )

    @staticmethod
    def _not_issued(op: _Authorization, error: BaseException | None) -> AuthorizeResult:
        return AuthorizeResult(
            deny_all(
                f"the warrant could not be issued and recorded ({error}); denied",
                bundle_digest=op.decision.bundle_digest,
            ),
            op.decision_index,
        )

    @staticmethod
    def _unrecorded(op: _Authorization, error: BaseException) -> AuthorizeResult:
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
        record = self.principal(principal)
        engine = self._engine
        bundle = engine.bundle_digest if engine is not None else ""
        if record is None:
            return None, deny_all(f"unknown principal {principal!r}", bundle_digest=bundle), None
        # Stateful constraints policies can reference (context.counters): warrants
        # issued in the last minute and hour, and today (UTC) as the daily budget.
        # Concurrency counts the principal's running executions, starts_1m its starts
        # in the last 60 s (one reading of the registry, which enforces the quotas).
        usage = self.executions.registry.usage(principal, now_s)
        counters = {
            **self.counters.counts(principal, now_s),
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
        refusal = running_refusal(self.quotas.limits(principal), principal, usage.running + usage.starting)
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
            reason = f"no valid policy bundle is active ({self._bundle_error}); everything is denied"
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
            root_public_key=self.warrant_public_key,
            now=now_s,
            request=wanted,
            revoked=self.warrant_revoked,
        )

    def warrant_revoked(self, warrant_id: str) -> bool:
        """Whether a warrant is revoked: itself, an ancestor, or its principal since issue
        (:func:`proctor.verification.find_revoked` over the state, read link by link)."""
        state = self.state

        def chain() -> Iterator[ChainLink]:
            for wid in state.warrant_chain(warrant_id):
                record = state.warrant(wid)
                yield (
                    ChainLink(wid)
                    if record is None
                    else ChainLink(wid, record["principal"], record["decision_index"])
                )

        found = find_revoked(
            chain(),
            is_revoked=state.is_revoked,
            principal_revoked_index=lambda name: state.revoked_index("principal", name),
        )
        return found is not None

    def _decision_event(
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
        logged = None
        if policy_request is not None and opening is not None:
            logged = redact(policy_request.to_json(), opening)
        event: dict[str, Any] = {
            "v": 1,
            "type": "decision",
            "time": rfc3339(now),
            "node": self.node,
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

    def _claims(self, op: _Authorization, index: int) -> WarrantClaims:
        """What the warrant for the decision at ``index`` binds."""
        request, decision, now_s = op.request, op.decision, op.now_s
        obligations = dict(decision.obligations)
        if op.parent is not None:
            obligations = _inherit(obligations, op.parent.claims.obligations)
        ttl = self._warrant_ttl_s
        max_duration = obligations.get("max_duration_s")
        if type(max_duration) is int and max_duration > 0:
            ttl = min(ttl, max_duration)
        expires = now_s + ttl
        if op.parent is not None:
            # Delegation only narrows: never valid past the parent (attenuations included).
            expires = min(expires, op.parent.expires)
        lease_s = obligations.get("lease_ttl_s")
        lease_ttl_ms = lease_s * 1000 if type(lease_s) is int and lease_s > 0 else DEFAULT_LEASE_TTL_MS
        return WarrantClaims(
            warrant_id=new_warrant_id(),
            principal=op.principal,
            action=request.action,
            resource=request.resource,
            args_digest=args_digest(request.arguments if request.arguments is not None else request.argv),
            zone=op.policy_request.zone if op.policy_request is not None else request.zone,
            executable_digest=request.executable_digest,
            obligations=obligations,
            not_before=max(0, now_s - VALIDITY_SKEW_S),
            expires=expires,
            lease_ttl_ms=lease_ttl_ms,
            decision_index=index,
            parent=op.parent_id,
        )

    def _issued(
        self, op: _Authorization, claims: WarrantClaims, token: str, index: int, leaf: bytes
    ) -> tuple[dict[str, Any], Side]:
        """The ``warrant.issued`` event of a minted warrant, and the write of its row
        (which revocation of ancestors reads), as a side write of the same commit."""
        row = self.state.warrant_writer(
            claims.warrant_id,
            principal=op.principal,
            parent=op.parent_id,
            decision_index=index,
            expires=claims.expires,
            issued=op.now_s,
            token=token,
        )
        event = {
            "v": 1,
            "type": "warrant.issued",
            "time": rfc3339(op.now),
            "node": self.node,
            "warrant": claims.warrant_id,
            "parent_warrant": op.parent_id,
            "principal": op.principal,
            "decision_index": index,
            "expires": claims.expires,
            "lease_ttl_ms": claims.lease_ttl_ms,
            "token_digest": digest(token.encode()),
            "parent": {"index": index, "leaf_hash": base64.b64encode(leaf).decode()},
        }
        # Side writes get the append's first index (the decision's); warrant.issued follows.
        return event, lambda conn, index: row(conn, index=index + 1)

    def _warrant_event(self, op: _Authorization, index: int, leaf: bytes) -> tuple[dict[str, Any], Side]:
        """Mint the warrant for the decision at ``index`` here; its event and row."""
        claims = self._claims(op, index)
        token = mint_warrant(claims, root_private_key=self._warrant_key_bytes)
        op.claims, op.token = claims, token
        return self._issued(op, claims, token, index, leaf)

    def _mint_later(self, op: _Authorization, index: int, leaf: bytes, deferred: Deferred) -> dict[str, Any]:
        """Send the claims to the minting helper; fill the reserved slot with the
        ``warrant.issued`` event when the token comes back. Returns the fallback that
        takes the slot if it does not (``warrant.failed``: the decision stands, denied).

        Raises:
            WarrantError: the helper cannot be reached (then nothing is reserved).
        """
        claims = self._claims(op, index)
        op.deferred = deferred

        def minted(token: str | None, error: BaseException | None) -> None:
            if token is None:
                deferred.fill(None, error=error)
                return
            try:
                event, row = self._issued(op, claims, token, index, leaf)
            except ProctorError as e:
                deferred.fill(None, error=e)
                return
            op.claims, op.token = claims, token
            deferred.fill(event, side=[row])

        try:
            if self.minter is None:  # cannot happen: only called with a helper
                raise WarrantError("no minting helper")
            self.minter.mint(claims, minted)
        except WarrantError as e:
            deferred.fill(None, error=e)  # the fallback takes the slot at once
        return self._failed_event(
            op,
            index,
            leaf,
            "the warrant was not minted (the minting helper failed or did not answer in time)",
        )

    def _failed_event(self, op: _Authorization, index: int, leaf: bytes, reason: str) -> dict[str, Any]:
        """``warrant.failed``: the decision at ``index`` allowed, but no warrant was issued."""
        return {
            "v": 1,
            "type": "warrant.failed",
            "time": rfc3339(op.now),
            "node": self.node,
            "principal": op.principal,
            "decision_index": index,
            "reason": reason[:500],
            "parent": {"index": index, "leaf_hash": base64.b64encode(leaf).decode()},
        }


def _inherit(own: dict[str, Any], parent: Any) -> dict[str, Any]:
    """A child's obligations: its own, made at least as strict as its parent's."""
    merged = dict(own)
    for name in _LOWEST:
        theirs = parent.get(name)
        if type(theirs) is int and theirs > 0:
            mine = merged.get(name)
            merged[name] = theirs if type(mine) is not int or mine <= 0 else min(mine, theirs)
    for name in _ANY_TRUE:
        if parent.get(name) is True:
            merged[name] = True
    return merged
