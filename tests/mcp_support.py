"""The third-party MCP servers the gateway's tests run against (installed by
scripts/setup into tests/mcp_servers), and an agent driving the gateway with the
official ``mcp`` SDK's client.

When they are missing a test skips, unless ``PROCTOR_REQUIRE_MCP=1`` (CI): then it fails.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

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


@asynccontextmanager
async def agent(argv: Sequence[str], *, errlog: Path | None = None) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session with ``argv`` run over stdio (as an agent runs it)."""
    params = StdioServerParameters(command=argv[0], args=list(argv[1:]), env=dict(os.environ))
    with (errlog or Path(os.devnull)).open("a") as err:
        async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session
