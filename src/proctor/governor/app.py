"""The governor's HTTP API (FastAPI): ``/v1``, health, readiness and metrics.

Authentication: every ``/v1`` call that acts or reads governance state is signed by a
principal (RFC 9421 HTTP Message Signatures, see
:mod:`proctor.authorization.requests`). Unsigned, badly signed, stale or replayed
requests get 401, are recorded (bounded table and a metric, not the Merkle log, so
that unauthenticated callers cannot grow the log) and nothing else happens. Log reads
and proofs are public (their events carry warrant digests, never tokens); a receipt
holds raw warrant tokens: its execution's principal or an admin only. The event stream
is signed, capped and filtered per caller (:mod:`proctor.governor.stream`).

Every request first passes the boundary's limits (:mod:`proctor.governor.limits`);
bad input is a 4xx on every route, never a 5xx.
One outermost error barrier turns any unexpected exception into a plain 500 without a
traceback.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run
# time, and the dependencies are closures it could not resolve from strings.
import asyncio
import base64
import functools
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proctor import __version__
from proctor.authorization.keys import load_public_key
from proctor.authorization.requests import combine_fields
from proctor.errors import (
    AuthenticationError,
    BundleError,
    CanonicalizationError,
    KeyFormatError,
    PolicyError,
    PolicyValidationError,
    PrincipalError,
    ProctorError,
    ProofRequestError,
    QuotaError,
    VerificationError,
    WarrantError,
)
from proctor.governor.admin import NoSuchTargetError
from proctor.governor.executions import ExecutionConflictError
from proctor.governor.limits import MAX_BODY, BoundedBody, RequestLimitError, check_head, parse_json
from proctor.governor.metrics import GovernorMetrics
from proctor.governor.model import AuthorizeRequest, RequestShapeError
from proctor.governor.quotas import RequestRate
from proctor.governor.service import Governor
from proctor.governor.stream import EventStreams, StreamSlots

__all__ = ["MAX_BODY", "Caller", "GovernorApp", "create_app"]


@dataclass(frozen=True)
class Caller:
    """An authenticated principal and the request body it signed."""

    name: str
    body: Any


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def _error_for(exc: ProctorError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a refused request."""

    def body(code: str, **extra: Any) -> dict[str, Any]:
        return {"error": code, "message": str(exc), **extra}

    if isinstance(exc, RequestLimitError):
        return exc.status, body(exc.code)
    if isinstance(exc, QuotaError):
        extra = {} if exc.retry_after is None else {"retry_after": round(exc.retry_after, 3)}
        return 429, body("quota", quota=exc.quota, limit=exc.limit, found=exc.found, **extra)
    if isinstance(exc, PolicyValidationError):
        return 422, body("policy-invalid", diagnostics=list(exc.diagnostics))
    if isinstance(exc, BundleError | PolicyError):
        return 422, body("policy-rejected")
    if isinstance(exc, RequestShapeError | CanonicalizationError):
        return 422, body("bad-request")
    if isinstance(exc, NoSuchTargetError):
        return 404, body("not-found")
    if isinstance(exc, PrincipalError):
        return 403, body("forbidden")
    if isinstance(exc, WarrantError):
        return 403, body("warrant-rejected", reason=exc.reason)
    if isinstance(exc, ExecutionConflictError):
        return 409, body("conflict")
    if isinstance(exc, ProofRequestError):
        return 400, body("bad-request")
    return 503, body("unavailable")


