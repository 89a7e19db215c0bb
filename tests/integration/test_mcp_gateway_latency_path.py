"""``POST /v1/authorize/start`` (ADR 0019) and the gateway's one-round-trip call path,
against a real governor (``proctor serve``).

Rules (proctor.governor.authorize_start, proctor.integrations.mcp.governance): one
signed request authorizes and starts; the warrant is still minted, bound to the tool
definition, verified by the gateway and used once; the start answer is signed for the
request; a deny starts nothing; a measurement the warrant does not cover starts nothing
and hands out no warrant; a governor without the route is asked in two requests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from gov_server import GovernorServer, client_of
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorError
from proctor.enforcement._failover import Governors
from proctor.enforcement._leases import LeaseCheck
from proctor.errors import VerificationError
from proctor.integrations.mcp.governance import Refusal, Running, ToolGovernance
from proctor.verification import tool_measurement

pytestmark = pytest.mark.slow

DIGEST = "sha256:" + hashlib.sha256(b"read definition").hexdigest()
OTHER = "sha256:" + hashlib.sha256(b"another definition").hexdigest()
POLICY = (
    '@id("fs-read")\n'
    'permit(principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/read");\n'
    '@id("fs-no-write")\n'
    'forbid(principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/write");\n'
)


@pytest.fixture(scope="module")
def governor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    root = tmp_path_factory.mktemp("latency-path")
    policy = root / "policy"
    policy.mkdir()
    (policy / "fs.cedar").write_text(POLICY)
    server = GovernorServer(root / "gov", policy=policy)
    try:
        yield server
    finally:
        server.stop()


class Counted(Governors):
    """The real fail-over client, counting the requests it sends by target."""

    sent: list[str]

    def request(self, method: str, target: str, body: Any = None, **kw: Any) -> Any:
        self.sent.append(f"{method} {target}")
        return super().request(method, target, body, **kw)


@pytest.fixture
def governance(governor: GovernorServer) -> Iterator[ToolGovernance]:
    tools = ToolGovernance(governor.url, PrincipalKey.load(governor.key))
    counted = Counted(tools._governors.urls, PrincipalKey.load(governor.key))
    counted.sent = []
    tools._governors.close()
    tools._governors = counted
    try:
        yield tools
    finally:
        tools.close()


def sent(tools: ToolGovernance) -> list[str]:
    governors = tools._governors
    assert isinstance(governors, Counted)
    return governors.sent


def test_an_allowed_call_is_authorized_and_started_in_one_request(
    governance: ToolGovernance, governor: GovernorServer
) -> None:
    governance._warrant_key()  # fetched once per session, before any call
    sent(governance).clear()
    running = governance.authorize_start("fs/read", {"path": "/srv/a", "t": 0.7}, DIGEST)
    assert isinstance(running, Running), running
    assert sent(governance) == ["POST /v1/authorize/start"]
    claims = running.grant.claims
    assert claims.executable_digest == DIGEST  # the definition is bound into the warrant
    assert claims.resource == "fs/read"
    with client_of(governor) as client:
        shown = client.json("GET", f"/v1/executions/{running.execution}")
        assert shown["status"] == "running"
        # The warrant is used once: presenting it again starts nothing.
        with pytest.raises(GovernorError) as replay:
            client.json(
                "POST",
                "/v1/executions",
                {
                    "warrant": running.grant.token,
                    "action": "mcp.call",
                    "resource": "fs/read",
                    "arguments": {"path": "/srv/a", "t": 0.7},
                    "zone": claims.zone,
                    "measurement": tool_measurement("fs/read", DIGEST),
                },
            )
        assert replay.value.status == 409
    assert governance.finish(running, {"outcome": "completed", "exit_status": 0}) == ""
    with client_of(governor) as client:
        receipt = client.json("GET", f"/v1/executions/{running.execution}/receipt")
        assert receipt  # the call has its receipt, as with two requests


def test_a_denied_call_starts_nothing(governance: ToolGovernance, governor: GovernorServer) -> None:
    with client_of(governor) as client:
        before = client.json("GET", "/v1/executions")
    refused = governance.authorize_start("fs/write", {"path": "/srv/a"}, DIGEST)
    assert isinstance(refused, Refusal)
    assert "denied" in refused.reason
    assert "fs-no-write" in refused.reason
    with client_of(governor) as client:
        assert client.json("GET", "/v1/executions") == before


def test_a_measurement_the_warrant_does_not_cover_starts_nothing(governor: GovernorServer) -> None:
    body = {
        "authorize": {
            "action": "mcp.call",
            "resource": "fs/read",
            "arguments": {"path": "/srv/a"},
            "executable_digest": DIGEST,
        },
        "start": {"measurement": tool_measurement("fs/read", OTHER), "enforcer": "test"},
    }
    with client_of(governor) as client:
        with pytest.raises(GovernorError) as refused:
            client.json("POST", "/v1/authorize/start", body)
        assert refused.value.status == 403
        assert refused.value.body["error"] == "warrant-rejected"
        assert "authorization" not in refused.value.body  # no warrant is handed out
        assert "token" not in str(refused.value.body)


def test_an_unknown_member_in_the_start_part_is_refused(governor: GovernorServer) -> None:
    body = {
        "authorize": {"action": "mcp.call", "resource": "fs/read", "executable_digest": DIGEST},
        "start": {"measurement": tool_measurement("fs/read", DIGEST), "enforcr": "typo"},
    }
    with client_of(governor) as client, pytest.raises(GovernorError) as refused:
        client.json("POST", "/v1/authorize/start", body)
    assert refused.value.status == 422  # the boundary's answer to a body its model refuses
    assert "enforcr" in str(refused.value)


def test_a_governor_without_the_route_is_asked_in_two_requests(
    governance: ToolGovernance, governor: GovernorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An older governor answers 404 (no such route); the gateway then asks as before.
    monkeypatch.setattr("proctor.integrations.mcp.governance.AUTHORIZE_START", "/v1/no-such-route")
    governance._warrant_key()
    sent(governance).clear()
    running = governance.authorize_start("fs/read", {"path": "/srv/b"}, DIGEST)
    assert isinstance(running, Running), running
    assert sent(governance) == ["POST /v1/no-such-route", "POST /v1/authorize", "POST /v1/executions"]
    sent(governance).clear()
    again = governance.authorize_start("fs/read", {"path": "/srv/c"}, DIGEST)
    assert isinstance(again, Running)
    assert sent(governance) == ["POST /v1/authorize", "POST /v1/executions"]
    for started in (running, again):
        assert governance.finish(started, {"outcome": "completed", "exit_status": 0}) == ""


def test_the_route_is_in_the_openapi_document(governor: GovernorServer) -> None:
    with client_of(governor) as client:
        document = client.json("GET", "/openapi.json", signed=False)
    operation = document["paths"]["/v1/authorize/start"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AuthorizeStartBody"
    }
    assert set(document["components"]["schemas"]["AuthorizeStartBody"]["required"]) == {"authorize", "start"}


def test_the_finish_on_the_fast_path_answers_as_before(
    governance: ToolGovernance, governor: GovernorServer
) -> None:
    running = governance.authorize_start("fs/read", {"path": "/srv/d"}, DIGEST)
    assert isinstance(running, Running), running
    target = f"/v1/executions/{running.execution}/finish"
    with client_of(governor) as client:
        with pytest.raises(GovernorError) as bad:
            client.json("POST", target, {"outcome": "done"})
        assert bad.value.status in (400, 422)
        assert "outcome" in str(bad.value)
        answer = client.json("POST", target, {"outcome": "completed", "exit_status": 0})
        assert answer["status"] == "completed"
        assert answer["execution"] == running.execution
        with pytest.raises(GovernorError) as again:
            client.json("POST", target, {"outcome": "completed", "exit_status": 0})
        assert again.value.status == 409  # an execution ends once
        with pytest.raises(GovernorError) as unsigned:
            client.json("POST", target, {"outcome": "completed", "exit_status": 0}, signed=False)
        assert unsigned.value.status == 401


@pytest.mark.parametrize(
    "start",
    [{"containment": 5}, {"containment": "cgroup2"}, {"containment": [1]}, {"containment": ["x"] * 17},
     {"enforcer": 5}, {"enforcer": ["gw"]}],
    ids=["containment-number", "containment-string", "containment-items", "containment-17", "enforcer-number",
         "enforcer-array"],
)  # fmt: skip
def test_a_start_part_of_the_wrong_type_is_refused_before_anything_is_decided(
    governor: GovernorServer, start: dict[str, Any]
) -> None:
    # The start part is new with the route (ADR 0019): what the document says it takes
    # is what it takes, even when the call would be denied anyway.
    body = {
        "authorize": {"action": "mcp.call", "resource": "fs/read", "executable_digest": DIGEST},
        "start": {"measurement": tool_measurement("fs/read", DIGEST), **start},
    }
    with client_of(governor) as client:
        before = client.json("GET", "/v1/executions")
        with pytest.raises(GovernorError) as refused:
            client.json("POST", "/v1/authorize/start", body)
        assert refused.value.status == 422
        assert next(iter(start)) in str(refused.value)
        denied = {**body, "authorize": {**body["authorize"], "resource": "fs/write"}}
        with pytest.raises(GovernorError) as also:
            client.json("POST", "/v1/authorize/start", denied)
        assert also.value.status == 422
        assert client.json("GET", "/v1/executions") == before


@pytest.mark.parametrize("containment", [5, "cgroup2", {"a": 1}, [1, "cgroup2"]])
def test_a_start_records_only_the_strings_of_a_containment_array(
    governor: GovernorServer, containment: Any
) -> None:
    # POST /v1/executions keeps what it always accepted (ADR 0011): what is not an array
    # of strings is recorded as no backend planned, never a failure of the governor.
    with client_of(governor) as client:
        warrant = client.json(
            "POST",
            "/v1/authorize",
            {"action": "mcp.call", "resource": "fs/read", "arguments": {}, "executable_digest": DIGEST},
        )["warrant"]["token"]
        started = client.json(
            "POST",
            "/v1/executions",
            {
                "warrant": warrant,
                "action": "mcp.call",
                "resource": "fs/read",
                "arguments": {},
                "measurement": tool_measurement("fs/read", DIGEST),
                "containment": containment,
            },
        )
        shown = client.json("GET", f"/v1/executions/{started['execution']}")
        event = client.json("GET", f"/v1/log/entries/{shown['log_indices'][-1]}", signed=False)["event"]
        assert event["type"] == "execution.started"
        assert event["containment"] == (["cgroup2"] if isinstance(containment, list) else [])
        client.json(
            "POST",
            f"/v1/executions/{started['execution']}/finish",
            {"outcome": "completed", "exit_status": 0},
        )


class Tampering(Counted):
    """The real fail-over client, whose combined answers come back with the start's
    lease TTL altered (as an on-path rewrite would): its signature no longer verifies."""

    def request(self, method: str, target: str, body: Any = None, **kw: Any) -> Any:
        answered = super().request(method, target, body, **kw)
        if target != "/v1/authorize/start":
            return answered
        altered = answered.json()
        altered["execution"]["lease_ttl_ms"] = 3_600_000
        return _Altered(answered, altered)


class _Altered:
    def __init__(self, answered: Any, body: dict[str, Any]) -> None:
        self.response, self.url, self.sent, self._body = answered.response, answered.url, answered.sent, body

    def json(self) -> dict[str, Any]:
        return self._body


def _listed(governor: GovernorServer) -> list[dict[str, Any]]:
    with client_of(governor) as client:
        executions: list[dict[str, Any]] = client.json("GET", "/v1/executions?status=all&limit=1000")[
            "executions"
        ]
    return executions


def _new_execution(governor: GovernorServer, before: set[str]) -> dict[str, Any]:
    new = [e for e in _listed(governor) if e["id"] not in before]
    assert len(new) == 1, new
    return new[0]


def _ids(governor: GovernorServer) -> set[str]:
    return {e["id"] for e in _listed(governor)}


def test_a_start_whose_answer_does_not_verify_is_ended_not_left_running(governor: GovernorServer) -> None:
    """Rule 4: the combined answer's start part altered on the path is refused, and the
    execution the governor recorded for it is finished at once (bound to the warrant)."""
    tools = ToolGovernance(governor.url, PrincipalKey.load(governor.key))
    tampering = Tampering(tools._governors.urls, PrincipalKey.load(governor.key))
    tampering.sent = []
    tools._governors.close()
    tools._governors = tampering
    before = _ids(governor)
    try:
        refused = tools.authorize_start("fs/read", {"path": "/srv/tampered"}, DIGEST)
    finally:
        tools.close()
    assert isinstance(refused, Refusal)
    assert "start answer does not verify" in refused.reason
    shown = _new_execution(governor, before)
    assert (shown["status"], shown["reason"]) == ("failed", "not-forwarded"), shown


def test_a_separate_start_whose_answer_is_not_accepted_is_ended(
    governance: ToolGovernance, governor: GovernorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule 4 on the two-request path: a start answer the lease check refuses starts
    nothing here, and what the governor recorded is finished at once."""
    monkeypatch.setattr("proctor.integrations.mcp.governance.AUTHORIZE_START", "/v1/no-such-route")

    def refuse(self: LeaseCheck, answered: Any) -> None:
        raise VerificationError("start answer: not signed for this request (test)")

    monkeypatch.setattr(LeaseCheck, "start", refuse)
    before = _ids(governor)
    refused = governance.authorize_start("fs/read", {"path": "/srv/refused"}, DIGEST)
    assert isinstance(refused, Refusal)
    assert "did not start the call" in refused.reason
    shown = _new_execution(governor, before)
    assert (shown["status"], shown["reason"]) == ("failed", "not-forwarded"), shown


