"""Executions and their leases, on the governor's side (layer 3, runtime verification).

An enforcer (``proctor run``) that verified a warrant locally *starts* an execution
here; the warrant is single-use, so a replayed warrant cannot start a second one. It
then *renews* the lease every TTL/3; each renewal re-verifies (numbered as in
``renew``): the execution and the warrant chain are not revoked, the principal is
active, the warrant has not expired, the lease is still alive, the enforcer saw no
integrity violation, and the policy still allows it — if the active bundle changed,
the logged request is re-evaluated against it. A renewal that fails says which reason
to terminate with; the enforcer kills the tree and *finishes* the execution, which
appends the terminal event. Heartbeats are not logged; only changes of trust are
(``execution.verified`` when the policy version changed and was re-evaluated).
"""

from __future__ import annotations

import base64
import secrets
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from proctor.authorization.warrants import WarrantRequest, args_digest, verify_warrant
from proctor.errors import PrincipalError, ProctorError, StoreError, WarrantError
from proctor.governor._events import rfc3339
from proctor.governor._flush import FlushClaim
from proctor.governor.model import RequestShapeError
from proctor.policy import PolicyRequest

if TYPE_CHECKING:
    from proctor.governor.service import Governor

__all__ = ["TERMINATION_REASONS", "VIOLATIONS", "ExecutionConflictError", "Executions"]

VIOLATIONS = ("integrity", "obligation")
"""Termination reasons that count as the execution's own violation (and get responses)."""

TERMINATION_REASONS = (
    "revoked",
    "expired",
    "policy",
    "integrity",
    "lease-lost",
    "obligation",
    "supervisor-lost",
)


class ExecutionConflictError(ProctorError):
    """The execution cannot change as asked (replayed warrant, already finished) (HTTP 409)."""


def _field(body: Any, key: str, kind: type, *, default: Any = None) -> Any:
    value = body.get(key, default) if isinstance(body, dict) else None
    if type(value) is not kind:
        raise RequestShapeError(f"{key}: expected {kind.__name__}, found {type(value).__name__}")
    return value


SWEEP_GRACE_MS = 1000
"""How long past its lease a running execution may go unrenewed and unfinished before
the governor records it as ``supervisor-lost`` (its enforcer killed it at the lease's
expiry, or died and took the tree with it; either way no one governs it any more)."""


