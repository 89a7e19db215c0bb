"""The governor's side of a gateway session: each ``tools/call`` authorized, started,
kept leased and finished over HTTP, as ``proctor run`` does for a command.

Blocking calls (:class:`~proctor.enforcement._failover.Governors`, httpx), made on
worker threads by the session (:mod:`proctor.integrations.mcp.session`). The rules,
numbered as the code cites them:

1. A call is authorized as action ``mcp.call`` on resource ``NAME/TOOL`` with its exact
   arguments and the digest of the tool definition it is about to call
   (``executable_digest``, bound into the warrant). Anything but an allow carrying a
   warrant is a refusal, with the governor's reason.
2. An allow that needs an approval (``approval.status == "pending"``) mints no warrant:
   the gateway polls ``GET /v1/approvals/{id}`` until it is approved (then asks again
   with the approval's id), denied, expired, or the approval timeout passes (a
   refusal). Nothing the agent receives lets it approve.
3. The warrant is verified locally against the trusted warrant key before anything is
   started, for exactly this call (action, resource, arguments, definition digest).
4. The execution is started with the tool measurement (:func:`tool_measurement`); the
   start answer and every renewal answer must be signed by the warrant key for that
   request (ADR 0017, :class:`~proctor.enforcement._leases.LeaseCheck`). A warrant
   starts one execution; the governor refuses a second start. A start the governor
   recorded whose answer is not accepted is finished ``failed`` (``not-forwarded``) by
   the id that answer names, bound to the verified warrant (the governor ends it only if
   it runs under that warrant).
5. A renewal refused (``ok: false``, 403, 404) ends the call as the governor says; an
   unreachable governor leaves the lease deadline to decide.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proctor.authorization.claims import WarrantClaims, WarrantRequest, args_digest
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.warrants import VerifiedWarrant, verify_warrant_bounds
from proctor.client import GovernorError
from proctor.enforcement._failover import Answered, Governors, governor_urls
from proctor.enforcement._leases import LeaseCheck
from proctor.errors import IntegrityError, VerificationError, WarrantError
from proctor.integrations.mcp.outcomes import (
    definition_digests,
    ended_body,
    finish_body,
    not_forwarded_body,
    unforwardable,
)
from proctor.integrations.mcp.schema import visible_tools
from proctor.policy.decision import describe_denial
from proctor.verification import (
    check_measurement,
    enforcer_ttl_s,
    lease_deadline,
    renewal_interval_s,
    renewal_timeout_s,
    tool_measurement,
)
from proctor.verification.lease_answer import named_start, request_nonce, verify_lease_answer

__all__ = [
    "ACTION",
    "Grant",
    "Refusal",
    "Running",
    "ToolGovernance",
    "definition_digests",
    "ended_body",
    "finish_body",
    "not_forwarded_body",
    "unforwardable",
]

ACTION = "mcp.call"
AUTHORIZE_START = "/v1/authorize/start"
_POLL_S = 0.25


@dataclass(frozen=True)
class Refusal:
    """A call that must not be forwarded, and why (words for the agent)."""

    reason: str


@dataclass(frozen=True)
class Grant:
    """A verified warrant for one call (rule 3)."""

    token: str
    claims: WarrantClaims
    expires: int
    arguments: dict[str, Any]
    digest: str


@dataclass
class Running:
    """A started execution: its id, lease and when to renew it (monotonic seconds)."""

    execution: str
    grant: Grant
    log_index: int
    ttl: float
    deadline: float
    next_renewal: float
    began: float = field(default_factory=time.monotonic)


class ToolGovernance:
    """Signed calls to the governors of one deployment for one gateway session.

    Args:
        server: one governor URL, or several of one deployment separated by commas.
        key: the principal key the gateway acts as.
        warrant_key: the trusted warrant key (raw Ed25519); ``None``: ask the governor.
        approval_timeout: seconds to wait for an approval before refusing (rule 2).
        enforcer: the name recorded as the execution's enforcer.
        timeout: seconds per governor attempt.
        on_note: told, in words, when a governor is passed over.
    """

    def __init__(
        self,
        server: str,
        key: PrincipalKey,
        *,
        warrant_key: bytes | None = None,
        approval_timeout: float = 300.0,
        enforcer: str = "proctor-gateway",
        timeout: float = 5.0,
        on_note: Callable[[str], None] = lambda _: None,
    ) -> None:
        """Open the governor clients (no connection yet)."""
        self.principal = key.name
        self._governors = Governors(governor_urls(server), key, on_note=on_note, timeout=timeout)
        self._root = warrant_key
        self._approval_timeout = approval_timeout
        self._enforcer = enforcer
        self._zone = ""
        self._note = on_note
        self._trusted = False
        self._combined = True  # the governor offers POST /v1/authorize/start (ADR 0019)

    def close(self) -> None:
        """Close the connection pools."""
        self._governors.close()

    def _warrant_key(self) -> bytes:
        if not self._trusted:
            root = self._root
            if root is None:
                root = base64.b64decode(self._governors.text("/v1/warrant-key").strip(), validate=True)
            self._governors.trust(root)  # every governor asked from now on is of this deployment
            self._root, self._trusted = root, True
        if self._root is None:  # pragma: no cover - set above
            raise GovernorError("no warrant key", status=0)
        return self._root

    # -- rules 1-3 ------------------------------------------------------------------

    def authorize(self, resource: str, arguments: dict[str, Any], digest: str) -> Grant | Refusal:
        """Authorize one call and verify its warrant (rules 1-3); never raises."""
        request = _request(resource, arguments, digest)
        try:
            root = self._warrant_key()
            answer = self._governors.json("POST", "/v1/authorize", request)
        except (GovernorError, ValueError) as e:
            return Refusal(f"refused: the governor could not authorize the call ({e})")
        return self._granted(answer, request, root)

    def authorize_start(
        self,
        resource: str,
        arguments: dict[str, Any],
        digest: str,
        *,
        go: Callable[[], bool] = lambda: True,
        on_sent: Callable[[], object] | None = None,
    ) -> Running | Refusal:
        """Rules 1-4 in one round trip (``POST /v1/authorize/start``, ADR 0019): the
        warrant verified locally for exactly this call, the start answer signed by the
        warrant key for this request; never raises. A governor without that route is
        asked in two requests from then on (:meth:`authorize`, :meth:`start`); an allow
        that waits for an approval is started once approved (rule 2) if ``go()`` still
        says so then; else ``Refusal("")`` (the agent gave up on it)."""
        if not go():
            return Refusal("")
        if not self._combined:
            return self._one_by_one(resource, arguments, digest, go)
        request = _request(resource, arguments, digest)
        measurement = tool_measurement(resource, digest)
        plan = {"measurement": measurement, "containment": [], "enforcer": self._enforcer}
        try:
            root = self._warrant_key()
            body = {"authorize": request, "start": plan}
            answered = self._governors.request("POST", AUTHORIZE_START, body, on_sent=on_sent)
            answer = answered.json()
        except GovernorError as e:
            if e.status in (404, 405):  # an older governor: no such route
                self._combined = False
                return self._one_by_one(resource, arguments, digest, go)
            return Refusal(f"refused: the governor could not authorize and start the call ({e})")
        except ValueError as e:
            return Refusal(f"refused: the governor's answer is not JSON ({e})")
        authorization = answer.get("authorization") if isinstance(answer, dict) else None
        started = answer.get("execution") if isinstance(answer, dict) else None
        grant = self._granted(authorization, request, root)
        if isinstance(grant, Refusal):
            if isinstance(started, dict):  # started, but not for a warrant that verifies here
                # The id and warrant are the answer's (nothing verifies here): the governor
                # ends the execution only if it runs under the warrant the answer names.
                named = started.get("warrant")
                if named_start(started, named) is not None:
                    self.finish(_Unverified(started), {**not_forwarded_body(grant.reason), "warrant": named})
            return grant
        if started is None:  # allowed once approved (rule 2): started now
            return self._started(grant) if go() else Refusal("")
        try:
            claims = grant.claims
            verify_lease_answer(
                started,
                kind="start",
                execution=str(started.get("execution")) if isinstance(started, dict) else "",
                nonce=request_nonce(answered.response.request.headers.get("signature-input", "")),
                warrant=claims.warrant_id,
                lease_ttl_ms=claims.lease_ttl_ms,
                warrant_key=root,
            )
            return self._running(grant, started, answered.sent)
        except (VerificationError, KeyError, TypeError, ValueError) as e:
            reason = f"refused: the governor's start answer does not verify: {e}"
            warrant = grant.claims.warrant_id  # rule 4: what it recorded is ended, not left to its lease
            self._end_unaccepted(named_start(started, warrant), warrant, reason)
            return Refusal(reason)

    def _one_by_one(
        self, resource: str, arguments: dict[str, Any], digest: str, go: Callable[[], bool]
    ) -> Running | Refusal:
        grant = self.authorize(resource, arguments, digest)
        if isinstance(grant, Refusal):
            return grant
        return self._started(grant) if go() else Refusal("")

    def _started(self, grant: Grant) -> Running | Refusal:
        try:
            return self.start(grant)
        except Exception as e:  # noqa: BLE001 - whatever failed, nothing is forwarded
            return Refusal(f"refused: the governor did not start the call: {e}")

    def _granted(self, answer: Any, request: dict[str, Any], root: bytes) -> Grant | Refusal:
        """An authorization answer made a verified grant (rules 1-3), or why not."""
        resource, arguments, digest = request["resource"], request["arguments"], request["executable_digest"]
        try:
            approval = answer.get("approval") if isinstance(answer, dict) else None
            if isinstance(approval, dict) and "warrant" not in answer:
                answer = self._approved(request, approval)  # rule 2
                if isinstance(answer, Refusal):
                    return answer
        except (GovernorError, ValueError) as e:
            return Refusal(f"refused: the governor could not authorize the call ({e})")
        if not isinstance(answer, dict) or not answer.get("allow") or "warrant" not in answer:
            decision = answer.get("decision", {}) if isinstance(answer, dict) else {}
            return Refusal(
                describe_denial(
                    decision if isinstance(decision, dict) else {},
                    principal=self.principal,
                    action=ACTION,
                    resource=resource,
                )
            )
        try:
            return self._verified(str(answer["warrant"]["token"]), root, resource, arguments, digest)
        except (WarrantError, IntegrityError, KeyError, TypeError, ValueError) as e:
            return Refusal(f"refused: the warrant does not verify locally: {e}")

    def _approved(self, request: dict[str, Any], approval: dict[str, Any]) -> Any:
        """Rule 2: wait for an admin's approval, then ask again with its id."""
        ident = approval.get("id")
        if type(ident) is not str or not ident.startswith("ap_"):
            return Refusal(f"refused: the governor asked for an approval without an id ({approval!r:.80})")
        deadline = time.monotonic() + self._approval_timeout
        status = str(approval.get("status", ""))
        while status == "pending":
            if time.monotonic() >= deadline:
                return Refusal(f"denied: approval {ident} was not given within {self._approval_timeout:g} s")
            time.sleep(_POLL_S)
            answer = self._governors.json("GET", f"/v1/approvals/{ident}")
            status = str(answer.get("status", "")) if isinstance(answer, dict) else ""
        if status != "approved":
            return Refusal(f"denied: approval {ident} is {status or 'unknown'}")
        return self._governors.json("POST", "/v1/authorize", {**request, "approval": ident})

    def _verified(
        self, token: str, root: bytes, resource: str, arguments: dict[str, Any], digest: str
    ) -> Grant:
        now = int(time.time())

        def verify(zone: str) -> VerifiedWarrant:
            return verify_warrant_bounds(
                token,
                root_public_key=root,
                now=now,
                request=WarrantRequest(
                    action=ACTION,
                    resource=resource,
                    args_digest=args_digest(arguments),
                    zone=zone,
                    executable_digest=digest,
                ),
            )

        # The warrant names the zone the governor evaluated (the principal's): the one
        # the last warrant named is tried first, and read from this one if it differs.
        try:
            verified = verify(self._zone)
        except WarrantError:
            zone = verify_warrant_bounds(token, root_public_key=root, now=now, request=None).claims.zone
            verified = verify(zone)
        self._zone = verified.claims.zone
        claims = verified.claims
        check_measurement(
            tool_measurement(resource, digest),
            action=claims.action,
            resource=claims.resource,
            executable_digest=claims.executable_digest,
        )
        return Grant(token, claims, verified.expires, arguments, digest)

    # -- rules 4 and 5 --------------------------------------------------------------

    def start(self, grant: Grant) -> Running:
        """Start the call's execution (rule 4).

        Raises:
            GovernorError: refused, or no governor answered validly.
        """
        claims = grant.claims
        lease = LeaseCheck(self._warrant_key(), claims.warrant_id, claims.lease_ttl_ms)
        body = {
            "warrant": grant.token,
            "action": claims.action,
            "resource": claims.resource,
            "arguments": grant.arguments,
            "zone": claims.zone,
            "measurement": tool_measurement(claims.resource, grant.digest),
            "containment": [],
            "enforcer": self._enforcer,
        }
        unaccepted: list[str | None] = []

        def accept(answered: Answered) -> None:
            try:
                lease.start(answered)
            except VerificationError:
                with contextlib.suppress(ValueError):
                    unaccepted.append(named_start(answered.json(), claims.warrant_id))
                raise

        try:
            answered = self._governors.request("POST", "/v1/executions", body, accept=accept)
        finally:  # rule 4: a start recorded under an answer not accepted is ended
            for execution in unaccepted:
                self._end_unaccepted(
                    execution, claims.warrant_id, "the governor's start answer was not accepted"
                )
        started = answered.json()
        try:
            return self._running(grant, started, answered.sent)
        except (KeyError, TypeError, ValueError) as e:  # signed, but its log position is not
            why = f"the governor's start answer is incomplete: {e!r}"
            self._end_unaccepted(named_start(started, claims.warrant_id), claims.warrant_id, why)
            raise GovernorError(why, status=0) from e

    def _end_unaccepted(self, execution: str | None, warrant: str, why: str) -> None:
        """Finish a start whose answer was not accepted (rule 4), by the id that answer
        names (:func:`~proctor.verification.lease_answer.named_start`; ``None``: none) and
        the ``warrant`` the governor must find it under."""
        if execution is None:
            return
        body = {**not_forwarded_body(why), "warrant": warrant}
        problem = self.finish(_Unverified({"execution": execution}), body)
        self._note(problem or f"execution {execution} was recorded under an answer not accepted; ended")

    @staticmethod
    def _running(grant: Grant, started: dict[str, Any], sent: float) -> Running:
        position = started["log_index"]  # where its revocations are followed from: not signed
        if type(position) is not int or position < 0:
            raise ValueError(f"the start answer's log_index is not a log position: {position!r:.40}")
        ttl = enforcer_ttl_s(grant.claims.lease_ttl_ms)
        return Running(
            execution=str(started["execution"]),
            grant=grant,
            log_index=position,
            ttl=ttl,
            deadline=lease_deadline(sent, ttl),
            next_renewal=sent + renewal_interval_s(ttl),
        )

    def renew(self, running: Running) -> str | None:
        """Renew one lease (rule 5).

        Returns:
            ``None`` when renewed (or the governor was unreachable: the deadline stays),
            else why the call must end: ``"revoked: …"`` or the governor's reason.
        """
        claims = running.grant.claims
        lease = LeaseCheck(self._warrant_key(), claims.warrant_id, claims.lease_ttl_ms)
        running.next_renewal = time.monotonic() + renewal_interval_s(running.ttl)
        try:
            answered = self._governors.request(
                "POST",
                f"/v1/executions/{running.execution}/renew",
                {"integrity": "ok"},
                timeout=renewal_timeout_s(running.ttl),
                deadline=running.deadline,
                accept=lease.renewal(running.execution),
            )
            answer = answered.json()
        except (GovernorError, ValueError) as e:
            if isinstance(e, GovernorError) and e.status in (403, 404):
                return f"revoked: the governor refused the renewal: {e}"
            return None
        if isinstance(answer, dict) and answer.get("ok"):
            running.deadline = lease_deadline(answered.sent, running.ttl)
            return None
        terminate = answer.get("terminate", "revoked") if isinstance(answer, dict) else "revoked"
        detail = answer.get("detail", "") if isinstance(answer, dict) else ""
        return f"{terminate}: {detail}"

    def finish(self, running: Running | _Unverified, body: dict[str, Any]) -> str:
        """Record how the call ended; returns ``""`` or why it could not be recorded."""
        deadline = time.monotonic() + 6.5
        for attempt in range(3):
            try:
                target = f"/v1/executions/{running.execution}/finish"
                self._governors.request("POST", target, body, timeout=2.0, deadline=deadline)
                return ""
            except GovernorError as e:
                if e.status and e.status < 500:
                    return f"the governor refused to record the end of {running.execution}: {e}"
                time.sleep(0.1 * (attempt + 1))
        return f"could not record the end of {running.execution}: the governor is unreachable"

    def visible(self, server: str, tools: list[str]) -> frozenset[str]:
        """The tools of ``server`` this principal could ever call (``tools/list`` shows only
        those); none when the governor cannot say (fail closed: calls are refused anyway)."""
        try:
            return visible_tools(self._governors, server, tools)
        except (GovernorError, ValueError) as e:
            self._note(f"tools/list: the governor could not say which tools are visible, showing none: {e}")
            return frozenset()

    def follow(self, since: int, on_message: Callable[[dict[str, Any]], None], stop: Any) -> None:
        """Follow this principal's trust changes (revocations, policy) until ``stop`` is set."""
        try:
            self._governors.follow("", since, on_message, stop)
        except VerificationError:  # pragma: no cover - follow reports its own failures
            return


@dataclass(frozen=True)
class _Unverified:
    """An execution the governor says it started for a call that is refused here."""

    started: dict[str, Any]

    @property
    def execution(self) -> str:
        return str(self.started.get("execution", ""))


def _request(resource: str, arguments: dict[str, Any], digest: str) -> dict[str, Any]:
    """The authorization request of one call (rule 1)."""
    return {"action": ACTION, "resource": resource, "arguments": arguments, "executable_digest": digest}
