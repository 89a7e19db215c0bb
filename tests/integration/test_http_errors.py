"""One HTTP boundary (ADR 0011): every refusal on every route, fast path and FastAPI
alike, is the same envelope ``{"error", "message", ...evidence, "detail": {the same}}``
with the status of one table; an unexpected exception is a plain 500, logged on the
server and never described to the client; ``/openapi.json`` documents every body."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.routing import APIRoute

from asgi_support import Answer, call, signed
from gov_exec import allow, start_body
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorError, _raise_for
from proctor.config import QuotaConfig, QuotaLimits
from proctor.governor.app import GovernorApp, create_app
from proctor.governor.quotas import RequestRate
from proctor.governor.service import Governor
from proctor.governor.stream import StreamSlots

PUBLIC = {
    "/v1/warrant-key",
    "/v1/log/key",
    "/v1/log/checkpoint",
    "/v1/log/entries/{index}",
    "/v1/log/proof/inclusion",
    "/v1/log/proof/consistency",
}


def assert_envelope(answer: Answer, status: int, code: str, **evidence: Any) -> dict[str, Any]:
    """``answer`` is the one error envelope, with this status, code and evidence."""
    assert answer.status == status, (status, answer.status, answer.body)
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    body = answer.json()
    assert isinstance(body, dict), body
    assert body["error"] == code, body
    assert isinstance(body["message"], str), body
    assert body["message"], body
    assert body["detail"] == {k: v for k, v in body.items() if k != "detail"}, body
    for key, value in evidence.items():
        assert body[key] == value, (key, body)
    return body


@dataclass
class World:
    """A governor with a running and an ended execution of alice's, and its app."""

    gov: Governor
    app: GovernorApp
    keys: dict[str, PrincipalKey]
    running: str
    running_token: str
    ended: str

    def send(self, who: str | None, method: str, target: str, body: Any = None) -> Answer:
        raw = b"" if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
        headers = signed(self.keys[who], method, target, raw) if who is not None else []
        return call(self.app, method, target, headers=headers, body=raw)


def make_world(gov: Governor, data: Path, app: GovernorApp | None = None) -> World:
    keys = {
        "admin": PrincipalKey.load(data / "keys" / "admin.key"),
        "alice": PrincipalKey.load(data / "alice.key"),
        "bob": PrincipalKey.load(data / "bob.key"),
    }
    token = allow(gov, "running")
    running = gov.executions.start("alice", start_body(token, "running"))["execution"]
    ended = gov.executions.start("alice", start_body(allow(gov, "ended"), "ended"))["execution"]
    gov.executions.finish("alice", ended, {"outcome": "completed", "exit_status": 0})
    return World(gov, app or create_app(gov), keys, running, token, ended)


@pytest.fixture
def world(governor: Governor, gov_data: Path) -> World:
    return make_world(governor, gov_data)


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: {"execution_id": "ex_1", "name": "bob"}.get(m.group(1), "0"), path)


def signed_routes(app: GovernorApp) -> list[tuple[str, str]]:
    """(method, path) of every route that takes a signed request."""
    out = []
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/v1/") and route.path not in PUBLIC:
            out += [(method, concrete(route.path)) for method in sorted(route.methods or ())]
    return out


def every_route(app: GovernorApp) -> list[tuple[str, str]]:
    return [
        (method, concrete(route.path))
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods or ())
    ]


def test_every_signed_route_refuses_an_unsigned_request_with_the_envelope(world: World) -> None:
    routes = signed_routes(world.app)
    assert ("POST", "/v1/authorize") in routes  # the fast path's routes are declared too
    assert ("POST", "/v1/revocations") in routes
    assert ("POST", "/v1/executions/ex_1/renew") in routes
    assert len(routes) >= 13
    for method, target in routes:
        assert_envelope(world.send(None, method, target), 401, "unauthenticated", reason="unsigned")


def test_every_route_refuses_an_oversized_body_with_the_envelope(world: World) -> None:
    for method, target in every_route(world.app):
        answer = call(world.app, method, target, headers=[("content-length", str(400 << 20))])
        assert_envelope(answer, 413, "too-large")
    for target in ("/v1/authorize", "/v1/policy"):  # before any route: the head
        many = call(world.app, "POST", target, headers=[(f"x-f{i}", "1") for i in range(200)])
        assert_envelope(many, 431, "head-too-large")


Case = tuple[str | None, str, str, Any, int, str]
"""(who, method, target, body, status, code); ``{running}``/``{ended}`` in the target
are the world's executions."""

