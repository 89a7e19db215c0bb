"""What the governor trusts right now, as its parts read it: principals, admins, public
keys, revocations and the active policy engine.

:class:`TrustView` never writes the governance state (the store or the log). It reads
the store, keeps the principals it read in memory, and holds the active engine. The
parts that change trust tell it what changed, after the change is recorded:

- :class:`~proctor.governor.recorder.Recorder` forgets a principal before and after
  each commit that writes its row (:meth:`TrustView.forget_principal`);
- :class:`~proctor.governor.admin.Administration` installs a pushed engine
  (:meth:`TrustView.policy_activated`) or withdraws a revoked one
  (:meth:`TrustView.policy_withdrawn`).

A part that only reads trust is handed the view as a :class:`ReadOnlyTrust` (the
reads of :class:`TrustView`, none of its setters), so that it cannot tell the view of a
change it did not record: :class:`~proctor.governor.executions.Executions` is.

Invariants:

- While the state disagrees with the log (``state_problem``, fixed at start-up), no one
  is admin, every warrant counts as revoked and there is no engine: every read fails
  closed.
- A principal revoked after its last change counts as ``suspended`` even if its row says
  ``active`` (revocations recorded before they suspended in the same commit still take
  every right away).
- A principal read that raced with a write to its row is not kept: every write bumps
  the generation, and a read is cached only if the generation did not move.
- Shared mode (ADR 0016): the :class:`~proctor.governor.follower.TrustFollower` tells
  the view of the changes other processes recorded (the same notifications), and says
  when it has fallen behind (:meth:`TrustView.set_lagging`): until it catches up,
  ``state_problem`` says so (authorizations are denied, no one is admin, readiness
  fails); warrants are *not* treated as revoked for it (renewals are refused instead,
  with 503, so enforcers fail over rather than kill).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from proctor.authorization.keys import load_public_key
from proctor.policy import PolicyEngine
from proctor.store.state import PrincipalRecord, StateStore
from proctor.verification.revocation import ChainLink, find_revoked

__all__ = ["ADMIN", "ReadOnlyTrust", "TrustView"]

ADMIN = "admin"
"""The attribute value (``role=admin``) that makes an active principal an admin."""

_PRINCIPAL_CACHE = 100_000


class ReadOnlyTrust(Protocol):
    """What a reader of the governor's trust may call: the reads of :class:`TrustView`
    (which implements this), without the notifications that change it
    (``forget_principal``, ``policy_activated``, ``policy_withdrawn``)."""

    @property
    def state_problem(self) -> str | None:
        """Why the state is not trusted, or ``None`` (:attr:`TrustView.state_problem`)."""

    @property
    def lagging(self) -> str | None:
        """Why this process's trust may be behind the store's, or ``None`` (:attr:`TrustView.lagging`)."""

    @property
    def engine(self) -> PolicyEngine | None:
        """The active policy engine, or ``None`` (:attr:`TrustView.engine`)."""

    @property
    def bundle_error(self) -> str | None:
        """Why no engine is active, or ``None`` (:attr:`TrustView.bundle_error`)."""

    def principal(self, name: str) -> PrincipalRecord | None:
        """A principal as governance sees it (:meth:`TrustView.principal`)."""

    def effective(self, record: PrincipalRecord) -> PrincipalRecord:
        """``record`` with a later revocation applied (:meth:`TrustView.effective`)."""

    def is_admin(self, principal: str) -> bool:
        """Whether ``principal`` is an active admin (:meth:`TrustView.is_admin`)."""

    def active_admins(self) -> list[str]:
        """Names of the active admins (:meth:`TrustView.active_admins`)."""

    def public_key_for(self, name: str) -> bytes | None:
        """A principal's public key (:meth:`TrustView.public_key_for`)."""

    def warrant_revoked(self, warrant_id: str) -> bool:
        """Whether a warrant counts as revoked (:meth:`TrustView.warrant_revoked`)."""

    def trust_changes(self, since: int) -> list[dict[str, Any]]:
        """Revocations and activations after ``since`` (:meth:`TrustView.trust_changes`)."""

    def active_policy(self) -> dict[str, Any] | None:
        """The active signed bundle as JSON, or ``None`` (:meth:`TrustView.active_policy`)."""


