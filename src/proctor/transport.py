"""The two ways :class:`proctor.client.GovernorClient` carries a request (ADR 0023).

``_Plain`` speaks HTTP/1.1 itself with ``http.client`` to an ``http://`` governor that no
proxy stands in front of: a pool of kept-alive connections that any thread takes from,
no import of httpx. ``_Httpx`` is httpx's client, for ``https://`` governors (its
certificate checks, ``SSL_CERT_FILE``) and governors behind a proxy. Both give an
:class:`Answer` read whole, or a :class:`Streamed` answer read line by line; what fails
to carry a request raises ``OSError`` or ``http.client.HTTPException``, which the client
turns into ``GovernorError`` (status 0).

It imports nothing of proctor: it sits under every layer that talks to a governor.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, overload
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

__all__ = [
    "KEEPALIVE_S",
    "MAX_LINE",
    "Answer",
    "Sent",
    "Streamed",
    "Transport",
    "httpx_limits",
    "limited_lines",
    "plain_http",
    "tls_for",
    "transport_for",
]

KEEPALIVE_S = 3.0
"""An idle connection is let go after 3 s, before the governor closes it (uvicorn's
keep-alive timeout, 5 s): with both at 5 s, a request sent as the server closed the
connection was lost ("Server disconnected without sending a response", found by
tests/conformance/test_soak.py), and a signed request is never sent again on its own."""
MAX_LINE = 1 << 20
"""The longest line of a streamed answer read (an event is a few hundred bytes)."""
_MAX_IDLE = 20  # idle connections kept per client (httpx's default keep-alive pool)


def httpx_limits() -> httpx.Limits:
    import httpx  # noqa: PLC0415 - loaded only by the clients that use it

    return httpx.Limits(
        max_connections=100, max_keepalive_connections=_MAX_IDLE, keepalive_expiry=KEEPALIVE_S
    )


def tls_for(url: str) -> ssl.SSLContext | bool:
    """What verifies the governor's certificate: httpx's default (the CA bundle) for an
    ``https://`` governor. A client of an ``http://`` governor never makes a TLS
    connection (it sends every request to that URL and follows no redirect), so loading
    the bundle, a fifth of ``proctor run``'s start, is skipped: it gets a context that
    trusts no certificate and would refuse any TLS peer, were one ever asked."""
    if url.lower().startswith("https://"):
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies hostnames, trusts no CA: fails closed


def plain_http(url: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether :class:`GovernorClient` talks to ``url`` itself (``http.client``, no
    TLS, no proxy) rather than through httpx: an ``http://`` URL whose host no proxy
    variable (``HTTP_PROXY``, ``ALL_PROXY``, their lower-case forms, less ``NO_PROXY``)
    sends through a proxy. An ``https://`` governor, or one behind a proxy, keeps
    httpx's certificate checks and proxy support exactly as before."""
    split = urlsplit(url)
    if split.scheme.lower() != "http" or not split.hostname:
        return False
    env = os.environ if environ is None else environ
    proxies = {
        k.lower()[: -len("_proxy")]: v
        for k, v in env.items()
        if k.lower().endswith("_proxy") and v and k.lower() != "no_proxy"
    }
    if not (proxies.get("http") or proxies.get("all")):
        return True
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed
    return bool(no_proxy) and bool(bypass(split.hostname, {"no": no_proxy}))


