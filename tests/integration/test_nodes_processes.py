"""Several ``proctor serve --shared`` processes on one data directory, and ``proctor serve
--workers N`` (ADR 0016), end to end: real child processes, real HTTP, real ``proctor
run`` enforcers.

The rules (each also checked in process by ``tests/conformance/test_nodes.py``): a nonce
used on one governor is refused on every other; an execution started through one is
renewed and finished through another; a revocation issued on one kills an execution
whose enforcer streams from another; concurrent authorizations on all of them make one
verified tree without gaps; ``max_running`` holds across them.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gov_exec import echo_request, start_body
from gov_server import GovernorServer, cli, revoke_across
from gov_server import client_of as client
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.client import GovernorError

POLICIES = Path(__file__).parent / "policies"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GovernorServer]]:
    servers = GovernorServer.nodes(tmp_path_factory.mktemp("nodes"), 3, policy=POLICIES / "run")
    yield servers
    for server in servers:
        server.stop()


def test_a_nonce_used_on_one_node_is_refused_on_every_other(nodes: list[GovernorServer]) -> None:
    a, b, c = nodes
    headers = sign_request("GET", "/v1/executions", b"", PrincipalKey.load(a.key), now=int(time.time()))
    assert httpx.get(a.url + "/v1/executions", headers=headers, timeout=30).status_code == 200
    for other in (b, c, a):
        answer = httpx.get(other.url + "/v1/executions", headers=headers, timeout=30)
        assert answer.status_code == 401, answer.text
        assert answer.json()["reason"] == "replayed"


def test_an_execution_started_through_one_node_is_renewed_and_finished_through_another(
    nodes: list[GovernorServer],
) -> None:
    a, b, c = nodes
    with client(a) as on_a, client(b) as on_b, client(c) as on_c:
        allowed = on_a.authorize(echo_request("failover"))
        assert allowed["decision"]["allow"] is True, allowed
        started = on_a.json("POST", "/v1/executions", start_body(allowed["warrant"]["token"], "failover"))
        ex = started["execution"]
        renewed = on_b.json("POST", f"/v1/executions/{ex}/renew", {})  # the enforcer failed over
        assert renewed["ok"] is True
        assert renewed["lease_expires_ms"] >= started["lease_expires_ms"]
        assert on_c.json("POST", f"/v1/executions/{ex}/renew", {})["ok"] is True
        done = on_b.json("POST", f"/v1/executions/{ex}/finish", {"outcome": "completed", "exit_status": 0})
        assert done["status"] == "completed"
        with pytest.raises(GovernorError) as again:
            on_c.json("POST", f"/v1/executions/{ex}/finish", {"outcome": "completed", "exit_status": 0})
        assert again.value.status == 409


def test_a_revocation_on_one_node_kills_an_execution_leased_from_another(nodes: list[GovernorServer]) -> None:
    a, _, c = nodes
    total, after, watched, status = revoke_across(a, c, "nodes-tree-" + secrets.token_hex(6))
    assert watched >= 3, watched  # the timing watched the real tree
    assert status == 79
    print(
        f"\nrevocation on node A -> tree leased from node C dead: {total:.1f} ms from the call ({total - after:.1f} ms of it the call, until A answered)"
    )


def test_concurrent_authorizations_on_every_node_make_one_verified_tree(nodes: list[GovernorServer]) -> None:
    size_before = int(httpx.get(nodes[0].url + "/v1/log/checkpoint", timeout=30).text.split("\n")[1])
    per_thread, threads_per_node = 15, 2
    failures: list[str] = []

    def work(server: GovernorServer) -> None:
        with client(server) as c:
            for i in range(per_thread):
                answer = c.authorize(echo_request(f"t{i}"))
                if not answer["decision"]["allow"]:
                    failures.append(str(answer))

    workers = [threading.Thread(target=work, args=(s,)) for s in nodes for _ in range(threads_per_node)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert failures == []
    total = per_thread * threads_per_node * len(nodes)
    verified = json.loads(cli("log", "verify", "--data", str(nodes[0].data), "--json").stdout)
    assert verified["ok"] is True, verified
    assert verified["size"] >= size_before + 2 * total  # a decision and its warrant.issued each
    with client(nodes[1]) as c:
        entries = [
            c.json("GET", f"/v1/log/entries/{i}", signed=False) for i in range(size_before, verified["size"])
        ]
    assert [e["index"] for e in entries] == list(range(size_before, verified["size"]))  # no gap
    decisions = [e["event"] for e in entries if e["event"]["type"] == "decision"]
    assert {d["node"] for d in decisions} >= {"node-a", "node-b", "node-c"}


def test_max_running_holds_across_nodes(tmp_path: Path) -> None:
    servers = GovernorServer.nodes(
        tmp_path, 3, policy=POLICIES / "run", config="[quotas.principals.alice]\nmax_running = 2\n"
    )
    try:
        with client(servers[0]) as c:
            tokens = [c.authorize(echo_request(f"q{i}"))["warrant"]["token"] for i in range(6)]
        answers: list[int] = []
        barrier = threading.Barrier(len(tokens))

        def start(server: GovernorServer, token: str, i: int) -> None:
            with client(server) as c:
                barrier.wait()
                try:
                    c.json("POST", "/v1/executions", start_body(token, f"q{i}"))
                    answers.append(201)
                except GovernorError as e:
                    answers.append(e.status)

        threads = [
            threading.Thread(target=start, args=(servers[i % 3], token, i)) for i, token in enumerate(tokens)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sorted(answers) == [201, 201, 429, 429, 429, 429]
    finally:
        for server in servers:
            server.stop()


def test_workers_share_one_port_and_stop_together(tmp_path: Path) -> None:
    server = GovernorServer(tmp_path, policy=POLICIES / "run", serve_args=("--workers", "2"))
    try:
        assert server.proc is not None
        children = _children(server.proc.pid)
        assert len(children) == 2
        with client(server) as c:
            for i in range(10):
                assert c.authorize(echo_request(f"w{i}"))["decision"]["allow"] is True
        headers = sign_request(
            "GET", "/v1/executions", b"", PrincipalKey.load(server.key), now=int(time.time())
        )
        codes = [
            httpx.get(server.url + "/v1/executions", headers=headers, timeout=30).status_code
            for _ in range(4)
        ]
        assert codes == [200, 401, 401, 401]  # a new connection each: either worker, once
    finally:
        server.stop()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"worker {pid} outlived the parent"
    verified = json.loads(cli("log", "verify", "--data", str(server.data), "--json").stdout)
    assert verified["ok"] is True


def test_an_exclusive_governor_does_not_join_shared_ones(nodes: list[GovernorServer]) -> None:
    proc = cli("serve", "--data", str(nodes[0].data), "--port", "0", check=False, timeout=60)
    assert proc.returncode == 3
    assert "--shared" in proc.stderr


def _children(pid: int) -> list[int]:
    found = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _ppid(int(p.name)) == pid and b"serve" in _cmdline(int(p.name))
        ]
        if len(found) >= 2:
            break
        time.sleep(0.1)
    return found


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
