"""Hostile request bodies on every endpoint that takes one: each POST, PUT, DELETE and
PATCH route of the application ``proctor serve`` runs (the API and the pages, read from
its routes, so that a route added later is covered), sent a body that is oversized,
nested 10 000 levels deep, has a repeated member name, is not UTF-8, is not JSON (or not a
form), is declared as another media type, is truncated, or is cut off mid-way by a client
that goes away. Each is refused with a 4xx that says what was expected, never a 5xx, and
leaves the log and the governance state as they were.

The API's requests are signed (by the admin, who passes every route's gate), so that
each body reaches the parser behind the signature; the pages' requests carry a signed-in
admin's session, this origin and the session's CSRF token, so that each reaches the form.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.routing import APIRoute

from asgi_support import Answer, call, signed
from figures import record
from gov_exec import echo_request
from hostile_support import ORIGIN, World, build_world, console_cookie
from proctor.governor.limits import MAX_BODY

BODY_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
FORM = "application/x-www-form-urlencoded"
DEPTH = 10_000


def body_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path template) of every route of ``app`` that takes a body, the routers
    the pages are included from searched too."""
    found: list[tuple[str, str]] = []
    pending = list(app.routes)
    while pending:
        route = pending.pop(0)
        inner = getattr(route, "original_router", None)  # an included router (FastAPI >= 0.165)
        if inner is not None:
            pending[:0] = list(inner.routes)
        elif isinstance(route, APIRoute):
            found += [(m, route.path) for m in sorted((route.methods or set()) & BODY_METHODS)]
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    made = build_world(tmp_path_factory.mktemp("bodies"))
    yield made
    made.close()