class TrustView:
    """The governor's current trust: read by authorization, administration, executions
    and the event stream; changed only by what records changes (see the module)."""

    def __init__(
        self,
        state: StateStore,
        *,
        engine: PolicyEngine | None,
        bundle_error: str | None,
        state_problem: str | None,
    ) -> None:
        """Args:
        state: the governance state tables (read here, never written).
        engine: the active policy engine at start-up, or ``None`` (deny everything).
        bundle_error: why there is no engine (``None`` when there is one).
        state_problem: why the state is not trusted (the state check at start-up), or
            ``None``; it holds for the life of the process.
        """
        self._state = state
        self._principals: dict[str, tuple[PrincipalRecord, bytes]] = {}
        self._generation = 0
        self._engine = engine if state_problem is None else None
        self._bundle_error = bundle_error
        self._state_problem = state_problem
        self._lagging: str | None = None

    # -- the state as a whole --------------------------------------------------

    @property
    def state_problem(self) -> str | None:
        """Why the state is not trusted (the governor then serves nothing), or ``None``:
        the check at start-up, or (shared mode) a follower that fell behind."""
        return self._state_problem or self._lagging

    @property
    def lagging(self) -> str | None:
        """Shared mode: why this process's trust may be behind the store's (its follower
        fell behind), or ``None``."""
        return self._lagging

    def set_lagging(self, reason: str | None) -> None:
        """The follower fell behind (``reason``), or caught up again (``None``)."""
        self._lagging = reason

    # -- principals ------------------------------------------------------------

    def principal(self, name: str) -> PrincipalRecord | None:
        """The principal's record as governance sees it (:meth:`effective`), from memory
        once read.

        This process is the only writer of principals for its data directory (it holds
        the log's append lock), and every write drops the entry
        (:meth:`forget_principal`); a read that raced with a write is not kept.

        Raises:
            StoreError: the store cannot be read.
        """
        hit = self._principals.get(name)
        if hit is not None:
            return hit[0]
        generation = self._generation
        stored = self._state.principal(name)
        if stored is None:
            return None
        record = self.effective(stored)
        key = load_public_key(record.public_key)
        if generation == self._generation and len(self._principals) < _PRINCIPAL_CACHE:
            self._principals[name] = (record, key)
        return record

    def effective(self, record: PrincipalRecord) -> PrincipalRecord:
        """``record`` as governance sees it: ``suspended`` if the principal was revoked
        after its last change, whatever its row says.

        Raises:
            StoreError: the store cannot be read.
        """
        if record.status != "active":
            return record
        revoked = self._state.revocation("principal", record.name)
        if revoked is None or revoked.time <= record.updated:
            return record
        return dataclasses.replace(record, status="suspended")

    def forget_principal(self, name: str) -> None:
        """Drop ``name`` from memory (its row is about to change, or just changed)."""
        self._generation += 1
        self._principals.pop(name, None)

    def is_admin(self, principal: str) -> bool:
        """Whether ``principal`` is an active admin (attribute ``role=admin``, neither
        suspended nor revoked since its last change); no one is while the state is
        untrusted."""
        if self.state_problem is not None:
            return False
        record = self.principal(principal)
        return record is not None and record.status == "active" and record.attrs.get("role") == ADMIN

    def active_admins(self) -> list[str]:
        """Names of the active admins, read from the store, not from memory (the admin
        lock's holder counts them before a change)."""
        return [
            p.name
            for p in self._state.principals()
            if p.attrs.get("role") == ADMIN and self.effective(p).status == "active"
        ]

    def public_key_for(self, name: str) -> bytes | None:
        """The public key of principal ``name`` (for request authentication)."""
        if self.principal(name) is None:
            return None
        hit = self._principals.get(name)
        if hit is not None:
            return hit[1]
        record = self._state.principal(name)  # not cached (raced with a write): read again
        return None if record is None else load_public_key(record.public_key)

    # -- revocations -----------------------------------------------------------

    def warrant_revoked(self, warrant_id: str) -> bool:
        """Whether a warrant is revoked: itself, an ancestor, or its principal since issue
        (:func:`proctor.verification.find_revoked` over the state, read link by link).
        While the state is untrusted, so is the record of revocations: every warrant
        counts as revoked (no start, no renewal)."""
        if self._state_problem is not None:
            return True
        state = self._state

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

    def trust_changes(self, since: int) -> list[dict[str, Any]]:
        """Revocations and policy activations recorded after log index ``since`` (the
        backlog of ``GET /v1/stream``), in log order."""
        messages: list[dict[str, Any]] = [
            {"type": "revocation", "seq": r.log_index, "kind": r.kind, "target": r.target}
            for r in self._state.revocations(since)
        ]
        messages += [{"type": "policy", "seq": i, "bundle": d} for i, d in self._state.activations(since)]
        return sorted(messages, key=lambda m: int(m["seq"]))

    # -- policy ----------------------------------------------------------------

    @property
    def engine(self) -> PolicyEngine | None:
        """The active policy engine, or ``None`` (deny everything; always while the
        state is untrusted)."""
        return self._engine

    @property
    def bundle_error(self) -> str | None:
        """Why no engine is active, or ``None`` when one is."""
        return self._bundle_error

    def active_policy(self) -> dict[str, Any] | None:
        """The active signed bundle as JSON, as the store holds it, or ``None``."""
        active = self._state.active_bundle()
        return None if active is None else dict(orjson.loads(active[1]))

    def policy_activated(self, engine: PolicyEngine) -> None:
        """A pushed bundle's activation was recorded: ``engine`` decides from now on.
        Ignored while the state is untrusted (nothing is served then)."""
        if self._state_problem is None:
            self._engine = engine
            self._bundle_error = None

    def policy_failed(self, reason: str) -> None:
        """The active bundle recorded by another process does not load here: nothing
        decides (deny everything) until a newer bundle is activated."""
        self._engine = None
        self._bundle_error = reason

    def policy_withdrawn(self, digest: str) -> None:
        """Bundle ``digest`` was revoked: if it is the active one, nothing decides any
        more (deny everything) until a newer bundle is pushed."""
        if self._engine is not None and self._engine.bundle_digest == digest:
            self._engine = None
            self._bundle_error = f"the active bundle {digest} was revoked"