CASES: dict[str, Case] = {
    # 403: not an admin (the fast path and FastAPI), not one's own, a forged warrant.
    "403-revoke-not-admin": ("alice", "POST", "/v1/revocations", {"kind": "principal", "target": "bob"}, 403, "forbidden"),
    "403-policy-not-admin": ("alice", "PUT", "/v1/policy", {}, 403, "forbidden"),
    "403-principals-not-admin": ("alice", "GET", "/v1/principals", None, 403, "forbidden"),
    "403-add-principal-not-admin": ("bob", "POST", "/v1/principals", {"name": "x", "public_key": "A"}, 403, "forbidden"),
    "403-suspend-not-admin": ("alice", "POST", "/v1/principals/bob/suspend", None, 403, "forbidden"),
    "403-resume-not-admin": ("alice", "POST", "/v1/principals/bob/resume", None, 403, "forbidden"),
    "403-renew-not-own": ("bob", "POST", "/v1/executions/{running}/renew", None, 403, "forbidden"),
    "403-finish-not-own": ("bob", "POST", "/v1/executions/{running}/finish", {"outcome": "completed", "exit_status": 0}, 403, "forbidden"),
    "403-receipt-not-own": ("bob", "GET", "/v1/executions/{ended}/receipt", None, 403, "forbidden"),
    "403-start-forged-warrant": ("alice", "POST", "/v1/executions", start_body("not-a-warrant", "x"), 403, "warrant-rejected"),
    # 404: unknown targets and routes.
    "404-revoke-unknown": ("admin", "POST", "/v1/revocations", {"kind": "principal", "target": "ghost"}, 404, "not-found"),
    "404-suspend-unknown": ("admin", "POST", "/v1/principals/ghost/suspend", None, 404, "not-found"),
    "404-no-such-route": (None, "GET", "/v1/nothing-here", None, 404, "not-found"),
    "405-method": (None, "DELETE", "/v1/authorize", None, 405, "method-not-allowed"),
    # 409: an execution that cannot change as asked.
    "409-finish-twice": ("alice", "POST", "/v1/executions/{ended}/finish", {"outcome": "completed", "exit_status": 0}, 409, "conflict"),
    "409-start-replayed-warrant": ("alice", "POST", "/v1/executions", "replay", 409, "conflict"),
    # 422: bodies (each route's model, after the signature), parameters, JSON.
    "422-authorize-body": ("alice", "POST", "/v1/authorize", {"action": "fly", "resource": "/bin/echo"}, 422, "bad-request"),
    "422-authorize-json": ("alice", "POST", "/v1/authorize", b'{"action":"exec","action":"exec"}', 422, "bad-request"),
    "422-revoke-body": ("admin", "POST", "/v1/revocations", {"kind": 1}, 422, "bad-request"),
    "422-renew-body": ("alice", "POST", "/v1/executions/{running}/renew", [1], 422, "bad-request"),
    "422-start-body": ("alice", "POST", "/v1/executions", {"warrant": 5}, 422, "bad-request"),
    "422-finish-body": ("alice", "POST", "/v1/executions/{running}/finish", {"outcome": 5}, 422, "bad-request"),
    "422-add-principal-body": ("admin", "POST", "/v1/principals", {"name": 5}, 422, "bad-request"),
    "422-suspend-body": ("admin", "POST", "/v1/principals/bob/suspend", [1], 422, "bad-request"),
    "422-policy-body": ("admin", "PUT", "/v1/policy", {"bundle": 1}, 422, "policy-rejected"),
    "422-stream-query": ("alice", "GET", "/v1/stream?since=abc", None, 422, "bad-request"),
    "422-log-path": (None, "GET", "/v1/log/entries/abc", None, 422, "bad-request"),
    "422-proof-query": (None, "GET", "/v1/log/proof/inclusion?index=x", None, 422, "bad-request"),
    "400-log-index": (None, "GET", "/v1/log/entries/999999", None, 400, "bad-request"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_every_refusal_is_the_one_envelope(world: World, case: Case) -> None:
    who, method, target, body, status, code = case
    target = target.format(running=world.running, ended=world.ended)
    if body == "replay":
        body = start_body(world.running_token, "running")
    assert_envelope(world.send(who, method, target, body), status, code)


def test_a_body_is_refused_by_its_model_with_what_was_expected(world: World) -> None:
    answer = world.send("alice", "POST", "/v1/executions", {"warrant": 5, "measurement": []})
    message = assert_envelope(answer, 422, "bad-request")["message"]
    assert "warrant: expected a string, found an integer" in message
    assert "measurement: expected an object, found an array" in message
    assert "resource: expected a string, found nothing" in message


def test_a_rate_refusal_is_the_envelope_on_both_paths(governor: Governor, gov_data: Path) -> None:
    w = make_world(governor, gov_data)
    now = [1000.0]
    quotas = QuotaConfig(QuotaLimits(max_requests_per_second=1))
    w.app.requests = RequestRate(quotas, "max_requests_per_second", what="requests", clock=lambda: now[0])
    for method, target in (("GET", "/v1/policy"), ("POST", "/v1/authorize")):
        now[0] += 10.0  # a fresh second: one request is admitted, the next refused
        assert w.send("alice", "GET", "/v1/policy").status == 200
        answer = w.send("alice", method, target)
        body = assert_envelope(answer, 429, "quota", quota="max_requests_per_second", limit=1)
        assert body["retry_after"] > 0


def test_no_free_stream_is_the_envelope(governor: Governor, gov_data: Path) -> None:
    slots = StreamSlots(total=1, per_principal=1)
    w = make_world(governor, gov_data, create_app(governor, streams=slots))
    assert slots.acquire("bob") is None  # the one slot, taken
    assert_envelope(w.send("alice", "GET", "/v1/stream"), 429, "too-many-streams")


def boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("secret internal detail")


async def aboom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("secret internal detail")


BROKEN: dict[str, tuple[str, Callable[..., Any], tuple[str, str, str, Any]]] = {
    "fast-path": ("authorize_async", aboom, ("alice", "POST", "/v1/authorize", {"action": "exec", "resource": "/bin/echo"})),
    "fastapi-route": ("active_policy", boom, ("alice", "GET", "/v1/policy", None)),
    "fastapi-dependency": ("is_admin", boom, ("admin", "GET", "/v1/principals", None)),
}  # fmt: skip


@pytest.mark.parametrize("broken", list(BROKEN.values()), ids=list(BROKEN))
def test_an_unexpected_error_is_a_plain_500_logged_on_the_server(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    broken: tuple[str, Callable[..., Any], tuple[str, str, str, Any]],
) -> None:
    attribute, replacement, (who, method, target, body) = broken
    monkeypatch.setattr(world.gov, attribute, replacement)
    with caplog.at_level(logging.ERROR, logger="proctor.governor"):
        answer = world.send(who, method, target, body)
    assert_envelope(answer, 500, "internal", message="internal error")
    assert b"secret" not in answer.body
    assert b"Traceback" not in answer.body
    records = [r for r in caplog.records if r.name == "proctor.governor" and r.exc_info is not None]
    assert len(records) == 1, caplog.records
    assert "secret internal detail" in str(records[0].exc_info[1])  # type: ignore[index]
    assert target.partition("?")[0] in records[0].getMessage()


def test_openapi_documents_every_request_body(world: World) -> None:
    answer = call(world.app, "GET", "/openapi.json")
    assert answer.status == 200
    document = answer.json()
    schemas = document["components"]["schemas"]
    checked = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method not in ("post", "put"):
                continue
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            name = schema["$ref"].removeprefix("#/components/schemas/")
            assert schemas[name]["type"] == "object", (path, name)
            assert operation["responses"]["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
            checked.append((method, path))
    assert ("post", "/v1/authorize") in checked
    assert ("put", "/v1/policy") in checked
    assert ("post", "/v1/authorize/visible") in checked
    assert ("post", "/v1/authorize/start") in checked
    assert len(checked) == 12, checked  # with POST /v1/approvals/{approval_id}/{verdict}
    assert schemas["AuthorizeBody"]["required"] == ["action", "resource"]
    assert schemas["AuthorizeBody"]["additionalProperties"] is False
    assert "HTTPValidationError" not in schemas  # FastAPI's 422 shape is not what is sent


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        ({"error": "quota", "message": "m", "limit": 2, "detail": {"error": "quota", "message": "m", "limit": 2}},
         {"error": "quota", "message": "m", "limit": 2}),
        ({"detail": {"error": "unauthenticated", "message": "m", "reason": "unsigned"}},
         {"error": "unauthenticated", "message": "m", "reason": "unsigned"}),
        ({"error": "conflict", "message": "m"}, {"error": "conflict", "message": "m"}),
        ({"detail": "m"}, "m"),
    ],
    ids=["envelope", "old-detail-only", "old-flat", "framework-text"],
)  # fmt: skip
def test_the_client_reads_the_envelope_and_the_older_shapes(answer: Any, body: Any) -> None:
    response = httpx.Response(409, json=answer, request=httpx.Request("GET", "http://governor/v1/x"))
    with pytest.raises(GovernorError) as refused:
        _raise_for(response)
    assert refused.value.status == 409
    assert refused.value.body == body
    assert str(refused.value) == "m"
