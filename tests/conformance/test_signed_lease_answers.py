"""Signed lease answers (ADR 0017): the governor's answers to a start and to a renewal
are signed with its warrant key and bound to the request they answer, so that nobody on
the path can keep a revoked execution alive by answering ``{"ok": true}`` itself.

Through the governor's real ASGI application (its fast path for renewals, FastAPI for
starts), with requests signed by a known nonce."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from asgi_support import Answer, call
from gov_exec import allow, start_body
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.errors import VerificationError
from proctor.governor.app import GovernorApp, create_app
from proctor.governor.service import Governor
from proctor.verification.lease_answer import LEASE_SIG_FIELD, verify_lease_answer


@pytest.fixture
def app(governor: Governor) -> GovernorApp:
    return create_app(governor)


def post(app: GovernorApp, key: PrincipalKey, target: str, body: Any, nonce: str) -> Answer:
    data = orjson.dumps(body)
    headers = {
        "content-type": "application/json",
        **sign_request("POST", target, data, key, now=int(time.time()), nonce=nonce),
    }
    return call(app, "POST", target, headers=list(headers.items()), body=data)


def started(app: GovernorApp, governor: Governor, nonce: str) -> dict[str, Any]:
    alice = PrincipalKey.load(governor.data.path / "alice.key")
    answer = post(app, alice, "/v1/executions", start_body(allow(governor, "hi"), "hi"), nonce)
    assert answer.status == 201, answer.body
    body: dict[str, Any] = answer.json()
    return body


def renewed(app: GovernorApp, governor: Governor, execution: str, nonce: str) -> dict[str, Any]:
    alice = PrincipalKey.load(governor.data.path / "alice.key")
    answer = post(app, alice, f"/v1/executions/{execution}/renew", {"integrity": "ok"}, nonce)
    assert answer.status == 200, answer.body
    body: dict[str, Any] = answer.json()
    return body


def check(governor: Governor, body: Any, *, kind: Any, execution: str, nonce: str, warrant: str) -> None:
    verify_lease_answer(
        body,
        kind=kind,
        execution=execution,
        nonce=nonce,
        warrant=warrant,
        lease_ttl_ms=int(body["lease_ttl_ms"]),
        warrant_key=governor.warrant_public_key,
    )


def test_a_start_answer_is_signed_by_the_warrant_key_for_its_request(
    app: GovernorApp, governor: Governor
) -> None:
    body = started(app, governor, "start-nonce-1")
    assert LEASE_SIG_FIELD in body
    assert {"execution", "log_index", "lease_ttl_ms", "lease_expires_ms", "warrant"} <= set(body)  # kept
    ex, warrant = body["execution"], body["warrant"]
    check(governor, body, kind="start", execution=ex, nonce="start-nonce-1", warrant=warrant)
    with pytest.raises(VerificationError, match="not signed by the warrant key for this request"):
        check(governor, body, kind="start", execution=ex, nonce="start-nonce-2", warrant=warrant)
    with pytest.raises(VerificationError):  # a start answer is no renewal (it has no "ok", nor its kind)
        check(governor, body, kind="renew", execution=ex, nonce="start-nonce-1", warrant=warrant)


def test_a_renewal_answer_is_signed_for_its_execution_and_its_request_nonce(
    app: GovernorApp, governor: Governor
) -> None:
    first = started(app, governor, "start-nonce-a")
    other = started(app, governor, "start-nonce-b")
    ex, warrant = first["execution"], first["warrant"]
    body = renewed(app, governor, ex, "renew-nonce-1")
    assert body["ok"] is True
    assert body["lease_ttl_ms"] == first["lease_ttl_ms"]
    assert body["warrant"] == warrant
    check(governor, body, kind="renew", execution=ex, nonce="renew-nonce-1", warrant=warrant)
    # Replayed to a later request of the same execution: refused.
    with pytest.raises(VerificationError, match="replayed"):
        check(governor, body, kind="renew", execution=ex, nonce="renew-nonce-2", warrant=warrant)
    # Another execution's (same principal, same governor) answer: refused.
    theirs = renewed(app, governor, other["execution"], "renew-nonce-3")
    with pytest.raises(VerificationError, match="another execution"):
        check(governor, theirs, kind="renew", execution=ex, nonce="renew-nonce-3", warrant=warrant)
    # Its expiry pushed far out on the path: refused.
    tampered = {**body, "lease_expires_ms": body["lease_expires_ms"] + 3_600_000}
    with pytest.raises(VerificationError, match="not signed by the warrant key"):
        check(governor, tampered, kind="renew", execution=ex, nonce="renew-nonce-1", warrant=warrant)


def test_a_refused_renewal_is_signed_too(app: GovernorApp, governor: Governor) -> None:
    first = started(app, governor, "start-nonce-r")
    ex, warrant = first["execution"], first["warrant"]
    governor.revoke("execution", ex, reason="test", by="admin")
    body = renewed(app, governor, ex, "renew-nonce-r")
    assert body["ok"] is False
    assert body["terminate"] == "revoked"
    check(governor, body, kind="renew", execution=ex, nonce="renew-nonce-r", warrant=warrant)
    # It cannot be turned into a grant: "ok" is signed.
    with pytest.raises(VerificationError):
        check(
            governor, {**body, "ok": True}, kind="renew", execution=ex, nonce="renew-nonce-r", warrant=warrant
        )
