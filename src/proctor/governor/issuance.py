"""Issuing the warrant of an allowed decision (step 5 of
:mod:`proctor.governor.authorize`): what it binds, minting it here or in the minting
helper, and the event that records the outcome behind the decision.

The warrant is bound to its decision's log index, so it is built only once the
decision is queued and its index assigned. It is recorded by ``warrant.issued`` (with
its state row, which revocation of ancestors reads) or, when it could not be minted,
by ``warrant.failed``: the decision stands, the answer is deny.

Delegation only narrows: a warrant delegated from a parent is never valid past it, and
inherits its obligations, the stricter value winning.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from typing import Any

from proctor.authorization.minted import MintedWarrants
from proctor.authorization.minter import MintHelper
from proctor.authorization.requests import MAX_FUTURE_SKEW
from proctor.authorization.warrants import (
    VerifiedWarrant,
    WarrantClaims,
    args_digest,
    mint_warrant,
    new_warrant_id,
)
from proctor.errors import ProctorError, WarrantError
from proctor.governor._events import digest, rfc3339
from proctor.governor.model import AuthorizeRequest
from proctor.lineage.log import Append, Deferred, Side
from proctor.policy import Decision, PolicyRequest
from proctor.store.state import StateStore

__all__ = ["DEFAULT_LEASE_TTL_MS", "VALIDITY_SKEW_S", "Authorization", "WarrantIssuer", "WarrantWrite"]

WarrantWrite = Callable[[Any, int, str], None]
"""A state write that commits with a warrant: ``write(conn, warrant.issued index, warrant id)``
(an approval marked used, a call counted)."""

DEFAULT_LEASE_TTL_MS = 5000
VALIDITY_SKEW_S = MAX_FUTURE_SKEW
"""How far a warrant's validity starts before its decision: an enforcer whose clock is
behind the governor's by as much as a signed request may be ahead must not find the
warrant it was just given not yet valid."""

# Obligations a delegated warrant inherits from its parent: the stricter value wins.
_LOWEST = ("max_duration_s", "memory_limit_mb", "max_output_bytes", "lease_ttl_s", "max_pids")
_ANY_TRUE = ("no_network", "approval_required")


@dataclasses.dataclass(eq=False)
class Authorization:
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
    gate: Any = None
    """What the call obligations made of the decision (:class:`~proctor.governor.authorize.Gate`)."""
    approval_id: str = ""
    """The approval this warrant uses (named in ``warrant.issued``), or ``""``."""
    with_warrant: list[WarrantWrite] = dataclasses.field(default_factory=list)
    """Writes that commit with the warrant only (not with a ``warrant.failed``)."""
    opening: Any = None
    """The opening of the request's arguments (an ``ArgumentOpening``), or ``None``."""


class WarrantIssuer:
    """Builds, mints and records the warrants of one governor."""

    def __init__(
        self,
        state: StateStore,
        *,
        node: str,
        warrant_key: bytes,
        warrant_ttl_s: int,
        minter: MintHelper | None,
        minted: MintedWarrants | None = None,
    ) -> None:
        """Args:
        state: where the warrant's row is written (a side write of its commit).
        node: the governor's node name, in every event.
        warrant_key: the warrant root's private key (raw Ed25519 bytes).
        warrant_ttl_s: the longest a warrant is valid (obligations may shorten it).
        minter: the minting helper process, or ``None`` to mint on the calling thread.
        minted: told every warrant minted on the calling thread (not the helper's: its
            answers are paired with claims by their order only), which a start then
            verifies by its bytes (:mod:`proctor.authorization.minted`).
        """
        self._state = state
        self._node = node
        self._warrant_key = warrant_key
        self._warrant_ttl_s = warrant_ttl_s
        self._minter = minter
        self._minted = minted

    def helper_ready(self) -> bool:
        """Whether the helper can take a warrant now. One that died while it was not
        used (a quiet log mints on the caller's thread) is started again in the
        background, and the warrant asked for meanwhile is minted here instead of
        waiting, with the commits queued behind it, for a fresh helper's start-up."""
        minter = self._minter
        if minter is None:
            return False
        if minter.ready:
            return True
        minter.start_in_background()
        return False

    def helper_timed_out(self) -> None:
        """The helper did not answer in time: the next warrant goes to a fresh one."""
        if self._minter is not None:
            self._minter.restart()

    def claims(self, op: Authorization, index: int) -> WarrantClaims:
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

    def issued(
        self, op: Authorization, claims: WarrantClaims, token: str, index: int, leaf: bytes
    ) -> tuple[dict[str, Any], Side]:
        """The ``warrant.issued`` event of a minted warrant, and the write of its row
        (which revocation of ancestors reads), as a side write of the same commit."""
        row = self._state.warrant_writer(
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
            "node": self._node,
            "warrant": claims.warrant_id,
            "parent_warrant": op.parent_id,
            "principal": op.principal,
            "decision_index": index,
            "expires": claims.expires,
            "lease_ttl_ms": claims.lease_ttl_ms,
            "token_digest": digest(token.encode()),
            "parent": {"index": index, "leaf_hash": base64.b64encode(leaf).decode()},
        }
        if op.approval_id:
            event["approval"] = op.approval_id
        extra = list(op.with_warrant)

        def write(conn: Any, index: int) -> None:
            # Side writes get the append's first index (the decision's); warrant.issued follows.
            row(conn, index=index + 1)
            for more in extra:
                more(conn, index + 1, claims.warrant_id)

        return event, write

    def mint_here(self, op: Authorization, index: int, leaf: bytes) -> tuple[dict[str, Any], Side]:
        """Mint the warrant for the decision at ``index`` on this thread; its event and
        row.

        Raises:
            WarrantError: the warrant cannot be minted.
        """
        claims = self.claims(op, index)
        token = mint_warrant(claims, root_private_key=self._warrant_key)
        op.claims, op.token = claims, token
        if self._minted is not None:  # minted here from these claims: their pairing is certain
            self._minted.remember(token, claims)
        return self.issued(op, claims, token, index, leaf)

    def mint_later(self, op: Authorization, index: int, leaf: bytes, deferred: Deferred) -> dict[str, Any]:
        """Send the claims to the minting helper; fill the reserved slot with the
        ``warrant.issued`` event when the token comes back. Returns the fallback that
        takes the slot if it does not (``warrant.failed``: the decision stands, denied).
        A helper that cannot be reached fills the slot with the fallback at once."""
        claims = self.claims(op, index)
        op.deferred = deferred

        def minted(token: str | None, error: BaseException | None) -> None:
            if token is None:
                deferred.fill(None, error=error)
                return
            try:
                event, row = self.issued(op, claims, token, index, leaf)
            except ProctorError as e:
                deferred.fill(None, error=e)
                return
            op.claims, op.token = claims, token
            deferred.fill(event, side=[row])

        try:
            if self._minter is None:  # not reached: only called when helper_ready()
                raise WarrantError("no minting helper")
            self._minter.mint(claims, minted)
        except WarrantError as e:
            deferred.fill(None, error=e)  # the fallback takes the slot at once
        return self.failed_event(
            op,
            index,
            leaf,
            "the warrant was not minted (the minting helper failed or did not answer in time)",
        )

    def failed_event(self, op: Authorization, index: int, leaf: bytes, reason: str) -> dict[str, Any]:
        """``warrant.failed``: the decision at ``index`` allowed, but no warrant was issued."""
        return {
            "v": 1,
            "type": "warrant.failed",
            "time": rfc3339(op.now),
            "node": self._node,
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
