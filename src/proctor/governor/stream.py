"""Pushing trust changes to enforcers: a broadcaster the governor publishes to, and
the server-sent event stream (``GET /v1/stream``) that reads from it.

Each message is a JSON object with a ``seq`` — the log index of the event it reports
(a revocation, or a policy activation) — so a client resumes after a reconnect from
the last ``seq`` it saw (``Last-Event-ID`` or ``?since=``) and misses nothing: the
stream first replays what the state store recorded after that index, then follows
live messages. Publishing is thread-safe; subscribers are asyncio queues.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

__all__ = ["Broadcaster", "sse_stream"]


class Broadcaster:
    """Fan-out of trust-change messages to every connected stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = []

    def publish(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every subscriber (callable from any thread)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, message)
            except RuntimeError:  # the loop closed; the subscriber is gone
                self.unsubscribe(queue)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue that receives every message published from now on."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        with self._lock:
            self._subscribers.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop delivering to ``queue``."""
        with self._lock:
            self._subscribers = [(lp, q) for lp, q in self._subscribers if q is not queue]


def _frame(message: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        message["seq"],
        message["type"].encode(),
        orjson.dumps(message),
    )


async def sse_stream(
    broadcaster: Broadcaster,
    backlog: Callable[[int], list[dict[str, Any]]],
    *,
    since: int,
    keepalive: float = 5.0,
) -> AsyncIterator[bytes]:
    """Server-sent events: the backlog after ``since``, then live messages.

    Args:
        broadcaster: where live messages come from.
        backlog: returns the recorded messages with ``seq > since``, in order.
        since: the last sequence number the client saw (-1: everything).
        keepalive: seconds between comment lines that keep idle connections open.
    """
    queue = broadcaster.subscribe()
    try:
        last = since
        # Subscribe first, then read the backlog: nothing published in between is lost
        # (duplicates are dropped by sequence number below).
        for message in backlog(since):
            last = max(last, int(message["seq"]))
            yield _frame(message)
        yield b": live\n\n"
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), timeout=keepalive)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if int(message["seq"]) <= last:
                continue
            last = int(message["seq"])
            yield _frame(message)
    finally:
        broadcaster.unsubscribe(queue)
