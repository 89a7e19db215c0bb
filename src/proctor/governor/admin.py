"""The governor's admin operations: principals, policy bundles, revocation, as
:class:`Administration`, built by :class:`~proctor.governor.service.Governor` with the
collaborators it uses (a :class:`~proctor.governor.trust.TrustView` to read principals
and the active engine and to tell it what changed, a
:class:`~proctor.governor.recorder.Recorder` to commit, the broadcaster that pushes
changes to enforcers, and the executions whose revocation it applies).

Each appends its event to the lineage log and commits the state rows it implies in
the same transaction (both or neither), so the log can always explain the state. Only
active admins (attribute ``role=admin``) may call them over HTTP.

Invariants:

- Revocation and suspension remove every right, admin included: a revoked principal
  is suspended in the commit that records its revocation. The last active admin cannot
  be suspended, nor revoked unless a *successor* is named: an active principal that
  becomes admin (``role=admin``) in that same commit.
- Policy versions only go forward (:func:`~proctor.policy.bundle.verify_version_forward`);
  re-sending the active bundle is idempotent (nothing is logged, the answer says
  ``"unchanged": true``); each bundle is activated once, so its activation index never
  moves.
- Principal names are unique ignoring case; a public key belongs to one principal;
  zones and attributes follow a strict grammar (:mod:`proctor.governor.identity`),
  checked before anything is logged.
- Revoking a principal, warrant or execution the governor does not know is refused
  (:class:`NoSuchTargetError`, HTTP 404) and logs nothing.

Admin changes run under the admin lock (:attr:`Recorder.admin_lock`); a principal
revocation waits for its commit under it, so the next change counts admins after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proctor.authorization.keys import load_public_key, valid_principal_name
from proctor.errors import (  # NoSuchTargetError: defined there, re-exported here
    BundleError,
    KeyFormatError,
    LogAppendError,
    NoSuchTargetError,
    PrincipalError,
)
from proctor.governor._events import principal_event, rfc3339
from proctor.governor.identity import verify_attributes, verify_zone
from proctor.governor.model import RequestShapeError
from proctor.governor.recorder import Recorder
from proctor.governor.stream import Broadcaster, early_revocation
from proctor.governor.trust import ADMIN, TrustView
from proctor.lineage.log import Append, Log, Notify, Side
from proctor.policy import PolicyEngine, SignedBundle
from proctor.policy.bundle import verify_version_forward
from proctor.store.state import PrincipalRecord, RevocationRecord, StateStore

if TYPE_CHECKING:
    from proctor.governor.executions import Executions

__all__ = [
    "ADMIN",
    "REVOCATION_KINDS",
    "Administration",
    "NoSuchTargetError",
]

REVOCATION_KINDS = ("warrant", "execution", "principal", "policy")

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REVOCATION_ID = re.compile(r"[0-9a-f]{128}")  # an Ed25519 block signature, hex


class Administration:
    """Admin operations of one governor: principals, policy, revocation."""

    def __init__(
        self,
        *,
        trust: TrustView,
        recorder: Recorder,
        state: StateStore,
        log: Log,
        broadcaster: Broadcaster,
        executions: Executions,
        node: str,
        clock: Callable[[], float],
        carry: Side | None = None,
    ) -> None:
        """Args:
        trust: principals and the active engine; told of a new or revoked engine.
        recorder: commits each change with its state rows, under its admin lock.
        state: the governance state tables (read to validate; written in commits).
        log: read for the activation of a bundle pushed again.
        broadcaster: pushes policy changes and revocations to every enforcer.
        executions: told of a revoked execution (it stops counting as running).
        node: the governor's node name, in every event.
        clock: the governor's clock (seconds).
        carry: one more write for every revocation's commit: the governor's nonces not
            yet persisted (the revoking request's among them), so that they are durable
            with it and the log writer is woken once, after the push.
        """
        self._trust = trust
        self._recorder = recorder
        self._state = state
        self._log = log
        self._broadcaster = broadcaster
        self._executions = executions
        self._node = node
        self._clock = clock
        self._carry = carry

    # -- admin: principals -----------------------------------------------------

    def add_principal(
        self, name: str, public_key_b64: str, *, attrs: Mapping[str, str], zone: str, by: str
    ) -> PrincipalRecord:
        """Register a principal.

        Raises:
            PrincipalError: invalid name, or the name (ignoring case) or the public key
                is taken.
            RequestShapeError: the key, zone or attributes are malformed.
        """
        if not valid_principal_name(name):
            raise PrincipalError(f"expected a principal name of [A-Za-z0-9._-], found {name!r}")
        try:
            load_public_key(public_key_b64)
        except KeyFormatError as e:
            raise RequestShapeError(f"public_key: {e}") from e
        clean = verify_attributes(attrs)
        verify_zone(zone)
        with self._recorder.admin_lock:
            self._verify_identity_free(name, public_key_b64)
            now = self._clock()
            stamp = rfc3339(now)
            record = PrincipalRecord(name, public_key_b64, clean, zone, "active", stamp, stamp)
            event = principal_event(
                name, "added", clean, zone, now, node=self._node, by=by, public_key=public_key_b64
            )
            self._recorder.commit_principals([event], [record])
            return record

    def _verify_identity_free(self, name: str, public_key_b64: str) -> None:
        """One name, one principal (ignoring case: ``Alice`` and ``alice`` would read as
        the same in logs and policies); one key, one principal (a signature must name
        its signer)."""
        taken = self._state.principal_like(name)
        if taken is not None and taken.name == name:
            raise PrincipalError(f"principal {name!r} already exists")
        if taken is not None:
            raise PrincipalError(
                f"expected a principal name unique ignoring case, found {name!r}, which differs only "
                f"in case from the existing principal {taken.name!r}"
            )
        holder = self._state.principal_with_key(public_key_b64)
        if holder is not None:
            raise PrincipalError(
                f"expected a public key of its own for {name!r}, found the key of principal "
                f"{holder.name!r}; each principal has its own key"
            )

    def set_principal_status(self, name: str, status: str, *, by: str) -> PrincipalRecord:
        """Suspend (``"suspended"``) or resume (``"active"``) a principal.

        Raises:
            NoSuchTargetError: unknown principal.
            PrincipalError: it would suspend the last active admin.
        """
        if status not in ("active", "suspended"):
            raise PrincipalError(f"expected status active or suspended, found {status!r}")
        with self._taking_trust("principal" if status == "suspended" else ""), self._recorder.admin_lock:
            record = self._state.principal(name)
            if record is None:
                raise NoSuchTargetError(f"no such principal {name!r}")
            if status == "suspended" and self._trust.active_admins() == [name]:
                raise PrincipalError(
                    f"refusing to suspend {name!r}, the last active admin (governance would be "
                    f"locked); make another principal admin first"
                )
            change = "suspended" if status == "suspended" else "resumed"
            now = self._clock()
            event = principal_event(name, change, record.attrs, record.zone, now, node=self._node, by=by)
            updated = dataclasses.replace(record, status=status, updated=rfc3339(now))
            self._recorder.commit_principals([event], [updated])
            return updated

    # -- admin: policy ---------------------------------------------------------

    def push_policy(self, signed_doc: Mapping[str, Any], *, by: str) -> dict[str, Any]:
        """Validate, verify and activate a signed policy bundle.

        The bundle must be signed by ``by``, an active admin, with the key the
        governor knows for it, and carry a version above every version accepted
        before. The active bundle pushed again is idempotent (nothing is logged; the
        answer is its activation, with ``"unchanged": true``). On any failure the
        previous bundle stays active.

        Raises:
            PolicyError: malformed, badly signed, revoked, not a newer version, or
                invalid policies (``PolicyValidationError`` carries Cedar's diagnostics).
            PrincipalError: ``by`` is not an active admin.
        """
        if not self._trust.is_admin(by):
            raise PrincipalError(f"{by!r} is not an active admin; only admins change policy")
        signed = SignedBundle.from_json(signed_doc)
        if signed.signer != by:
            raise BundleError(f"bundle signed by {signed.signer!r}, but pushed by {by!r}")
        key = self._trust.public_key_for(by)
        if key is None:
            raise PrincipalError(f"no key for {by!r}")
        signed.verify(Ed25519PublicKey.from_public_bytes(key))
        digest = signed.bundle.digest
        if self._state.is_revoked("policy", digest):
            raise BundleError(f"bundle {digest} was revoked; push a new version")
        # Cheap refusals before compiling; checked again under the lock.
        unchanged = self._unchanged(digest)
        if unchanged is not None:
            return unchanged
        verify_version_forward(signed.bundle, highest=self._state.highest_bundle())
        engine = PolicyEngine.compile(signed.bundle)
        with self._recorder.admin_lock:
            unchanged = self._unchanged(digest)
            if unchanged is not None:
                return unchanged
            verify_version_forward(signed.bundle, highest=self._state.highest_bundle())
            active = self._trust.engine
            previous = active.bundle_digest if active is not None else ""
            now = self._clock()
            event = {
                "v": 1,
                "type": "policy.activated",
                "time": rfc3339(now),
                "node": self._node,
                "bundle": digest,
                "version": signed.bundle.version,
                "signer": signed.signer,
                "previous": previous,
            }
            doc = orjson.dumps(signed.to_json()).decode()
            write = self._state.bundle_writer(digest, signed.bundle.version, doc, rfc3339(now))
            index = self._recorder.record([event], [write])
            self._trust.policy_activated(engine)
        # Running executions re-evaluate against the new bundle at once, not at their
        # next scheduled renewal.
        self._broadcaster.publish({"type": "policy", "seq": index, "bundle": digest})
        return {"bundle": digest, "version": signed.bundle.version, "log_index": index, "previous": previous}

    def _unchanged(self, digest: str) -> dict[str, Any] | None:
        """The answer to pushing the active bundle again, or ``None`` if it is not."""
        engine = self._trust.engine
        index = self._state.bundle_index(digest)
        if engine is None or engine.bundle_digest != digest or index is None:
            return None
        activated = orjson.loads(self._log.leaf(index))
        return {
            "bundle": digest,
            "version": activated.get("version"),
            "log_index": index,
            "previous": activated.get("previous", ""),
            "unchanged": True,
        }

    # -- admin: revocation -----------------------------------------------------

    def revoke(self, kind: str, target: str, *, reason: str, by: str, successor: str = "") -> dict[str, Any]:
        """Revoke a warrant, an execution, a principal (all its warrants, and every
        right: it is suspended in the same commit) or a policy bundle.

        ``successor`` (principals only) names an active principal that becomes admin in
        the same commit; revoking the last active admin requires one.

        Raises:
            NoSuchTargetError: the principal, warrant or execution (or the successor)
                does not exist; nothing was logged.
            PrincipalError: ``kind`` is unknown, or the last active admin would go
                without a successor.
            RequestShapeError: a malformed policy digest or successor.
            LogAppendError: the revocation could not be recorded (it was applied
                anyway: every enforcer it concerns was told).
        """
        with self._taking_trust(kind):  # until it committed: starts are ordered with it
            with self._recorder.admin_lock:
                pending, changed = self._queue_revocation(
                    kind, target, reason=reason, by=by, successor=successor, notify=None
                )
                if changed:
                    # Wait under the lock: the next admin change must count admins after it.
                    try:
                        index = _recorded(pending)
                    finally:
                        for name in changed:
                            self._trust.forget_principal(name)
            if not changed:
                index = _recorded(pending)
        return self._revoked(kind, target, index, successor=successor)

    def _taking_trust(self, kind: str) -> contextlib.AbstractContextManager[None]:
        """A change of ``kind`` that may stop a start (a principal's, a warrant's) holds
        :meth:`Executions.trust_change` (taken before the admin lock, always); an
        execution's, in shared mode, :meth:`Executions.revocation_ordered` (the same lock
        between processes, under which a finish reads the execution's row; in exclusive
        mode :meth:`Executions.execution_revocation` orders them). Others nothing."""
        if kind in ("principal", "warrant"):
            return self._executions.trust_change()
        if kind == "execution":
            return self._executions.revocation_ordered()
        return contextlib.nullcontext()

    async def revoke_async(
        self, kind: str, target: str, *, reason: str, by: str, successor: str = ""
    ) -> dict[str, Any]:
        """:meth:`revoke` for the event loop: no worker thread between the request and
        the commit (a revocation's latency is how long a revoked execution keeps
        running). Falls back to a worker thread while another admin change holds the
        admin lock, and for a principal (whose commit is awaited under that lock)."""
        loop = asyncio.get_running_loop()
        waits = kind in ("principal", "warrant") or (kind == "execution" and self._executions.shared)
        if waits or not self._recorder.admin_lock.acquire(blocking=False):
            call = functools.partial(self.revoke, kind, target, reason=reason, by=by, successor=successor)
            return await loop.run_in_executor(None, call)
        done: asyncio.Future[None] = loop.create_future()
        try:
            pending, _ = self._queue_revocation(
                kind,
                target,
                reason=reason,
                by=by,
                successor=successor,
                notify=self._recorder.waker(loop).notifier(done),
            )
        finally:
            self._recorder.admin_lock.release()
        await done
        return self._revoked(kind, target, _recorded(pending), successor=successor)

    def _queue_revocation(
        self, kind: str, target: str, *, reason: str, by: str, successor: str, notify: Notify | None
    ) -> tuple[Append, list[str]]:
        """Validate and queue the revocation (caller holds the admin lock): the pending
        append and the principals it changes (whose cache entries the caller drops
        once it committed)."""
        if kind not in REVOCATION_KINDS:
            raise PrincipalError(f"expected a revocation kind in {list(REVOCATION_KINDS)}, found {kind!r}")
        if not target:
            raise PrincipalError("expected a revocation target")
        if successor and kind != "principal":
            raise RequestShapeError(
                f"successor: expected only when revoking a principal, found kind {kind!r}"
            )
        if kind == "policy":
            # A bundle may be revoked before it was ever pushed (a leaked signed bundle).
            if not _DIGEST.fullmatch(target):
                raise RequestShapeError(f"expected a bundle digest sha256:<64 hex digits>, found {target!r}")
        elif kind == "warrant" and _REVOCATION_ID.fullmatch(target):
            pass  # one copy's block (its Biscuit revocation id): revocable before it is ever presented
        elif kind == "execution" and self._executions.registry.holds(target):
            pass  # running here: known without a read (its row committed before its lease was kept)
        elif not self._state.exists(kind, target):
            raise NoSuchTargetError(f"no such {kind} {target!r}; nothing was revoked")
        now = self._clock()
        events: list[dict[str, Any]] = [
            {
                "v": 1,
                "type": "revocation",
                "time": rfc3339(now),
                "node": self._node,
                "target": {"kind": kind, "id": target},
                "reason": reason,
                "by": by,
            }
        ]
        # The event and the state rows (the revocation; a running execution marked
        # terminating; a principal suspended and its successor made admin) commit
        # together, then the change is pushed to every enforcer at once, from the log
        # writer: a revoked execution dies in milliseconds.
        side: list[Side] = [
            self._state.revocation_writer(RevocationRecord(kind, target, reason, by, rfc3339(now), -1))
        ]
        if self._carry is not None:
            side.append(self._carry)
        changed: list[PrincipalRecord] = []
        if kind == "principal":
            for event, record in self._principal_revocation(target, successor, now, by=by):
                events.append(event)
                changed.append(record)
                side.append(self._state.principal_writer(record))
                self._trust.forget_principal(record.name)

        def push(appended: Append) -> None:
            if appended.error is None and appended.indices:
                seq = appended.indices[0]
                self._broadcaster.publish({"type": "revocation", "seq": seq, "kind": kind, "target": target})
            if notify is not None:
                notify(appended)

        # Validated and queued: it takes effect now, recorded or not (ADR 0021). Every
        # enforcer it concerns is told before the commit, so that a revoked execution
        # does not run on for the disk's flush; the recorded message (its log index)
        # follows. Queued first, so that whatever it causes (the execution's end) is
        # recorded after it. If the log cannot record it, it stays applied: enforcers
        # stopped what it revokes, no lease is renewed while the log cannot record
        # (:meth:`Executions.renew`), and the caller is told it was not recorded.
        # An execution's revocation is queued in one order with its finish: a finish
        # queued after it ends it terminated (Executions.execution_revocation).
        ordered: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if kind == "execution":
            ordered = self._executions.execution_revocation(target)
        try:
            with ordered:
                pending = self._recorder.submit(events, side=side, notify=push)
        finally:
            self._broadcaster.publish(early_revocation(kind, target))
        return pending, [r.name for r in changed]

    def _principal_revocation(
        self, target: str, successor: str, now: float, *, by: str
    ) -> list[tuple[dict[str, Any], PrincipalRecord]]:
        """The principal changes a revocation of ``target`` brings: its suspension, and
        its successor made admin. Refuses to leave no active admin."""
        record = self._state.principal(target)
        if record is None:
            raise NoSuchTargetError(f"no such principal {target!r}; nothing was revoked")
        stamp = rfc3339(now)
        changes: list[tuple[dict[str, Any], PrincipalRecord]] = []
        if record.status == "active":
            event = principal_event(
                target, "suspended", record.attrs, record.zone, now, node=self._node, by=by
            )
            changes.append((event, dataclasses.replace(record, status="suspended", updated=stamp)))
        if record.attrs.get("role") != ADMIN:
            if successor:
                raise RequestShapeError(
                    f"successor: expected only when revoking an admin, found {target!r}, which is not one"
                )
            return changes
        if not successor:
            if [a for a in self._trust.active_admins() if a != target]:
                return changes
            raise PrincipalError(
                f"refusing to revoke {target!r}, the last active admin: name a successor, an "
                f"active principal that becomes admin in the same change (proctor revoke "
                f'--principal {target} --successor NAME; over HTTP, "successor" in the body)'
            )
        heir = self._state.principal(successor)
        if heir is None:
            raise NoSuchTargetError(
                f"no such principal {successor!r} to succeed {target!r}; nothing was revoked"
            )
        if heir.name == target:
            raise RequestShapeError(f"successor: expected a principal other than {target!r} itself")
        if self._trust.effective(heir).status != "active":
            raise PrincipalError(f"successor {successor!r} is {heir.status}; expected an active principal")
        if heir.attrs.get("role") != ADMIN:
            attrs = {**heir.attrs, "role": ADMIN}
            event = principal_event(successor, "promoted", attrs, heir.zone, now, node=self._node, by=by)
            event["successor_of"] = target
            changes.append((event, dataclasses.replace(heir, attrs=attrs, updated=stamp)))
        return changes

    def _revoked(self, kind: str, target: str, index: int, *, successor: str) -> dict[str, Any]:
        """What follows a recorded revocation in this process."""
        if kind == "execution":
            self._executions.revoked(target)
        if kind == "policy":
            with self._recorder.admin_lock:
                self._trust.policy_withdrawn(target)
        result: dict[str, Any] = {"kind": kind, "target": target, "log_index": index}
        if successor:
            result["successor"] = successor
        return result


def _recorded(pending: Append) -> int:
    """The index of a revocation's event, or the error that says it was applied but
    not recorded."""
    try:
        return pending.wait()[0]
    except LogAppendError as e:
        raise LogAppendError(
            f"the revocation could not be recorded ({e}); it was applied here: every enforcer was "
            "told to stop what it revokes, and no lease is renewed until the log can record again"
        ) from e