def test_a_start_for_a_warrant_that_does_not_verify_here_is_ended(governor: GovernorServer) -> None:
    """The gateway pins another warrant key: the warrant does not verify, nothing is
    forwarded, and the execution the governor started for it is finished, by the id and
    warrant its answer names (the governor checks that the one runs under the other)."""
    tools = ToolGovernance(governor.url, PrincipalKey.load(governor.key), warrant_key=bytes(range(32)))
    before = _ids(governor)
    try:
        refused = tools.authorize_start("fs/read", {"path": "/srv/other-key"}, DIGEST)
    finally:
        tools.close()
    assert isinstance(refused, Refusal)
    shown = _new_execution(governor, before)
    assert (shown["status"], shown["reason"]) == ("failed", "not-forwarded"), shown


class Unpositioned(Counted):
    """The real fail-over client, whose start answers come back with their
    ``log_index`` (which the lease signature does not cover) replaced by ``position``,
    or removed (``...``)."""

    position: Any = ...

    def request(self, method: str, target: str, body: Any = None, **kw: Any) -> Any:
        answered = super().request(method, target, body, **kw)
        if target not in ("/v1/executions", "/v1/authorize/start"):
            return answered
        altered = answered.json()
        started = altered if target == "/v1/executions" else altered["execution"]
        started.pop("log_index", None)
        if self.position is not ...:
            started["log_index"] = self.position
        return _Altered(answered, altered)


