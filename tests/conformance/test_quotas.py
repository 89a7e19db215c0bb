"""Quotas against a greedy principal: it cannot hold more running executions, start
more per minute, send more authorization requests per second or open more event
streams than ``<data>/config.toml`` allows (HTTP
429, nothing recorded), concurrent starts cannot overshoot, policies see the counts,
and a configuration that does not check out stops the governor from starting."""

from __future__ import annotations

import json
import re
import threading
import time
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
from proctor.config import QuotaConfig, QuotaLimits, load_config
from proctor.errors import ConfigError, QuotaError
from proctor.governor.app import create_app
from proctor.governor.model import AuthorizeRequest
from proctor.governor.quotas import RateShare, RequestRate
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


def test_authorization_requests_are_rate_limited_per_principal_after_the_signature(
    gov_data: Path, governor: Governor
) -> None:
    gov = reopen(gov_data, governor, "[quotas]\nmax_authorizations_per_second = 3\n")
    with gov:
        app = create_app(gov)
        now = [1000.25]
        app.authorizations = RequestRate(
            gov.quotas, "max_authorizations_per_second", what="authorization requests", clock=lambda: now[0]
        )
        alice = PrincipalKey.load(gov_data / "alice.key")
        bob = PrincipalKey.load(gov_data / "bob.key")
        body = orjson.dumps(
            {"action": "exec", "resource": "/bin/echo", "argv": ["echo", "x"], "executable_digest": EXE}
        )

        def authorize(key: PrincipalKey, headers: Any = None) -> Any:
            sent = headers if headers is not None else signed(key, "POST", "/v1/authorize", body)
            return call(app, "POST", "/v1/authorize", headers=sent, body=body), sent

        for _ in range(3):
            assert authorize(alice)[0].status == 200
        size = gov.log.size
        began = time.monotonic()
        refused, headers = authorize(alice)
        held_back = time.monotonic() - began
        assert refused.status == 429, refused.body
        error = refused.json()
        # 3 requests in this window, none before it: the next fits 1 s + 1/3 s later
        # (bounded to 1 s), and the answer is held back that long (a tarpit).
        assert error["retry_after"] == 1.0
        assert held_back >= 1.0
        assert {k: error[k] for k in ("error", "quota", "limit", "found")} == {
            "error": "quota",
            "quota": "max_authorizations_per_second",
            "limit": 3,
            "found": 3,
        }
        assert gov.log.size == size  # a refusal is not logged: a flood cannot fill the log
        assert authorize(bob)[0].status == 200  # bob has an allowance of his own
        # A refusal does not count: a second later the allowance is back, but the
        # refused request itself stays spent (its nonce was kept).
        now[0] += 1.0
        replayed, _ = authorize(alice, headers)
        assert replayed.status == 401, replayed.body
        assert replayed.json()["detail"]["reason"] == "replayed"
        now[0] += 1.0
        assert authorize(alice)[0].status == 200
        # An unsigned or forged request never touches anyone's allowance: alice's
        # signature over bob's name does not authenticate as bob.
        forged = [
            (k, v.replace('keyid="alice"', 'keyid="bob"'))
            for k, v in signed(alice, "POST", "/v1/authorize", body)
        ]
        assert authorize(bob, forged)[0].status == 401
        assert 'proctor_quota_refusals_total{quota="max_authorizations_per_second"} 1.0' in (
            call(app, "GET", "/metrics").body.decode()
        )


def test_the_authorization_rate_window_slides() -> None:
    now = [10.0]
    quotas = QuotaConfig(QuotaLimits(max_authorizations_per_second=4))
    rate = RequestRate(quotas, "max_authorizations_per_second", what="requests", clock=lambda: now[0])
    assert [rate.admit("alice") is None for _ in range(5)] == [True] * 4 + [False]
    now[0] = 11.5  # half the last window still counts: 4 * 0.5 = 2 seen
    assert [rate.admit("alice") is None for _ in range(3)] == [True, True, False]
    now[0] = 13.0  # a whole idle second later: nothing counts
    assert [rate.admit("alice") is None for _ in range(5)] == [True] * 4 + [False]
    # Never more than twice the limit in any second, whatever the timing.
    now[0], admitted = 20.0, []
    for step in range(4000):
        now[0] = 20.0 + step * 0.001
        if rate.admit("bob") is None:
            admitted.append(now[0])
    for i, t in enumerate(admitted):
        assert sum(1 for u in admitted[i:] if u < t + 1.0) <= 8