def concrete(world: World, template: str) -> str:
    """The route with real parameters (alice's running execution, her pending approval)."""
    values = {
        "execution_id": world.running,
        "approval_id": world.approval,
        "name": "bob",
        "verdict": "approve",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def accepted_json(path: str) -> bytes:
    """A body the route would act on (the wrong-media-type case must be refused for its
    declaration alone)."""
    if path == "/v1/authorize":
        return orjson.dumps(echo_request("hostile"))
    return b"{}"


def json_bodies(path: str) -> dict[str, tuple[bytes, str]]:
    """Each hostile kind's (body, Content-Type) for an API route."""
    valid = accepted_json(path)
    return {
        "oversized": (b'{"reason":"' + b"x" * MAX_BODY + b'"}', "application/json"),
        "nested-arrays": (b"[" * DEPTH + b"]" * DEPTH, "application/json"),
        "nested-objects": (b'{"a":' * DEPTH + b"1" + b"}" * DEPTH, "application/json"),
        "duplicate-keys": (b'{"reason":"a","reason":"b"}', "application/json"),
        "non-utf8": (b'{"reason":"\xff\xfe\xc3"}', "application/json"),
        "invalid": (b'{"reason": nope}', "application/json"),
        "wrong-media-type": (valid, "text/plain"),
        "truncated": (valid[: max(1, len(valid) // 2)], "application/json"),
    }


def form_bodies(csrf: str) -> dict[str, tuple[bytes, str]]:
    """Each hostile kind's (body, Content-Type) for a page's form (carrying the session's
    CSRF token, so that only what is hostile about it is wrong)."""
    head = f"csrf={csrf}&token=x&".encode()
    valid = head + b"action=revoke-principal&target=bob&reason=hostile"
    return {
        "oversized": (head + b"reason=" + b"x" * MAX_BODY, FORM),
        "nested-arrays": (head + b"reason" + b"[a]" * DEPTH + b"=x", FORM),
        "nested-objects": (head + b"reason=" + b"%5B" * DEPTH, FORM),
        "duplicate-keys": (head + b"action=revoke-principal&action=suspend-principal&target=bob", FORM),
        "non-utf8": (head + b"action=revoke-principal&target=\xff\xfe\xc3", FORM),
        "invalid": (b'{"csrf": "' + csrf.encode() + b'", "action": "revoke-principal"}', FORM),
        "wrong-media-type": (valid, "application/json"),
        "truncated": (valid[: len("csrf=") + len(csrf) // 2], FORM),  # within the token
    }


KINDS = (*json_bodies("/").keys(), "cut-off")


def csrf_of(world: World, cookie: str) -> str:
    page = call(world.app, "GET", "/console/signout", headers=[("host", "testserver"), ("cookie", cookie)])
    found = re.search(rb'name="csrf" value="([^"]+)"', page.body)
    assert found is not None, page.body[:300]
    return found.group(1).decode()


def send(world: World, method: str, path: str, body: bytes, kind: str, *, cut: bool, cookie: str) -> Answer:
    """One hostile request; ``cut``: declare the whole body, send half, then go away."""
    if path.startswith("/v1/"):
        headers = signed(world.keys["admin"], method, path, body)
    else:
        headers = [("host", "testserver"), ("origin", ORIGIN), ("cookie", cookie)]
    headers += [("content-type", kind), ("content-length", str(len(body)))]
    if cut:
        return asyncio.run(cut_off(world.app, method, path, headers, body[: len(body) // 2]))
    return call(world.app, method, path, headers=headers, body=body)


async def cut_off(app: Any, method: str, path: str, headers: list[tuple[str, str]], part: bytes) -> Answer:
    """``part`` of a longer declared body, more to come, then the client goes away."""
    answer = Answer()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        answer.pulled = len(part)
        return {"type": "http.request", "body": part, "more_body": True}

    async def send_(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
        "state": {},
    }
    await asyncio.wait_for(app(scope, receive, send_), 60)
    return answer


def says_what_was_expected(answer: Answer) -> bool:
    if answer.headers.get("content-type", "").startswith("application/json"):
        return "expected" in answer.json()["message"].lower()
    return "expected" in answer.body.decode("utf-8", "replace").lower()


def test_a_hostile_body_is_refused_with_what_was_expected_and_nothing_is_written(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A hostile body on any route that takes one is refused with a 4xx saying what was
    expected; no 5xx, no error logged, nothing written to the log or the governance state."""
    caplog.set_level(logging.ERROR)
    routes = body_routes(world.app)
    assert ("POST", "/v1/authorize") in routes
    assert ("POST", "/console/act") in routes
    cookie = console_cookie(world)
    csrf = csrf_of(world, cookie)
    outcomes: dict[tuple[str, str], collections.Counter[int]] = collections.defaultdict(collections.Counter)
    failed: list[str] = []
    for method, template in routes:
        path = concrete(world, template)
        bodies = json_bodies(path) if path.startswith("/v1/") else form_bodies(csrf)
        cases = [(kind, body, media, False) for kind, (body, media) in bodies.items()]
        cut_body, cut_media = (
            bodies["wrong-media-type"][0],
            "application/json" if path.startswith("/v1/") else FORM,
        )
        cases.append(("cut-off", cut_body, cut_media, True))
        for kind, body, media, cut in cases:
            before = world.snapshot()
            answer = send(world, method, path, body, media, cut=cut, cookie=cookie)
            after = world.snapshot()
            outcomes[(f"{method} {template}", kind)][answer.status] += 1
            where = f"{method} {template} {kind}: {answer.status} {answer.body[:160]!r}"
            if not 400 <= answer.status < 500:
                failed.append(where)
            elif not cut and not says_what_was_expected(answer):
                failed.append(f"no 'expected' in the refusal: {where}")
            if after != before:
                failed.append(f"wrote {sorted(k for k in before if before[k] != after.get(k))}: {where}")
    assert not failed, "\n".join(failed)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records[:3]
    endpoints = sorted({route for route, _ in outcomes})
    record(
        "inputs-bodies",
        section="Inputs tried",
        summary=[
            f"{len(endpoints)} endpoints that take a body x {len(KINDS)} kinds of hostile body = "
            f"{len(outcomes)} requests, each refused with a 4xx saying what was expected (the cut-off "
            "ones: a 4xx to a client that went away), none a 5xx, the log and the governance state "
            "unchanged after each",
        ],
        columns=["endpoint", *KINDS],
        rows=[
            [route, *(" ".join(str(s) for s in sorted(outcomes[(route, k)])) for k in KINDS)]
            for route in endpoints
        ],
    )


def test_an_end_with_a_malformed_output_digest_is_refused_and_the_receipt_stays_verifiable(
    world: World,
) -> None:
    """An execution's end reported with an output digest that is not a SHA-256 digest is
    refused (422) before it is recorded; the execution then ends properly and its receipt
    verifies."""
    path = f"/v1/executions/{world.running}/finish"
    good = "sha256:" + "0" * 64
    for digest in ("kÍl", "sha256:XYZ", "sha256:" + "0" * 63, 5, None, ["x"], good.upper()):
        for outcome in ("completed", "terminated"):
            body = orjson.dumps(
                {"outcome": outcome, "exit_status": 0, "reason": "revoked", "stderr_digest": digest}
            )
            before = world.snapshot()
            answer = call(
                world.app, "POST", path, headers=signed(world.keys["alice"], "POST", path, body), body=body
            )
            assert answer.status == 422, (digest, outcome, answer.status, answer.body)
            assert "stderr_digest: expected sha256:" in answer.json()["message"]
            assert world.snapshot() == before, digest
    body = orjson.dumps(
        {"outcome": "completed", "exit_status": 0, "stdout_digest": good, "stderr_digest": ""}
    )
    done = call(world.app, "POST", path, headers=signed(world.keys["alice"], "POST", path, body), body=body)
    assert done.status == 200, done.body
    target = f"/v1/executions/{world.running}/receipt"
    receipt = call(world.app, "GET", target, headers=signed(world.keys["alice"], "GET", target))
    assert receipt.status == 200, receipt.body[:300]
