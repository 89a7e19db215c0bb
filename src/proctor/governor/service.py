"""The governor: authenticates principals, decides, issues warrants, records everything.

Flow of one authorization (ARCHITECTURE.md, "Authorize"):

1. The caller is authenticated before this module is reached (signed request, HTTP
   layer) or is the local admin.
2. The principal must exist, be active and not revoked; a parent warrant, if given,
   must verify, be unrevoked, and cover the new request (delegation only narrows).
3. The active policy engine decides; no valid bundle means deny. Any exception is a
   deny that records the error.
4. The ``decision`` event is appended to the log *before* anything else. If the append
   fails, the answer is deny: nothing is authorized unrecorded.
5. On allow, the warrant is minted with the decision's log index and a
   ``warrant.issued`` event (parent link: the decision) is appended; only then is the
   warrant returned. If that append fails, the warrant is discarded and the answer is
   deny.

Admin operations (principals, policy, revocation) append their event first and then
update the state tables, so the log can always explain the state.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from proctor.authorization.keys import PrincipalKey
from proctor.authorization.warrants import (
    WarrantClaims,
    WarrantRequest,
    args_digest,
    mint_warrant,
    new_warrant_id,
    verify_warrant,
)
from proctor.datadir import DataDir
from proctor.errors import (
    EventError,
    LineageError,
    ProctorError,
    StoreError,
    WarrantError,
)
from proctor.governor._events import digest, principal_event, rfc3339
from proctor.governor.admin import ADMIN, REVOCATION_KINDS, GovernorAdmin
from proctor.governor.counters import RateCounters
from proctor.governor.executions import Executions
from proctor.governor.model import AuthorizeRequest, AuthorizeResult
from proctor.governor.stream import Broadcaster
from proctor.lineage.log import Log
from proctor.policy import Decision, PolicyEngine, PolicyRequest, SignedBundle, deny_all
from proctor.store.state import PrincipalRecord, StateStore

__all__ = [
    "ADMIN",
    "DEFAULT_LEASE_TTL_MS",
    "DEFAULT_WARRANT_TTL_S",
    "REVOCATION_KINDS",
    "Governor",
    "initialize",
    "rfc3339",
]

DEFAULT_LEASE_TTL_MS = 5000
DEFAULT_WARRANT_TTL_S = 900


def initialize(data_dir: str | os.PathLike[str], *, origin: str | None = None) -> dict[str, str]:
    """``proctor init``: a data directory with the log, the admin key and the warrant key.

    Returns:
        ``{"data", "origin", "log_key", "admin_key", "warrant_key"}`` (public material
        and paths).

    Raises:
        ConfigError: the directory is already initialised.
    """
    root = Path(data_dir)
    with Log.initialize(root, origin=origin) as log:
        keys = root / "keys"
        admin = PrincipalKey.generate(ADMIN)
        admin.save(keys / "admin.key")
        warrant_root = PrincipalKey.generate("warrant-root")
        warrant_root.save(keys / "warrant.key")
        (keys / "warrant.pub").write_text(warrant_root.public_key_b64 + "\n")
        state = StateStore(DataDir.open(root).db_path)
        try:
            now = time.time()
            # The warrant key is declared in the log, so that a receipt can prove which
            # key signed its warrants with nothing but the log's verifier key.
            declared = log.append_many(
                [
                    {
                        "v": 1,
                        "type": "key.declared",
                        "time": rfc3339(now),
                        "node": "init",
                        "purpose": "warrant",
                        "algorithm": "ed25519",
                        "public_key": warrant_root.public_key_b64,
                    },
                    principal_event(ADMIN, "added", {"role": ADMIN}, "", now, node="init", by="init"),
                ]
            )
            stamp = rfc3339(now)
            state.put_principal(
                PrincipalRecord(ADMIN, admin.public_key_b64, {"role": ADMIN}, "", "active", stamp, stamp)
            )
            state.set_meta("warrant_key_index", str(declared[0]))
        finally:
            state.close()
        return {
            "data": str(root),
            "origin": log.origin,
            "log_key": log.verifier_key(),
            "admin_key": str(keys / "admin.key"),
            "warrant_key": warrant_root.public_key_b64,
        }


class Governor(GovernorAdmin):
    """The governor of one data directory (embedded SQLite store).

    Thread-safe: authorizations run concurrently (their log appends are group
    committed); policy pushes swap the engine atomically.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        node: str = "gov-1",
        clock: Any = time.time,
        warrant_ttl_s: int = DEFAULT_WARRANT_TTL_S,
    ) -> None:
        """Open the governor's log, state and keys.

        Raises:
            ConfigError: the data directory is not initialised (``proctor init``).
            StoreError: the database cannot be opened.
        """
        self.data = DataDir.open(data_dir)
        self.node = node
        self._clock = clock
        self._warrant_ttl_s = warrant_ttl_s
        self.log = Log.open(self.data.path)
        self.state = StateStore(self.data.db_path)
        keys = self.data.path / "keys"
        self._warrant_key = PrincipalKey.load(keys / "warrant.key")
        self.warrant_public_key = self._warrant_key.public_key
        self._lock = threading.Lock()
        self.broadcaster = Broadcaster()
        self.executions = Executions(self)
        self.counters = RateCounters(self.state)
        self._engine: PolicyEngine | None = None
        self._bundle_error: str | None = "no policy bundle has been pushed"
        self._load_active_bundle()

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Close the log and the state store."""
        self.log.close()
        self.state.close()

    def __enter__(self) -> Governor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> float:
        """The governor's clock (injectable for tests)."""
        return float(self._clock())

    def _load_active_bundle(self) -> None:
        active = self.state.active_bundle()
        if active is None:
            return
        digest, doc = active
        if self.state.is_revoked("policy", digest):
            self._bundle_error = f"the active bundle {digest} is revoked"
            return
        try:
            signed = SignedBundle.from_json(orjson.loads(doc))
            self._engine = PolicyEngine.compile(signed.bundle)
            self._bundle_error = None
        except (ProctorError, ValueError) as e:  # fail closed: deny all
            self._bundle_error = f"the stored active bundle does not load: {e}"

    @property
    def engine(self) -> PolicyEngine | None:
        """The active policy engine, or ``None`` (deny everything)."""
        return self._engine

    def ready(self) -> tuple[bool, dict[str, str]]:
        """Readiness: the store, the log and a valid policy bundle."""
        checks: dict[str, str] = {}
        try:
            self.state.ping()
            checks["store"] = "ok"
        except StoreError as e:
            checks["store"] = f"error: {e}"
        try:
            self.log.checkpoint()
            checks["log"] = "ok"
        except ProctorError as e:
            checks["log"] = f"error: {e}"
        checks["policy"] = "ok" if self._engine is not None else f"error: {self._bundle_error}"
        return all(v == "ok" for v in checks.values()), checks

    # -- authorization ---------------------------------------------------------

    def authorize(self, principal: str, request: AuthorizeRequest) -> AuthorizeResult:
        """Decide on ``request`` by ``principal``; log it; issue a warrant on allow.

        Never raises for a policy, state or log failure: those are denies.
        """
        now = self.now()
        now_s = int(now)
        try:
            policy_request, decision, parent_id = self._decide(principal, request, now_s)
        except Exception as e:  # noqa: BLE001 - any failure while deciding is a deny (fail closed)
            policy_request, parent_id = None, ""
            decision = deny_all(f"the decision failed ({type(e).__name__}: {e}); denied")
        event = self._decision_event(
            principal, policy_request, decision, now=now, now_s=now_s, parent_id=parent_id
        )
        issued: dict[str, Any] = {}
        try:
            if decision.allow:
                # Step 5 in the same commit as step 4: the warrant is minted on the log's
                # writer once the decision's index is known, and both become durable
                # together (a failure while minting leaves the decision alone: deny).
                decision_index, warrant_index, error = self.log.append_chain(
                    event,
                    lambda index, leaf: self._warrant_event(
                        principal, request, decision, issued, index=index, leaf=leaf, parent_id=parent_id,
                        zone=policy_request.zone if policy_request is not None else request.zone,
                        now=now, now_s=now_s,
                    ),
                )  # fmt: skip
            else:
                decision_index, warrant_index, error = self.log.append(event), None, None
        except (LineageError, EventError, StoreError) as e:
            return AuthorizeResult(
                deny_all(
                    f"the decision could not be recorded ({e}); nothing is authorized unrecorded",
                    bundle_digest=decision.bundle_digest,
                    request=policy_request,
                ),
                None,
            )
        if not decision.allow:
            return AuthorizeResult(decision, decision_index)
        claims: WarrantClaims | None = issued.get("claims")
        if warrant_index is None or claims is None:
            return AuthorizeResult(
                deny_all(
                    f"the warrant could not be issued and recorded ({error}); denied",
                    bundle_digest=decision.bundle_digest,
                ),
                decision_index,
            )
        try:
            self.state.put_warrant(
                claims.warrant_id,
                principal=principal,
                parent=parent_id,
                decision_index=decision_index,
                expires=claims.expires,
                issued=now_s,
                issued_index=warrant_index,
                token=issued["token"],
            )
            self.counters.issued(principal, now_s)
        except StoreError as e:
            # The warrant is durable in the log but not in the lookup table that
            # revocation of ancestors reads: do not hand it out.
            return AuthorizeResult(
                deny_all(
                    f"the warrant could not be indexed ({e}); denied", bundle_digest=decision.bundle_digest
                ),
                decision_index,
            )
        return AuthorizeResult(
            decision,
            decision_index,
            warrant=issued["token"],
            warrant_id=claims.warrant_id,
            warrant_index=warrant_index,
            expires=claims.expires,
            lease_ttl_ms=claims.lease_ttl_ms,
        )

    def _decide(
        self, principal: str, request: AuthorizeRequest, now_s: int
    ) -> tuple[PolicyRequest | None, Decision, str]:
        record = self.state.principal(principal)
        engine = self._engine
        bundle = engine.bundle_digest if engine is not None else ""
        if record is None:
            return None, deny_all(f"unknown principal {principal!r}", bundle_digest=bundle), ""
        # Stateful constraints policies can reference (context.counters): warrants
        # issued in the last minute and hour, and today (UTC) as the daily budget.
        # Concurrency counts the principal's running executions.
        counters = {
            **self.counters.counts(principal, now_s),
            "concurrency": self.state.count_running(principal),
        }
        attrs = dict(record.attrs)
        attrs.setdefault("role", "")
        attrs["zone"] = record.zone
        parent_id = ""
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
            return None, deny_all(f"malformed request: {e}", bundle_digest=bundle), ""
        if record.status != "active":
            reason = f"principal {principal!r} is {record.status}"
            return policy_request, deny_all(reason, bundle_digest=bundle, request=policy_request), ""
        if request.parent_warrant:
            try:
                parent = self._verify_parent(request, policy_request, now_s)
            except WarrantError as e:
                reason = f"parent warrant rejected ({e.reason}): {e}"
                return policy_request, deny_all(reason, bundle_digest=bundle, request=policy_request), ""
            parent_id = parent.warrant_id
            policy_request = dataclasses.replace(policy_request, parent_warrant=parent_id)
        if engine is None:
            reason = f"no valid policy bundle is active ({self._bundle_error}); everything is denied"
            return policy_request, deny_all(reason, request=policy_request), parent_id
        return policy_request, engine.decide(policy_request, now=now_s), parent_id

    def _verify_parent(
        self, request: AuthorizeRequest, policy_request: PolicyRequest, now_s: int
    ) -> WarrantClaims:
        wanted = WarrantRequest(
            action=request.action,
            resource=request.resource,
            args_digest=args_digest(request.arguments if request.arguments is not None else request.argv),
            zone=policy_request.zone,
            executable_digest=request.executable_digest,
        )
        return verify_warrant(
            request.parent_warrant,
            root_public_key=self.warrant_public_key,
            now=now_s,
            request=wanted,
            revoked=self.warrant_revoked,
        )

    def warrant_revoked(self, warrant_id: str) -> bool:
        """Whether a warrant is revoked: itself, an ancestor, or its principal since issue."""
        for wid in self.state.warrant_chain(warrant_id):
            if self.state.is_revoked("warrant", wid):
                return True
            record = self.state.warrant(wid)
            if record is not None and self._principal_revoked_after(
                record["principal"], record["decision_index"]
            ):
                return True
        return False

    def _principal_revoked_after(self, principal: str, index: int) -> bool:
        revoked = self.state.revoked_index("principal", principal)
        return revoked is not None and revoked > index

    def _decision_event(
        self,
        principal: str,
        policy_request: PolicyRequest | None,
        decision: Decision,
        *,
        now: float,
        now_s: int,
        parent_id: str,
    ) -> dict[str, Any]:
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
            "request_digest": decision.request_digest,
            "reason": decision.reason,
        }
        if policy_request is not None:
            event["request"] = policy_request.to_json()
        if parent_id:
            event["parent_warrant"] = parent_id
        return event

    def _warrant_event(
        self,
        principal: str,
        request: AuthorizeRequest,
        decision: Decision,
        issued: dict[str, Any],
        *,
        index: int,
        leaf: bytes,
        parent_id: str,
        zone: str,
        now: float,
        now_s: int,
    ) -> dict[str, Any]:
        """Mint the warrant for the decision at ``index``; return its ``warrant.issued`` event."""
        obligations = dict(decision.obligations)
        ttl = self._warrant_ttl_s
        max_duration = obligations.get("max_duration_s")
        if type(max_duration) is int and max_duration > 0:
            ttl = min(ttl, max_duration)
        lease_s = obligations.get("lease_ttl_s")
        lease_ttl_ms = lease_s * 1000 if type(lease_s) is int and lease_s > 0 else DEFAULT_LEASE_TTL_MS
        claims = WarrantClaims(
            warrant_id=new_warrant_id(),
            principal=principal,
            action=request.action,
            resource=request.resource,
            args_digest=args_digest(request.arguments if request.arguments is not None else request.argv),
            zone=zone,
            executable_digest=request.executable_digest,
            obligations=obligations,
            not_before=now_s,
            expires=now_s + ttl,
            lease_ttl_ms=lease_ttl_ms,
            decision_index=index,
            parent=parent_id,
        )
        token = mint_warrant(claims, root_private_key=self._warrant_key.private_bytes())
        issued["claims"] = claims
        issued["token"] = token
        return {
            "v": 1,
            "type": "warrant.issued",
            "time": rfc3339(now),
            "node": self.node,
            "warrant": claims.warrant_id,
            "parent_warrant": parent_id,
            "principal": principal,
            "decision_index": index,
            "expires": claims.expires,
            "lease_ttl_ms": lease_ttl_ms,
            "token_digest": digest(token.encode()),
            "parent": {"index": index, "leaf_hash": base64.b64encode(leaf).decode()},
        }

    def trust_changes(self, since: int) -> list[dict[str, Any]]:
        """Revocations and policy activations recorded after log index ``since`` (the
        backlog of ``GET /v1/stream``), in log order."""
        messages: list[dict[str, Any]] = [
            {"type": "revocation", "seq": r.log_index, "kind": r.kind, "target": r.target}
            for r in self.state.revocations(since)
        ]
        messages += [{"type": "policy", "seq": i, "bundle": d} for i, d in self.state.activations(since)]
        return sorted(messages, key=lambda m: int(m["seq"]))