def test_every_signed_request_counts_against_the_request_rate(gov_data: Path, governor: Governor) -> None:
    gov = reopen(gov_data, governor, "[quotas]\nmax_requests_per_second = 2\n")
    with gov:
        app = create_app(gov)
        now = [500.5]
        app.requests = RequestRate(
            gov.quotas, "max_requests_per_second", what="requests", clock=lambda: now[0]
        )
        alice = PrincipalKey.load(gov_data / "alice.key")
        admin = PrincipalKey.load(gov_data / "keys" / "admin.key")

        def get(key: PrincipalKey, target: str) -> Any:
            return call(app, "GET", target, headers=signed(key, "GET", target))

        # Whatever the route, FastAPI's or the fast path's: a stream open, a policy
        # read, an authorization, a renewal all draw on the same allowance.
        assert get(alice, "/v1/policy").status == 200
        assert get(alice, "/v1/policy").status == 200
        for method, target in (
            ("GET", "/v1/stream"),
            ("GET", "/v1/policy"),
            ("POST", "/v1/authorize"),
            ("POST", "/v1/executions/x/renew"),
        ):
            answer = call(app, method, target, headers=signed(alice, method, target))
            assert answer.status == 429, (target, answer.status, answer.body)
            error = answer.json()
            assert (error["error"], error["quota"], error["limit"]) == (
                "quota",
                "max_requests_per_second",
                2,
            ), error
        assert get(admin, "/v1/principals").status == 200  # another principal's allowance
        now[0] += 2.0
        assert get(alice, "/v1/policy").status == 200


def test_a_rate_refusal_says_when_the_next_request_fits() -> None:
    now = [7.0]
    rate = RequestRate(
        QuotaConfig(QuotaLimits(max_requests_per_second=10)),
        "max_requests_per_second",
        what="requests",
        clock=lambda: now[0],
    )
    for _ in range(10):
        assert rate.admit("alice") is None
    now[0] = 8.25  # 10 * 0.75 = 7.5 still seen: 2 more admitted
    assert [rate.admit("alice") is None for _ in range(3)] == [True, True, False]
    refusal = rate.admit("alice")
    assert refusal is not None
    assert refusal.retry_after is not None
    # Room for one more once 10 * (1 - t) + 2 + 1 <= 10, t = 0.3: 0.05 s from now.
    assert abs(refusal.retry_after - 0.05) < 1e-9
    now[0] = 8.25 + refusal.retry_after + 1e-6
    assert rate.admit("alice") is None


def test_nodes_sharing_a_rate_admit_at_most_the_limit_together() -> None:
    # Three nodes, each with its own counters: a principal spreading its requests
    # over all of them gets no more than its one limit a second in all.
    now = [100.0]
    quotas = QuotaConfig(QuotaLimits(max_authorizations_per_second=10))
    share = RateShare()
    share.set(3)
    nodes = [
        RequestRate(
            quotas, "max_authorizations_per_second", what="requests", clock=lambda: now[0], share=share
        )
        for _ in range(3)
    ]
    admitted = sum(1 for _ in range(20) for node in nodes if node.admit("alice") is None)
    assert admitted == 9  # floor(10 / 3) each
    refusal = nodes[0].admit("alice")
    assert refusal is not None
    assert "this node's part of 10 shared by 3 nodes" in str(refusal)
    # A node going away gives its part back to the others (at the next heartbeat).
    share.set(2)
    now[0] = 102.0
    assert sum(1 for _ in range(20) for node in nodes[:2] if node.admit("alice") is None) == 10
    # Never below one request a second per node, and never above the limit alone.
    share.set(50)
    assert share.of(10) == 1
    share.set(0)
    assert (share.nodes, share.of(10)) == (1, 10)
