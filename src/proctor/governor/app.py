"""The governor's HTTP API (FastAPI): ``/v1``, health, readiness and metrics.

Why one module: every route is declared once in :func:`create_app`, one closure over
the governor, its request rates and the boundary, and the three fast paths share their
endpoints with their FastAPI declarations (ADR 0011); the whole HTTP surface, and which
routes are signed, admin-only or public, is audited by reading this one file.

Authentication: every ``/v1`` call that acts or reads governance state is signed by a
principal (RFC 9421 HTTP Message Signatures, see
:mod:`proctor.authorization.requests`). Unsigned, badly signed, stale or replayed
requests get 401, are recorded (bounded table and a metric, not the Merkle log, so
that unauthenticated callers cannot grow the log) and nothing else happens. Log reads
and proofs are public (their events carry warrant digests, never tokens); a receipt
holds raw warrant tokens: its execution's principal or an admin only; so does an
execution's summary (:mod:`proctor.governor.execution_views`). The event stream
is signed, capped and filtered per caller (:mod:`proctor.governor.stream`).

Every request first passes the boundary's limits (:mod:`proctor.governor.limits`);
bad input is a 4xx on every route, never a 5xx. A JSON body is parsed only after its
signature verified, then validated against its route's typed model
(:mod:`proctor.governor.model`); the models are the request bodies of ``/openapi.json``.

Errors (ADR 0011): one table maps every exception to its status and ``error`` code, and
every refusal, on the fast path and through FastAPI alike, is one envelope
(:mod:`proctor.governor.boundary`). One outermost barrier per path turns any other
exception into a plain 500 and logs it; no traceback reaches a client.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run
# time, and the dependencies are closures it could not resolve from strings.
import asyncio
import base64
import functools
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from proctor import __version__
from proctor.authorization.requests import combine_fields
from proctor.errors import (
    AuthenticationError,
    BodyTooLargeError,
    BundleError,
    CanonicalizationError,
    ExecutionConflictError,
    NoSuchTargetError,
    PrincipalError,
    ProctorError,
    QuotaError,
    RequestLimitError,
    RequestShapeError,
    VerificationError,
)
from proctor.governor.authorize_start import FINISH, authorize_start_endpoint, finish_endpoint
from proctor.governor.authorize_start import PATH as AUTHORIZE_START
from proctor.governor.boundary import (
    INTERNAL,
    INTERNAL_BODY,
    envelope,
    explain,
    http_code,
    refusal,
    unexpected,
)
from proctor.governor.execution_views import DEFAULT_LIMIT, list_executions, show_execution
from proctor.governor.limits import MAX_BODY, BoundedBody, check_head, check_media_type, parse_json
from proctor.governor.metrics import GovernorMetrics
from proctor.governor.model import (
    BODIES,
    ApprovalDecisionBody,
    AuthorizeBody,
    AuthorizeRequest,
    AuthorizeStartBody,
    EmptyBody,
    FinishExecutionBody,
    PrincipalBody,
    RenewExecutionBody,
    RevocationBody,
    SignedPolicyBody,
    StartExecutionBody,
    parse_body,
)
from proctor.governor.node_witness import MOUNT as NODE_WITNESS_MOUNT
from proctor.governor.nodes import list_nodes
from proctor.governor.quotas import RateShare, RequestRate
from proctor.governor.service import Governor
from proctor.governor.stream import EventStreamResponse, EventStreams, StreamSlots
from proctor.governor.visibility import VisibleBody, visible_tools
from proctor.policy import PolicyBundle
from proctor.verification.lease_answer import request_nonce

__all__ = ["MAX_BODY", "Caller", "GovernorApp", "create_app"]

Handler = Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]]
"""A fast-path endpoint: (target, header fields, raw body) to (status, JSON body)."""


@dataclass(frozen=True)
class Caller:
    """An authenticated principal and the request body it signed (parsed, not yet
    validated against the route's model)."""

    name: str
    body: Any
    nonce: str | None = None
    """The verified request's nonce, that a signed lease answer is bound to (ADR 0017)."""


class GovernorApp(FastAPI):
    """The governor's FastAPI application, with a plain ASGI path for the three hot
    endpoints, ``POST /v1/authorize``, ``POST /v1/executions/{id}/renew`` and
    ``POST /v1/revocations``: they skip routing and dependency injection; authorize
    verifies and decides on the event loop and awaits the group commit without a
    thread, renew re-verifies in one worker thread (ADR 0006). Every other request goes
    through FastAPI as usual. The three are declared there too, for the OpenAPI
    document, and run the same endpoint when reached that way (:meth:`declared`).
    ``POST /v1/authorize/start`` and ``POST /v1/executions/{id}/finish``, a gateway's
    per-call requests, take the fast path too (:mod:`proctor.governor.authorize_start`)."""

    def __init__(
        self, governor: Governor, metrics: GovernorMetrics, streams: EventStreams, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.governor = governor
        self.metrics = metrics
        self.streams = streams
        # Shared mode: the node's heartbeat keeps the share (quotas invariant 7).
        self.rate_share = RateShare()
        self.requests = RequestRate(
            governor.quotas, "max_requests_per_second", what="signed requests", share=self.rate_share
        )
        self.authorizations = RequestRate(
            governor.quotas,
            "max_authorizations_per_second",
            what="authorization requests",
            share=self.rate_share,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        # The boundary's limits, for every route: nothing of an oversized request is read.
        try:
            declared = check_head(scope)
            if scope["path"].startswith("/v1/"):  # the API reads JSON (the pages read forms)
                check_media_type(scope, declared)
        except RequestLimitError as e:
            await _respond(send, *refusal(e), close=True)
            return
        body = BoundedBody(receive, declared)
        if scope["method"] == "POST":
            path = scope["path"]
            handler: Handler | None
            if path == "/v1/authorize":
                handler = self.authorize_endpoint
            elif path == AUTHORIZE_START:
                handler = functools.partial(authorize_start_endpoint, self)
            elif (m := _RENEW.fullmatch(path)) is not None:
                handler = functools.partial(self.renew_endpoint, m.group(1))
            elif (m := FINISH.fullmatch(path)) is not None:
                handler = functools.partial(finish_endpoint, self, m.group(1))
            elif path == "/v1/revocations":
                handler = self.revoke_endpoint
            else:
                handler = None
            if handler is not None:
                await self._fast(scope, body, send, handler)
                return
        await self._routed(scope, body, send)

    async def _routed(self, scope: Any, body: BoundedBody, send: Any) -> None:
        """Through FastAPI, inside the outermost barrier of this path: Starlette answers
        an unexpected exception with the plain 500 (``error_barrier``) and raises it
        again; here it is logged, once, and goes no further."""
        started = False
        closing = body.closing(send)

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await closing(message)

        try:
            await super().__call__(scope, body.receive, tracked)
        except Exception as exc:  # noqa: BLE001 - the barrier: log it, never leak it
            status, payload = unexpected(exc, where=f"{scope['method']} {scope['path']}")
            if not started:
                await _respond(send, status, payload, close=True)

    async def _fast(self, scope: Any, body: BoundedBody, send: Any, handler: Handler) -> None:
        try:
            raw = await body.read()
            if raw is None:
                status, payload = 400, _GONE
            else:
                status, payload = await self.handle(
                    handler, _scope_target(scope), combine_fields(scope["headers"]), raw
                )
        except Exception as exc:  # noqa: BLE001 - the barrier of this path (a body over the limit, or a bug)
            status, payload = await self.refuse(exc, where=f"POST {scope['path']}")
        await _respond(send, status, payload, close=not body.complete)

    async def handle(
        self, handler: Handler, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """Run a fast-path endpoint: its (status, JSON body), every refusal included."""
        try:
            return await handler(target, headers, body)
        except Exception as exc:  # noqa: BLE001 - every refusal goes through the one table
            return await self.refuse(exc, where=f"POST {target.partition('?')[0]}")

    async def declared(self, request: Request, handler: Handler) -> Response:
        """A fast-path endpoint reached through FastAPI (only when the fast path is
        bypassed, e.g. behind a proxy prefix): the same endpoint, the same answers."""
        headers = combine_fields(request.scope["headers"])
        status, payload = await self.handle(handler, _target(request), headers, await request.body())
        return Response(payload, status_code=status, media_type="application/json")

    async def refuse(self, exc: BaseException, *, where: str = "") -> tuple[int, bytes]:
        """The answer to a refused request (:func:`proctor.governor.boundary.refusal`),
        after its bookkeeping: a quota refusal is counted (the request rates count
        their own) and held back (:func:`_hold_back`)."""
        if isinstance(exc, QuotaError):
            if exc.retry_after is None:
                self.metrics.quota_refusals.labels(exc.quota).inc()
            await _hold_back(exc)
        return refusal(exc, where=where)

    async def caller(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        *,
        persist: bool = True,
        rates: tuple[RequestRate, ...] = (),
    ) -> str:
        """The principal that signed the request, within its request rates.

        Right after the signature, the request counts against the principal's
        ``max_requests_per_second`` and then against ``rates`` (nothing else has
        been done yet). With ``persist``, its nonce is queued for the log writer's next
        transaction (an authorization does not ask: its own commit carries the nonces);
        a request refused at a rate always has its nonce kept, so it stays spent.

        Raises:
            AuthenticationError: not signed, or not acceptably (401).
            QuotaError: over one of its request rates (429).
            StoreError: shared mode, and the store could not claim the nonce (503).
        """
        try:
            name = await self.governor.authenticate_async(method, target, body, headers)
        except AuthenticationError as e:
            self.metrics.auth_failures.labels(e.reason).inc()
            raise
        for rate in (self.requests, *rates):
            refused = rate.admit(name)
            if refused is not None:
                self.governor.persist_nonces()
                self.metrics.quota_refusals.labels(refused.quota).inc()
                raise refused
        if persist:
            self.governor.persist_nonces()
        return name

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document, with every request body model (:data:`BODIES`) and
        the error envelope as every operation's error answer."""
        if self.openapi_schema is None:
            _document(super().openapi())
        return self.openapi_schema  # type: ignore[return-value]

    async def revoke_endpoint(self, target: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """``POST /v1/revocations`` (admin): on the fast path, because a revocation's
        latency is how long a revoked execution keeps running."""
        governor = self.governor
        # Its nonce commits with the revocation (one wake of the log writer, after the push).
        name = await self.caller("POST", target, headers, body, persist=False)
        try:
            if not governor.is_admin(name):
                raise PrincipalError(f"{name!r} is not an admin")
            asked = parse_body(RevocationBody, parse_json(body) if body else None)
            done = await governor.revoke_async(
                asked.kind, asked.target, reason=asked.reason, by=name, successor=asked.successor
            )
        except BaseException:
            governor.persist_nonces()  # refused, or not recorded: still spent
            raise
        return 200, orjson.dumps(done)

    async def renew_endpoint(
        self, execution_id: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """``POST /v1/executions/{id}/renew``: authenticate on the loop, re-verify in a
        worker thread (it reads the state and, when the policy changed, appends)."""
        governor = self.governor
        name = await self.caller("POST", target, headers, body)
        parsed = parse_json(body) if body else None
        if parsed is not None:
            parse_body(RenewExecutionBody, parsed)
        renew = functools.partial(governor.executions.renew, nonce=_nonce(headers))
        return 200, orjson.dumps(await run_in_threadpool(renew, name, execution_id, parsed))

    async def authorize_endpoint(
        self, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """``POST /v1/authorize``: authenticate, decide, record; (status, JSON body)."""
        governor, metrics = self.governor, self.metrics
        if len(body) > MAX_BODY:
            raise BodyTooLargeError(f"expected a body of at most {MAX_BODY} bytes, found {len(body)}")
        name = await self.caller("POST", target, headers, body, persist=False, rates=(self.authorizations,))
        try:
            request = AuthorizeRequest.from_json(parse_json(body) if body else None)
        except (CanonicalizationError, RequestShapeError):
            governor.persist_nonces()  # refused, and still spent
            raise
        started = time.perf_counter()
        result = await governor.authorize_async(name, request)
        metrics.latency.observe(time.perf_counter() - started)
        (metrics.allowed if result.allowed else metrics.denied).inc()
        return 200, orjson.dumps(result.to_json())


HOLD_BACK = 0.25
"""The shortest wait before a rate refusal is answered (seconds): over its rate, one
connection gets at most four refusals a second, each costing a signature check."""
_RENEW = re.compile(r"/v1/executions/([A-Za-z0-9_-]{1,64})/renew")
_ERROR_SCHEMA = {
    "title": "Error",
    "description": "Every refusal: a stable code, a message saying what was expected and what was "
    "found, the exception's evidence (reason, quota, diagnostics ...), and the same object again "
    'under "detail" for older clients (ADR 0011).',
    "type": "object",
    "required": ["error", "message", "detail"],
    "properties": {
        "error": {"type": "string", "description": "unauthenticated, forbidden, not-found, bad-request ..."},
        "message": {"type": "string"},
        "detail": {"type": "object", "description": "the same object, repeated"},
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_GONE = orjson.dumps(envelope("bad-request", "expected the request body to its end, found the client gone"))
_EVENTS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events, each a governance event as JSON in its data",
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "id": {"type": "string", "description": "the event's sequence number"},
                        "event": {"type": "string", "description": "its type"},
                        "data": {"type": "string", "contentMediaType": "application/json"},
                        "retry": {"type": "integer"},
                    },
                }
            }
        },
    }
}
_READY_SCHEMA = {
    "type": "object",
    "required": ["ready", "checks"],
    "properties": {"ready": {"type": "boolean"}, "checks": {"type": "object"}},
}
_READY: dict[int | str, dict[str, Any]] = {
    code: {"description": what, "content": {"application/json": {"schema": _READY_SCHEMA}}}
    for code, what in ((200, "Ready"), (503, "Not ready: each check says why"))
}


def _body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """The ``openapi_extra`` that declares ``model`` as a route's request body (the
    route reads the raw bytes itself: they are what the signature covers)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}


def _document(document: dict[str, Any]) -> None:
    """Add the body models and the error envelope to FastAPI's OpenAPI ``document``."""
    models: tuple[type[BaseModel], ...] = (*BODIES, VisibleBody)
    _, defs = models_json_schema(
        [(model, "validation") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(defs.get("$defs", {}))
    schemas["Error"] = _ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 shape, not ours
        schemas.pop(name, None)
    refused = {"description": "Refused", "content": {"application/json": {"schema": _ERROR_REF}}}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {**refused, "description": "Bad input"}
            responses["default"] = refused


def _target(request: Request) -> str:
    return _scope_target(request.scope)


def _scope_target(scope: Any) -> str:
    """The request target as the client sent it, which its signature covers (RFC 9421
    ``@path`` and ``@query``): the path still percent-encoded (``raw_path``), not the
    decoded ``path`` the routes match on, or a client that escaped a character in a
    path parameter (``proctor executions show 'a:b'``) could never be authenticated."""
    raw = scope.get("raw_path")
    path: str = raw.decode("latin-1") if raw else scope["path"]
    query = scope.get("query_string", b"")
    return path + (f"?{query.decode('latin-1')}" if query else "")


def _nonce(headers: Mapping[str, str]) -> str:
    """The nonce of a request whose signature verified (its ``Signature-Input``), that
    the signed lease answer is bound to (ADR 0017)."""
    return request_nonce(headers.get("signature-input", ""))


async def _hold_back(refusal: QuotaError) -> None:
    """Answer a rate refusal only once the principal may send again (its
    ``retry_after``), and no sooner than :data:`HOLD_BACK`: a flooding client's
    connection waits on a timer, and the governor's CPU goes to everyone else."""
    if refusal.retry_after is not None:
        await asyncio.sleep(max(refusal.retry_after, HOLD_BACK))


def _json(status: int, payload: bytes, headers: Mapping[str, str] | None = None) -> Response:
    return Response(payload, status_code=status, headers=headers, media_type="application/json")


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
        # The API reference is a page of proctor.console (/docs), its assets served
        # locally: FastAPI's own loads Swagger UI from a CDN, and fails offline.
        docs_url=None,
        redoc_url=None,
        version=__version__,
        description="Execution governance: authorize, record, prove.",
    )
    app.state.governor = governor

    @app.exception_handler(Exception)
    async def error_barrier(request: Request, exc: Exception) -> Response:
        # Starlette's outermost middleware calls this for anything unhandled, then
        # raises it again to GovernorApp._routed, which logs it. (A pure handler, not a
        # BaseHTTPMiddleware, which would wrap every request in a task group.)
        return _json(INTERNAL.status, INTERNAL_BODY)

    @app.exception_handler(ProctorError)
    async def proctor_error(request: Request, exc: ProctorError) -> Response:
        return _json(*await app.refuse(exc, where=f"{request.method} {request.url.path}"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # The framework's own refusals: no such route (404), method not allowed (405).
        body = orjson.dumps(envelope(http_code(exc.status_code), str(exc.detail)))
        return _json(exc.status_code, body, exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client went away before its body's end (a route reading it): a 4xx, as on
        # the fast path, and not an unexpected error to log.
        return _json(400, _GONE)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        # A path or query parameter of the wrong type (the bodies are validated by the routes).
        return _json(422, orjson.dumps(envelope("bad-request", explain(exc.errors()))))

    async def caller(request: Request) -> Caller:
        body = await request.body()  # through BoundedBody: refused once over MAX_BODY
        headers = combine_fields(request.scope["headers"])
        name = await app.caller(request.method, _target(request), headers, body)
        return Caller(name, parse_json(body) if body else None, _nonce(headers))

    def admin(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not governor.is_admin(who.name):
            raise PrincipalError(f"{who.name!r} is not an admin")
        return who

    if governor.witness is not None:  # this node witnesses its deployment's log (governor.node_witness)
        app.mount(NODE_WITNESS_MOUNT, governor.witness.app(metrics.registry))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses=_READY)
    def readyz() -> JSONResponse:
        ok, checks = governor.ready()
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)  # the Prometheus text format
    def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # The three fast-path endpoints, declared for the OpenAPI document; reached only
    # when GovernorApp's fast path is bypassed, and then with the same endpoint.
    @app.post("/v1/authorize", openapi_extra=_body(AuthorizeBody))
    async def authorize(request: Request) -> Response:
        return await app.declared(request, app.authorize_endpoint)

    @app.post(AUTHORIZE_START, openapi_extra=_body(AuthorizeStartBody))
    async def authorize_start(request: Request) -> Response:
        return await app.declared(request, functools.partial(authorize_start_endpoint, app))

    @app.post("/v1/executions/{execution_id}/renew", openapi_extra=_body(RenewExecutionBody, required=False))
    async def renew_execution(execution_id: str, request: Request) -> Response:
        return await app.declared(request, functools.partial(app.renew_endpoint, execution_id))

    @app.post("/v1/revocations", openapi_extra=_body(RevocationBody))
    async def revoke(request: Request) -> Response:
        return await app.declared(request, app.revoke_endpoint)

    @app.post("/v1/authorize/visible", openapi_extra=_body(VisibleBody))
    def authorize_visible(who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        # A dry decision over the caller's own rights (governor/visibility.py, ADR 0018).
        return visible_tools(governor.trust, who.name, parse_body(VisibleBody, who.body))

    @app.post("/v1/executions", status_code=201, openapi_extra=_body(StartExecutionBody))
    def start_execution(who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        parse_body(StartExecutionBody, who.body)
        return governor.executions.start(who.name, who.body, nonce=who.nonce)

    @app.post("/v1/executions/{execution_id}/finish", openapi_extra=_body(FinishExecutionBody))
    def finish_execution(execution_id: str, who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        parse_body(FinishExecutionBody, who.body)
        return governor.executions.finish(who.name, execution_id, who.body)

    @app.get("/v1/executions/{execution_id}/receipt")
    def execution_receipt(execution_id: str, who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        # The receipt holds raw warrant tokens: its principal's and the admins' only. An
        # unknown execution and someone else's are refused alike (no existence oracle).
        record = governor.state.execution(execution_id)
        if record is None or (record["principal"] != who.name and not governor.is_admin(who.name)):
            raise PrincipalError(f"no execution {execution_id!r} of {who.name!r}")
        try:
            if governor.cosigner is None:
                return governor.executions.receipt(execution_id)
            # With witnesses: proven under the latest witnessed checkpoint once it covers
            # the execution, else under the latest (proctor.governor.receipts, ADR 0014).
            from proctor.governor.receipts import execution_receipt as receipt_of  # noqa: PLC0415

            witnessed = governor.cosigner.latest_witnessed()
            return receipt_of(
                execution_id,
                state=governor.state,
                log=governor.log,
                log_signer=governor.data.log_signer,
                witnessed=witnessed,
            )
        except VerificationError as e:  # asked too early: a client's error, not the governor's
            if record["status"] not in ("running", "terminating"):
                raise
            raise ExecutionConflictError(f"execution {execution_id!r} has not ended: {e}") from e

    @app.get("/v1/executions")
    def executions_list(
        who: Annotated[Caller, Depends(caller)],
        status: str = "running",
        principal: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> dict[str, Any]:
        # Admins: everyone's (or one principal's); others: their own. Bounded, newest first.
        return list_executions(governor, who.name, status=status, principal=principal, limit=limit)

    @app.get("/v1/executions/{execution_id}")
    def execution_show(execution_id: str, who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        # Its principal's or an admin's; for anyone else the same 404 as an unknown id.
        return show_execution(governor, who.name, execution_id)

    # -- approvals (governor/approvals.py): the requester reads its own; admins list and decide

    @app.get("/v1/approvals/{approval_id}")
    def approval_show(approval_id: str, who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        approvals = governor.authorizer.approvals
        return approvals.show(approval_id, caller=who.name, admin=governor.is_admin(who.name))

    @app.get("/v1/approvals")
    def approvals_list(who: Annotated[Caller, Depends(admin)], status: str | None = None) -> dict[str, Any]:
        return governor.authorizer.approvals.listed(status)

    @app.post(
        "/v1/approvals/{approval_id}/{verdict}", openapi_extra=_body(ApprovalDecisionBody, required=False)
    )
    def approval_decide(
        approval_id: str, verdict: str, who: Annotated[Caller, Depends(admin)]
    ) -> dict[str, Any]:
        if verdict not in ("approve", "deny"):
            raise NoSuchTargetError(f"expected /approve or /deny, found /{verdict:.20}")
        asked = parse_body(ApprovalDecisionBody, who.body if who.body is not None else {})
        approvals = governor.authorizer.approvals
        return approvals.decide(approval_id, approve=verdict == "approve", by=who.name, reason=asked.reason)

    @app.get("/v1/nodes")
    def nodes(who: Annotated[Caller, Depends(caller)], zone: str | None = None) -> dict[str, Any]:
        # Any active principal (enforcers may look for another governor): names, zones,
        # URLs, heartbeats and lag of the nodes serving this store (governor/nodes.py).
        return list_nodes(governor, who.name, zone=zone)

    @app.get("/v1/stream", response_class=EventStreamResponse, status_code=200, responses=_EVENTS)
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

    @app.put("/v1/policy", openapi_extra=_body(SignedPolicyBody))
    def put_policy(who: Annotated[Caller, Depends(admin)]) -> dict[str, Any]:
        parse_body(SignedPolicyBody, who.body, error=BundleError)
        return governor.push_policy(who.body, by=who.name)

    @app.get("/v1/policy")
    def get_policy(who: Annotated[Caller, Depends(caller)]) -> JSONResponse:
        active = governor.active_policy()
        if active is None:
            body = envelope("no-policy", "no policy bundle is active; everything is denied")
            return JSONResponse(body, status_code=404)
        # The signed bundle and, added to it, when it was activated (the time of its
        # policy.activated event), which `proctor policy show` prints in both its forms.
        try:
            digest = PolicyBundle.from_json(active["bundle"]).digest
        except (ProctorError, KeyError, TypeError):  # the startup audit checks stored bundles
            digest = None
        versions = governor.state.bundle_versions()
        activated = next((at for d, _, at in versions if digest is not None and d == digest), None)
        return JSONResponse({**active, "activated": activated})

    @app.get("/v1/principals")
    def list_principals(who: Annotated[Caller, Depends(admin)]) -> list[dict[str, Any]]:
        return [p.to_json() for p in governor.state.principals()]

    @app.post("/v1/principals", openapi_extra=_body(PrincipalBody))
    def add_principal(who: Annotated[Caller, Depends(admin)]) -> dict[str, Any]:
        asked = parse_body(PrincipalBody, who.body)
        record = governor.add_principal(
            asked.name, asked.public_key, attrs=asked.attrs, zone=asked.zone, by=who.name
        )
        return record.to_json()

    @app.post("/v1/principals/{name}/suspend", openapi_extra=_body(EmptyBody, required=False))
    def suspend(name: str, who: Annotated[Caller, Depends(admin)]) -> dict[str, Any]:
        if who.body is not None:
            parse_body(EmptyBody, who.body)
        return governor.set_principal_status(name, "suspended", by=who.name).to_json()

    @app.post("/v1/principals/{name}/resume", openapi_extra=_body(EmptyBody, required=False))
    def resume(name: str, who: Annotated[Caller, Depends(admin)]) -> dict[str, Any]:
        if who.body is not None:
            parse_body(EmptyBody, who.body)
        return governor.set_principal_status(name, "active", by=who.name).to_json()

    return app
