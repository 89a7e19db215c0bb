"""The third-party MCP servers the gateway's tests run against (installed by
scripts/setup into tests/mcp_servers), and an agent driving the gateway with the
official ``mcp`` SDK's client.

When they are missing a test skips, unless ``PROCTOR_REQUIRE_MCP=1`` (CI): then it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from gov_server import GovernorServer, client_of, free_port

BIN = Path(__file__).parent / "mcp_servers" / "node_modules" / ".bin"


def mcp_server(name: str) -> list[str]:
    """The command line of ``@modelcontextprotocol/server-NAME`` (``node`` and its script)."""
    node = shutil.which("node")
    script = BIN / f"mcp-server-{name}"
    if node is None or not script.exists():
        why = f"the MCP server {name!r} is not installed ({script}; node: {node}); run scripts/setup"
        if os.environ.get("PROCTOR_REQUIRE_MCP") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return [node, str(script)]


def gateway_argv(url: str, key: Path, name: str, upstream: Sequence[str], *extra: str) -> list[str]:
    """``proctor gateway mcp`` over stdio in front of ``upstream``."""
    return [
        sys.executable,
        "-m",
        "proctor",
        "gateway",
        "mcp",
        "--server",
        url,
        "--key",
        str(key),
        "--name",
        name,
        *extra,
        "--",
        *upstream,
    ]


def wait_port(port: int) -> None:
    """Wait (30 s at most) until something answers HTTP on ``port`` at ``/mcp``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


@contextmanager
def http_gateway(url: str, key: Path, upstream: Sequence[str], logs: Path, *extra: str) -> Iterator[str]:
    """``upstream`` serving streamable HTTP (``streamableHttp``, on ``PORT``) and
    ``proctor gateway mcp --listen`` in front of it (``--name ev``, then ``extra``):
    yields the gateway's MCP URL; stderr goes to ``logs/upstream.err`` and
    ``logs/gateway.err``; both are stopped on the way out."""
    up_port, gw_port = free_port(), free_port()
    with (logs / "upstream.err").open("w") as up_err, (logs / "gateway.err").open("w") as gw_err:
        up = subprocess.Popen(
            [*upstream, "streamableHttp"], env=os.environ | {"PORT": str(up_port)}, stderr=up_err
        )
        gw = subprocess.Popen(
            [
                *gateway_argv(url, key, "ev", [])[:-1],
                "--listen",
                f"127.0.0.1:{gw_port}",
                "--upstream-url",
                f"http://127.0.0.1:{up_port}/mcp",
                *extra,
            ],
            stderr=gw_err,
        )
        try:
            for port in (up_port, gw_port):
                wait_port(port)
            yield f"http://127.0.0.1:{gw_port}/mcp"
        finally:
            for proc in (gw, up):
                proc.terminate()
                proc.wait(timeout=15)


@asynccontextmanager
async def agent(argv: Sequence[str], *, errlog: Path | None = None) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session with ``argv`` run over stdio (as an agent runs it)."""
    params = StdioServerParameters(command=argv[0], args=list(argv[1:]), env=dict(os.environ))
    with (errlog or Path(os.devnull)).open("a") as err:
        async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


def executions(governor: GovernorServer) -> list[dict[str, Any]]:
    """Every execution the governor knows, running or ended."""
    with client_of(governor) as client:
        found: list[dict[str, Any]] = client.json("GET", "/v1/executions?status=all")["executions"]
    return found


def running_execution(governor: GovernorServer) -> str:
    """The id of the first running execution, once there is one (60 s at most)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = [e for e in executions(governor) if e.get("status") == "running"]
        if live:
            return str(live[0]["id"])
        time.sleep(0.1)
    raise AssertionError("the long call never started an execution")
