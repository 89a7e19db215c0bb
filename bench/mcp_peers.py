"""The MCP gateways proctor's is measured beside (``bench_mcp_peers.py``), each started in
front of the real ``@modelcontextprotocol/server-filesystem`` with a configuration that
allows ``read_text_file`` under one directory.

The peers are a bench-only extra, never a dependency: :func:`bench.lib.ensure_peer`
installs each, pinned, into a virtualenv of its own under ``.bench/peers/`` (gitignored),
never into ``.venv`` and never from ``scripts/setup``. Separate venvs because their
dependency ranges differ (``mcp-airlock`` needs ``mcp>=2.2``, Starlette 1.x;
``mcp-zero-trust-layer`` FastAPI).

- ``mcp-airlock`` 0.4.1 speaks streamable HTTP only (the stateless 2026-07-28 revision),
  to an HTTP upstream. Identity: the ``X-Airlock-Principal`` header
  (``AIRLOCK_TRUST_PRINCIPAL_HEADER=1``). Policy: ``read_text_file`` at tier L0.
- ``mcp-zero-trust-layer`` 0.6.0: ``mcpzt wrap`` (stdio, launches the server) and
  ``mcpzt run`` (HTTP proxy, JSON responses only, to an HTTP upstream). Policy: allow
  ``read_text_file`` with its ``filesystem_path`` validator on the directory.

The filesystem server speaks stdio only; the HTTP rows reach it through :func:`run_bridge`
(this module run as ``python -m bench.mcp_peers bridge --port P -- CMD...``): an ``mcp`` SDK
server on streamable HTTP (JSON responses, stateless, both protocol eras) whose tools are
the stdio server's, forwarded over one stdio session. Every HTTP row, the direct one
included, goes through the same bridge, so it cancels out of the added latency.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as a file (python bench/mcp_peers.py): the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.lib import PEERS, REPO, PeerUnavailable, ensure_peer

FILESYSTEM = REPO / "tests" / "mcp_servers" / "node_modules" / ".bin" / "mcp-server-filesystem"

__all__ = [
    "PEERS",
    "Child",
    "ensure_peer",
    "filesystem_argv",
    "free_port",
    "run_bridge",
    "spawn",
    "start_airlock",
    "start_bridge",
    "start_zt_http",
    "wait_port",
    "zt_stdio_argv",
]


def free_port() -> int:
    """A free loopback TCP port (free when asked)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def filesystem_argv(directory: Path) -> list[str]:
    """The command line of the real filesystem server, serving ``directory``.

    Raises:
        PeerUnavailable: node or the server is not installed (run scripts/setup).
    """
    node = shutil.which("node")
    if node is None or not FILESYSTEM.exists():
        raise PeerUnavailable(f"expected node and {FILESYSTEM} (run scripts/setup); found node={node}")
    return [node, str(FILESYSTEM), str(directory)]


@dataclass
class Child:
    """A child process started for the bench, its stderr in ``log``."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    _err: IO[bytes] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Terminate it (SIGKILL after 10 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._err is not None:
            self._err.close()

    def tail(self) -> str:
        """The end of its stderr (for an error message)."""
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""


def spawn(name: str, argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None) -> Child:
    """Start ``argv`` in ``workdir`` (created), its output in ``workdir/NAME.err``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.err"
    err = log.open("wb")
    proc = subprocess.Popen(
        list(argv),
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=err,
        stderr=err,
        env={**os.environ, **(env or {})},
    )
    return Child(name, proc, log, _err=err)


def wait_port(child: Child, port: int, timeout: float = 60.0) -> None:
    """Until something accepts on ``port`` (or ``child`` died, or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise SystemExit(f"{child.name} exited {child.proc.returncode}:\n{child.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    child.stop()
    raise SystemExit(f"{child.name} did not listen on {port} within {timeout:.0f} s:\n{child.tail()}")


def start_bridge(upstream: Sequence[str], workdir: Path) -> Child:
    """The stdio ``upstream`` served over streamable HTTP (:func:`run_bridge`); ``url`` set."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.mcp_peers", "bridge", "--port", str(port), "--", *upstream]
    child = spawn("bridge", argv, workdir, env={"PYTHONPATH": str(REPO)})
    wait_port(child, port)
    child.url = f"http://127.0.0.1:{port}/mcp"
    return child


def start_airlock(upstream_url: str, workdir: Path) -> Child:
    """``mcp-airlock`` in front of ``upstream_url``: ``read_text_file`` at L0 (straight
    through), the caller named by ``X-Airlock-Principal`` (send ``bench``); ``url`` set."""
    bin_dir = ensure_peer("mcp-airlock")
    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "airlock.yaml"
    policy.write_text("version: 1\nenvironment: bench\ntools:\n  read_text_file:\n    tiers: { bench: L0 }\n")
    port = free_port()
    argv = [str(bin_dir / "mcp-airlock"), "--policy", str(policy), "--upstream", upstream_url]
    argv += ["--env", "bench", "--audit", str(workdir / "airlock-audit.jsonl"), "--port", str(port)]
    child = spawn("mcp-airlock", argv, workdir, env={"AIRLOCK_TRUST_PRINCIPAL_HEADER": "1"})
    wait_port(child, port)
    child.url = f"http://127.0.0.1:{port}/mcp"
    return child


