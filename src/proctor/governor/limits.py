"""The limits of the governor's HTTP boundary, checked at the ASGI level for every
route (the fast paths and the FastAPI routes alike) before a body is read whole or
parsed.

Invariants:

- A request whose declared ``Content-Length`` is over :data:`MAX_BODY` is refused
  (413) before a byte of its body is read; a body of undeclared length (chunked) is
  refused as soon as more than :data:`MAX_BODY` bytes of it have arrived, so at most
  the limit plus one chunk is ever held.
- A request head over :data:`MAX_HEAD_BYTES` (target and header fields) or with more
  than :data:`MAX_HEADER_FIELDS` field lines is refused (431). ``proctor serve`` also
  bounds the head while it is being received (:mod:`proctor.governor.server`).
- A body declared as anything but JSON (``Content-Type``) is refused (415) on the API
  before it is read (:func:`check_media_type`); with no ``Content-Type`` it is taken
  for JSON, as it always was (the signature covers its bytes, whatever they are called).
- A response sent while the request body is still unread closes the connection
  (``Connection: close``): the server stops reading what nobody will use.
- JSON bodies are refused (422) when they are not in the canonical subset, and when an
  object names a member twice (I-JSON, RFC 7493 §2.3): parsers disagree on which one
  wins, so the one that was signed and the one that is acted on could differ. Numbers
  with fractions are accepted when a double holds them as written
  (:func:`proctor.canonical.loads`); ``9007199254740993`` or ``0.30000000000000000001``
  are refused, for the same reason. The body models are strict (``1.0`` is no integer
  there); a float reaches only the fields they leave open (tool arguments, measurements,
  the lenient fields of ADR 0011, whose code takes an integer only by ``type(x) is int``).

Pure but for the ASGI ``receive`` it wraps; no clock.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from proctor.canonical import loads
from proctor.errors import (  # the three limit errors: defined there, re-exported here
    BodyTooLargeError,
    CanonicalizationError,
    HeadTooLargeError,
    MediaTypeError,
    RequestLimitError,
)

__all__ = [
    "MAX_BODY",
    "MAX_HEAD_BYTES",
    "MAX_HEADER_FIELDS",
    "RequestLimitError",
    "BodyTooLargeError",
    "HeadTooLargeError",
    "MediaTypeError",
    "BoundedBody",
    "check_head",
    "check_media_type",
    "parse_json",
]

MAX_BODY = 1 << 20
"""Longest accepted request body, bytes."""
MAX_HEAD_BYTES = 32 << 10
"""Longest accepted request head: the target plus every header field (name, value)."""
MAX_HEADER_FIELDS = 100
"""Most header field lines accepted in one request."""

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


def check_head(scope: MutableMapping[str, Any], *, max_body: int = MAX_BODY) -> int | None:
    """Check a request head before anything of its body is read.

    Args:
        scope: the ASGI HTTP scope.
        max_body: the body limit the declared length is held to.

    Returns:
        The declared body length (0 when there is no body), or ``None`` when the length
        is not declared (chunked).

    Raises:
        HeadTooLargeError: too many field lines, or a head over :data:`MAX_HEAD_BYTES`.
        BodyTooLargeError: a declared ``Content-Length`` over ``max_body``.
        RequestLimitError: (400) a ``Content-Length`` that is not one decimal number.
    """
    fields = scope["headers"]
    if len(fields) > MAX_HEADER_FIELDS:
        raise HeadTooLargeError(f"expected at most {MAX_HEADER_FIELDS} header fields, found {len(fields)}")
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    declared = 0
    length_seen = chunked = False
    for name, value in fields:
        size += len(name) + len(value)
        if name == b"content-length":
            if length_seen or not value.isdigit() or len(value) > 18:
                raise RequestLimitError(f"expected one decimal Content-Length, found {value[:40]!r}")
            length_seen = True
            declared = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    if size > MAX_HEAD_BYTES:
        raise HeadTooLargeError(f"expected a request head of at most {MAX_HEAD_BYTES} bytes, found {size}")
    if declared > max_body:
        raise BodyTooLargeError(
            f"expected a body of at most {max_body} bytes, found Content-Length {declared}"
        )
    return None if chunked else declared


def check_media_type(scope: MutableMapping[str, Any], declared: int | None) -> None:
    """Refuse an API request whose body is declared as something other than JSON.

    Args:
        scope: the ASGI HTTP scope.
        declared: what :func:`check_head` returned (0: no body, so nothing to check).

    Raises:
        MediaTypeError: a ``Content-Type`` field whose media type is not
            ``application/json`` (its parameters, such as ``charset``, aside).
    """
    if declared == 0:
        return
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind = value.partition(b";")[0].strip().lower()
            if kind != b"application/json":
                raise MediaTypeError(
                    f"expected a JSON body (Content-Type: application/json), found {value[:60]!r}"
                )


class BoundedBody:
    """The request body behind an ASGI ``receive``, refused once over its limit.

    Use :meth:`receive` in place of the server's (FastAPI reads through it) or
    :meth:`read` for the whole body. :attr:`complete` says whether the body has been
    read to its end, which decides whether a response must close the connection.
    """

    __slots__ = ("_limit", "_receive", "complete", "received")

    def __init__(self, receive: Receive, declared: int | None, *, limit: int = MAX_BODY) -> None:
        """Args:
        receive: the server's ASGI ``receive``.
        declared: what :func:`check_head` returned (0: no body; ``None``: chunked).
        limit: the most bytes accepted.
        """
        self._receive = receive
        self._limit = limit
        self.received = 0
        self.complete = declared == 0

    async def receive(self) -> Message:
        """The next ASGI message, counted.

        Raises:
            BodyTooLargeError: more than the limit has arrived.
        """
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self._limit:
                raise BodyTooLargeError(f"expected a body of at most {self._limit} bytes")
            if not message.get("more_body", False):
                self.complete = True
        elif message["type"] == "http.disconnect":
            self.complete = True  # nothing more will arrive
        return message

    async def read(self) -> bytes | None:
        """The whole body, or ``None`` if the client went away first.

        Raises:
            BodyTooLargeError: more than the limit has arrived.
        """
        chunks: list[bytes] = []
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def closing(self, send: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
        """``send``, adding ``Connection: close`` to a response that starts before the
        body was read to its end (so that the server stops reading it)."""

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not self.complete:
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        return send_closing


# A JSON string, escapes included (Friedl's unrolled loop: linear, no backtracking).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _members(value: dict[str, Any] | list[Any]) -> int:
    """How many object members ``value`` holds, at any depth (at most
    :data:`~proctor.canonical.MAX_DEPTH` levels, checked by ``loads``)."""
    count = len(value) if isinstance(value, dict) else 0
    for item in value.values() if isinstance(value, dict) else value:
        if isinstance(item, dict | list):
            count += _members(item)
    return count


def parse_json(raw: bytes) -> Any:
    """Parse a request body: canonical-subset JSON with no duplicate member names.

    Outside strings a colon only ever separates a member's name from its value, so
    the text names as many members as it has colons outside strings; a parser keeps one
    member per name, so fewer members than colons means a name was repeated.

    Raises:
        CanonicalizationError: not JSON, outside the canonical subset, or an object
            with a member name given twice.
    """
    value = loads(raw)
    if isinstance(value, dict | list):
        kept = _members(value)
        # Every colon outside strings names a member; with no more colons than members
        # in the whole text, none can be a repeat (and the string scan is skipped).
        if raw.count(b":") == kept:
            return value
        named = _STRING.sub(b"", raw).count(b":")
        if named != kept:
            raise CanonicalizationError(
                f"expected unique member names in every object (RFC 7493 §2.3), found {named - kept} repeated"
            )
    return value
