"""The governor's admin operations: principals, policy bundles, revocation.

Each appends its event to the lineage log first and then updates the state tables, so
the log can always explain the state. Only active admins (attribute ``role=admin``)
may call them over HTTP; the last active admin cannot be suspended, and an empty or
invalid bundle is refused with the previous one staying active.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proctor.authorization.keys import load_public_key, valid_principal_name
from proctor.errors import BundleError, PrincipalError
from proctor.governor._events import principal_event, rfc3339
from proctor.governor._wake import Waker
from proctor.governor.stream import Broadcaster

if TYPE_CHECKING:
    from proctor.governor.executions import Executions
from proctor.lineage.log import Append, Log, Notify
from proctor.policy import PolicyEngine, SignedBundle
from proctor.store.state import PrincipalRecord, RevocationRecord, StateStore

__all__ = ["ADMIN", "REVOCATION_KINDS", "GovernorAdmin"]

ADMIN = "admin"
REVOCATION_KINDS = ("warrant", "execution", "principal", "policy")


_PRINCIPAL_CACHE = 100_000


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
        """The principal's record, from memory once read.

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
        record = self.state.principal(name)
        if record is None:
            return None
        key = load_public_key(record.public_key)
        if generation == self._principals_generation and len(self._principals) < _PRINCIPAL_CACHE:
            self._principals[name] = (record, key)
        return record

    def _forget_principal(self, name: str) -> None:
        self._principals_generation += 1
        self._principals.pop(name, None)

    def is_admin(self, principal: str) -> bool:
        """Whether ``principal`` is an active admin (attribute ``role=admin``)."""
        record = self.principal(principal)
        return record is not None and record.status == "active" and record.attrs.get("role") == ADMIN

    def public_key_for(self, name: str) -> bytes | None:
        """The public key of principal ``name`` (for request authentication)."""
        if self.principal(name) is None:
            return None
        hit = self._principals.get(name)
        if hit is not None:
            return hit[1]
        record = self.state.principal(name)  # not cached (raced with a write): read again
        return None if record is None else load_public_key(record.public_key)

    def add_principal(
        self, name: str, public_key_b64: str, *, attrs: Mapping[str, str], zone: str, by: str
    ) -> PrincipalRecord:
        """Register a principal.

        Raises:
            PrincipalError: invalid name or attributes, or the name is taken.
        """
        if not valid_principal_name(name):
            raise PrincipalError(f"expected a principal name of [A-Za-z0-9._-], found {name!r}")
        load_public_key(public_key_b64)
        clean = {str(k): str(v) for k, v in attrs.items()}
        if "zone" in clean:
            raise PrincipalError("the zone is set with --zone, not as an attribute")
        with self._lock:
            if self.state.principal(name) is not None:
                raise PrincipalError(f"principal {name!r} already exists")
            now = self.now()
            self.log.append(principal_event(name, "added", clean, zone, now, node=self.node, by=by))
            stamp = rfc3339(now)
            record = PrincipalRecord(name, public_key_b64, clean, zone, "active", stamp, stamp)
            self._forget_principal(name)
            self.state.put_principal(record)
            self._forget_principal(name)
            return record

    def set_principal_status(self, name: str, status: str, *, by: str) -> PrincipalRecord:
        """Suspend (``"suspended"``) or resume (``"active"``) a principal.

        Raises:
            PrincipalError: unknown principal, or it would suspend the last admin.
        """
        if status not in ("active", "suspended"):
            raise PrincipalError(f"expected status active or suspended, found {status!r}")
        with self._lock:
            record = self.state.principal(name)
            if record is None:
                raise PrincipalError(f"unknown principal {name!r}")
            if status == "suspended" and record.attrs.get("role") == ADMIN:
                admins = [
                    p
                    for p in self.state.principals()
                    if p.attrs.get("role") == ADMIN and p.status == "active"
                ]
                if len(admins) <= 1:
                    raise PrincipalError(
                        "refusing to suspend the last active admin (governance would be locked)"
                    )
            change = "suspended" if status == "suspended" else "resumed"
            now = self.now()
            self.log.append(
                principal_event(name, change, record.attrs, record.zone, now, node=self.node, by=by)
            )
            updated = PrincipalRecord(
                record.name,
                record.public_key,
                record.attrs,
                record.zone,
                status,
                record.created,
                rfc3339(now),
            )
            self._forget_principal(name)
            self.state.put_principal(updated)
            self._forget_principal(name)
            return updated

    # -- admin: policy ---------------------------------------------------------

    def push_policy(self, signed_doc: Mapping[str, Any], *, by: str) -> dict[str, Any]:
        """Validate, verify and activate a signed policy bundle.

        The bundle must be signed by ``by``, an active admin, with the key the
        governor knows for it. On any failure the previous bundle stays active.

        Raises:
            PolicyError: malformed, badly signed, revoked, or invalid policies
                (``PolicyValidationError`` carries Cedar's diagnostics).
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
        engine = PolicyEngine.compile(signed.bundle)
        with self._lock:
            previous = self._engine.bundle_digest if self._engine is not None else ""
            now = self.now()
            index = self.log.append(
                {
                    "v": 1,
                    "type": "policy.activated",
                    "time": rfc3339(now),
                    "node": self.node,
                    "bundle": digest,
                    "version": signed.bundle.version,
                    "signer": signed.signer,
                    "previous": previous,
                }
            )
            doc = orjson.dumps(signed.to_json()).decode()
            self.state.put_bundle(digest, signed.bundle.version, doc, rfc3339(now), index)
            self._engine = engine
            self._bundle_error = None
        # Running executions re-evaluate against the new bundle at once, not at their
        # next scheduled renewal.
        self.broadcaster.publish({"type": "policy", "seq": index, "bundle": digest})
        return {"bundle": digest, "version": signed.bundle.version, "log_index": index, "previous": previous}

    def active_policy(self) -> dict[str, Any] | None:
        """The active signed bundle as JSON, or ``None``."""
        active = self.state.active_bundle()
        return None if active is None else dict(orjson.loads(active[1]))

    # -- admin: revocation -----------------------------------------------------

    def revoke(self, kind: str, target: str, *, reason: str, by: str) -> dict[str, Any]:
        """Revoke a warrant, an execution, a principal (all its warrants) or a policy bundle.

        Raises:
            PrincipalError: ``kind`` is unknown or the target does not exist.
            LogAppendError: the revocation could not be recorded (nothing changed).
        """
        with self._lock:
            pending = self._queue_revocation(kind, target, reason=reason, by=by, notify=None)
        index = pending.wait()[0]
        return self._revoked(kind, target, index, by=by)

    async def revoke_async(self, kind: str, target: str, *, reason: str, by: str) -> dict[str, Any]:
        """:meth:`revoke` for the event loop: no worker thread between the request and
        the commit (a revocation's latency is how long a revoked execution keeps
        running). Falls back to a worker thread while another admin change holds the
        admin lock, and for a principal (whose suspension appends again)."""
        loop = asyncio.get_running_loop()
        if kind == "principal" or not self._lock.acquire(blocking=False):
            return await loop.run_in_executor(
                None, functools.partial(self.revoke, kind, target, reason=reason, by=by)
            )
        done: asyncio.Future[None] = loop.create_future()
        try:
            pending = self._queue_revocation(
                kind, target, reason=reason, by=by, notify=self._waker(loop).notifier(done)
            )
        finally:
            self._lock.release()
        await done
        return self._revoked(kind, target, pending.result()[0], by=by)

    def _waker(self, loop: asyncio.AbstractEventLoop) -> Waker:
        """The waker of ``loop`` (one per loop: servers keep one, tests come and go)."""
        waker = self._wakers.get(loop)
        if waker is None:
            if len(self._wakers) > 16:
                self._wakers = {k: v for k, v in self._wakers.items() if not k.is_closed()}
            waker = self._wakers[loop] = Waker(loop)
        return waker

    def _queue_revocation(
        self, kind: str, target: str, *, reason: str, by: str, notify: Notify | None
    ) -> Append:
        """Validate and queue the revocation (caller holds the admin lock)."""
        if kind not in REVOCATION_KINDS:
            raise PrincipalError(f"expected a revocation kind in {list(REVOCATION_KINDS)}, found {kind!r}")
        if not target:
            raise PrincipalError("expected a revocation target")
        if kind == "principal" and self.state.principal(target) is None:
            raise PrincipalError(f"unknown principal {target!r}")
        now = self.now()
        # The event and the state rows (the revocation; a running execution marked
        # terminating) commit together, then the change is pushed to every enforcer
        # at once, from the log writer: a revoked execution dies in milliseconds.
        row = RevocationRecord(kind, target, reason, by, rfc3339(now), -1)

        def push(appended: Append) -> None:
            if appended.error is None and appended.indices:
                seq = appended.indices[0]
                self.broadcaster.publish({"type": "revocation", "seq": seq, "kind": kind, "target": target})
            if notify is not None:
                notify(appended)

        return self.log.submit(
            [
                {
                    "v": 1,
                    "type": "revocation",
                    "time": rfc3339(now),
                    "node": self.node,
                    "target": {"kind": kind, "id": target},
                    "reason": reason,
                    "by": by,
                }
            ],
            side=[self.state.revocation_writer(row)],
            notify=push,
        )

    def _revoked(self, kind: str, target: str, index: int, *, by: str) -> dict[str, Any]:
        """What follows a recorded revocation in this process."""
        if kind == "execution":
            self.executions.revoked(target)
        if kind == "policy":
            with self._lock:
                if self._engine is not None and self._engine.bundle_digest == target:
                    self._engine = None
                    self._bundle_error = f"the active bundle {target} was revoked"
        if kind == "principal":
            record = self.state.principal(target)
            if record is not None and record.status == "active" and record.attrs.get("role") != ADMIN:
                self.set_principal_status(target, "suspended", by=by)
        return {"kind": kind, "target": target, "log_index": index}