class Executions:
    """Start, renew and finish executions of one governor.

    Lease deadlines live in memory (this process is the only one that renews them) and
    are persisted in batches through the log writer's next transaction, so that a
    renewal never waits for SQLite's write lock.
    """

    def __init__(self, governor: Governor) -> None:
        self.gov = governor
        self._lock = threading.Lock()
        self._leases: dict[str, int] = dict(governor.state.running_leases())
        self._unsaved: dict[str, int] = {}
        self._flush = FlushClaim()
        # principal → its executions with status "running" (the concurrency counter
        # policies read on every authorization), mirrored from every status change.
        self._running: dict[str, set[str]] = {}
        for execution_id, principal in governor.state.running_executions():
            self._running.setdefault(principal, set()).add(execution_id)

    def running_count(self, principal: str) -> int:
        """How many executions of ``principal`` are running."""
        with self._lock:
            return len(self._running.get(principal, ()))

    def _not_running(self, execution_id: str, principal: str) -> None:
        with self._lock:
            mine = self._running.get(principal)
            if mine is not None:
                mine.discard(execution_id)
                if not mine:
                    del self._running[principal]

    def revoked(self, execution_id: str) -> None:
        """The execution was revoked (its row says ``terminating`` now)."""
        record = self.gov.state.execution(execution_id)
        if record is not None:
            self._not_running(execution_id, str(record["principal"]))

    def _set_lease(self, execution_id: str, expires_ms: int) -> None:
        with self._lock:
            self._leases[execution_id] = expires_ms
            self._unsaved[execution_id] = expires_ms
            queue = self._flush.claim()
        if queue:
            self.gov._side_write(self._persist_leases)

    def _persist_leases(self, conn: Any, index: int = -1) -> None:
        with self._lock:
            rows, self._unsaved = self._unsaved, {}
            self._flush.ran()
        try:
            conn.executemany(
                "UPDATE executions SET lease_expires_ms = ? WHERE id = ? AND status = 'running'",
                [(expires, ex) for ex, expires in rows.items()],
            )
        except sqlite3.Error as e:
            with self._lock:
                for ex, expires in rows.items():
                    self._unsaved.setdefault(ex, expires)
            raise StoreError(f"cannot persist lease deadlines: {e}") from e

    def lease_expires_ms(self, record: dict[str, Any]) -> int:
        """The execution's lease deadline (memory first: the table lags behind)."""
        with self._lock:
            return self._leases.get(record["id"], int(record["lease_expires_ms"]))

    def _end_lease(self, execution_id: str) -> None:
        with self._lock:
            self._leases.pop(execution_id, None)

    def sweep(self, *, grace_ms: int = SWEEP_GRACE_MS) -> list[str]:
        """Record ``execution.terminated`` (``supervisor-lost``) for every running
        execution whose lease lapsed ``grace_ms`` ago with no renewal or finish.

        Returns:
            The ids of the executions it closed.
        """
        gov = self.gov
        now = gov.now()
        cutoff = int(now * 1000) - grace_ms
        with self._lock:
            lapsed = [ex for ex, expires in self._leases.items() if expires < cutoff]
        closed = []
        for execution_id in lapsed:
            record = gov.state.execution(execution_id)
            if record is None or record["status"] not in ("running", "terminating"):
                self._end_lease(execution_id)
                continue
            expired_at = self.lease_expires_ms(record)
            if expired_at >= cutoff:
                continue  # renewed meanwhile
            event = {
                "v": 1,
                "type": "execution.terminated",
                "time": rfc3339(now),
                "node": gov.node,
                "execution": execution_id,
                "duration_ms": max(0, int(now * 1000) - int(record["started"]) * 1000),
                "reason": "supervisor-lost",
                "signal": "",
                "processes_killed": 0,
                "detail": f"the lease expired at {expired_at} ms with no renewal or finish from the enforcer",
                "stdout_digest": "",
                "stderr_digest": "",
                "parent": self._link(int(record["started_index"])),
            }
            index = gov.log.append(event)
            self._not_running(execution_id, str(record["principal"]))
            gov.state.update_execution(
                execution_id,
                status="terminated",
                reason="supervisor-lost",
                indices=[*record["indices"], index],
                ended=int(now),
            )
            self._end_lease(execution_id)
            closed.append(execution_id)
        return closed

    def _link(self, index: int) -> dict[str, Any]:
        return {"index": index, "leaf_hash": base64.b64encode(self.gov.log.leaf_hash(index)).decode()}

    def start(self, principal: str, body: Any) -> dict[str, Any]:
        """Verify the warrant against what the enforcer measured; record ``execution.started``.

        Raises:
            WarrantError: the warrant does not verify for this request.
            ExecutionConflictError: the warrant already started an execution.
            PrincipalError: the warrant belongs to someone else, or the principal is not active.
        """
        gov = self.gov
        token = _field(body, "warrant", str)
        measurement = _field(body, "measurement", dict)
        argv = body.get("argv", [])
        arguments = body.get("arguments")
        if type(argv) is not list or not all(type(a) is str for a in argv):
            raise RequestShapeError("argv: expected an array of strings")
        executable_digest = measurement.get("executable_digest", "")
        if type(executable_digest) is not str:
            raise RequestShapeError("measurement.executable_digest: expected a string")
        now = gov.now()
        now_s = int(now)
        # 1. The warrant verifies for exactly what the enforcer measured.
        request = WarrantRequest(
            action=_field(body, "action", str),
            resource=_field(body, "resource", str),
            args_digest=args_digest(arguments if isinstance(arguments, dict) else argv),
            zone=_field(body, "zone", str, default=""),
            executable_digest=executable_digest,
        )
        claims = verify_warrant(
            token,
            root_public_key=gov.warrant_public_key,
            now=now_s,
            request=request,
            revoked=gov.warrant_revoked,
        )
        # 2. It is the caller's, the caller is active, and this governor issued it.
        if claims.principal != principal:
            raise PrincipalError(
                f"warrant {claims.warrant_id} belongs to {claims.principal!r}, not {principal!r}"
            )
        record = gov.principal(principal)
        if record is None or record.status != "active":
            raise PrincipalError(f"principal {principal!r} is not active")
        issued = gov.state.warrant(claims.warrant_id)
        if issued is None or issued["issued_index"] < 0:
            raise WarrantError(
                f"warrant {claims.warrant_id} was not issued by this governor", reason="forged"
            )
        # 3. Single use: a warrant starts at most one execution.
        if not gov.state.claim_warrant(claims.warrant_id):
            raise ExecutionConflictError(
                f"warrant {claims.warrant_id} already started an execution (replayed)"
            )
        decision = orjson.loads(gov.log.leaf(claims.decision_index))
        engine = gov.engine
        execution_id = "ex_" + base64.b32encode(secrets.token_bytes(15)).decode().lower()
        ttl_ms = claims.lease_ttl_ms
        event = {
            "v": 1,
            "type": "execution.started",
            "time": rfc3339(now),
            "node": gov.node,
            "execution": execution_id,
            "warrant": claims.warrant_id,
            "principal": principal,
            "measurement": measurement,
            "containment": [str(c) for c in body.get("containment", []) if isinstance(c, str)],
            "enforcer": str(body.get("enforcer", "")),
            "zone": request.zone,
            "lease_ttl_ms": ttl_ms,
            "parent": self._link(int(issued["issued_index"])),
        }
        index = gov.log.append(event)
        started = gov.state.start_execution(
            {
                "id": execution_id,
                "warrant": claims.warrant_id,
                "principal": principal,
                "bundle": engine.bundle_digest if engine is not None else "",
                "request": orjson.dumps(decision.get("request", {})).decode(),
                "started_index": index,
                "indices": [claims.decision_index, int(issued["issued_index"]), index],
                "lease_expires_ms": int(now * 1000) + ttl_ms,
                "ttl_ms": ttl_ms,
                "started": now_s,
            }
        )
        if not started:  # lost a race with another start of the same warrant
            raise ExecutionConflictError(
                f"warrant {claims.warrant_id} already started an execution (replayed)"
            )
        with self._lock:
            self._leases[execution_id] = int(now * 1000) + ttl_ms
            self._running.setdefault(principal, set()).add(execution_id)
        return {
            "execution": execution_id,
            "log_index": index,
            "lease_ttl_ms": ttl_ms,
            "lease_expires_ms": int(now * 1000) + ttl_ms,
            "warrant": claims.warrant_id,
        }

    def _owned(self, principal: str, execution_id: str) -> dict[str, Any]:
        record = self.gov.state.execution(execution_id)
        if record is None or record["principal"] != principal:
            raise PrincipalError(f"no execution {execution_id!r} of {principal!r}")
        return record

    def renew(self, principal: str, execution_id: str, body: Any) -> dict[str, Any]:
        """Re-verify everything; extend the lease, or say why the execution must die."""
        gov = self.gov
        record = self._owned(principal, execution_id)
        now = gov.now()
        now_ms = int(now * 1000)
        if record["status"] != "running":
            return {
                "ok": False,
                "terminate": record["reason"] or "revoked",
                "detail": f"status {record['status']}",
            }
        reason, detail = self._recheck(record, body, now)
        if reason is not None:
            self._not_running(execution_id, principal)
            gov.state.update_execution(execution_id, status="terminating", reason=reason)
            return {"ok": False, "terminate": reason, "detail": detail}
        expires = now_ms + int(record["ttl_ms"])
        self._set_lease(execution_id, expires)
        return {"ok": True, "lease_expires_ms": expires, "bundle": record["bundle"]}

    def _recheck(self, record: dict[str, Any], body: Any, now: float) -> tuple[str | None, str]:
        gov = self.gov
        # 1. The execution itself, and every warrant of its chain, are not revoked.
        if gov.state.is_revoked("execution", record["id"]):
            return "revoked", "the execution was revoked"
        if gov.warrant_revoked(record["warrant"]):
            return "revoked", "its warrant (or an ancestor, or its principal) was revoked"
        # 2. The principal is still active.
        principal = gov.principal(record["principal"])
        if principal is None or principal.status != "active":
            return "revoked", f"principal {record['principal']!r} is not active"
        # 3. The warrant has not expired.
        warrant = gov.state.warrant(record["warrant"])
        if warrant is None or int(warrant["expires"]) <= int(now):
            return "expired", "the warrant expired"
        # 4. The lease did not lapse (the enforcer must already have killed it then).
        if int(now * 1000) > self.lease_expires_ms(record):
            return "lease-lost", "the lease expired before this renewal"
        # 5. The enforcer's own integrity check.
        if isinstance(body, dict) and body.get("integrity") not in (None, "ok"):
            return "integrity", str(body.get("integrity_detail", "integrity violated"))
        # 6. The policy: no valid bundle denies; a new bundle re-evaluates the request.
        engine = gov.engine
        if engine is None:
            return "policy", "no valid policy bundle is active"
        if engine.bundle_digest != record["bundle"]:
            decision = engine.decide(PolicyRequest.from_json(orjson.loads(record["request"])), now=int(now))
            self._record_verified(record, decision.allow, engine.bundle_digest, decision.reason, now)
            if not decision.allow:
                return "policy", f"re-evaluated under {engine.bundle_digest}: {decision.reason}"
            gov.state.update_execution(record["id"], bundle=engine.bundle_digest)
        return None, ""

    def _record_verified(
        self, record: dict[str, Any], allowed: bool, bundle: str, reason: str, now: float
    ) -> None:
        gov = self.gov
        index = gov.log.append(
            {
                "v": 1,
                "type": "execution.verified",
                "time": rfc3339(now),
                "node": gov.node,
                "execution": record["id"],
                "checked": ["policy"],
                "result": "allowed" if allowed else "denied",
                "bundle": bundle,
                "reason": reason,
                "parent": self._link(int(record["started_index"])),
            }
        )
        gov.state.update_execution(record["id"], indices=[*record["indices"], index])
        record["indices"] = [*record["indices"], index]

    def finish(self, principal: str, execution_id: str, body: Any) -> dict[str, Any]:
        """Append ``execution.completed`` or ``execution.terminated``; close the execution."""
        gov = self.gov
        record = self._owned(principal, execution_id)
        if record["status"] in ("completed", "terminated", "failed"):
            raise ExecutionConflictError(f"execution {execution_id} already ended ({record['status']})")
        outcome = _field(body, "outcome", str)
        now = gov.now()
        event: dict[str, Any] = {
            "v": 1,
            "time": rfc3339(now),
            "node": gov.node,
            "execution": execution_id,
            "duration_ms": max(0, int(now * 1000) - int(record["started"]) * 1000),
            "parent": self._link(int(record["started_index"])),
        }
        usage = body.get("resource_usage", {})
        if isinstance(usage, dict):
            event["resource_usage"] = {str(k): int(v) for k, v in usage.items() if type(v) is int}
        if outcome == "completed":
            event.update(
                type="execution.completed",
                exit_status=_field(body, "exit_status", int),
                stdout_digest=_field(body, "stdout_digest", str, default=""),
                stderr_digest=_field(body, "stderr_digest", str, default=""),
            )
        elif outcome in ("terminated", "failed"):
            reason = _field(body, "reason", str)
            if outcome == "terminated" and reason not in TERMINATION_REASONS:
                raise RequestShapeError(
                    f"reason: expected one of {list(TERMINATION_REASONS)}, found {reason!r}"
                )
            event.update(
                type="execution.terminated",
                reason=reason,
                signal=str(body.get("signal", "")),
                processes_killed=int(body.get("processes_killed", 0) or 0),
                detail=str(body.get("detail", ""))[:1000],
                stdout_digest=str(body.get("stdout_digest", "")),
                stderr_digest=str(body.get("stderr_digest", "")),
            )
            if "exit_status" in body and type(body["exit_status"]) is int:
                event["exit_status"] = body["exit_status"]
        else:
            raise RequestShapeError(f"outcome: expected completed, terminated or failed, found {outcome!r}")
        if outcome == "terminated" and event["reason"] in VIOLATIONS:
            event["responses"] = self._respond(record, event)
        index = gov.log.append(event)
        self._end_lease(execution_id)
        self._not_running(execution_id, principal)
        status = "completed" if outcome == "completed" else outcome
        gov.state.update_execution(
            execution_id,
            status=status,
            reason=event.get("reason", ""),
            indices=[*record["indices"], index],
            ended=int(now),
        )
        return {"execution": execution_id, "log_index": index, "status": status}

    def _respond(self, record: dict[str, Any], event: dict[str, Any]) -> list[dict[str, Any]]:
        """Governance responses to a violation, as the policy's ``@on_violation`` says.

        ``terminate`` has happened already (the enforcer killed the tree); ``suspend``
        suspends the principal; ``webhook:URL`` POSTs the facts as JSON. What was done
        (and whether it worked) is recorded in the terminal event.
        """
        gov = self.gov
        decision = orjson.loads(gov.log.leaf(int(record["indices"][0])))
        wanted = str(decision.get("obligations", {}).get("on_violation", "terminate"))
        done: list[dict[str, Any]] = []
        for response in (r.strip() for r in wanted.split(",") if r.strip()):
            if response == "terminate":
                done.append({"response": "terminate", "ok": True})
            elif response == "suspend":
                try:
                    gov.set_principal_status(record["principal"], "suspended", by="governance-response")
                    done.append({"response": "suspend", "ok": True})
                except ProctorError as e:
                    done.append({"response": "suspend", "ok": False, "error": str(e)[:200]})
            elif response.startswith("webhook:"):
                url = response.removeprefix("webhook:")
                payload = {
                    "execution": record["id"],
                    "principal": record["principal"],
                    "warrant": record["warrant"],
                    "reason": event["reason"],
                    "detail": event.get("detail", ""),
                }
                try:
                    answer = httpx.post(url, json=payload, timeout=2.0)
                    done.append({"response": "webhook", "url": url, "ok": answer.is_success,
                                 "status": answer.status_code})  # fmt: skip
                except httpx.HTTPError as e:
                    done.append({"response": "webhook", "url": url, "ok": False, "error": str(e)[:200]})
        return done

    def receipt(self, execution_id: str) -> dict[str, Any]:
        """The execution's self-contained, offline-verifiable receipt."""
        from proctor.lineage.receipt import build_receipt  # noqa: PLC0415 - built on demand

        gov = self.gov
        record = gov.state.execution(execution_id)
        if record is None:
            raise PrincipalError(f"no execution {execution_id!r}")
        chain = list(reversed(gov.state.warrant_chain(record["warrant"])))
        tokens = []
        indices: list[int] = []
        for wid in chain[:-1]:  # ancestors' decisions and issuance too
            w = gov.state.warrant(wid)
            if w is not None:
                tokens.append(str(w["token"]))
                indices += [int(w["decision_index"]), int(w["issued_index"])]
        own = gov.state.warrant(record["warrant"])
        if own is not None:
            tokens.append(str(own["token"]))
        indices += list(record["indices"])
        key_index = int(gov.state.meta("warrant_key_index") or 0)
        decision = orjson.loads(gov.log.leaf(int(record["indices"][0])))
        bundle_doc, policy_index = None, None
        bundle = gov.state.bundle(str(decision.get("bundle", "")))
        if bundle is not None:
            bundle_doc = orjson.loads(bundle)
            policy_index = gov.state.bundle_index(str(decision["bundle"]))
        return build_receipt(
            gov.log,
            execution_indices=indices,
            warrant_tokens=tokens,
            key_index=key_index,
            signer=gov.data.log_signer(),
            policy_bundle=bundle_doc,
            policy_index=policy_index,
        )
