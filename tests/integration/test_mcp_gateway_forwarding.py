"""The MCP gateway forwards what it does not govern, in front of the real
``@modelcontextprotocol/server-everything``: requests the upstream makes of the agent
during a governed call (``sampling/createMessage``, ``elicitation/create``,
``roots/list``) reach the agent, and the agent's answers reach the upstream (stdio and
streamable HTTP); the agent's ``notifications/cancelled`` for a call in flight is
forwarded upstream and ends the call's execution, recorded ``failed``/``cancelled``
(nothing left running, no lease held; stdio and HTTP); one for a call still waiting for
its authorization stops it: never forwarded, and no cancellation in the agent's
numbering reaches the upstream.

Rules (proctor.integrations.mcp.session): 1 (everything but ``tools/call`` is forwarded
both ways, server-to-client requests included; a cancellation is forwarded under the
upstream id of the request it names, or stops a call not yet forwarded), 5 (a call that
ends is finished with its outcome; the agent learns its execution from ``_meta``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import types
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from gov_server import GovernorServer, cli, client_of
from mcp_support import agent, executions, gateway_argv, http_gateway, mcp_server, running_execution

pytestmark = pytest.mark.slow

# server-everything registers its sampling, elicitation and roots tools only for a
# client that declares those capabilities, which `proctor gateway mcp schema` does not:
# the bundle has no tool catalog, the policy names the tools it allows.
POLICY = """\
@id("ev-most")
permit(principal, action == Proctor::Action::"mcp.call", resource)
unless { resource == Proctor::Tool::"ev/echo" };
@id("ev-echo-approved")
@approval("required")
permit(principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"ev/echo");
"""

# The upstream behind a recorder: every line the gateway writes to the upstream is
# appended to a file (sys.argv[1]) before it is passed on; the upstream's answers are
# passed back as they are.
RECORDER = """\
import subprocess, sys, threading
log, command = sys.argv[1], sys.argv[2:]
child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=sys.stdout.buffer)
def up():
    with open(log, "ab", buffering=0) as out:
        for line in sys.stdin.buffer:
            out.write(line)
            child.stdin.write(line)
            child.stdin.flush()
    child.stdin.close()
threading.Thread(target=up, daemon=True).start()
sys.exit(child.wait())
"""


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


@pytest.fixture
def everything(tmp_path: Path) -> Iterator[tuple[GovernorServer, list[str]]]:
    upstream = mcp_server("everything")
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "ev.cedar").write_text(POLICY)
    governor = GovernorServer(tmp_path / "gov", policy=policy)
    try:
        yield governor, upstream
    finally:
        governor.stop()


def wait_ended(governor: GovernorServer, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = executions(governor)
        ended = [e for e in found if e.get("status") != "running"]
        if len(ended) >= count and len(found) == len(ended):
            return ended
        time.sleep(0.1)
    raise AssertionError(f"expected {count} ended executions, found {executions(governor)}")


class Agent:
    """The agent's answers to the upstream's requests, and what it was asked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.asked: list[str] = []

    async def sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.asked.append("sampling/createMessage")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by the agent: 42"),
            model="scripted",
            stop_reason="endTurn",
        )

    async def elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        self.asked.append("elicitation/create")
        return types.ElicitResult(action="accept", content={"name": "Ada Agent", "check": True})

    async def roots(self, context: ClientRequestContext) -> types.ListRootsResult:
        self.asked.append("roots/list")
        return types.ListRootsResult(roots=[types.Root(uri=self.root.as_uri(), name="the agent's root")])  # type: ignore[arg-type]

    def session(self, read: Any, write: Any) -> ClientSession:
        return ClientSession(
            read,
            write,
            sampling_callback=self.sampling,
            elicitation_callback=self.elicitation,
            list_roots_callback=self.roots,
        )


async def _server_to_client_calls(session: ClientSession) -> dict[str, CallToolResult]:
    listed = {t.name for t in (await session.list_tools()).tools}
    wanted = ("trigger-sampling-request", "trigger-elicitation-request", "get-roots-list")
    missing = [n for n in wanted if n not in listed]
    if missing:
        raise AssertionError(f"the upstream did not register {missing} (client capabilities not forwarded?)")
    with anyio.fail_after(90):
        return {
            "sampling": await session.call_tool("trigger-sampling-request", {"prompt": "the answer?"}),
            "elicitation": await session.call_tool("trigger-elicitation-request", {}),
            "roots": await session.call_tool("get-roots-list", {}),
        }


