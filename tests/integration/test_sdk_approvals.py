"""The SDK and approvals (``@approval("required")``) against a real governor: a governed
call waits for an admin's approval given out of band, then runs once; a denied, an
unanswered (SDK timeout) or an expired (governor timeout) approval is a DeniedError and
the function never runs. Nothing the SDK holds can approve (the approve route is an
admin's; tests/integration/test_approvals.py holds the governor to that).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import proctor
from gov_server import GovernorServer
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient

pytestmark = pytest.mark.slow

POLICY = """
@id("transfer-needs-approval")
@approval("required")
permit (principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"transfer");

@id("wire-needs-quick-approval")
@approval("required")
@approval_timeout_s("2")
permit (principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"wire");
"""


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    root = tmp_path_factory.mktemp("sdk-approvals")
    (root / "policy").mkdir()
    (root / "policy" / "tools.cedar").write_text(POLICY)
    server = GovernorServer(root / "gov", policy=root / "policy")
    try:
        yield server
    finally:
        server.stop()


def decide_when_pending(gov: GovernorServer, verdict: str, done: list[str]) -> threading.Thread:
    """An admin, out of band: approve (or deny) the first pending approval that appears."""

    def admin() -> None:
        with GovernorClient(gov.url, PrincipalKey.load(gov.data / "keys" / "admin.key"), timeout=30) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                pending = http.json("GET", "/v1/approvals?status=pending")["approvals"]
                if pending:
                    http.json("POST", f"/v1/approvals/{pending[0]['id']}/{verdict}", {"reason": "test"})
                    done.append(pending[0]["id"])
                    return
                time.sleep(0.1)

    thread = threading.Thread(target=admin, daemon=True)
    thread.start()
    return thread


def transfer_tool(client: proctor.Client, ran: list[Any], **kw: Any) -> Any:
    @proctor.governed(client, tool="transfer", **kw)
    def transfer(to: str, amount: int) -> str:
        ran.append((to, amount))
        return f"sent {amount} to {to}"

    return transfer


def test_an_approved_call_runs_once(gov: GovernorServer) -> None:
    ran: list[Any] = []
    decided: list[str] = []
    with proctor.Client(gov.url, gov.key) as alice:
        admin = decide_when_pending(gov, "approve", decided)
        value, call = transfer_tool(alice, ran, approval_timeout=60).run("bob", 5)
        admin.join(timeout=60)
        assert value == "sent 5 to bob"
        assert ran == [("bob", 5)]
        assert call.status == "completed"
        assert call.authorization.allowed
        # The approval is used: the same call again waits for a new one.
        with pytest.raises(proctor.DeniedError, match="not given within"):
            transfer_tool(alice, ran, approval_timeout=1)("bob", 5)
    assert ran == [("bob", 5)]
    assert len(decided) == 1


def test_a_denied_approval_is_a_denial(gov: GovernorServer) -> None:
    ran: list[Any] = []
    decided: list[str] = []
    with proctor.Client(gov.url, gov.key) as alice:
        admin = decide_when_pending(gov, "deny", decided)
        with pytest.raises(proctor.DeniedError, match="denied"):
            transfer_tool(alice, ran, approval_timeout=60)("mallory", 1000)
        admin.join(timeout=60)
    assert ran == []


def test_not_waiting_for_an_approval_is_a_denial(gov: GovernorServer) -> None:
    ran: list[Any] = []
    with proctor.Client(gov.url, gov.key) as alice:
        with pytest.raises(proctor.DeniedError) as denied:
            transfer_tool(alice, ran, approval_timeout=0)("bob", 1)
        auth = alice.authorize("transfer", arguments={"to": "bob", "amount": 1})
    assert ran == []
    assert not auth.allowed
    assert auth.approval is not None
    assert auth.approval.status == "pending"
    assert "transfer" in str(denied.value)


def test_an_expired_approval_is_a_denial(gov: GovernorServer, tmp_path: Path) -> None:
    ran: list[Any] = []
    with proctor.Client(gov.url, gov.key) as alice:

        @proctor.governed(alice, tool="wire", approval_timeout=30)
        def wire(to: str) -> None:
            ran.append(to)

        with pytest.raises(proctor.DeniedError, match="expired"):
            wire("bob")  # the governor's 2 s pass with nobody approving
    assert ran == []
