"""The governor's admin operations: principals, policy bundles, revocation.

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

Admin changes run under the admin lock; a principal revocation waits for its commit
under it, so the next change counts admins after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import threading
from collections.abc import Mapping
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
from proctor.governor._wake import Waker
from proctor.governor.identity import verify_attributes, verify_zone
from proctor.governor.model import RequestShapeError
from proctor.governor.stream import Broadcaster

if TYPE_CHECKING:
    from proctor.governor.executions import Executions
from proctor.lineage.log import Append, Log, Notify, Side
from proctor.policy import PolicyEngine, SignedBundle
from proctor.policy.bundle import verify_version_forward
from proctor.store.state import PrincipalRecord, RevocationRecord, StateStore

__all__ = [
    "ADMIN",
    "REVOCATION_KINDS",
    "GovernorAdmin",
    "NoSuchTargetError",
]

ADMIN = "admin"
REVOCATION_KINDS = ("warrant", "execution", "principal", "policy")

_PRINCIPAL_CACHE = 100_000
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REVOCATION_ID = re.compile(r"[0-9a-f]{128}")  # an Ed25519 block signature, hex


class GovernorAdmin:
    """Admin operations, mixed into :class:`~proctor.governor.service.Governor`."""

    log: Log
    state: StateStore
    node: str
    broadcaster: Broadcaster
    _lock: threading.Lock
    _wakers: dict[asyncio.AbstractEventLoop, Waker]
    executions: Executions
    _engine: PolicyEngine | None
    _bundle_error: str | None
    _principals: dict[str, tuple[PrincipalRecord, bytes]]
    _principals_generation: int

    def now(self) -> float:
        """The governor's clock."""
        raise NotImplementedError

    # -- admin: principals -----------------------------------------------------

    def principal(self, name: str) -> PrincipalRecord | None:
        """The principal's record as governance sees it, from memory once read.

        A principal revoked after its last change counts as ``suspended`` even if its
        row says ``active``: revocations recorded before they suspended in the same
        commit (admins were not suspended at all) still take every right away.

        This process is the only writer of principals for its data directory (it holds
        the log's append lock), and every write below drops the entry; a read that
        raced with a write is not kept (the generation moved).

        Raises:
            StoreError: the store cannot be read.
        """
        hit = self._principals.get(name)
        if hit is not None:
            return hit[0]
        generation = self._principals_generation
        stored = self.state.principal(name)
        if stored is None:
            return None
        record = self._effective(stored)
        key = load_public_key(record.public_key)
        if generation == self._principals_generation and len(self._principals) < _PRINCIPAL_CACHE:
            self._principals[name] = (record, key)
        return record

    def _effective(self, record: PrincipalRecord) -> PrincipalRecord:
        if record.status != "active":
            return record
        revoked = self.state.revocation("principal", record.name)
        if revoked is None or revoked.time <= record.updated:
            return record
        return dataclasses.replace(record, status="suspended")

    def _forget_principal(self, name: str) -> None:
        self._principals_generation += 1
        self._principals.pop(name, None)

    def is_admin(self, principal: str) -> bool:
        """Whether ``principal`` is an active admin (attribute ``role=admin``, neither
        suspended nor revoked since its last change)."""
        record = self.principal(principal)
        return record is not None and record.status == "active" and record.attrs.get("role") == ADMIN

    def _active_admins(self) -> list[str]:
        """Names of the active admins, read from the store (caller holds the admin lock)."""
        return [
            p.name
            for p in self.state.principals()
            if p.attrs.get("role") == ADMIN and self._effective(p).status == "active"
        ]

    def public_key_for(self, name: str) -> bytes | None:
        """The public key of principal ``name`` (for request authentication)."""
        if self.principal(name) is None:
            return None
        hit = self._principals.get(name)
        if hit is not None:
            return hit[1]
        record = self.state.principal(name)  # not cached (raced with a write): read again
        return None if record is None else load_public_key(record.public_key)

    def _commit_principals(
        self, events: list[dict[str, Any]], records: list[PrincipalRecord], *, side: list[Side] | None = None
    ) -> int:
        """Append ``events`` with the rows of ``records`` (and ``side``) in one commit;
        the first event's index. The caller holds the admin lock; the cache forgets the
        principals before (a read racing the commit is not kept) and after."""
        for record in records:
            self._forget_principal(record.name)
        try:
            writes = [*(side or []), *(self.state.principal_writer(r) for r in records)]
            return self.log.submit(events, side=writes).wait()[0]
        finally:
            for record in records:
                self._forget_principal(record.name)

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
        with self._lock:
            self._verify_identity_free(name, public_key_b64)
            now = self.now()
            stamp = rfc3339(now)
            record = PrincipalRecord(name, public_key_b64, clean, zone, "active", stamp, stamp)
            event = principal_event(
                name, "added", clean, zone, now, node=self.node, by=by, public_key=public_key_b64
            )
            self._commit_principals([event], [record])
            return record

    def _verify_identity_free(self, name: str, public_key_b64: str) -> None:
        """One name, one principal (ignoring case: ``Alice`` and ``alice`` would read as
        the same in logs and policies); one key, one principal (a signature must name
        its signer)."""
        taken = self.state.principal_like(name)
        if taken is not None and taken.name == name:
            raise PrincipalError(f"principal {name!r} already exists")
        if taken is not None:
            raise PrincipalError(
                f"expected a principal name unique ignoring case, found {name!r}, which differs only "
                f"in case from the existing principal {taken.name!r}"
            )
        holder = self.state.principal_with_key(public_key_b64)
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
        with self._lock:
            record = self.state.principal(name)
            if record is None:
                raise NoSuchTargetError(f"no such principal {name!r}")
            if status == "suspended" and self._active_admins() == [name]:
                raise PrincipalError(
                    f"refusing to suspend {name!r}, the last active admin (governance would be "
                    f"locked); make another principal admin first"
                )
            change = "suspended" if status == "suspended" else "resumed"
            now = self.now()
            event = principal_event(name, change, record.attrs, record.zone, now, node=self.node, by=by)
            updated = dataclasses.replace(record, status=status, updated=rfc3339(now))
            self._commit_principals([event], [updated])
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
        if not self.is_admin(by):
            raise PrincipalError(f"{by!r} is not an active admin; only admins change policy")
        signed = SignedBundle.from_json(signed_doc)
        if signed.signer != by:
            raise BundleError(f"bundle signed by {signed.signer!r}, but pushed by {by!r}")
        key = self.public_key_for(by)
        if key is None:
            raise PrincipalError(f"no key for {by!r}")
        signed.verify(Ed25519PublicKey.from_public_bytes(key))
        digest = signed.bundle.digest
        if self.state.is_revoked("policy", digest):
            raise BundleError(f"bundle {digest} was revoked; push a new version")
        # Cheap refusals before compiling; checked again under the lock.
        unchanged = self._unchanged(digest)
        if unchanged is not None:
            return unchanged
        verify_version_forward(signed.bundle, highest=self.state.highest_bundle())
        engine = PolicyEngine.compile(signed.bundle)
        with self._lock:
            unchanged = self._unchanged(digest)
            if unchanged is not None:
                return unchanged
            verify_version_forward(signed.bundle, highest=self.state.highest_bundle())
            previous = self._engine.bundle_digest if self._engine is not None else ""
            now = self.now()
            event = {
                "v": 1,
                "type": "policy.activated",
                "time": rfc3339(now),
                "node": self.node,
                "bundle": digest,
                "version": signed.bundle.version,
                "signer": signed.signer,
                "previous": previous,
            }
            doc = orjson.dumps(signed.to_json()).decode()
            write = self.state.bundle_writer(digest, signed.bundle.version, doc, rfc3339(now))
            index = self.log.submit([event], side=[write]).wait()[0]
            self._engine = engine
            self._bundle_error = None
        # Running executions re-evaluate against the new bundle at once, not at their
        # next scheduled renewal.
        self.broadcaster.publish({"type": "policy", "seq": index, "bundle": digest})
        return {"bundle": digest, "version": signed.bundle.version, "log_index": index, "previous": previous}

    def _unchanged(self, digest: str) -> dict[str, Any] | None:
        """The answer to pushing the active bundle again, or ``None`` if it is not."""
        engine = self._engine
        index = self.state.bundle_index(digest)
        if engine is None or engine.bundle_digest != digest or index is None:
            return None
        activated = orjson.loads(self.log.leaf(index))
        return {
            "bundle": digest,
            "version": activated.get("version"),
            "log_index": index,
            "previous": activated.get("previous", ""),
            "unchanged": True,
        }

    def active_policy(self) -> dict[str, Any] | None:
        """The active signed bundle as JSON, or ``None``."""
        active = self.state.active_bundle()
        return None if active is None else dict(orjson.loads(active[1]))

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
            LogAppendError: the revocation could not be recorded (nothing changed).
        """
        with self._lock:
            pending, changed = self._queue_revocation(
                kind, target, reason=reason, by=by, successor=successor, notify=None
            )
            if changed:
                # Wait under the lock: the next admin change must count admins after it.
                try:
                    index = _recorded(pending)
                finally:
                    for name in changed:
                        self._forget_principal(name)
        if not changed:
            index = _recorded(pending)
        return self._revoked(kind, target, index, successor=successor)

    async def revoke_async(
        self, kind: str, target: str, *, reason: str, by: str, successor: str = ""
    ) -> dict[str, Any]:
        """:meth:`revoke` for the event loop: no worker thread between the request and
        the commit (a revocation's latency is how long a revoked execution keeps
        running). Falls back to a worker thread while another admin change holds the
        admin lock, and for a principal (whose commit is awaited under that lock)."""
        loop = asyncio.get_running_loop()
        if kind == "principal" or not self._lock.acquire(blocking=False):
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
                notify=self._waker(loop).notifier(done),
            )
        finally:
            self._lock.release()
        await done
        return self._revoked(kind, target, _recorded(pending), successor=successor)

    def _waker(self, loop: asyncio.AbstractEventLoop) -> Waker:
        """The waker of ``loop`` (one per loop: servers keep one, tests come and go)."""
        waker = self._wakers.get(loop)
        if waker is None:
            if len(self._wakers) > 16:
                self._wakers = {k: v for k, v in self._wakers.items() if not k.is_closed()}
            waker = self._wakers[loop] = Waker(loop)
        return waker

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
        elif not self.state.exists(kind, target):
            raise NoSuchTargetError(f"no such {kind} {target!r}; nothing was revoked")
        now = self.now()
        events: list[dict[str, Any]] = [
            {
                "v": 1,
                "type": "revocation",
                "time": rfc3339(now),
                "node": self.node,
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
            self.state.revocation_writer(RevocationRecord(kind, target, reason, by, rfc3339(now), -1))
        ]
        changed: list[PrincipalRecord] = []
        if kind == "principal":
            for event, record in self._principal_revocation(target, successor, now, by=by):
                events.append(event)
                changed.append(record)
                side.append(self.state.principal_writer(record))
                self._forget_principal(record.name)

        def push(appended: Append) -> None:
            if appended.error is None and appended.indices:
                seq = appended.indices[0]
                self.broadcaster.publish({"type": "revocation", "seq": seq, "kind": kind, "target": target})
            else:
                self._apply_unrecorded(kind, target)
            if notify is not None:
                notify(appended)

        try:
            pending = self.log.submit(events, side=side, notify=push)
        except LogAppendError:
            self._apply_unrecorded(kind, target)
            raise
        return pending, [r.name for r in changed]

    def _apply_unrecorded(self, kind: str, target: str) -> None:
        """A revocation the log could not record is still applied here: every enforcer
        is told (its executions die now), and no lease is renewed while the log cannot
        record (:meth:`Executions.renew`). The caller is told it was not recorded."""
        self.broadcaster.publish(
            {"type": "revocation", "seq": -1, "kind": kind, "target": target, "recorded": False}
        )

    def _principal_revocation(
        self, target: str, successor: str, now: float, *, by: str
    ) -> list[tuple[dict[str, Any], PrincipalRecord]]:
        """The principal changes a revocation of ``target`` brings: its suspension, and
        its successor made admin. Refuses to leave no active admin."""
        record = self.state.principal(target)
        if record is None:
            raise NoSuchTargetError(f"no such principal {target!r}; nothing was revoked")
        stamp = rfc3339(now)
        changes: list[tuple[dict[str, Any], PrincipalRecord]] = []
        if record.status == "active":
            event = principal_event(
                target, "suspended", record.attrs, record.zone, now, node=self.node, by=by
            )
            changes.append((event, dataclasses.replace(record, status="suspended", updated=stamp)))
        if record.attrs.get("role") != ADMIN:
            if successor:
                raise RequestShapeError(
                    f"successor: expected only when revoking an admin, found {target!r}, which is not one"
                )
            return changes
        if not successor:
            if [a for a in self._active_admins() if a != target]:
                return changes
            raise PrincipalError(
                f"refusing to revoke {target!r}, the last active admin: name a successor, an "
                f"active principal that becomes admin in the same change (proctor revoke "
                f'--principal {target} --successor NAME; over HTTP, "successor" in the body)'
            )
        heir = self.state.principal(successor)
        if heir is None:
            raise NoSuchTargetError(
                f"no such principal {successor!r} to succeed {target!r}; nothing was revoked"
            )
        if heir.name == target:
            raise RequestShapeError(f"successor: expected a principal other than {target!r} itself")
        if self._effective(heir).status != "active":
            raise PrincipalError(f"successor {successor!r} is {heir.status}; expected an active principal")
        if heir.attrs.get("role") != ADMIN:
            attrs = {**heir.attrs, "role": ADMIN}
            event = principal_event(successor, "promoted", attrs, heir.zone, now, node=self.node, by=by)
            event["successor_of"] = target
            changes.append((event, dataclasses.replace(heir, attrs=attrs, updated=stamp)))
        return changes

    def _revoked(self, kind: str, target: str, index: int, *, successor: str) -> dict[str, Any]:
        """What follows a recorded revocation in this process."""
        if kind == "execution":
            self.executions.revoked(target)
        if kind == "policy":
            with self._lock:
                if self._engine is not None and self._engine.bundle_digest == target:
                    self._engine = None
                    self._bundle_error = f"the active bundle {target} was revoked"
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