@pytest.mark.parametrize("position", [..., -1, 1.5, True, "7", float("inf")], ids=repr)
@pytest.mark.parametrize("combined", [False, True], ids=["two-requests", "combined"])
def test_a_start_answer_without_its_log_position_is_ended(
    governor: GovernorServer, monkeypatch: pytest.MonkeyPatch, position: Any, combined: bool
) -> None:
    """Rule 4: the signed start answer is genuine but its log position was removed or
    replaced on the way (not a count: negative, fractional, a boolean, a string, an
    infinity): nothing is forwarded, and the start is finished at once rather than left
    to its lease, on either path."""
    if not combined:
        monkeypatch.setattr("proctor.integrations.mcp.governance.AUTHORIZE_START", "/v1/no-such-route")
    tools = ToolGovernance(governor.url, PrincipalKey.load(governor.key))
    unpositioned = Unpositioned(tools._governors.urls, PrincipalKey.load(governor.key))
    unpositioned.sent, unpositioned.position = [], position
    tools._governors.close()
    tools._governors = unpositioned
    before = _ids(governor)
    try:
        refused = tools.authorize_start("fs/read", {"path": "/srv/unpositioned"}, DIGEST)
    finally:
        tools.close()
    assert isinstance(refused, Refusal)
    assert "log_index" in refused.reason, refused.reason
    shown = _new_execution(governor, before)
    assert (shown["status"], shown["reason"]) == ("failed", "not-forwarded"), shown
