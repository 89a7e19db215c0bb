"""The gateway over stdio: the agent talks MCP on the gateway's stdin and stdout, the
gateway runs the upstream server as a child and talks MCP on its pipes (one upstream
process, one session, per gateway process). The child's stderr is the gateway's."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from proctor.authorization.keys import PrincipalKey
from proctor.integrations.mcp.governance import ToolGovernance
from proctor.integrations.mcp.session import GatewaySession
from proctor.integrations.mcp.wire import DEFAULT_MAX_MESSAGE_BYTES, StreamChannel

__all__ = ["GatewayOptions", "note", "run_stdio"]


@dataclass(frozen=True)
class GatewayOptions:
    """How ``proctor gateway mcp`` governs one upstream server.

    Attributes:
        server: the governor URL (several of one deployment: comma-separated).
        key: the principal the gateway acts as.
        name: the server part of every resource (``NAME/TOOL``).
        approval_timeout: seconds to wait for an admin's approval before refusing.
        max_message_bytes: the longest MCP message accepted from either side.
        warrant_key: the trusted warrant key; ``None``: ask the governor.
        session_idle: streamable HTTP: seconds an agent session may stay with nothing
            in flight before it is ended (its upstream session closed, its slot freed).
    """

    server: str
    key: PrincipalKey
    name: str
    approval_timeout: float = 300.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    warrant_key: bytes | None = None
    session_idle: float = 600.0

    def governance(self) -> ToolGovernance:
        """The governor calls of one session."""
        return ToolGovernance(
            self.server,
            self.key,
            warrant_key=self.warrant_key,
            approval_timeout=self.approval_timeout,
            enforcer=f"proctor-gateway/{self.name}",
            on_note=note,
        )


def note(message: str) -> None:
    """One prefixed line on stderr (stdout carries MCP only)."""
    sys.stderr.write(f"proctor gateway: {message}\n")
    sys.stderr.flush()


async def run_stdio(options: GatewayOptions, upstream: Sequence[str]) -> None:
    """Serve one agent session on stdin/stdout, forwarded to ``upstream`` run as a child."""
    governance = options.governance()
    try:
        async with await anyio.open_process(
            list(upstream), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None
        ) as process:
            if process.stdout is None or process.stdin is None:  # pragma: no cover - PIPE given
                raise RuntimeError("the upstream's pipes were not opened")
            session = GatewaySession(
                StreamChannel(max_bytes=options.max_message_bytes, fds=(0, 1)),
                StreamChannel(
                    max_bytes=options.max_message_bytes, receive=process.stdout, send=process.stdin
                ),
                governance,
                name=options.name,
                on_note=note,
            )
            try:
                await session.run()
            finally:
                with anyio.CancelScope(shield=True):
                    await process.stdin.aclose()
                    with anyio.move_on_after(2):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
    finally:
        governance.close()
