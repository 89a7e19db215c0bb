"""The gateway over streamable HTTP: agents connect to ``--listen HOST:PORT`` (path
``/mcp``), and each agent session (``Mcp-Session-Id``) is forwarded to a session of its
own at ``--upstream-url``. Both sides are the ``mcp`` SDK's streamable HTTP transports
(:class:`~mcp.server.streamable_http.StreamableHTTPServerTransport` and
:func:`~mcp.client.streamable_http.streamable_http_client`); the session between them
is the same as over stdio (:class:`~proctor.integrations.mcp.session.GatewaySession`).

Request bodies from agents are limited to ``max_message_bytes`` (HTTP 413 above);
messages that are not JSON-RPC are refused by the transports, and a message from the
upstream that the SDK cannot parse reaches the session as :class:`Malformed`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import anyio
import uvicorn
from anyio.abc import TaskGroup
from mcp.client.streamable_http import streamable_http_client
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.shared.message import SessionMessage
from mcp.types import jsonrpc_message_adapter
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from proctor.integrations.mcp.session import GatewaySession
from proctor.integrations.mcp.stdio import GatewayOptions, note
from proctor.integrations.mcp.wire import Malformed, Received

__all__ = ["GatewayApp", "MemoryChannel", "run_http"]

_SESSION_HEADER = b"mcp-session-id"
_MAX_SESSIONS = 256


class MemoryChannel:
    """A :class:`~proctor.integrations.mcp.wire.Channel` over the SDK's streams of
    :class:`SessionMessage` (each message as the JSON the wire carried)."""

    def __init__(self, read: Any, write: Any) -> None:
        """Args: read, write: the transport's streams."""
        self._read, self._write = read, write

    async def receive(self) -> Received:
        """The next message (``anyio.EndOfStream`` at the end)."""
        try:
            item = await self._read.receive()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise anyio.EndOfStream from None
        if isinstance(item, Exception):
            return Malformed(f"a message the transport could not read ({type(item).__name__}: {item})"[:300])
        dumped: dict[str, Any] = item.message.model_dump(by_alias=True, mode="json", exclude_unset=True)
        return dumped

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message (validated as JSON-RPC first)."""
        try:
            parsed = jsonrpc_message_adapter.validate_python(message, by_name=False)
        except ValidationError as e:
            raise anyio.BrokenResourceError(f"not a JSON-RPC message: {e}") from e
        await self._write.send(SessionMessage(parsed))


class GatewayApp:
    """The ASGI app: one gateway session per agent session."""

    def __init__(self, options: GatewayOptions, upstream_url: str, tg: TaskGroup) -> None:
        """Args: options: the gateway's; upstream_url: the upstream's endpoint; tg: runs the sessions."""
        self.options, self.upstream_url, self._tg = options, upstream_url, tg
        self._sessions: dict[str, StreamableHTTPServerTransport] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route a request to its session's transport, or open a session."""
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") != "/mcp":
            await _plain(send, 404, b"not found: the MCP endpoint is /mcp")
            return
        if int(dict(scope["headers"]).get(b"content-length", b"0") or 0) > self.options.max_message_bytes:
            await _plain(send, 413, b"request body too large")
            return
        ident = dict(scope["headers"]).get(_SESSION_HEADER, b"").decode("latin-1")
        if ident:
            transport = self._sessions.get(ident)
            if transport is None:
                await _plain(send, 404, b"session not found")
                return
            await transport.handle_request(scope, receive, send)
            return
        if len(self._sessions) >= _MAX_SESSIONS:
            await _plain(send, 503, b"too many sessions")
            return
        transport = StreamableHTTPServerTransport(
            mcp_session_id=uuid4().hex, idle_timeout=self.options.session_idle
        )
        ident = str(transport.mcp_session_id)
        self._sessions[ident] = transport
        await self._tg.start(self._serve, ident, transport)
        await transport.handle_request(scope, receive, send)

    async def _serve(
        self,
        ident: str,
        transport: StreamableHTTPServerTransport,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        governance = self.options.governance()
        try:
            async with (
                transport.connect() as (agent_read, agent_write),
                streamable_http_client(self.upstream_url) as (up_read, up_write),
            ):
                task_status.started()
                session = GatewaySession(
                    MemoryChannel(agent_read, agent_write),
                    MemoryChannel(up_read, up_write),
                    governance,
                    name=self.options.name,
                    on_note=note,
                )
                # An agent gone without a DELETE: the transport cancels this scope once
                # nothing was in flight for session_idle seconds (the slot is freed).
                with transport.idle_scope or contextlib.nullcontext():
                    await session.run()
                if transport.idle_scope is not None and transport.idle_scope.cancel_called:
                    note(f"session {ident} ended: idle for {self.options.session_idle:g} s")
        except Exception as e:  # noqa: BLE001 - one session's failure ends that session only
            note(f"session {ident} ended: {type(e).__name__}: {e}")
        finally:
            self._sessions.pop(ident, None)
            governance.close()
            with anyio.CancelScope(shield=True):
                await transport.terminate()


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
    )
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def _app(options: GatewayOptions, upstream_url: str) -> AsyncIterator[GatewayApp]:
    async with anyio.create_task_group() as tg:
        yield GatewayApp(options, upstream_url, tg)
        tg.cancel_scope.cancel()


async def run_http(options: GatewayOptions, host: str, port: int, upstream_url: str) -> None:
    """Serve streamable HTTP on ``host:port`` until interrupted."""
    async with _app(options, upstream_url) as app:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        await uvicorn.Server(config).serve()
