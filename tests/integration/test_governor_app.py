"""The HTTP app in process (Starlette's TestClient): error barrier and request shapes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gov_support import EXE
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.governor.app import create_app
from proctor.governor.service import Governor


@pytest.fixture
def client(governor: Governor) -> Iterator[TestClient]:
    with TestClient(create_app(governor), raise_server_exceptions=False) as c:
        yield c


def post(client: TestClient, key: PrincipalKey, path: str, body: Any) -> Any:
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return client.post(path, content=raw, headers=sign_request("POST", path, raw, key, now=int(time.time())))


def test_unexpected_errors_are_a_plain_500_without_traceback(
    client: TestClient, governor: Governor, gov_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any) -> Any:
        raise RuntimeError("secret internal detail")

    async def aboom(*args: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(governor, "authorize_async", aboom)
    monkeypatch.setattr(governor.executions, "receipt", boom)
    alice = PrincipalKey.load(gov_data / "alice.key")
    admin = PrincipalKey.load(gov_data / "keys" / "admin.key")
    monkeypatch.setattr(governor.state, "execution", lambda execution_id: {"principal": "alice"})
    receipt = "/v1/executions/ex_1/receipt"
    signed = sign_request("GET", receipt, b"", admin, now=int(time.time()))
    for response in (
        post(client, alice, "/v1/authorize", {"action": "exec", "resource": "/bin/echo"}),  # the fast path
        client.get(receipt, headers=signed),  # through FastAPI
    ):
        assert response.status_code == 500
        internal = {"error": "internal", "message": "internal error"}
        assert response.json() == {**internal, "detail": internal}
        assert "secret" not in response.text
        assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"action": "fly", "resource": "/bin/echo"}, "action: expected one of"),
        ({"action": "exec"}, "resource: expected a string"),
        ({"action": "exec", "resource": "/bin/echo", "argv": "echo hi"}, "argv: expected an array"),
        ({"action": "exec", "resource": "/bin/echo", "surprise": 1}, "unknown fields"),
        ({"action": "exec", "resource": "/bin/echo", "argv": [9007199254740993]}, "IEEE 754"),
        ([1, 2], "expected a JSON object"),
        (b"not json", "expected JSON text"),
    ],
    ids=["bad-action", "no-resource", "argv-string", "unknown-field", "lossy", "array", "not-json"],
)
def test_malformed_requests_get_422_with_what_was_expected(
    client: TestClient, gov_data: Path, body: Any, expected: str
) -> None:
    response = post(client, PrincipalKey.load(gov_data / "alice.key"), "/v1/authorize", body)
    assert response.status_code == 422
    payload = response.json()
    message = payload.get("message") or payload.get("detail", {}).get("message", "")
    assert expected in message


def test_deny_is_a_200_with_allow_false(client: TestClient, gov_data: Path) -> None:
    response = post(client, PrincipalKey.load(gov_data / "alice.key"), "/v1/authorize",
                    {"action": "exec", "resource": "/usr/bin/rm", "argv": ["rm", "-rf", "/"],
                     "executable_digest": EXE})  # fmt: skip
    assert response.status_code == 200
    doc = response.json()
    assert doc["allow"] is False
    assert "warrant" not in doc
    assert "no-rm" in doc["decision"]["policies"]


def test_the_declared_authorize_route_answers_like_the_fast_path(governor: Governor, gov_data: Path) -> None:
    """The OpenAPI-declared route (reached only when the fast path is bypassed: here
    behind a proxy prefix, ``root_path``) gives the same answers."""
    app = create_app(governor)
    alice = PrincipalKey.load(gov_data / "alice.key")
    body = {
        "action": "exec",
        "resource": "/usr/bin/pg_dump",
        "argv": ["pg_dump", "db1"],
        "executable_digest": EXE,
    }
    with TestClient(app) as fast, TestClient(app, root_path="/gov") as declared:
        for client, path in ((fast, "/v1/authorize"), (declared, "/gov/v1/authorize")):
            allowed = post(client, alice, path, body)
            assert allowed.status_code == 200, allowed.text
            assert allowed.json()["allow"] is True
            unsigned = client.post(path, content=json.dumps(body).encode())
            assert unsigned.status_code == 401
            assert unsigned.json()["detail"]["reason"] == "unsigned"
