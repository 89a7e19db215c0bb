"""The infrastructure health dashboard: ``GET /health`` (the page), ``GET /health.json``
(its snapshot) and ``GET /health/stream`` (a snapshot a second, as server-sent events).

Public, as ``/metrics`` and ``/readyz`` are: the numbers are those of ``/metrics``, read
from the same registry (:mod:`.health_data`), with readiness as ``/readyz`` gives it and
the nodes serving the store. Of each node anyone sees its name, zone, status, heartbeat
age and lag; its URL, version and failure reason only an admin signed in on the console
(``GET /v1/nodes`` needs a principal).

Streams (rules):

1. At most :data:`MAX_STREAMS` are open at once on a governor; one more is refused (429,
   ``too-many-streams``, as ``/v1/stream``), and the page then polls ``/health.json``.
2. A stream ends after :data:`STREAM_S` (the browser's ``EventSource`` reconnects), and
   a client that goes away gives its slot back at once (:class:`EventStreamResponse`).
3. Every stream sends the snapshot shared by all (:class:`.health_data.HealthMonitor`):
   more viewers never mean more reads of the store.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from proctor.console.health_data import HealthMonitor, for_viewer
from proctor.console.session import signed_in
from proctor.console.web import page, secure
from proctor.errors import ConfigError, StreamLimitError
from proctor.governor.metrics import GovernorMetrics
from proctor.governor.stream import EventStreamResponse

__all__ = [
    "MAX_STREAMS",
    "STREAM_S",
    "HealthStreams",
    "health",
    "health_json",
    "health_stream",
    "router",
    "shown",
]

MAX_STREAMS = 16
"""Health streams open at once (rule 1)."""
STREAM_S = 600.0
"""How long one stream lasts before the browser reconnects (rule 2)."""

router = APIRouter(include_in_schema=False)
_setup = threading.Lock()


class HealthStreams:
    """The open health streams of one application, counted under :data:`MAX_STREAMS`."""

    def __init__(self, limit: int = MAX_STREAMS) -> None:
        """Raises:
        ValueError: a limit below 1."""
        if type(limit) is not int or limit < 1:
            raise ValueError(f"expected a stream limit of at least 1, found {limit!r}")
        self.limit = limit
        self._lock = threading.Lock()
        self.open = 0

    def acquire(self) -> None:
        """Take a slot.

        Raises:
            StreamLimitError: all :attr:`limit` are taken.
        """
        with self._lock:
            if self.open >= self.limit:
                raise StreamLimitError(
                    f"expected at most {self.limit} open health streams, found {self.open} open"
                )
            self.open += 1

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self.open = max(0, self.open - 1)


def shown(value: object, kind: str) -> str:
    """A number as the page writes it (``static/health.js`` writes it the same way):
    ``int`` whole, ``rate`` and ``s`` one decimal, ``ms`` two below 10 and one above,
    ``text`` as it is; a missing number is a dash."""
    if kind == "text":
        return str(value)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "\u2014"
    if kind == "int":
        return str(round(value))
    if kind == "ms" and value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}"


def _parts(request: Request) -> tuple[HealthMonitor, HealthStreams]:
    """This application's monitor and stream slots, made on first use.

    Raises:
        ConfigError: the application is not a governor's (no metrics registry).
    """
    app: Any = request.app
    with _setup:
        monitor = getattr(app.state, "health_monitor", None)
        if monitor is None:
            metrics = getattr(app, "metrics", None)
            if not isinstance(metrics, GovernorMetrics):
                raise ConfigError("the health page expected a governor's application (metrics), found none")
            monitor = app.state.health_monitor = HealthMonitor(app.state.governor, metrics.registry)
            app.state.health_streams = HealthStreams()
        return monitor, app.state.health_streams


async def _snapshot(request: Request) -> dict[str, Any]:
    monitor, _ = _parts(request)
    snapshot = await run_in_threadpool(monitor.snapshot)
    return for_viewer(snapshot, admin=signed_in(request) is not None)


@router.get("/health", response_class=HTMLResponse)
async def health(request: Request) -> HTMLResponse:
    """The dashboard, its numbers rendered on the server; the page's script then
    follows ``/health/stream``."""
    snapshot = await _snapshot(request)
    data = orjson.dumps(snapshot).decode()
    return page(request, "health.html", {"s": snapshot, "data": data, "fmt": shown})


@router.get("/health.json")
async def health_json(request: Request) -> Response:
    """The snapshot the page shows, as JSON."""
    return secure(Response(orjson.dumps(await _snapshot(request)), media_type="application/json"))


@router.get("/health/stream")
async def health_stream(request: Request) -> Response:
    """A snapshot a second as server-sent events (``event: snapshot``), for
    :data:`STREAM_S` at most (module docstring, rules).

    Raises:
        StreamLimitError: :data:`MAX_STREAMS` are open (429).
    """
    monitor, streams = _parts(request)
    admin = signed_in(request) is not None
    streams.acquire()

    async def events() -> AsyncGenerator[bytes, None]:
        yield b"retry: 3000\n\n"
        deadline = time.monotonic() + STREAM_S
        while time.monotonic() < deadline:
            snapshot = for_viewer(await run_in_threadpool(monitor.snapshot), admin=admin)
            # The charts' history came with the page: each event adds its latest point.
            snapshot["series"] = snapshot["series"][-1:]
            yield b"event: snapshot\nid: %d\ndata: %s\n\n" % (snapshot["seq"], orjson.dumps(snapshot))
            await asyncio.sleep(monitor.interval_s)

    return secure(EventStreamResponse(events(), streams.release))
