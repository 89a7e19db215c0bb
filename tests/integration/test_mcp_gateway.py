"""The MCP gateway in front of the real ``@modelcontextprotocol/server-filesystem``,
driven over stdio by the official ``mcp`` SDK's client as an agent drives it, against a
real governor (``proctor serve``).

Rules (proctor.integrations.mcp.session): every tools/call is authorized before it is
forwarded (a denial reaches the agent as an isError result, nothing forwarded); a call's
receipt verifies offline; a governor that cannot be reached refuses calls and the
session goes on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.types import CallToolResult, TextContent

from gov_server import GovernorServer, cli, client_of
from mcp_support import agent, gateway_argv, mcp_server

pytestmark = pytest.mark.slow


@dataclass
class FsSetup:
    governor: GovernorServer
    allowed: Path
    elsewhere: Path
    upstream: list[str]
    errlog: Path


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def fs_policy(directory: Path, allowed: Path, upstream: list[str]) -> Path:
    """A bundle: read_text_file allowed under ``allowed``; write_file denied; with the
    catalog of the server's live tools (``proctor gateway mcp schema``)."""
    directory.mkdir()
    fragment = cli("gateway", "mcp", "schema", "--name", "fs", "--", *upstream).stdout
    (directory / "fs.tools.json").write_text(fragment)
    (directory / "fs.cedar").write_text(
        '@id("fs-read")\n'
        'permit(principal, action == Proctor::Action::"mcp.call", '
        'resource == Proctor::Tool::"fs/read_text_file")\n'
        "when { context.tool has read_text_file && "
        f'context.tool.read_text_file.path like "{allowed}/*" }};\n'
        '@id("fs-no-write")\n'
        'forbid(principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/write_file");\n'
    )
    return directory


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FsSetup]:
    root = tmp_path / "root"
    allowed, elsewhere = root / "allowed", root / "elsewhere"
    allowed.mkdir(parents=True)
    elsewhere.mkdir()
    (allowed / "notes.txt").write_text("hello from the allowed directory\n")
    upstream = [*mcp_server("filesystem"), str(root)]
    governor = GovernorServer(tmp_path / "gov", policy=fs_policy(tmp_path / "policy", allowed, upstream))
    try:
        yield FsSetup(governor, allowed, elsewhere, upstream, tmp_path / "gateway.err")
    finally:
        governor.stop()


def gateway(fs: FsSetup) -> list[str]:
    return gateway_argv(fs.governor.url, fs.governor.key, "fs", fs.upstream)


def executions(fs: FsSetup, status: str) -> list[dict[str, Any]]:
    with client_of(fs.governor) as client:
        answer = client.json("GET", "/v1/executions?status=all")
    return [e for e in answer["executions"] if e.get("status") == status]


def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def verify_receipt(fs: FsSetup, execution: str, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{execution}.json"
    data = str(fs.governor.data)
    cli("receipt", execution, "--server", fs.governor.url, "--key", str(fs.governor.key), "--out", str(out))
    log_key = cli("log", "key", "--data", data).stdout.strip()
    report = json.loads(cli("verify", str(out), "--log-key", log_key, "--json").stdout)
    assert report["ok"], report
    receipt: dict[str, Any] = json.loads(out.read_text())
    return receipt


def test_gateway_authorizes_each_call_read_allowed_write_refused_receipts_verify(
    fs: FsSetup, tmp_path: Path
) -> None:
    target = fs.allowed / "written.txt"

    async def drive() -> tuple[CallToolResult, CallToolResult, list[str]]:
        async with agent(gateway(fs), errlog=fs.errlog) as session:
            listed = await session.list_tools()
            read = await session.call_tool("read_text_file", {"path": str(fs.allowed / "notes.txt")})
            write = await session.call_tool("write_file", {"path": str(target), "content": "x"})
            return read, write, [t.name for t in listed.tools]

    read, write, names = anyio.run(drive)
    assert "read_text_file" in names
    assert "write_file" not in names  # tools/list hides what the principal can never call
    assert not read.is_error, text_of(read)
    assert "hello from the allowed directory" in text_of(read)
    assert write.is_error
    assert "denied" in text_of(write)
    assert "fs/write_file" in text_of(write)
    assert not target.exists()  # nothing was forwarded
    # The allowed call: an execution that completed, with a receipt that verifies offline.
    done = wait_for(lambda: executions(fs, "completed"), "the read's execution to be finished")
    assert len(done) == 1
    receipt = verify_receipt(fs, done[0]["id"], tmp_path)
    assert "fs/read_text_file" in json.dumps(receipt)
    # The denied call: its decision is in the log (deny, the resource, the argument commitment).
    decisions = _decisions(fs)
    denied = [d for d in decisions if d["request"].get("resource") == "fs/write_file"]
    assert len(denied) == 1
    assert denied[0]["decision"] == "deny"
    assert "args_commitment" in denied[0]["request"]
    cli("log", "verify", "--data", str(fs.governor.data))


def test_gateway_refuses_a_read_outside_the_allowed_directory(fs: FsSetup) -> None:
    secret = fs.elsewhere / "secret.txt"
    secret.write_text("not for agents\n")

    async def drive() -> CallToolResult:
        async with agent(gateway(fs), errlog=fs.errlog) as session:
            return await session.call_tool("read_text_file", {"path": str(secret)})

    result = anyio.run(drive)
    assert result.is_error
    assert "not for agents" not in text_of(result)
    assert "denied" in text_of(result)


def test_governor_unreachable_call_refused_session_survives(fs: FsSetup) -> None:
    path = str(fs.allowed / "notes.txt")

    async def drive() -> tuple[CallToolResult, CallToolResult, int]:
        async with agent(gateway(fs), errlog=fs.errlog) as session:
            first = await session.call_tool("read_text_file", {"path": path})
            fs.governor.kill()
            refused = await session.call_tool("read_text_file", {"path": path})
            await session.send_ping()  # the session survives
            listed = await session.list_tools()  # answered, every tool hidden (fail closed)
            return first, refused, len(listed.tools)

    first, refused, tools = anyio.run(drive)
    assert not first.is_error
    assert refused.is_error
    assert "hello" not in text_of(refused)
    assert "governor" in text_of(refused)
    assert tools == 0  # the governor cannot say which tools are visible: none shown


def _decisions(fs: FsSetup) -> list[dict[str, Any]]:
    data = str(fs.governor.data)
    size = int(cli("log", "checkpoint", "--data", data).stdout.splitlines()[1])
    found = []
    for index in range(size):
        event = json.loads(cli("log", "entry", str(index), "--data", data, "--json").stdout)["event"]
        if event.get("type") == "decision":
            found.append(event)
    return found


@pytest.mark.parametrize(
    "args",
    [
        ("--", "node", "x"),
        ("--server", "http://127.0.0.1:9", "--key", "/nonexistent", "--", "node", "x"),
        ("--server", "http://127.0.0.1:9", "--key", "/etc/hostname", "--listen", "127.0.0.1:1", "--", "node"),
    ],
    ids=["no-server-or-key", "unreadable-key", "listen-with-a-command"],
)
def test_gateway_bad_arguments_exit_bad_input_without_traceback(args: tuple[str, ...]) -> None:
    proc = cli("gateway", "mcp", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("proctor: error:")
