"""Quotas against a greedy principal: it cannot hold more running executions, start
more per minute or open more event streams than ``<data>/config.toml`` allows (HTTP
429, nothing recorded), concurrent starts cannot overshoot, policies see the counts,
and a configuration that does not check out stops the governor from starting."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from asgi_support import call, signed
from gov_exec import Clock, allow, start_body
from gov_server import GovernorServer, cli, free_port
from gov_support import EXE, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient, GovernorError
from proctor.config import QuotaLimits, load_config
from proctor.errors import ConfigError, QuotaError
from proctor.governor.app import create_app
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor


def configure(data: Path, text: str) -> None:
    (data / "config.toml").write_text(text)


def reopen(data: Path, governor: Governor, config: str, clock: Clock | None = None) -> Governor:
    """The fixture's governor, opened again on ``config``."""
    governor.close()
    configure(data, config)
    return Governor(data, clock=clock) if clock is not None else Governor(data)


def events(gov: Governor, kind: str) -> list[dict[str, Any]]:
    found = [json.loads(gov.log.leaf(i)) for i in range(gov.log.size)]
    return [e for e in found if e["type"] == kind]


def start(gov: Governor, token: str, arg: str, principal: str = "alice") -> str:
    return str(gov.executions.start(principal, start_body(token, arg))["execution"])


def test_one_principal_cannot_run_more_than_max_running(gov_data: Path, governor: Governor) -> None:
    limit = QuotaLimits().max_running
    assert load_config(gov_data).quotas.default.max_running == limit  # as proctor init wrote it
    tokens = [allow(governor, str(i)) for i in range(limit + 1)]
    running = [start(governor, token, str(i)) for i, token in enumerate(tokens[:limit])]
    started_before = len(events(governor, "execution.started"))
    # The 65th start, over HTTP: 429 with the quota's evidence; nothing recorded.
    app = create_app(governor)
    body = orjson.dumps(start_body(tokens[limit], str(limit)))
    key = PrincipalKey.load(gov_data / "alice.key")
    answer = call(
        app, "POST", "/v1/executions", headers=signed(key, "POST", "/v1/executions", body), body=body
    )
    assert answer.status == 429, answer.body
    refusal = answer.json()
    assert {k: refusal[k] for k in ("error", "quota", "limit", "found")} == {
        "error": "quota",
        "quota": "max_running",
        "limit": limit,
        "found": limit,
    }
    assert "max_running" in refusal["message"]
    assert len(events(governor, "execution.started")) == started_before
    assert governor.executions.running_count("alice") == limit
    # Another principal is not held back by alice.
    start(governor, allow(governor, "b", principal="bob"), "b", principal="bob")
    # The refused warrant was not used up: once one execution ends, it starts.
    governor.executions.finish("alice", running[0], {"outcome": "completed", "exit_status": 0})
    start(governor, tokens[limit], str(limit))
    assert governor.executions.running_count("alice") == limit


def test_an_authorization_at_max_running_is_a_recorded_deny(gov_data: Path, governor: Governor) -> None:
    gov = reopen(gov_data, governor, "[quotas]\nmax_running = 2\n")
    with gov:
        running = [start(gov, allow(gov, str(i)), str(i)) for i in range(2)]
        request = AuthorizeRequest(
            action="exec", resource="/bin/echo", argv=("echo", "3"), executable_digest=EXE
        )
        denied = gov.authorize("alice", request)
        assert not denied.allowed
        assert denied.decision.reason.startswith("quota max_running:"), denied.decision.reason
        assert denied.log_index is not None
        logged = json.loads(gov.log.leaf(denied.log_index))
        assert (logged["decision"], logged["reason"]) == ("deny", denied.decision.reason)
        assert gov.authorize("bob", request).allowed  # bob runs nothing
        gov.executions.finish("alice", running[0], {"outcome": "completed", "exit_status": 0})
        assert gov.authorize("alice", request).allowed


def test_starts_per_minute_are_capped(gov_data: Path, governor: Governor) -> None:
    clock = Clock()
    gov = reopen(gov_data, governor, "[quotas]\nmax_starts_per_minute = 3\n", clock)
    with gov:
        tokens = [allow(gov, str(i)) for i in range(5)]
        for i in range(3):
            ex = start(gov, tokens[i], str(i))
            gov.executions.finish("alice", ex, {"outcome": "completed", "exit_status": 0})
        with pytest.raises(QuotaError) as refused:
            start(gov, tokens[3], "3")  # nothing runs: the rate is what is refused
        assert (refused.value.quota, refused.value.limit, refused.value.found) == (
            "max_starts_per_minute",
            3,
            3,
        )
        clock.now += 59
        with pytest.raises(QuotaError):
            start(gov, tokens[3], "3")
        clock.now += 1  # 60 s after the first three
        start(gov, tokens[3], "3")
        start(gov, tokens[4], "4")


