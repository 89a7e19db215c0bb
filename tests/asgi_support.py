"""Requests through an ASGI application in process, at the ASGI level: the test sees
how many body bytes the application pulled, and can hold an event stream open while
it acts, then disconnect (which Starlette's TestClient cannot do without hanging)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request


def signed(key: PrincipalKey, method: str, target: str, body: bytes = b"") -> list[tuple[str, str]]:
    """The signature headers of a request, as field lines."""
    return list(sign_request(method, target, body, key, now=int(time.time())).items())


def _scope(method: str, target: str, headers: Iterable[tuple[str, str]]) -> dict[str, Any]:
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
        "state": {},
    }


@dataclass
class Answer:
    """What the application sent back, and how much of the request body it pulled."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    pulled: int = 0

    def json(self) -> Any:
        return orjson.loads(self.body)


def _chunks_of(body: bytes) -> Iterator[bytes]:
    yield body


async def acall(
    app: Any,
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    chunks: Iterator[bytes] | None = None,
    timeout: float = 60.0,
) -> Answer:
    """One request; after the body (``body``, or ``chunks`` as they are pulled) the
    client disconnects, so that even an event stream ends."""
    answer = Answer()
    source = chunks if chunks is not None else _chunks_of(body)
    pending = next(source, None)

    async def receive() -> dict[str, Any]:
        nonlocal pending
        if pending is None:
            return {"type": "http.disconnect"}
        chunk, pending = pending, next(source, None)
        answer.pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": pending is not None}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            for k, v in message.get("headers", []):
                name = k.decode("latin-1").lower()
                answer.headers[name] = (
                    v.decode("latin-1")
                    if name not in answer.headers
                    else answer.headers[name] + ", " + v.decode()
                )
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    await asyncio.wait_for(app(_scope(method, target, headers), receive, send), timeout)
    return answer


def call(app: Any, method: str, target: str, **kw: Any) -> Answer:
    """:func:`acall` on a new event loop."""
    return asyncio.run(acall(app, method, target, **kw))


class OpenStream:
    """A ``GET`` held open in the running loop (an event stream): its status, then its
    server-sent events as they arrive, until :meth:`close` disconnects."""

    def __init__(self, app: Any, target: str, headers: Iterable[tuple[str, str]]) -> None:
        self.status = 0
        self.ended = asyncio.Event()
        self._started = asyncio.Event()
        self._disconnect = asyncio.Event()
        self._sent_body = False
        self._buffer = b""
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.body = b""
        self._task = asyncio.ensure_future(self._run(app, _scope("GET", target, headers)))

    async def _run(self, app: Any, scope: dict[str, Any]) -> None:
        async def receive() -> dict[str, Any]:
            if not self._sent_body:
                self._sent_body = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self._disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self._started.set()
            elif message["type"] == "http.response.body":
                self.body += message.get("body", b"")
                self._buffer += message.get("body", b"")
                while b"\n\n" in self._buffer:
                    frame, self._buffer = self._buffer.split(b"\n\n", 1)
                    data = [line[5:].strip() for line in frame.split(b"\n") if line.startswith(b"data:")]
                    if data:
                        self._events.put_nowait(orjson.loads(b"".join(data)))

        try:
            await app(scope, receive, send)
        finally:
            self._started.set()
            self.ended.set()

    async def started(self, timeout: float = 30.0) -> int:
        """The response status, once the response started."""
        await asyncio.wait_for(self._started.wait(), timeout)
        return self.status

    async def event(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next event's data."""
        return await asyncio.wait_for(self._events.get(), timeout)

    def drain(self) -> list[dict[str, Any]]:
        """The events received and not yet taken."""
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    async def close(self, timeout: float = 30.0) -> None:
        """Disconnect and wait for the application to finish the request."""
        self._disconnect.set()
        await asyncio.wait_for(self.ended.wait(), timeout)
        await self._task
