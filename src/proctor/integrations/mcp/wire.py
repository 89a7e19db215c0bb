"""MCP messages on the wire: newline-delimited JSON-RPC with a size limit, and the
channels the gateway session reads and writes (stdio here; streamable HTTP in
:mod:`proctor.integrations.mcp.http`).

Rules:

1. A message is one JSON object on one line, at most ``max_bytes`` long; a longer line
   is discarded up to its newline, never buffered whole, and reported once as
   :class:`Malformed` (with the request id found in its first bytes, if any).
2. A line that is not a JSON-RPC 2.0 message (the ``mcp`` SDK's ``JSONRPCMessage``
   type validates it), or whose ``id`` is not MCP's ``RequestId`` (a string or an
   integer), is :class:`Malformed` too. Neither ends the session.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import orjson
from anyio.abc import ByteReceiveStream, ByteSendStream
from mcp.types import jsonrpc_message_adapter
from pydantic import ValidationError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Channel",
    "LineFramer",
    "Malformed",
    "Received",
    "StreamChannel",
    "error_result",
    "notification",
    "parse_message",
    "rpc_error",
    "quietly",
]

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""The longest message accepted from either side, by default (``--max-message-bytes``)."""
_ID_HINT = re.compile(rb'"id"\s*:\s*("(?:[^"\\]|\\.){0,128}"|-?\d{1,18})')
_HINT_WINDOW = 4096
_CHUNK = 65536


@dataclass(frozen=True)
class Malformed:
    """A message that was refused (rules 1, 2): why, and the request id it seemed to
    answer (``None`` when none could be read)."""

    reason: str
    id_hint: str | int | None = None


Received = dict[str, Any] | Malformed


def _id_hint(data: bytes) -> str | int | None:
    match = _ID_HINT.search(data[:_HINT_WINDOW])
    if match is None:
        return None
    try:
        value = orjson.loads(match.group(1))
    except orjson.JSONDecodeError:
        return None
    return value if type(value) in (str, int) else None


def parse_message(line: bytes) -> Received:
    """One line as a JSON-RPC message, or :class:`Malformed` (rule 2)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        return Malformed(f"not JSON ({e})", _id_hint(line))
    if type(value) is not dict:
        return Malformed(f"expected a JSON-RPC object, found {type(value).__name__}")
    try:
        jsonrpc_message_adapter.validate_python(value, by_name=False)
    except ValidationError as e:
        return Malformed(f"not a JSON-RPC 2.0 message ({e.error_count()} errors)", _id_hint(line))
    # The adapter reads a message with a method and an id of another type (a list, an
    # object, true, 1.5) as a notification with an extra member, yet the session keys
    # its calls by that id and echoes it back: only MCP's RequestId (a string or an
    # integer, or null in an error answer) is handed on (rule 2).
    if "id" in value:
        found = value["id"]
        if not (type(found) in (str, int) or (found is None and "error" in value)):
            return Malformed(f"expected an id that is a string or an integer, found {type(found).__name__}")
    return value


class LineFramer:
    """Splits a byte stream into lines of at most ``max_bytes`` (rule 1).

    An oversized line is reported when its newline arrives, with the request id read
    from its first or its last bytes (JSON puts ``id`` anywhere in the object).
    """

    def __init__(self, max_bytes: int) -> None:
        """Args: max_bytes: the longest line kept."""
        if max_bytes < 1024:
            raise ValueError(f"max message size: expected at least 1024 bytes, found {max_bytes}")
        self._max = max_bytes
        self._buffer = bytearray()
        self._discarding = False
        self._hint: str | int | None = None
        self._tail = b""

    def feed(self, data: bytes) -> list[bytes | Malformed]:
        """The complete lines (or refusals) ``data`` ends."""
        out: list[bytes | Malformed] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            self._take(data[start:end], out, complete=True)
            start = end + 1
        self._take(data[start:], out, complete=False)
        return out

    def _take(self, piece: bytes, out: list[bytes | Malformed], *, complete: bool) -> None:
        if self._discarding:
            self._tail = (self._tail + piece)[-_HINT_WINDOW:]
        else:
            self._buffer += piece
            if len(self._buffer) > self._max:
                self._hint = _id_hint(bytes(self._buffer[:_HINT_WINDOW]))
                self._tail = bytes(self._buffer[-_HINT_WINDOW:])
                self._buffer.clear()
                self._discarding = True
        if not complete:
            return
        if self._discarding:
            hint = self._hint if self._hint is not None else _last_id(self._tail)
            out.append(Malformed(f"a message longer than {self._max} bytes", hint))
            self._discarding, self._hint, self._tail = False, None, b""
        elif self._buffer.strip():
            out.append(bytes(self._buffer))
        self._buffer.clear()


def _last_id(tail: bytes) -> str | int | None:
    found = list(_ID_HINT.finditer(tail))
    if not found:
        return None
    try:
        value = orjson.loads(found[-1].group(1))
    except orjson.JSONDecodeError:
        return None
    return value if type(value) in (str, int) else None


class Channel(Protocol):
    """One side of a session: messages in, messages out."""

    async def receive(self) -> Received:
        """The next message (raises ``anyio.EndOfStream`` when the side closed)."""
        ...

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message."""
        ...


class StreamChannel:
    """Newline-delimited JSON-RPC over a pair of byte streams (a child's pipes), or
    over file descriptors (the gateway's own stdin and stdout)."""

    def __init__(
        self,
        *,
        max_bytes: int,
        receive: ByteReceiveStream | None = None,
        send: ByteSendStream | None = None,
        fds: Sequence[int] = (),
    ) -> None:
        """Args:
        max_bytes: the longest message accepted (rule 1).
        receive, send: the streams; or ``fds``: (read fd, write fd).
        """
        self._framer = LineFramer(max_bytes)
        self._receive, self._send = receive, send
        self._fds = tuple(fds)
        self._pending: list[bytes | Malformed] = []
        self._lock = anyio.Lock()

    async def _read(self) -> bytes:
        if self._receive is not None:
            try:
                return await self._receive.receive(_CHUNK)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return b""
        return await anyio.to_thread.run_sync(os.read, self._fds[0], _CHUNK, abandon_on_cancel=True)

    async def receive(self) -> Received:
        """The next message, in order (rules 1, 2)."""
        while not self._pending:
            data = await self._read()
            if not data:
                raise anyio.EndOfStream
            self._pending.extend(self._framer.feed(data))
        item = self._pending.pop(0)
        return item if isinstance(item, Malformed) else parse_message(item)

    async def send(self, message: dict[str, Any]) -> None:
        """Write one message and its newline."""
        data = orjson.dumps(message) + b"\n"
        async with self._lock:
            if self._send is not None:
                await self._send.send(data)
                return
            await anyio.to_thread.run_sync(_write_all, self._fds[1], data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- messages the gateway writes ------------------------------------------------------


def error_result(request_id: Any, text: str) -> dict[str, Any]:
    """A ``tools/call`` answer the agent can read: ``isError`` with the reason."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "result": {"content": [{"type": "text", "text": f"proctor: {text}"}], "isError": True},
    }


def notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC notification."""
    return {"jsonrpc": "2.0", "method": method, "params": params}


def rpc_error(request_id: Any, code: int, text: str) -> dict[str, Any]:
    """A JSON-RPC error answer, its message prefixed ``proctor:``."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": f"proctor: {text}"}}


async def quietly(send: Callable[[dict[str, Any]], Any], message: dict[str, Any]) -> None:
    """Send, ignoring a channel already closed (the session is ending)."""
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await send(message)
