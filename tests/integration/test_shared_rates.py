"""Per-second quotas across governor nodes (quotas invariant 7): nodes on one store
admit each principal's rate once in all, not once per node. Real ``proctor serve
--shared`` processes; the nodes count each other through their heartbeats."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gov_server import GovernorServer
from gov_support import EXE
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request

pytestmark = pytest.mark.slow

POLICIES = Path(__file__).parent / "policies"
LIMIT = 12


@pytest.fixture
def three(tmp_path: Path) -> Iterator[list[GovernorServer]]:
    config = f"[quotas.principals.alice]\nmax_authorizations_per_second = {LIMIT}\n"
    servers = GovernorServer.nodes(tmp_path, 3, policy=POLICIES / "run", config=config)
    yield servers
    for server in servers:
        server.stop()


def live_nodes(server: GovernorServer, key: PrincipalKey) -> int:
    headers = sign_request("GET", "/v1/nodes", b"", key, now=int(time.time()))
    nodes = httpx.get(server.url + "/v1/nodes", headers=headers, timeout=30).json()["nodes"]
    return sum(1 for n in nodes if n["status"] == "serving")


def test_nodes_together_admit_a_principals_authorization_rate_once(three: list[GovernorServer]) -> None:
    alice = PrincipalKey.load(three[0].key)
    deadline = time.monotonic() + 30
    while live_nodes(three[0], alice) < 3:
        assert time.monotonic() < deadline, "the three nodes never all showed as serving"
        time.sleep(0.2)
    time.sleep(2.5)  # every node has beaten since, and counted the other two
    body = (
        b'{"action":"exec","resource":"/bin/echo","argv":["echo","rate"],"executable_digest":"'
        + EXE.encode()
        + b'"}'
    )
    admitted = refused = 0
    with httpx.Client(timeout=30) as http:
        started = time.monotonic()
        for _ in range(LIMIT):  # 3 x LIMIT requests, spread over the nodes, in well under a second
            for server in three:
                headers = sign_request("POST", "/v1/authorize", body, alice, now=int(time.time()))
                headers["content-type"] = "application/json"
                answer = http.post(server.url + "/v1/authorize", content=body, headers=headers)
                if answer.status_code == 429:
                    assert answer.json()["quota"] == "max_authorizations_per_second"
                    refused += 1
                else:
                    assert answer.status_code == 200, answer.text
                    admitted += 1
        took = time.monotonic() - started
    if took < 1.0:  # all in one window: the nodes admitted the limit once, not three times
        assert admitted <= LIMIT, (admitted, refused)
    else:  # a slow machine: the window slid; still far below three nodes' worth
        assert admitted <= LIMIT * (1 + took), (admitted, refused, took)
    assert admitted >= LIMIT // 3 * 3 - 3  # each node admits its part
    assert refused > 0
