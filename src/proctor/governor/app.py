"""The governor's HTTP API (FastAPI): ``/v1``, health, readiness and metrics.

Authentication: every ``/v1`` call that acts or reads governance state is signed by a
principal (RFC 9421 HTTP Message Signatures, see
:mod:`proctor.authorization.requests`). Unsigned, badly signed, stale or replayed
requests get 401, are recorded (bounded table and a metric, not the Merkle log, so
that unauthenticated callers cannot grow the log) and nothing else happens. Log reads
and proofs are public: they are what outsiders verify.

One outermost error barrier turns any unexpected exception into a plain 500 without a
traceback.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run
# time, and the dependencies are closures it could not resolve from strings.
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
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from proctor import __version__
from proctor.errors import (
    AuthenticationError,
    BundleError,
    CanonicalizationError,
    PolicyError,
    PolicyValidationError,
    PrincipalError,
    ProctorError,
    ProofRequestError,
    WarrantError,
)
from proctor.governor.admin import NoSuchTargetError
from proctor.governor.executions import ExecutionConflictError
from proctor.governor.model import AuthorizeRequest, RequestShapeError
from proctor.governor.service import Governor
from proctor.governor.stream import sse_stream
from proctor.lineage.canonical import loads

__all__ = ["MAX_BODY", "Caller", "GovernorApp", "create_app"]

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Caller:
    """An authenticated principal and the request body it signed."""

    name: str
    body: Any


class _Metrics:
    def __init__(self, governor: Governor) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "proctor_decisions", "Authorization decisions by outcome.", ["outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "proctor_decision_seconds",
            "Time to decide, record and (on allow) issue a warrant.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.allowed = self.decisions.labels("allow")
        self.denied = self.decisions.labels("deny")
        self.auth_failures = Counter(
            "proctor_auth_failures", "Rejected unauthenticated requests.", ["reason"], registry=self.registry
        )
        log_size = Gauge("proctor_log_size", "Entries in the lineage log.", registry=self.registry)
        log_size.set_function(lambda: governor.log.size)


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def _error_for(exc: ProctorError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a refused request."""

    def body(code: str, **extra: Any) -> dict[str, Any]:
        return {"error": code, "message": str(exc), **extra}

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

    def __init__(self, governor: Governor, metrics: _Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.governor = governor
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
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
                await self._fast(scope, receive, send, handler)
                return
        await super().__call__(scope, receive, send)

    async def _fast(
        self,
        scope: Any,
        receive: Any,
        send: Any,
        handler: Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]],
    ) -> None:
        try:
            status, payload = await self._read_and_handle(scope, receive, handler)
        except Exception:  # noqa: BLE001 - the barrier of this path: never leak a traceback
            status, payload = 500, _INTERNAL
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _read_and_handle(
        self,
        scope: Any,
        receive: Any,
        handler: Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]],
    ) -> tuple[int, bytes]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 400, _detail({"error": "bad-request", "message": "the client went away"})
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return 413, _detail(_TOO_LARGE)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        query = scope.get("query_string", b"")
        target = scope["path"] + (f"?{query.decode('latin-1')}" if query else "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return await self.handle(handler, target, headers, b"".join(chunks))

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

    def caller(
        self, method: str, target: str, headers: dict[str, str], body: bytes, *, persist: bool = True
    ) -> str:
        """The principal that signed the request; a refusal (401) otherwise.

        With ``persist``, its nonce is queued for the log writer's next transaction
        (an authorization does not ask: its own commit carries the nonces).
        """
        try:
            name = self.governor.authenticate(method, target, body, headers)
        except AuthenticationError as e:
            self.metrics.auth_failures.labels(e.reason).inc()
            raise _Refused(401, {"error": "unauthenticated", "reason": e.reason, "message": str(e)}) from e
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
            kind, what, reason, successor = _revocation_args(loads(body) if body else None)
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
            parsed = loads(body) if body else None
            return await run_in_threadpool(governor.executions.renew, name, execution_id, parsed)

        return await self._answer(renew())

    async def authorize_endpoint(
        self, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """``POST /v1/authorize``: authenticate, decide, record; (status, JSON body)."""
        governor, metrics = self.governor, self.metrics
        if len(body) > MAX_BODY:
            raise _Refused(413, _TOO_LARGE)
        name = self.caller("POST", target, headers, body, persist=False)
        try:
            request = AuthorizeRequest.from_json(loads(body) if body else None)
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


def _detail(body: dict[str, Any]) -> bytes:
    return orjson.dumps({"detail": body})


def create_app(governor: Governor) -> GovernorApp:
    """The FastAPI application serving ``governor``."""
    metrics = _Metrics(governor)
    app = GovernorApp(
        governor,
        metrics,
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
        status, body = _error_for(exc)
        return JSONResponse(body, status_code=status)

    async def caller(request: Request) -> Caller:
        body = await request.body()
        if len(body) > MAX_BODY:
            raise HTTPException(413, _TOO_LARGE)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            name = app.caller(request.method, target, headers, body)
        except _Refused as e:
            raise HTTPException(e.status, e.body) from e
        try:
            parsed = loads(body) if body else None
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
        headers = {k.lower(): v for k, v in request.headers.items()}
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
    def execution_receipt(execution_id: str) -> dict[str, Any]:
        return governor.executions.receipt(execution_id)

    @app.get("/v1/stream")
    async def stream(request: Request, since: int = -1) -> StreamingResponse:
        last_id = request.headers.get("last-event-id")
        if last_id is not None and last_id.strip().lstrip("-").isdigit():
            since = max(since, int(last_id))
        return StreamingResponse(
            sse_stream(governor.broadcaster, governor.trust_changes, since=since),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
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