def _zt_config(workdir: Path, allowed: Path, server: dict[str, Any]) -> Path:
    """An ``mcpzt`` config (JSON is YAML): default deny, the protocol methods and
    ``read_text_file`` under ``allowed`` (its ``filesystem_path`` validator) allowed."""
    config = {
        "project": {"name": "bench", "environment": "development"},
        "runtime": {
            "mode": "proxy" if server["transport"] == "http" else "stdio",
            "default_decision": "deny",
        },
        "auth": {"mode": "none"},
        "servers": [{"name": "filesystem", **server}],
        "policies": [
            {
                "id": "protocol",
                "effect": "allow",
                "match": {
                    "server": "filesystem",
                    "capability_type": "method",
                    "capabilities": ["initialize", "ping", "tools/list", "server/discover"],
                },
            },
            {
                "id": "read-text-file",
                "effect": "allow",
                "match": {"server": "filesystem", "capability_type": "tool", "capability": "read_text_file"},
                "validators": [
                    {
                        "name": "filesystem_path",
                        "options": {"path_arg": "path", "allowed_roots": [str(allowed)], "read_only": True},
                    }
                ],
            },
        ],
        "audit": {"destination": "file", "path": str(workdir / "zt-audit.jsonl")},
        "approvals": {"path": str(workdir / "zt-approvals.json")},
    }
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"mcpzt-{server['transport']}.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def zt_stdio_argv(upstream: Sequence[str], allowed: Path, workdir: Path) -> list[str]:
    """``mcpzt wrap`` launching ``upstream`` (the agent runs this over stdio)."""
    bin_dir = ensure_peer("mcp-zero-trust-layer")
    config = _zt_config(workdir, allowed, {"transport": "stdio", "command": list(upstream)})
    return [str(bin_dir / "mcpzt"), "wrap", "--config", str(config), "--server", "filesystem"]


def start_zt_http(upstream_url: str, allowed: Path, workdir: Path) -> Child:
    """``mcpzt run`` (HTTP proxy) in front of ``upstream_url``; ``url`` set (its
    ``/mcp/filesystem`` route)."""
    bin_dir = ensure_peer("mcp-zero-trust-layer")
    config = _zt_config(workdir, allowed, {"transport": "http", "upstream": upstream_url})
    port = free_port()
    argv = [
        str(bin_dir / "mcpzt"),
        "run",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    child = spawn("mcp-zero-trust-layer", argv, workdir)
    wait_port(child, port)
    child.url = f"http://127.0.0.1:{port}/mcp/filesystem"
    return child


async def run_bridge(port: int, upstream: Sequence[str]) -> None:
    """Serve the stdio server ``upstream`` on ``http://127.0.0.1:PORT/mcp`` (streamable
    HTTP, JSON responses, stateless): its tools listed as it lists them, each call
    forwarded over one stdio session (calls are serialized by that session)."""
    import uvicorn  # noqa: PLC0415 - the bridge's own imports, not the bench's
    from mcp import types  # noqa: PLC0415
    from mcp.client.session import ClientSession  # noqa: PLC0415
    from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: PLC0415
    from mcp.server.context import ServerRequestContext  # noqa: PLC0415
    from mcp.server.lowlevel import Server  # noqa: PLC0415

    params = StdioServerParameters(command=upstream[0], args=list(upstream[1:]))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = (await session.list_tools()).tools

        async def list_tools(_ctx: ServerRequestContext[Any], _params: Any) -> types.ListToolsResult:
            return types.ListToolsResult(tools=tools)

        async def call_tool(
            _ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
        ) -> types.CallToolResult:
            return await session.call_tool(params.name, params.arguments)

        server: Server[Any] = Server("filesystem-bridge", on_list_tools=list_tools, on_call_tool=call_tool)
        app = server.streamable_http_app(json_response=True, stateless_http=True)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        await uvicorn.Server(config).serve()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.mcp_peers bridge --port P -- CMD...`` (or ``install``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bridge = sub.add_parser("bridge", help="serve a stdio MCP server over streamable HTTP")
    bridge.add_argument("--port", type=int, required=True)
    bridge.add_argument("upstream", nargs="+", help="the stdio server's command line, after --")
    sub.add_parser("install", help="install the peers into .bench/peers/")
    args = parser.parse_args(argv)
    if args.command == "install":
        for name in PEERS:
            try:
                print(ensure_peer(name))
            except PeerUnavailable as e:
                print(f"{name}: n/a ({e})")
        return
    import anyio  # noqa: PLC0415

    anyio.run(run_bridge, args.port, args.upstream)


if __name__ == "__main__":
    main()
