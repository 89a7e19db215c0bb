"""Approvals through the MCP gateway (proctor.integrations.mcp.governance, rule 2): a
call whose policy requires an approval waits until an admin approves it out of band,
then runs once; without an approval in time it is denied. The agent's principal cannot
approve its own call."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.types import CallToolResult, TextContent

from gov_server import GovernorServer, cli, client_of
from mcp_support import agent, gateway_argv, mcp_server
from proctor.client import GovernorError

pytestmark = pytest.mark.slow
WRAPPER = Path(__file__).parent / "procs" / "mcp_changing_tool.py"

POLICY = (
    '@id("fs-read-approved")\n@approval("required")\n'
    'permit(principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/read_text_file");\n'
)


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[GovernorServer, list[str], Path]]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "notes.txt").write_text("approved reading\n")
    upstream = [*mcp_server("filesystem"), str(root)]
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "fs.tools.json").write_text(
        cli("gateway", "mcp", "schema", "--name", "fs", "--", *upstream).stdout
    )
    (policy / "fs.cedar").write_text(POLICY)
    governor = GovernorServer(tmp_path / "gov", policy=policy)
    try:
        yield governor, upstream, root / "notes.txt"
    finally:
        governor.stop()


def pending(governor: GovernorServer) -> str:
    deadline = time.monotonic() + 60
    with client_of(governor, governor.data / "keys" / "admin.key") as admin:
        while time.monotonic() < deadline:
            found: list[dict[str, Any]] = admin.json("GET", "/v1/approvals?status=pending")["approvals"]
            if found:
                return str(found[0]["id"])
            time.sleep(0.1)
    raise AssertionError("no approval was asked for")


def test_approval_required_call_waits_for_admin_and_runs_once_approved(
    setup: tuple[GovernorServer, list[str], Path], tmp_path: Path
) -> None:
    governor, upstream, notes = setup
    argv = gateway_argv(governor.url, governor.key, "fs", upstream)

    async def drive() -> tuple[CallToolResult, int]:
        async with agent(argv, errlog=tmp_path / "gateway.err") as session:
            box: list[CallToolResult] = []

            async def call() -> None:
                box.append(await session.call_tool("read_text_file", {"path": str(notes)}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                ident = await anyio.to_thread.run_sync(pending, governor)
                # The agent's own principal cannot approve its call.
                with client_of(governor) as alice:
                    try:
                        alice.json("POST", f"/v1/approvals/{ident}/approve", {})
                        status = 200
                    except GovernorError as e:
                        status = e.status
                assert not box  # still waiting
                with client_of(governor, governor.data / "keys" / "admin.key") as admin:
                    admin.json("POST", f"/v1/approvals/{ident}/approve", {})
            return box[0], status

    result, alice_status = anyio.run(drive)
    assert alice_status == 403
    assert not result.is_error, text_of(result)
    assert "approved reading" in text_of(result)


def test_approval_not_given_in_time_is_a_denial(
    setup: tuple[GovernorServer, list[str], Path], tmp_path: Path
) -> None:
    governor, upstream, notes = setup
    argv = gateway_argv(governor.url, governor.key, "fs", upstream, "--approval-timeout", "2")

    async def drive() -> CallToolResult:
        async with agent(argv, errlog=tmp_path / "gateway.err") as session:
            return await session.call_tool("read_text_file", {"path": str(notes)})

    result = anyio.run(drive)
    assert result.is_error
    assert "approval" in text_of(result)
    assert "approved reading" not in text_of(result)


def test_a_definition_changed_while_the_approval_was_awaited_is_not_forwarded(
    setup: tuple[GovernorServer, list[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream is listed while the call is authorized; an approval awaited for
    seconds makes that listing stale, so it is listed again before forwarding. The
    upstream here answers its first two lists (the agent's, the re-list beside the
    authorization) as shown, then swaps the definition."""
    governor, upstream, notes = setup
    forwarded = tmp_path / "forwarded.jsonl"
    monkeypatch.setenv("MCP_WRAPPER_CALLS", str(forwarded))
    changing = [sys.executable, str(WRAPPER), "change-after-2", *upstream]
    argv = gateway_argv(governor.url, governor.key, "fs", changing)

    async def drive() -> CallToolResult:
        async with agent(argv, errlog=tmp_path / "gateway.err") as session:
            await session.list_tools()
            box: list[CallToolResult] = []

            async def call() -> None:
                box.append(await session.call_tool("read_text_file", {"path": str(notes)}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                ident = await anyio.to_thread.run_sync(pending, governor)
                await anyio.sleep(1.2)  # longer than a re-list stays fresh
                with client_of(governor, governor.data / "keys" / "admin.key") as admin:
                    admin.json("POST", f"/v1/approvals/{ident}/approve", {})
            return box[0]

    result = anyio.run(drive)
    assert result.is_error
    assert "changed after it was listed" in text_of(result)
    assert "approved reading" not in text_of(result)
    assert not forwarded.exists()