@pytest.mark.parametrize(
    ("config", "quota"),
    [("max_running = 4", "max_running"), ("max_starts_per_minute = 4", "max_starts_per_minute")],
    ids=["max_running", "max_starts_per_minute"],
)
def test_concurrent_starts_cannot_overshoot_a_quota(
    gov_data: Path, governor: Governor, config: str, quota: str
) -> None:
    gov = reopen(gov_data, governor, f"[quotas]\n{config}\n")
    with gov:
        tokens = [allow(gov, str(i)) for i in range(12)]
        barrier = threading.Barrier(len(tokens))
        outcomes: list[object] = [None] * len(tokens)

        def go(i: int) -> None:
            barrier.wait(timeout=60)
            try:
                outcomes[i] = start(gov, tokens[i], str(i))
            except QuotaError as e:
                outcomes[i] = e

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(tokens))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        started = [o for o in outcomes if isinstance(o, str)]
        refused = [o for o in outcomes if isinstance(o, QuotaError)]
        assert (len(started), len(refused)) == (4, 8), outcomes
        assert {e.quota for e in refused} == {quota}
        assert len(events(gov, "execution.started")) == 4
        assert gov.executions.running_count("alice") == 4


CHANGED = """\
@id("echo")
permit (principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/bin/echo");

@id("starts-cap")
forbid (principal, action, resource) when { context.counters.starts_1m >= 2 };
"""


def test_policies_see_starts_in_the_last_minute(tmp_path: Path, gov_data: Path, governor: Governor) -> None:
    policies = tmp_path / "starts"
    policies.mkdir()
    (policies / "starts.cedar").write_text(CHANGED)
    governor.push_policy(signed_bundle(gov_data, policies, version=2), by="admin")
    for i in range(2):
        start(governor, allow(governor, str(i)), str(i))
    request = AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", "x"), executable_digest=EXE)
    denied = governor.authorize("alice", request)
    assert not denied.allowed
    assert denied.decision.policies == ("starts-cap",)
    assert denied.log_index is not None
    logged = json.loads(governor.log.leaf(denied.log_index))
    assert logged["request"]["counters"]["starts_1m"] == 2
    assert logged["request"]["counters"]["concurrency"] == 2
    assert governor.authorize("bob", request).allowed


INVALID = [
    ("[quotas]\nmax_runing = 4\n", "unknown key quotas.max_runing: expected one of max_running"),
    (
        '[quotas]\nmax_running = "64"\n',
        "quotas.max_running: expected an integer from 1 to 1000000000, found a string",
    ),
    ("[quotas]\nmax_starts_per_minute = -1\n", "quotas.max_starts_per_minute: expected an integer from 1"),
]


@pytest.mark.parametrize(("text", "message"), INVALID, ids=["unknown-key", "wrong-type", "negative"])
def test_an_invalid_config_stops_the_governor(gov_data: Path, text: str, message: str) -> None:
    configure(gov_data, text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Governor(gov_data)
    # proctor serve refuses to start, whether or not the stream cap is given on the command line.
    for extra in ((), ("--max-streams-per-principal", "8")):
        served = cli("serve", "--data", str(gov_data), "--port", str(free_port()), *extra, check=False)
        assert served.returncode == 2, served.stderr
        assert message in served.stderr
    # So does every admin command that opens the data directory.
    listed = cli("principal", "list", "--data", str(gov_data), check=False)
    assert listed.returncode == 2
    assert message in listed.stderr


@pytest.mark.slow
def test_the_stream_cap_comes_from_the_config(tmp_path: Path) -> None:
    server = GovernorServer(tmp_path)
    try:
        server.kill()
        configure(server.data, "[quotas]\nmax_streams = 1\n[quotas.principals.admin]\nmax_streams = 2\n")
        server.start()
        alice = GovernorClient(server.url, PrincipalKey.load(server.key))
        admin = GovernorClient(server.url, PrincipalKey.load(server.data / "keys" / "admin.key"))
        with alice, admin, alice.stream("/v1/stream?since=-1"):
            with pytest.raises(GovernorError) as refused, alice.stream("/v1/stream?since=-1"):
                pass
            assert refused.value.status == 429
            assert "at most 1, quota max_streams" in str(refused.value)
            with admin.stream("/v1/stream?since=-1"), admin.stream("/v1/stream?since=-1"):
                with pytest.raises(GovernorError) as refused, admin.stream("/v1/stream?since=-1"):
                    pass
                assert refused.value.status == 429
    finally:
        server.stop()
