"""In-memory ends of the :class:`~proctor.integrations.mcp.wire.Channel` interface, for
gateway session tests (the real transports carry the same dicts)."""

from __future__ import annotations

from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


class End:
    """One end of an in-memory channel: what it receives, and a way to send."""

    def __init__(self, receive: MemoryObjectReceiveStream[Any], send: MemoryObjectSendStream[Any]) -> None:
        self._receive, self._send = receive, send

    async def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = await self._receive.receive()
        return message

    async def send(self, message: dict[str, Any]) -> None:
        await self._send.send(message)

    def close(self) -> None:
        self._send.close()
        self._receive.close()


def pair() -> tuple[End, End]:
    a_send, b_receive = anyio.create_memory_object_stream[Any](1000)
    b_send, a_receive = anyio.create_memory_object_stream[Any](1000)
    return End(a_receive, a_send), End(b_receive, b_send)
