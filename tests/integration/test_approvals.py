"""Approvals against a real governor (``proctor serve``) and the real CLI
(:mod:`proctor.governor.approvals`, :mod:`proctor.cli_approvals`).

Rules, each a test named after it: an allow that requires approval mints no warrant;
an admin's approval, given out of band, lets the requester mint exactly once, for
exactly the arguments approved; nothing the requester holds approves (its own key is
refused, an admin cannot approve its own request, a replayed approve is refused); an
expired or denied approval denies; approvals live in the store, so they hold across
governor nodes and on PostgreSQL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gov_server import GovernorServer, cli, client_of
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.client import GovernorClient
from proctor.errors import GovernorError

pytestmark = pytest.mark.slow

POLICY = """
@id("write-needs-approval")
@approval("required")
permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/write_file");

@id("move-needs-quick-approval")
@approval_required("true")
@approval_timeout_s("2")
permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/move_file");

@id("read")
permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/read_text_file");
"""
DIGEST = "sha256:" + "d" * 64


def policy_dir(root: Path, text: str = POLICY) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tools.cedar").write_text(text)
    return root


def write(path: str = "/tmp/x", approval: str = "", tool: str = "fs/write_file") -> dict[str, Any]:
    body: dict[str, Any] = {
        "action": "mcp.call",
        "resource": tool,
        "arguments": {"path": path, "content": "hi"},
        "executable_digest": DIGEST,
    }
    if approval:
        body["approval"] = approval
    return body


def admin_client(gov: GovernorServer) -> GovernorClient:
    return GovernorClient(gov.url, PrincipalKey.load(gov.data / "keys" / "admin.key"), timeout=30)


@pytest.fixture
def gov(tmp_path: Path) -> Iterator[GovernorServer]:
    server = GovernorServer(tmp_path / "gov", policy=policy_dir(tmp_path / "policy"))
    try:
        yield server
    finally:
        server.stop()


def ask(gov: GovernorServer, body: dict[str, Any] | None = None) -> dict[str, Any]:
    with client_of(gov) as alice:
        answer = alice.authorize(body or write())
    assert answer["decision"]["allow"] is True
    assert answer["allow"] is False
    assert "warrant" not in answer
    approval: dict[str, Any] = answer["approval"]
    assert approval["status"] == "pending"
    assert approval["id"].startswith("ap_")
    return approval


def approve(gov: GovernorServer, approval_id: str, *extra: str) -> Any:
    return cli("approve", approval_id, "--server", gov.url, "--data", str(gov.data), *extra, check=False)


def test_approval_required_mints_no_warrant_until_an_admin_approves_then_exactly_once(
    gov: GovernorServer,
) -> None:
    approval = ask(gov)
    with client_of(gov) as alice:
        assert alice.json("GET", f"/v1/approvals/{approval['id']}")["status"] == "pending"
        early = alice.authorize(write(approval=approval["id"]))
        assert early["allow"] is False
        assert "pending, not approved" in early["decision"]["reason"]
    listed = cli(
        "approvals", "list", "--status", "pending", "--json", "--server", gov.url, "--data", str(gov.data)
    )
    assert [a["id"] for a in json.loads(listed.stdout)["approvals"]] == [approval["id"]]
    done = approve(gov, approval["id"])
    assert done.returncode == 0, done.stderr
    assert "approved" in done.stdout
    with client_of(gov) as alice:
        assert alice.json("GET", f"/v1/approvals/{approval['id']}")["status"] == "approved"
        granted = alice.authorize(write(approval=approval["id"]))
        assert granted["allow"] is True
        assert granted["warrant"]["token"]
        shown = alice.json("GET", f"/v1/approvals/{approval['id']}")
        assert (shown["status"], shown["warrant"]) == ("used", granted["warrant"]["id"])
        # The log says so: the request, the admin's decision, the warrant naming it.
        requested = alice.json("GET", f"/v1/log/entries/{approval['log_index']}")["event"]
        issued = alice.json("GET", f"/v1/log/entries/{granted['warrant']['log_index']}")["event"]
    assert (requested["type"], requested["approval"], requested["principal"]) == (
        "approval.requested",
        approval["id"],
        "alice",
    )
    assert (issued["type"], issued["approval"]) == ("warrant.issued", approval["id"])


def test_approval_used_cannot_be_reused(gov: GovernorServer) -> None:
    approval = ask(gov)
    assert approve(gov, approval["id"]).returncode == 0
    with client_of(gov) as alice:
        assert alice.authorize(write(approval=approval["id"]))["allow"] is True
        again = alice.authorize(write(approval=approval["id"]))
    assert again["allow"] is False
    assert "is used, not approved" in again["decision"]["reason"]


def test_approval_for_arguments_x_does_not_mint_for_arguments_y(gov: GovernorServer) -> None:
    approval = ask(gov, write("/tmp/x"))
    assert approve(gov, approval["id"]).returncode == 0
    with client_of(gov) as alice:
        other = alice.authorize(write("/etc/passwd", approval=approval["id"]))
        assert other["allow"] is False
        assert "args_digest" in other["decision"]["reason"]
        tool = alice.authorize(write("/tmp/x", approval=approval["id"], tool="fs/move_file"))
        assert tool["allow"] is False
        # Still approved: the exact call gets its one warrant.
        assert alice.authorize(write("/tmp/x", approval=approval["id"]))["allow"] is True


def test_approval_cannot_be_given_with_the_requesters_own_key(gov: GovernorServer) -> None:
    approval = ask(gov)
    with client_of(gov) as alice, pytest.raises(GovernorError) as refused:
        alice.json("POST", f"/v1/approvals/{approval['id']}/approve", {})
    assert refused.value.status == 403
    done = approve(gov, approval["id"], "--key", str(gov.key))
    assert done.returncode == 2
    assert "not an admin" in done.stderr
    with client_of(gov) as alice:
        assert alice.json("GET", f"/v1/approvals/{approval['id']}")["status"] == "pending"
        assert alice.authorize(write(approval=approval["id"]))["allow"] is False


def test_approval_an_admin_cannot_approve_its_own_request(gov: GovernorServer) -> None:
    with admin_client(gov) as admin:
        answer = admin.authorize(write())
        own = answer["approval"]["id"]
        with pytest.raises(GovernorError) as refused:
            admin.json("POST", f"/v1/approvals/{own}/approve", {})
    assert refused.value.status == 403
    assert "another admin" in str(refused.value)


def test_approval_replayed_approve_is_refused(gov: GovernorServer) -> None:
    approval = ask(gov)
    target = f"/v1/approvals/{approval['id']}/approve"
    body = b'{"reason":"ok"}'
    key = PrincipalKey.load(gov.data / "keys" / "admin.key")
    headers = {
        "content-type": "application/json",
        **sign_request("POST", target, body, key, now=int(time.time())),
    }
    first = httpx.post(gov.url + target, content=body, headers=headers, timeout=30)
    assert first.status_code == 200, first.text
    replayed = httpx.post(gov.url + target, content=body, headers=headers, timeout=30)
    assert replayed.status_code == 401
    again = approve(gov, approval["id"])  # freshly signed: decided already
    assert again.returncode == 2
    assert "approved, not pending" in again.stderr
    deny = approve(gov, approval["id"], "--deny")
    assert deny.returncode == 2


def test_approval_denied_denies(gov: GovernorServer) -> None:
    approval = ask(gov)
    done = approve(gov, approval["id"], "--deny", "--reason", "not today")
    assert done.returncode == 0, done.stderr
    with client_of(gov) as alice:
        answer = alice.authorize(write(approval=approval["id"]))
        assert alice.json("GET", f"/v1/approvals/{approval['id']}")["status"] == "denied"
    assert answer["allow"] is False
    assert "is denied" in answer["decision"]["reason"]


def test_approval_expired_denies(gov: GovernorServer) -> None:
    # @approval_timeout_s("2"): one expires waiting for an admin, one approved in time but used late.
    waited = ask(gov, write(tool="fs/move_file"))
    used_late = ask(gov, write(tool="fs/move_file", path="/tmp/y"))
    assert waited["expires_at"] - int(time.time()) <= 2
    with admin_client(gov) as admin:
        admin.json("POST", f"/v1/approvals/{used_late['id']}/approve", {})
    time.sleep(max(0.0, used_late["expires_at"] - time.time()) + 1.1)
    late = approve(gov, waited["id"])
    assert late.returncode == 2
    assert "expired, not pending" in late.stderr
    with client_of(gov) as alice:
        answer = alice.authorize(write(tool="fs/move_file", path="/tmp/y", approval=used_late["id"]))
        assert alice.json("GET", f"/v1/approvals/{used_late['id']}")["status"] == "expired"
    assert answer["allow"] is False
    assert "is expired" in answer["decision"]["reason"]
    listed = cli(
        "approvals", "list", "--status", "expired", "--json", "--server", gov.url, "--data", str(gov.data)
    )
    assert {a["id"] for a in json.loads(listed.stdout)["approvals"]} == {waited["id"], used_late["id"]}


def test_approval_of_someone_else_is_not_shown_or_usable(gov: GovernorServer, tmp_path: Path) -> None:
    approval = ask(gov)
    assert approve(gov, approval["id"]).returncode == 0
    bob = tmp_path / "bob.key"
    cli("principal", "add", "bob", "--out", str(bob), "--server", gov.url, "--data", str(gov.data))
    with client_of(gov, bob) as other:
        with pytest.raises(GovernorError) as hidden:
            other.json("GET", f"/v1/approvals/{approval['id']}")
        assert hidden.value.status == 404
        stolen = other.authorize(write(approval=approval["id"]))
    assert stolen["allow"] is False
    assert "not one of 'bob'" in stolen["decision"]["reason"]


def test_approval_holds_across_governor_nodes(tmp_path: Path) -> None:
    a, b = GovernorServer.nodes(tmp_path / "nodes", 2, policy=policy_dir(tmp_path / "policy"))
    try:
        approval = ask(a)
        assert approve(b, approval["id"]).returncode == 0  # decided on the other node
        with client_of(b) as on_b:
            assert on_b.json("GET", f"/v1/approvals/{approval['id']}")["status"] == "approved"
        with client_of(a) as on_a, client_of(b) as on_b:
            assert on_a.authorize(write(approval=approval["id"]))["allow"] is True
            assert on_b.authorize(write(approval=approval["id"]))["allow"] is False  # used, on any node
    finally:
        b.stop()
        a.stop()


@pytest.mark.postgres
def test_approval_on_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    gov = GovernorServer(tmp_path / "gov", policy=policy_dir(tmp_path / "policy"), store=pg_dsn)
    try:
        approval = ask(gov)
        done = cli("approve", approval["id"], "--server", gov.url, "--data", str(gov.data), "--store", pg_dsn)
        assert done.returncode == 0, done.stderr
        with client_of(gov) as alice:
            assert alice.authorize(write(approval=approval["id"]))["allow"] is True
            assert alice.authorize(write(approval=approval["id"]))["allow"] is False
    finally:
        gov.stop()
