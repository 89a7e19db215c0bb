"""The MCP gateway against the real ``@modelcontextprotocol/server-everything`` (a slow
tool for revocation mid-call; streamable HTTP on both sides, float arguments) and a
tool whose definition changes between the agent's list and its call.

Rules (proctor.integrations.mcp.session): 2 (a definition changed after it was listed is
refused before anything is forwarded), 4 (a revocation during a call cancels it
upstream, answers the agent with an error and is recorded as the execution's end).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from gov_server import GovernorServer, cli, client_of
from mcp_support import agent, executions, gateway_argv, http_gateway, mcp_server, running_execution

pytestmark = pytest.mark.slow

WRAPPER = Path(__file__).parent / "procs" / "mcp_changing_tool.py"


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def bundle(directory: Path, name: str, upstream: list[str], cedar: str) -> Path:
    directory.mkdir()
    fragment = cli("gateway", "mcp", "schema", "--name", name, "--", *upstream).stdout
    (directory / f"{name}.tools.json").write_text(fragment)
    (directory / f"{name}.cedar").write_text(cedar)
    return directory


ALLOW_ALL = '@id("ev-all")\npermit(principal, action == Proctor::Action::"mcp.call", resource);\n'


@pytest.fixture
def everything(tmp_path: Path) -> Iterator[tuple[GovernorServer, list[str]]]:
    upstream = mcp_server("everything")
    governor = GovernorServer(tmp_path / "gov", policy=bundle(tmp_path / "policy", "ev", upstream, ALLOW_ALL))
    try:
        yield governor, upstream
    finally:
        governor.stop()


def test_revocation_mid_call_cancels_upstream_and_is_recorded(
    everything: tuple[GovernorServer, list[str]], tmp_path: Path
) -> None:
    governor, upstream = everything
    errlog = tmp_path / "gateway.err"
    argv = gateway_argv(governor.url, governor.key, "ev", upstream)

    async def drive() -> tuple[CallToolResult, str, float]:
        async with agent(argv, errlog=errlog) as session:
            box: list[CallToolResult] = []

            async def call() -> None:
                args = {"duration": 60, "steps": 60}
                box.append(await session.call_tool("trigger-long-running-operation", args))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                execution = await anyio.to_thread.run_sync(running_execution, governor)
                revoked_at = time.monotonic()
                await anyio.to_thread.run_sync(
                    lambda: governor.admin("revoke", "--execution", execution, "--reason", "test")
                )
            return box[0], execution, time.monotonic() - revoked_at

    result, execution, after = anyio.run(drive)
    assert result.is_error
    assert "revoked" in text_of(result)
    assert after < 45  # cancelled, not run to its 60 s end
    ended = {e["id"]: e for e in executions(governor)}[execution]
    assert ended["status"] == "terminated"
    assert "revoked" in json.dumps(ended)
    # Recorded: the termination is in a receipt that verifies offline.
    out = tmp_path / "receipt.json"
    cli("receipt", execution, "--server", governor.url, "--key", str(governor.key), "--out", str(out))
    log_key = cli("log", "key", "--data", str(governor.data)).stdout.strip()
    report = json.loads(cli("verify", str(out), "--log-key", log_key, "--json").stdout)
    assert report["ok"], report
    shown = json.loads(cli("receipt", "show", str(out), "--json").stdout)
    assert shown["outcome"] == "terminated"
    assert '"reason": "revoked"' in json.dumps(shown)


def test_tool_definition_changed_between_list_and_call_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "notes.txt").write_text("hello\n")
    real = [*mcp_server("filesystem"), str(root)]
    policy = (
        '@id("fs-read")\npermit(principal, action == Proctor::Action::"mcp.call", '
        'resource == Proctor::Tool::"fs/read_text_file");\n'
    )
    governor = GovernorServer(tmp_path / "gov", policy=bundle(tmp_path / "policy", "fs", real, policy))
    try:
        forwarded = tmp_path / "forwarded.jsonl"
        monkeypatch.setenv("MCP_WRAPPER_CALLS", str(forwarded))
        changing = [sys.executable, str(WRAPPER), "change", *real]
        argv = gateway_argv(governor.url, governor.key, "fs", changing)

        async def drive() -> CallToolResult:
            async with agent(argv, errlog=tmp_path / "gateway.err") as session:
                await session.list_tools()  # the definition the agent is shown
                return await session.call_tool("read_text_file", {"path": str(root / "notes.txt")})

        result = anyio.run(drive)
        assert result.is_error
        assert "changed after it was listed" in text_of(result)
        assert "hello" not in text_of(result)
        assert not forwarded.exists()  # nothing reached the upstream
        # Authorized and started while the upstream was listed again (ADR 0019 as
        # amended), then finished as never forwarded, with the reason.
        deadline = time.monotonic() + 10
        while (
            (ended := executions(governor))
            and ended[0]["status"] == "running"
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert len(ended) == 1
        assert ended[0]["status"] == "failed", ended
        with client_of(governor) as client:
            event = client.json("GET", f"/v1/log/entries/{ended[0]['log_indices'][-1]}")["event"]
        assert (event["type"], event["reason"]) == ("execution.terminated", "not-forwarded"), event
        assert "changed after it was listed" in event["detail"]
    finally:
        governor.stop()


@pytest.mark.parametrize("mode", ["oversize", "malformed"])
def test_upstream_oversized_or_malformed_answer_refused_session_survives(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "notes.txt").write_text("hello\n")
    real = [*mcp_server("filesystem"), str(root)]
    policy = (
        '@id("fs-read")\npermit(principal, action == Proctor::Action::"mcp.call", '
        'resource == Proctor::Tool::"fs/read_text_file");\n'
    )
    governor = GovernorServer(tmp_path / "gov", policy=bundle(tmp_path / "policy", "fs", real, policy))
    try:
        bad = [sys.executable, str(WRAPPER), mode, *real]
        argv = gateway_argv(governor.url, governor.key, "fs", bad, "--max-message-bytes", str(1 << 20))
        path = str(root / "notes.txt")

        async def drive() -> tuple[CallToolResult, CallToolResult]:
            with anyio.fail_after(120):
                return await calls()

        async def calls() -> tuple[CallToolResult, CallToolResult]:
            async with agent(argv, errlog=tmp_path / "gateway.err") as session:
                refused = await session.call_tool("read_text_file", {"path": path})
                again = await session.call_tool("read_text_file", {"path": path})  # the session survives
                return refused, again

        refused, again = anyio.run(drive)
        assert refused.is_error
        assert "upstream" in text_of(refused)
        assert not again.is_error, text_of(again)
        assert "hello" in text_of(again)
        statuses = sorted(e["status"] for e in _wait_ended(governor, 2))
        assert statuses == ["completed", "failed"]
    finally:
        governor.stop()


def _wait_ended(governor: GovernorServer, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ended = [e for e in executions(governor) if e.get("status") != "running"]
        if len(ended) >= count:
            return ended
        time.sleep(0.1)
    raise AssertionError(f"expected {count} ended executions, found {executions(governor)}")


def test_streamable_http_both_sides_with_float_arguments(
    everything: tuple[GovernorServer, list[str]], tmp_path: Path
) -> None:
    governor, upstream = everything
    with http_gateway(governor.url, governor.key, upstream, tmp_path) as url:

        async def drive() -> tuple[CallToolResult, CallToolResult, int]:
            async with (
                streamable_http_client(url) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                listed = await session.list_tools()
                echo = await session.call_tool("echo", {"message": "through http"})
                total = await session.call_tool("get-sum", {"a": 1.5, "b": 2.25})
                return echo, total, len(listed.tools)

        echo, total, tools = anyio.run(drive)
    assert tools > 5
    assert not echo.is_error, text_of(echo)
    assert "through http" in text_of(echo)
    assert not total.is_error, text_of(total)
    assert "3.75" in text_of(total)
    assert len([e for e in executions(governor) if e.get("status") == "completed"]) == 2


def test_resources_prompts_and_progress_notifications_are_forwarded(
    everything: tuple[GovernorServer, list[str]], tmp_path: Path
) -> None:
    governor, upstream = everything
    argv = gateway_argv(governor.url, governor.key, "ev", upstream)
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async def drive() -> tuple[int, str, int, str, CallToolResult]:
        async with agent(argv, errlog=tmp_path / "gateway.err") as session:
            await session.send_ping()
            prompts = (await session.list_prompts()).prompts
            prompt = await session.get_prompt(prompts[0].name) if not prompts[0].arguments else None
            resources = (await session.list_resources()).resources
            read = await session.read_resource(resources[0].uri)
            long = await session.call_tool(
                "trigger-long-running-operation", {"duration": 1, "steps": 2}, progress_callback=on_progress
            )
            return len(prompts), repr(prompt), len(resources), repr(read.contents[0])[:200], long

    prompts, prompt, resources, read, long = anyio.run(drive)
    assert prompts > 0
    assert prompt
    assert resources > 0
    assert read
    assert not long.is_error, text_of(long)
    assert seen  # the upstream's notifications/progress reached the agent


def test_an_idle_streamable_http_session_ends_and_frees_its_slot(
    everything: tuple[GovernorServer, list[str]], tmp_path: Path
) -> None:
    """An agent that leaves without DELETE: after ``--session-idle`` seconds with nothing
    in flight its session is ended (the upstream session closed, the slot freed); once
    the gateway held 256 such sessions, every new agent got 503 for good."""
    governor, upstream = everything
    with http_gateway(governor.url, governor.key, upstream, tmp_path, "--session-idle", "1") as url:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "gone", "version": "1"},
            },
        }
        opened = httpx.post(url, json=init, headers=headers, timeout=30)
        assert opened.status_code == 200, opened.text
        ident = opened.headers["mcp-session-id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        alive = httpx.post(url, json=ping, headers=headers | {"mcp-session-id": ident}, timeout=30)
        assert alive.status_code == 200, alive.text
        time.sleep(2.5)  # no request in flight, no GET stream: the agent is gone
        ended = httpx.post(url, json=ping, headers=headers | {"mcp-session-id": ident}, timeout=30)
        assert ended.status_code == 404, ended.text
    assert "idle for 1 s" in (tmp_path / "gateway.err").read_text()
