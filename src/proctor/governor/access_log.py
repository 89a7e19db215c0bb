"""``proctor serve --access-log``: one line per request, for operators.

Each line: method, path (no query string: it is the caller's), status, the
authenticated principal (``-`` when the request was not authenticated: public reads,
and refusals before the signature verified) and the time from the request's arrival at
the application to the end of its response, in microseconds. An event stream's line is
written when the stream ends.

The principal is what the signature check established (:data:`PRINCIPAL`, set by the
application once a signature verified), never the ``keyid`` a client merely claims.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

__all__ = ["ACCESS_LOGGER", "PRINCIPAL", "AccessLog"]

ACCESS_LOGGER = "proctor.access"
"""The logger the lines go to (``proctor serve --access-log`` sends it to stderr)."""

PRINCIPAL: contextvars.ContextVar[str | None] = contextvars.ContextVar("proctor_principal", default=None)
"""The principal whose signature the current request carries, once verified."""


class AccessLog:
    """An ASGI wrapper that logs each HTTP request of ``app`` to :data:`ACCESS_LOGGER`."""

    def __init__(self, app: Any, *, logger: logging.Logger | None = None) -> None:
        self.app = app
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 0
        token = PRINCIPAL.set(None)

        async def observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            micros = int((time.perf_counter() - began) * 1_000_000)
            principal = PRINCIPAL.get() or "-"
            PRINCIPAL.reset(token)
            # A path is text the client chose: shown as a Python literal when it holds
            # anything but printable ASCII, so one request is always one line.
            path = str(scope.get("path", ""))
            shown = path if path.isascii() and path.isprintable() else repr(path)
            self.logger.info(
                "%s %s %d %s %dus", scope.get("method", "?"), shown, status or 0, principal, micros
            )