def _check_answers(results: dict[str, CallToolResult], root: Path) -> None:
    for name, result in results.items():
        assert not result.is_error, f"{name}: {text_of(result)}"
    assert "sampled by the agent: 42" in text_of(results["sampling"])
    assert "Ada Agent" in text_of(results["elicitation"])
    assert root.as_uri() in text_of(results["roots"])


def test_server_to_client_requests_reach_the_agent_and_its_answers_the_upstream_stdio(
    everything: tuple[GovernorServer, list[str]], tmp_path: Path
) -> None:
    governor, upstream = everything
    argv = gateway_argv(governor.url, governor.key, "ev", upstream)
    me = Agent(tmp_path)

    async def drive() -> dict[str, CallToolResult]:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
        with (tmp_path / "gateway.err").open("a") as err:
            async with stdio_client(params, errlog=err) as (read, write), me.session(read, write) as session:
                await session.initialize()
                return await _server_to_client_calls(session)

    results = anyio.run(drive)
    _check_answers(results, tmp_path)
    assert {"sampling/createMessage", "elicitation/create", "roots/list"} <= set(me.asked)
    # Each of the three calls was governed: an execution each, completed, whose id the
    # agent got in the result's _meta (to fetch its receipt).
    ended = wait_ended(governor, 3)
    assert sorted(e["status"] for e in ended) == ["completed"] * 3
    named = {(r.meta or {}).get("proctor/execution") for r in results.values()}
    assert named == {e["id"] for e in ended}


def test_server_to_client_requests_reach_the_agent_and_its_answers_the_upstream_http(
    everything: tuple[GovernorServer, list[str]], tmp_path: Path
) -> None:
    governor, upstream = everything
    me = Agent(tmp_path)
    with http_gateway(governor.url, governor.key, upstream, tmp_path) as url:

        async def drive() -> dict[str, CallToolResult]:
            async with streamable_http_client(url) as (read, write), me.session(read, write) as session:
                await session.initialize()
                return await _server_to_client_calls(session)

        results = anyio.run(drive)
    _check_answers(results, tmp_path)
    assert sorted(e["status"] for e in wait_ended(governor, 3)) == ["completed"] * 3


def recorded(upstream: list[str], log: Path) -> list[str]:
    """``upstream`` behind :data:`RECORDER` writing to ``log``."""
    log.touch()
    return [sys.executable, "-c", RECORDER, str(log), *upstream]


def sent_upstream(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_bytes().splitlines() if line.strip()]


def test_agent_cancellation_of_a_call_in_flight_is_forwarded_and_ends_its_execution(
    everything: tuple[GovernorServer, list[str]], tmp_path: Path
) -> None:
    governor, upstream = everything
    log = tmp_path / "upstream.in"
    argv = gateway_argv(governor.url, governor.key, "ev", recorded(upstream, log))

    async def drive() -> tuple[str, CallToolResult]:
        async with agent(argv, errlog=tmp_path / "gateway.err") as session:
            with anyio.CancelScope() as scope:

                async def call() -> None:
                    await session.call_tool("trigger-long-running-operation", {"duration": 60, "steps": 60})

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    execution = await anyio.to_thread.run_sync(running_execution, governor)
                    scope.cancel()  # the agent gives up: the SDK sends notifications/cancelled
            # The session goes on.
            return execution, await session.call_tool("get-sum", {"a": 1, "b": 2})

    execution, after = anyio.run(drive)
    # Forwarded upstream under the upstream id of the call it names.
    messages = sent_upstream(log)
    long_call = [
        m
        for m in messages
        if m.get("method") == "tools/call" and m["params"]["name"] == "trigger-long-running-operation"
    ]
    cancels = [m for m in messages if m.get("method") == "notifications/cancelled"]
    assert len(long_call) == 1
    assert [c["params"]["requestId"] for c in cancels] == [long_call[0]["id"]]
    # The execution ended (no lease left held), recorded as the agent's cancellation.
    ended = {e["id"]: e for e in wait_ended(governor, 1)}[execution]
    assert ended["status"] == "failed"
    # outcome failed, reason cancelled
    assert "cancelled (cancelled by the agent)" in recorded_end(governor, execution, tmp_path)
    assert not after.is_error, text_of(after)  # the session goes on