class GovernorApp(FastAPI):
    """The governor's FastAPI application, with a plain ASGI path for the two hot
    endpoints, ``POST /v1/authorize`` and ``POST /v1/executions/{id}/renew``: they skip
    routing and dependency injection; authorize verifies and decides on the event loop
    and awaits the group commit without a thread, renew re-verifies in one worker
    thread (ADR 0006). Every other request goes through FastAPI as usual, and both are
    still declared there for the OpenAPI document."""

    def __init__(
        self, governor: Governor, metrics: GovernorMetrics, streams: EventStreams, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.governor = governor
        self.metrics = metrics
        self.streams = streams
        self.requests = RequestRate(governor.quotas, "max_requests_per_second", what="signed requests")
        self.authorizations = RequestRate(
            governor.quotas, "max_authorizations_per_second", what="authorization requests"
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        # The boundary's limits, for every route: nothing of an oversized request is read.
        try:
            declared = check_head(scope)
        except RequestLimitError as e:
            await _respond(send, e.status, _detail({"error": e.code, "message": str(e)}), close=True)
            return
        body = BoundedBody(receive, declared)
        if scope["method"] == "POST":
            path = scope["path"]
            if path == "/v1/authorize":
                handler = self.authorize_endpoint
            elif (m := _RENEW.fullmatch(path)) is not None:
                handler = functools.partial(self.renew_endpoint, m.group(1))
            elif path == "/v1/revocations":
                handler = self.revoke_endpoint
            else:
                handler = None
            if handler is not None:
                await self._fast(scope, body, send, handler)
                return
        await super().__call__(scope, body.receive, body.closing(send))

    async def _fast(
        self,
        scope: Any,
        body: BoundedBody,
        send: Any,
        handler: Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]],
    ) -> None:
        try:
            status, payload = await self._read_and_handle(scope, body, handler)
        except RequestLimitError as e:
            status, payload = e.status, _detail({"error": e.code, "message": str(e)})
        except Exception:  # noqa: BLE001 - the barrier of this path: never leak a traceback
            status, payload = 500, _INTERNAL
        await _respond(send, status, payload, close=not body.complete)

    async def _read_and_handle(
        self,
        scope: Any,
        body: BoundedBody,
        handler: Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]],
    ) -> tuple[int, bytes]:
        raw = await body.read()
        if raw is None:
            return 400, _detail({"error": "bad-request", "message": "the client went away"})
        query = scope.get("query_string", b"")
        target = scope["path"] + (f"?{query.decode('latin-1')}" if query else "")
        return await self.handle(handler, target, combine_fields(scope["headers"]), raw)

    @staticmethod
    async def handle(
        handler: Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]],
        target: str,
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, bytes]:
        """Run a fast-path handler: its (status, JSON body), refusals included."""
        try:
            return await handler(target, headers, body)
        except _Refused as e:
            return e.status, _detail(e.body)
        except QuotaError as e:
            await _hold_back(e)
            status, error = _error_for(e)
            return status, orjson.dumps(error)

    def caller(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        *,
        persist: bool = True,
        rates: tuple[RequestRate, ...] = (),
    ) -> str:
        """The principal that signed the request, within its request rates; a refusal
        otherwise: 401 (:class:`_Refused`), or 429 (:class:`~proctor.errors.QuotaError`).

        Right after the signature, the request counts against the principal's
        ``max_requests_per_second`` and then against ``rates`` (nothing else has
        been done yet). With ``persist``, its nonce is queued for the log writer's next
        transaction (an authorization does not ask: its own commit carries the nonces);
        a request refused at a rate always has its nonce kept, so it stays spent.
        """
        try:
            name = self.governor.authenticate(method, target, body, headers)
        except AuthenticationError as e:
            self.metrics.auth_failures.labels(e.reason).inc()
            raise _Refused(401, {"error": "unauthenticated", "reason": e.reason, "message": str(e)}) from e
        for rate in (self.requests, *rates):
            refused = rate.admit(name)
            if refused is not None:
                self.governor.persist_nonces()
                self.metrics.quota_refusals.labels(refused.quota).inc()
                raise refused
        if persist:
            self.governor.persist_nonces()
        return name

    @staticmethod
    async def _answer(work: Awaitable[Any]) -> tuple[int, bytes]:
        """200 and the JSON answer, or the status and body of the refusal."""
        try:
            return 200, orjson.dumps(await work)
        except CanonicalizationError as e:
            return 422, _detail({"error": "bad-request", "message": str(e)})
        except ProctorError as e:
            status, error = _error_for(e)
            return status, orjson.dumps(error)

    async def revoke_endpoint(self, target: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """``POST /v1/revocations`` (admin): on the fast path, because a revocation's
        latency is how long a revoked execution keeps running."""
        governor = self.governor
        name = self.caller("POST", target, headers, body)
        if not governor.is_admin(name):
            raise _Refused(403, {"error": "forbidden", "message": f"{name!r} is not an admin"})

        async def revoke() -> dict[str, Any]:
            kind, what, reason, successor = _revocation_args(parse_json(body) if body else None)
            return await governor.revoke_async(kind, what, reason=reason, by=name, successor=successor)

        return await self._answer(revoke())

    async def renew_endpoint(
        self, execution_id: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """``POST /v1/executions/{id}/renew``: authenticate on the loop, re-verify in a
        worker thread (it reads the state and, when the policy changed, appends)."""
        governor = self.governor
        name = self.caller("POST", target, headers, body)

        async def renew() -> dict[str, Any]:
            parsed = parse_json(body) if body else None
            return await run_in_threadpool(governor.executions.renew, name, execution_id, parsed)

        return await self._answer(renew())

    async def authorize_endpoint(
        self, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """``POST /v1/authorize``: authenticate, decide, record; (status, JSON body)."""
        governor, metrics = self.governor, self.metrics
        if len(body) > MAX_BODY:
            raise _Refused(413, _TOO_LARGE)
        name = self.caller("POST", target, headers, body, persist=False, rates=(self.authorizations,))
        try:
            request = AuthorizeRequest.from_json(parse_json(body) if body else None)
        except CanonicalizationError as e:
            governor.persist_nonces()
            return 422, _detail({"error": "bad-request", "message": str(e)})
        except RequestShapeError as e:
            governor.persist_nonces()
            return 422, orjson.dumps({"error": "bad-request", "message": str(e)})
        started = time.perf_counter()
        result = await governor.authorize_async(name, request)
        metrics.latency.observe(time.perf_counter() - started)
        (metrics.allowed if result.allowed else metrics.denied).inc()
        return 200, orjson.dumps(result.to_json())


class _Refused(Exception):  # noqa: N818 - a refusal, not an error of ours
    """A fast-path request refused with ``status`` and ``{"detail": body}``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


HOLD_BACK = 0.25
"""The shortest wait before a rate refusal is answered (seconds): over its rate, one
connection gets at most four refusals a second, each costing a signature check."""
_TOO_LARGE = {"error": "too-large", "message": f"body over {MAX_BODY} bytes"}
_RENEW = re.compile(r"/v1/executions/([A-Za-z0-9_-]{1,64})/renew")
_INTERNAL = orjson.dumps({"error": "internal", "message": "internal error"})


def _revocation_args(body: Any) -> tuple[str, str, str, str]:
    if type(body) is not dict or not all(type(body.get(k)) is str for k in ("kind", "target")):
        raise RequestShapeError("expected {kind, target, reason?, successor?}")
    reason, successor = body.get("reason", ""), body.get("successor", "")
    if type(reason) is not str:
        raise RequestShapeError("reason: expected a string")
    if type(successor) is not str:
        raise RequestShapeError("successor: expected a principal name")
    return body["kind"], body["target"], reason, successor


async def _hold_back(refusal: QuotaError) -> None:
    """Answer a rate refusal only once the principal may send again (its
    ``retry_after``), and no sooner than :data:`HOLD_BACK`: a flooding client's
    connection waits on a timer, and the governor's CPU goes to everyone else."""
    if refusal.retry_after is not None:
        await asyncio.sleep(max(refusal.retry_after, HOLD_BACK))


def _detail(body: dict[str, Any]) -> bytes:
    return orjson.dumps({"detail": body})


async def _respond(send: Any, status: int, payload: bytes, *, close: bool) -> None:
    """Send a whole JSON response; ``close``: the request body is not read to its end."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def create_app(governor: Governor, *, streams: StreamSlots | None = None) -> GovernorApp:
    """The FastAPI application serving ``governor``.

    Args:
        streams: the admission counter of event streams (``proctor serve`` sizes it to
            its file descriptors: :func:`proctor.governor.server.plan_limits`);
            by default :data:`~proctor.governor.stream.DEFAULT_MAX_STREAMS` in all.
    """
    metrics = GovernorMetrics(governor)
    app = GovernorApp(
        governor,
        metrics,
        EventStreams(governor, streams if streams is not None else StreamSlots()),
        title="proctor governor",
        version=__version__,
        description="Execution governance: authorize, record, prove.",
    )
    app.state.governor = governor

    @app.exception_handler(Exception)
    async def error_barrier(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's outermost middleware calls this for anything unhandled: never
        # leak a traceback. (A pure handler, not a BaseHTTPMiddleware, which would wrap
        # every request in a task group.)
        return _error(500, "internal", "internal error")

    @app.exception_handler(ProctorError)
    async def proctor_error(request: Request, exc: ProctorError) -> JSONResponse:
        if isinstance(exc, QuotaError):
            if exc.retry_after is None:
                metrics.quota_refusals.labels(exc.quota).inc()  # the rates count their own
            await _hold_back(exc)
        status, body = _error_for(exc)
        return JSONResponse(body, status_code=status)

    async def caller(request: Request) -> Caller:
        body = await request.body()  # through BoundedBody: refused once over MAX_BODY
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = combine_fields(request.scope["headers"])
        try:
            name = app.caller(request.method, target, headers, body)
        except _Refused as e:
            raise HTTPException(e.status, e.body) from e
        try:
            parsed = parse_json(body) if body else None
        except CanonicalizationError as e:
            raise HTTPException(422, {"error": "bad-request", "message": str(e)}) from e
        return Caller(name, parsed)

    def admin(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not governor.is_admin(who.name):
            raise HTTPException(403, {"error": "forbidden", "message": f"{who.name!r} is not an admin"})
        return who

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        ok, checks = governor.ready()
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/authorize")
    async def authorize(request: Request) -> Response:
        # Served by GovernorApp's fast path; declared here for the OpenAPI document
        # (and reached only if that path is bypassed, with the same handler).
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = combine_fields(request.scope["headers"])
        status, payload = await app.handle(app.authorize_endpoint, target, headers, await request.body())
        return Response(payload, status_code=status, media_type="application/json")

    @app.post("/v1/executions", status_code=201)
    def start_execution(who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        return governor.executions.start(who.name, who.body)

    # Served by GovernorApp's fast path (renew_endpoint); declared here for OpenAPI.
    @app.post("/v1/executions/{execution_id}/renew")
    def renew_execution(execution_id: str, who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        return governor.executions.renew(who.name, execution_id, who.body)

    @app.post("/v1/executions/{execution_id}/finish")
    def finish_execution(execution_id: str, who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        return governor.executions.finish(who.name, execution_id, who.body)

    @app.get("/v1/executions/{execution_id}/receipt")
    def execution_receipt(execution_id: str, who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        # The receipt holds raw warrant tokens: its principal's and the admins' only. An
        # unknown execution and someone else's are refused alike (no existence oracle).
        record = governor.state.execution(execution_id)
        if record is None or (record["principal"] != who.name and not governor.is_admin(who.name)):
            raise PrincipalError(f"no execution {execution_id!r} of {who.name!r}")
        try:
            return governor.executions.receipt(execution_id)
        except VerificationError as e:  # asked too early: a client's error, not the governor's
            if record["status"] not in ("running", "terminating"):
                raise
            raise ExecutionConflictError(f"execution {execution_id!r} has not ended: {e}") from e

    @app.get("/v1/stream")
    async def stream(
        request: Request, who: Annotated[Caller, Depends(caller)], since: int = -1, execution: str = ""
    ) -> Response:
        return app.streams.open(
            who.name,
            since=since,
            last_event_id=request.headers.get("last-event-id"),
            execution=execution,
        )

    @app.get("/v1/warrant-key", response_class=PlainTextResponse)
    def warrant_key() -> str:
        return base64.b64encode(governor.warrant_public_key).decode() + "\n"

    # -- log: public reads -----------------------------------------------------

    @app.get("/v1/log/key", response_class=PlainTextResponse)
    def log_key() -> str:
        return governor.log.verifier_key() + "\n"

    @app.get("/v1/log/checkpoint", response_class=PlainTextResponse)
    def log_checkpoint() -> str:
        return governor.log.checkpoint()

    @app.get("/v1/log/entries/{index}")
    def log_entry(index: int) -> JSONResponse:
        raw = governor.log.leaf(index)
        return JSONResponse(
            {
                "index": index,
                "leaf": base64.b64encode(raw).decode(),
                "leaf_hash": base64.b64encode(governor.log.leaf_hash(index)).decode(),
                "event": orjson.loads(raw),
            }
        )

    @app.get("/v1/log/proof/inclusion")
    def inclusion(index: int, size: int | None = None) -> dict[str, Any]:
        return governor.log.inclusion_proof(index, size)

    @app.get("/v1/log/proof/consistency")
    def consistency(old: int, new: int | None = None) -> dict[str, Any]:
        return governor.log.consistency_proof(old, new)

    # -- admin -----------------------------------------------------------------

    @app.put("/v1/policy")
    def put_policy(who: Annotated[Caller, Depends(admin)]) -> dict[str, Any]:
        if type(who.body) is not dict:
            raise RequestShapeError("expected a signed bundle JSON object")
        return governor.push_policy(who.body, by=who.name)

    @app.get("/v1/policy")
    def get_policy(who: Annotated[Caller, Depends(caller)]) -> JSONResponse:
        active = governor.active_policy()
        if active is None:
            return _error(404, "no-policy", "no policy bundle is active; everything is denied")
        return JSONResponse(active)

    @app.get("/v1/principals")
    def list_principals(who: Annotated[Caller, Depends(admin)]) -> list[dict[str, Any]]:
        return [p.to_json() for p in governor.state.principals()]

    @app.post("/v1/principals")
    def add_principal(who: Annotated[Caller, Depends(admin)]) -> dict[str, Any]:
        body = who.body
        if (
            type(body) is not dict
            or type(body.get("name")) is not str
            or type(body.get("public_key")) is not str
        ):
            raise RequestShapeError("expected {name, public_key, attrs?, zone?}")
        attrs = body.get("attrs", {})
        if type(attrs) is not dict or not all(type(v) is str for v in attrs.values()):
            raise RequestShapeError("attrs: expected an object of strings")
        zone = body.get("zone", "")
        if type(zone) is not str:
            raise RequestShapeError("zone: expected a string")
        try:
            load_public_key(body["public_key"])
        except KeyFormatError as e:  # bad input, not an unavailable governor
            raise RequestShapeError(f"public_key: {e}") from e
        record = governor.add_principal(body["name"], body["public_key"], attrs=attrs, zone=zone, by=who.name)
        return record.to_json()

    @app.post("/v1/principals/{name}/suspend")
    def suspend(name: str, who: Annotated[Caller, Depends(admin)]) -> dict[str, Any]:
        return governor.set_principal_status(name, "suspended", by=who.name).to_json()

    @app.post("/v1/principals/{name}/resume")
    def resume(name: str, who: Annotated[Caller, Depends(admin)]) -> dict[str, Any]:
        return governor.set_principal_status(name, "active", by=who.name).to_json()

    # Served by GovernorApp's fast path (revoke_endpoint); declared here for OpenAPI.
    @app.post("/v1/revocations")
    def revoke(who: Annotated[Caller, Depends(admin)]) -> dict[str, Any]:
        kind, target, reason, successor = _revocation_args(who.body)
        return governor.revoke(kind, target, reason=reason, by=who.name, successor=successor)

    return app
