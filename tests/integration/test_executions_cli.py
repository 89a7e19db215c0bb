"""``proctor executions list|show`` against a real ``proctor serve`` (and without one).

Executions are started over HTTP with signed requests, as an enforcer starts them
(nothing runs: the measurement is the test's own), under a policy whose leases outlive
the test, so that they stay running without renewals.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_exec import start_body
from gov_server import GovernorServer, cli
from gov_support import EXE
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient

_POLICY = """
@id("echo-long-lease")
@lease_ttl_s("600")
permit (principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/bin/echo");
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GovernorServer]:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "echo.cedar").write_text(_POLICY)
    gov = GovernorServer(tmp_path, policy=policy)
    try:
        gov.admin("principal", "add", "bob", "--attr", "role=ops", "--out", str(gov.data / "bob.key"))
        yield gov
    finally:
        gov.stop()


def start(server: GovernorServer, who: str) -> str:
    key = PrincipalKey.load(server.data / f"{who}.key")
    with GovernorClient(server.url, key) as client:
        granted = client.authorize(
            {"action": "exec", "resource": "/bin/echo", "argv": ["echo", who], "executable_digest": EXE}
        )
        assert granted["allow"], granted
        started = client.json("POST", "/v1/executions", start_body(granted["warrant"]["token"], who))
    return str(started["execution"])


def executions(server: GovernorServer, *args: str, key: str | None = None, check: bool = True) -> Any:
    extra = ["--key", str(server.data / f"{key}.key")] if key else []
    done = cli("executions", *args, "--server", server.url, "--data", str(server.data), *extra, check=check)
    return json.loads(done.stdout) if check else done


def ids(listed: dict[str, Any]) -> set[str]:
    return {e["id"] for e in listed["executions"]}


def test_each_principal_lists_its_own_and_an_admin_all(server: GovernorServer) -> None:
    alices, bobs = start(server, "alice"), start(server, "bob")
    assert ids(executions(server, "list", key="alice")) == {alices}
    assert ids(executions(server, "list", key="bob")) == {bobs}
    assert ids(executions(server, "list")) == {alices, bobs}  # the data directory's admin key
    assert ids(executions(server, "list", "--principal", "alice")) == {alices}
    listed = executions(server, "list", key="alice")["executions"][0]
    assert (listed["principal"], listed["resource"], listed["status"]) == ("alice", "/bin/echo", "running")
    assert listed["lease_ttl_ms"] == 600_000
    assert 0 < listed["lease_remaining_ms"] <= 600_000
    # Another principal's list is refused (exit 2, the governor's 403).
    refused = executions(server, "list", "--principal", "alice", key="bob", check=False)
    assert refused.returncode == 2
    assert "not an admin" in refused.stderr


def test_show_is_the_owners_or_an_admins_and_says_nothing_to_others(server: GovernorServer) -> None:
    alices = start(server, "alice")
    shown = executions(server, "show", alices, key="alice")
    assert shown["id"] == alices
    assert executions(server, "show", alices)["principal"] == "alice"  # admin
    foreign = executions(server, "show", alices, key="bob", check=False)
    unknown = executions(server, "show", "ex_" + "a" * 24, key="bob", check=False)
    assert foreign.returncode == unknown.returncode == 2
    assert "no such execution" in foreign.stderr
    assert foreign.stderr.replace(alices, "ID") == unknown.stderr.replace("ex_" + "a" * 24, "ID")


def test_finished_executions_are_listed_with_status_all(server: GovernorServer) -> None:
    alices = start(server, "alice")
    key = PrincipalKey.load(server.data / "alice.key")
    with GovernorClient(server.url, key) as client:
        client.json("POST", f"/v1/executions/{alices}/finish", {"outcome": "completed", "exit_status": 0})
    assert ids(executions(server, "list", key="alice")) == set()
    every = executions(server, "list", "--status", "all", key="alice")
    assert ids(every) == {alices}
    assert every["executions"][0]["status"] == "completed"
    bad = executions(server, "list", "--limit", "0", key="alice", check=False)
    assert bad.returncode == 2
    assert "limit: expected an integer from 1 to 1000" in bad.stderr


def test_the_server_comes_from_proctor_server(server: GovernorServer) -> None:
    alices = start(server, "alice")
    env = {**os.environ, "PROCTOR_SERVER": server.url}
    done = cli(
        "executions", "list", "--key", str(server.data / "alice.key"), "--data", str(server.data), env=env
    )
    assert ids(json.loads(done.stdout)) == {alices}


def test_the_data_directory_is_read_only_while_no_governor_runs(server: GovernorServer) -> None:
    alices = start(server, "alice")
    # A running governor holds the directory (and its leases are newer than its tables).
    held = cli("executions", "list", "--data", str(server.data), check=False)
    assert held.returncode == 3
    assert "use --server URL" in held.stderr
    server.stop()
    listed = json.loads(cli("executions", "list", "--status", "all", "--data", str(server.data)).stdout)
    assert ids(listed) == {alices}
    # Only an admin reads the data directory.
    other = cli(
        "executions", "list", "--data", str(server.data), "--key", str(server.data / "alice.key"), check=False
    )
    assert other.returncode == 2
    assert "not an active admin" in other.stderr