def recorded_end(governor: GovernorServer, execution: str, tmp_path: Path) -> str:
    """The summary of the execution's end in its receipt, which verifies offline."""
    out = tmp_path / "receipt.json"
    cli("receipt", execution, "--server", governor.url, "--key", str(governor.key), "--out", str(out))
    log_key = cli("log", "key", "--data", str(governor.data)).stdout.strip()
    assert json.loads(cli("verify", str(out), "--log-key", log_key, "--json").stdout)["ok"]
    shown = json.loads(cli("receipt", "show", str(out), "--json").stdout)
    ends = [e["summary"] for e in shown["events"] if e["type"] == "execution.terminated"]
    assert len(ends) == 1
    return str(ends[0])


def _pending_approval(governor: GovernorServer) -> str:
    deadline = time.monotonic() + 60
    with client_of(governor, governor.data / "keys" / "admin.key") as admin:
        while time.monotonic() < deadline:
            found: list[dict[str, Any]] = admin.json("GET", "/v1/approvals?status=pending")["approvals"]
            if found:
                return str(found[0]["id"])
            time.sleep(0.1)
    raise AssertionError("no approval was asked for")


def test_agent_cancellation_before_a_call_is_forwarded_stops_it_and_names_no_other_request(
    everything: tuple[GovernorServer, list[str]], tmp_path: Path
) -> None:
    governor, upstream = everything
    log = tmp_path / "upstream.in"
    argv = gateway_argv(governor.url, governor.key, "ev", recorded(upstream, log))

    async def drive() -> CallToolResult:
        async with agent(argv, errlog=tmp_path / "gateway.err") as session:
            with anyio.CancelScope() as scope:

                async def call() -> None:  # held by the gateway: echo needs an admin's approval
                    await session.call_tool("echo", {"message": "cancelled before it ran"})

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    ident = await anyio.to_thread.run_sync(_pending_approval, governor)
                    scope.cancel()  # the agent gives up while the call waits
            # The admin approves afterwards: the call the agent cancelled must not run.
            with client_of(governor, governor.data / "keys" / "admin.key") as admin:
                admin.json("POST", f"/v1/approvals/{ident}/approve", {})
            await anyio.to_thread.run_sync(_approved_decision, governor)
            return await session.call_tool("get-sum", {"a": 1, "b": 2})  # the session goes on

    after = anyio.run(drive)
    assert not after.is_error, text_of(after)
    messages = sent_upstream(log)
    # The upstream never saw the cancelled call, nor a cancellation naming an id of the
    # agent's (which, in the upstream's numbering, would be some other request).
    assert [m["params"]["name"] for m in messages if m.get("method") == "tools/call"] == ["get-sum"]
    assert [m for m in messages if m.get("method") == "notifications/cancelled"] == []
    assert [e["resource"] for e in wait_ended(governor, 1)] == ["ev/get-sum"]


def _approved_decision(governor: GovernorServer) -> None:
    """Wait until the governor has decided the approved call again (the gateway asked)."""
    data = str(governor.data)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        size = int(cli("log", "checkpoint", "--data", data).stdout.splitlines()[1])
        for index in range(size):
            event = json.loads(cli("log", "entry", str(index), "--data", data, "--json").stdout)["event"]
            if event.get("type") == "warrant.issued":
                return
        time.sleep(0.2)
    raise AssertionError("the approved call was never authorized again")


def test_agent_cancellation_over_streamable_http_ends_the_execution(
    everything: tuple[GovernorServer, list[str]], tmp_path: Path
) -> None:
    governor, upstream = everything
    with http_gateway(governor.url, governor.key, upstream, tmp_path) as url:

        async def drive() -> tuple[str, CallToolResult]:
            async with (
                streamable_http_client(url) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                with anyio.CancelScope() as scope:

                    async def call() -> None:
                        args = {"duration": 60, "steps": 60}
                        await session.call_tool("trigger-long-running-operation", args)

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(call)
                        execution = await anyio.to_thread.run_sync(running_execution, governor)
                        scope.cancel()
                return execution, await session.call_tool("get-sum", {"a": 1, "b": 2})

        execution, after = anyio.run(drive)
        ended = {e["id"]: e for e in wait_ended(governor, 2)}
    assert not after.is_error, text_of(after)
    assert ended[execution]["status"] == "failed"
    assert "cancelled (cancelled by the agent)" in recorded_end(governor, execution, tmp_path)