class Sent:
    """The headers of the request an :class:`Answer` answers, looked up by any case."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = _Headers(headers)


class _Headers:
    def __init__(self, headers: Mapping[str, str]) -> None:
        self._items = {k.lower(): v for k, v in headers.items()}

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        return self._items.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items


class Answer:
    """A governor's answer, read whole: what :meth:`GovernorClient.call` returns.

    The attributes the callers read of an ``httpx.Response`` (``status_code``,
    ``reason_phrase``, ``headers``, ``content``, ``text``, ``json()``, and the sent
    request's ``request.headers``), whichever transport carried it.
    """

    def __init__(
        self, status: int, reason: str, headers: Mapping[str, str], content: bytes, sent: Mapping[str, str]
    ) -> None:
        self.status_code = status
        self.reason_phrase = reason
        self.headers = _Headers(headers)
        self.content = content
        self.request = Sent(sent)

    @property
    def text(self) -> str:
        """The content as text (the governor answers UTF-8)."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The content as JSON.

        Raises:
            ValueError: it is not JSON.
        """
        return json.loads(self.content)  # as httpx's: any JSON number, however large


class Streamed(Protocol):
    """An answer read as it arrives (``GET /v1/stream``)."""

    socket: socket.socket | None
    """Its connection's socket: shutting it down wakes a thread blocked reading it."""

    def iter_lines(self) -> Iterator[str]:
        """The answer's lines, without their ends, as they arrive."""
        ...


class _Plain:
    """HTTP/1.1 to one ``http://`` governor with ``http.client``: a pool of kept-alive
    connections (each let go after :data:`KEEPALIVE_S` idle), any thread. About a third
    of httpx's CPU per request, and no import of it at ``proctor run``'s start."""

    def __init__(self, url: str) -> None:
        split = urlsplit(url)
        self._host = split.hostname or ""
        self._port = split.port or 80
        self._prefix = split.path.rstrip("/")  # a governor under a path (a proxy's), as httpx's base URL
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()
        self.keepalive_expiry = KEEPALIVE_S

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        """An idle connection still open at both ends, or a new one. One the server
        closed meanwhile (restarted, or its own keep-alive ended) reads as readable at
        once (its end of file): it is closed, not sent on, as httpcore does."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, since = self._idle.pop()
            if now - since < self.keepalive_expiry and conn.sock is not None and not _readable(conn.sock):
                conn.sock.settimeout(timeout)
                conn.timeout = timeout
                return conn
            conn.close()
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _keep(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < _MAX_IDLE:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def request(
        self,
        method: str,
        target: str,
        data: bytes,
        headers: dict[str, str],
        timeout: float,
        *,
        on_sent: Callable[[], object] | None = None,
    ) -> Answer:
        conn = self._connection(timeout)
        try:
            body = data if data or method != "GET" else None
            conn.request(method, self._prefix + target, body=body, headers=headers)
            if on_sent is not None:
                on_sent()  # the request is on the socket: the caller may work while it is answered
            response = conn.getresponse()
            content = response.read()
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._keep(conn)
        return _answer(response, content, headers)

    @contextmanager
    def stream(
        self, target: str, headers: dict[str, str], timeout: float, read: float
    ) -> Iterator[tuple[Answer | None, Streamed]]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            conn.request("GET", self._prefix + target, headers=headers)
            # Taken now: an answer with "Connection: close" takes the socket off ``conn``.
            sock = conn.sock
            response = conn.getresponse()
            if response.status >= 400:
                yield _answer(response, response.read(), headers), _NoLines()
                return
            if sock is not None:
                sock.settimeout(read)
            yield None, _PlainLines(response, sock)
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()


def _answer(response: http.client.HTTPResponse, content: bytes, sent: Mapping[str, str]) -> Answer:
    return Answer(response.status, response.reason, dict(response.getheaders()), content, sent)


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: its end of file (the server
    closed it) or bytes no request asked for. Either way it is not used again."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _NoLines:
    socket: socket.socket | None = None

    def iter_lines(self) -> Iterator[str]:
        return iter(())


class _PlainLines:
    def __init__(self, response: http.client.HTTPResponse, sock: socket.socket | None) -> None:
        self._response = response
        self.socket = sock

    def iter_lines(self) -> Iterator[str]:
        """Lines as they arrive.

        Raises:
            ValueError: a line longer than :data:`MAX_LINE` (never split into two).
        """
        while line := self._response.readline(MAX_LINE + 1):
            if len(line) > MAX_LINE:
                raise ValueError(f"expected stream lines of at most {MAX_LINE} bytes, found a longer one")
            yield line.decode("utf-8", "replace").rstrip("\r\n")


class _Httpx:
    """The same through httpx: ``https://`` governors (httpx's certificate checks,
    ``SSL_CERT_FILE``) and governors reached through a proxy."""

    def __init__(self, url: str, timeout: float) -> None:
        import httpx  # noqa: PLC0415 - loaded only when this transport is used

        self._httpx = httpx
        self.http = httpx.Client(base_url=url, timeout=timeout, limits=httpx_limits(), verify=tls_for(url))
        self.keepalive_expiry = KEEPALIVE_S

    def request(
        self,
        method: str,
        target: str,
        data: bytes,
        headers: dict[str, str],
        timeout: float,
        *,
        on_sent: Callable[[], object] | None = None,
    ) -> Answer:
        if on_sent is not None:
            on_sent()  # httpx does not say when it has sent: said before, no head start taken
        try:
            r = self.http.request(method, target, content=data, headers=headers, timeout=timeout)
        except self._httpx.HTTPError as e:
            raise OSError(str(e)) from e
        return Answer(r.status_code, r.reason_phrase, dict(r.headers), r.content, headers)

    @contextmanager
    def stream(
        self, target: str, headers: dict[str, str], timeout: float, read: float
    ) -> Iterator[tuple[Answer | None, Streamed]]:
        httpx = self._httpx
        try:
            with self.http.stream(  # uncompressed: a compressed line has no bound on its size
                "GET",
                target,
                headers={**headers, "accept-encoding": "identity"},
                timeout=httpx.Timeout(timeout, read=read),
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    yield (
                        Answer(r.status_code, r.reason_phrase, dict(r.headers), r.content, headers),
                        _NoLines(),
                    )
                    return
                yield None, _HttpxLines(r, httpx.HTTPError)
        except httpx.HTTPError as e:
            raise OSError(str(e)) from e

    def close(self) -> None:
        self.http.close()


class _HttpxLines:
    def __init__(self, response: httpx.Response, errors: type[Exception]) -> None:
        self._response = response
        self._errors = errors
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        self.socket = sock if isinstance(sock, socket.socket) else None

    def iter_lines(self) -> Iterator[str]:
        """Lines as they arrive, as the plain transport's: split at ``\\n``, their ends
        taken off, none longer than :data:`MAX_LINE` (httpx's own ``iter_lines`` has no
        limit: a proxy, or a governor behind one, could make the reader hold an endless
        line in memory).

        Raises:
            ValueError: a line longer than :data:`MAX_LINE` (never split into two), or an
                answer compressed although the request asked for none.
            OSError: the stream was cut.
        """
        encoding = self._response.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise ValueError(f"expected an uncompressed event stream, found content-encoding {encoding!r}")
        try:
            yield from limited_lines(self._response.iter_raw())
        except self._errors as e:  # httpx's read errors, as the plain transport's
            raise OSError(f"{type(e).__name__}: {e}") from e


def limited_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of a byte stream arriving in ``chunks``, each yielded once complete
    (the last one at the end, if the stream does not end with a line end), without
    its end (``\\n``, and any ``\\r`` before it), decoded as UTF-8.

    Raises:
        ValueError: a line longer than :data:`MAX_LINE` bytes, its end included; it is
            refused before more than that is held.
    """
    pending = bytearray()
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if len(pending) + end + 1 - start > MAX_LINE:
                raise ValueError(f"expected stream lines of at most {MAX_LINE} bytes, found a longer one")
            pending += chunk[start:end]
            yield pending.decode("utf-8", "replace").rstrip("\r\n")
            pending.clear()
            start = end + 1
        pending += chunk[start:]
        if len(pending) > MAX_LINE:
            raise ValueError(f"expected stream lines of at most {MAX_LINE} bytes, found a longer one")
    if pending:
        yield pending.decode("utf-8", "replace").rstrip("\r\n")


Transport = _Plain | _Httpx


def transport_for(url: str, timeout: float) -> Transport:
    """The transport for ``url`` (:func:`plain_http`)."""
    return _Plain(url) if plain_http(url) else _Httpx(url, timeout)
