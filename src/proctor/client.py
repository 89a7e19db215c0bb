"""A small client for the governor's HTTP API: signs every request with a principal key.

Used by the enforcer (``proctor run``), the CLI (``proctor authorize``, ``proctor
receipt``, admin commands with ``--server``) and the SDK (:mod:`proctor.integrations.sdk`,
which also uses :class:`AsyncGovernorClient`). Errors come back as
:class:`GovernorError` with the HTTP status and the server's JSON error body.

It sits at the top of the package, outside :mod:`proctor.governor`, and imports no
governor code: an enforcer talks to the governor only over HTTP, may run on another
host, and must not load the governor, Cedar or the web framework to start a command
(``docs/architecture.md``, "What each package may import";
``tests/unit/test_import_boundaries.py`` holds it to that). The requests are carried by
:mod:`proctor.transport`: ``http.client`` for a plain-HTTP governor, httpx otherwise
(ADR 0023).
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.errors import GovernorError  # defined there, re-exported here
from proctor.transport import Answer, Streamed, Transport, httpx_limits, plain_http, tls_for, transport_for

if TYPE_CHECKING:
    import httpx

__all__ = [
    "GovernorError",
    "GovernorClient",
    "AsyncGovernorClient",
    "Answer",
    "Streamed",
    "plain_http",
    "raise_for_answer",
]


class GovernorClient:
    """Signed calls to one governor."""

    def __init__(self, url: str, key: PrincipalKey | None, *, timeout: float = 10.0) -> None:
        """Args:
        url: the governor's base URL, e.g. ``http://127.0.0.1:8700``.
        key: the principal key that signs requests (``None``: public reads only).
        timeout: seconds per request.
        """
        self._key = key
        self._url = url.rstrip("/")
        self._timeout = timeout
        self._transport: Transport = transport_for(self._url, timeout)

    @property
    def keepalive_expiry(self) -> float:
        """Seconds an idle connection is kept (:data:`KEEPALIVE_S`)."""
        return self._transport.keepalive_expiry

    def close(self) -> None:
        """Close the connection pool."""
        self._transport.close()

    def __enter__(self) -> GovernorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self, method: str, target: str, data: bytes, *, json: bool, signed: bool) -> dict[str, str]:
        headers = {"content-type": "application/json"} if json else {}
        if signed:
            if self._key is None:
                raise GovernorError("this call must be signed, and no key was given", status=0)
            headers.update(sign_request(method, target, data, self._key, now=int(time.time())))
        return headers

    def _unreachable(self, e: BaseException) -> GovernorError:
        return GovernorError(f"cannot reach the governor at {self._url}: {e}", status=0)

    def call(
        self,
        method: str,
        target: str,
        body: Any = None,
        *,
        signed: bool = True,
        timeout: float | None = None,
        on_sent: Callable[[], object] | None = None,
    ) -> Answer:
        """Send one request; raise :class:`GovernorError` on a non-2xx answer.

        Args:
            timeout: seconds for this request (default: the client's).
            on_sent: called once the request is on the socket, before its answer is
                read (through httpx, which does not say when, before it is sent).
        """
        data = b"" if body is None else orjson.dumps(body)
        headers = self._headers(method, target, data, json=body is not None, signed=signed)
        try:
            response = self._transport.request(
                method, target, data, headers, self._timeout if timeout is None else timeout, on_sent=on_sent
            )
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(e) from e
        raise_for_answer(response)
        return response

    @contextmanager
    def stream(
        self, target: str, *, timeout: float | None = None, read: float | None = None
    ) -> Iterator[Streamed]:
        """A signed ``GET`` whose answer is read as it arrives (``GET /v1/stream``).

        Args:
            timeout: seconds to connect and be answered (default: the client's).
            read: seconds the answer may stay silent once it began (default: ``timeout``).

        Raises:
            GovernorError: the governor could not be reached (status 0) or refused
                (its status: 401 unsigned, 403 not active, 429 no stream free).
        """
        headers = self._headers("GET", target, b"", json=False, signed=True)
        wait = self._timeout if timeout is None else timeout
        try:
            with self._transport.stream(target, headers, wait, wait if read is None else read) as (
                refused,
                lines,
            ):
                if refused is not None:
                    raise_for_answer(refused)
                yield lines
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(e) from e

    def json(
        self, method: str, target: str, body: Any = None, *, signed: bool = True, timeout: float | None = None
    ) -> Any:
        """Send one request and parse the JSON answer."""
        return self.call(method, target, body, signed=signed, timeout=timeout).json()

    def authorize(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/authorize``."""
        result: dict[str, Any] = self.json("POST", "/v1/authorize", request)
        return result

    def text(self, target: str) -> str:
        """A public plain-text read (log key, checkpoint, warrant key)."""
        return self.call("GET", target, signed=False).text


class AsyncGovernorClient:
    """Signed calls to one governor from an event loop (``httpx.AsyncClient``); the
    same requests, signatures and errors as :class:`GovernorClient`."""

    def __init__(self, url: str, key: PrincipalKey | None, *, timeout: float = 10.0) -> None:
        """Args:
        url: the governor's base URL, e.g. ``http://127.0.0.1:8700``.
        key: the principal key that signs requests (``None``: public reads only).
        timeout: seconds per request.
        """
        import httpx  # noqa: PLC0415 - the synchronous client does not need it

        self._key = key
        self._httpx = httpx
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"), timeout=timeout, limits=httpx_limits(), verify=tls_for(url)
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGovernorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def call(
        self, method: str, target: str, body: Any = None, *, signed: bool = True
    ) -> httpx.Response:
        """Send one request; raise :class:`GovernorError` on a non-2xx answer or when the
        governor cannot be reached (status 0)."""
        data = b"" if body is None else orjson.dumps(body)
        headers = {"content-type": "application/json"} if body is not None else {}
        if signed:
            if self._key is None:
                raise GovernorError("this call must be signed, and no key was given", status=0)
            headers.update(sign_request(method, target, data, self._key, now=int(time.time())))
        try:
            response = await self._http.request(method, target, content=data, headers=headers)
        except self._httpx.HTTPError as e:
            raise GovernorError(f"cannot reach the governor at {self._http.base_url}: {e}", status=0) from e
        raise_for_answer(response)
        return response

    async def json(self, method: str, target: str, body: Any = None, *, signed: bool = True) -> Any:
        """Send one request and parse the JSON answer."""
        return (await self.call(method, target, body, signed=signed)).json()

    async def text(self, target: str) -> str:
        """A public plain-text read (log key, checkpoint, warrant key)."""
        return (await self.call("GET", target, signed=False)).text


def _error_body(answer: Any) -> Any:
    """The error object of a governor's JSON error answer.

    The governor answers ``{"error": code, "message": text, ...}`` with the same object
    repeated under ``"detail"`` (ADR 0011); older governors sent some refusals only as
    ``{"detail": {...}}``, and FastAPI's own as ``{"detail": "text"}``. All three give
    the error object (or the text) here, without the ``detail`` copy.
    """
    if isinstance(answer, dict):
        if isinstance(answer.get("error"), str):
            return {k: v for k, v in answer.items() if k != "detail"}
        if "detail" in answer:
            return answer["detail"]
    return answer


class _Answered(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def reason_phrase(self) -> str: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


def raise_for_answer(response: _Answered) -> None:
    """Raise :class:`GovernorError` for a non-2xx answer, with the server's message.

    Raises:
        GovernorError: the answer's status is 400 or more.
    """
    if response.status_code < 400:
        return
    try:
        answer: Any = response.json()
    except ValueError:
        answer = {"message": response.text[:500]}
    body = _error_body(answer)
    status = response.status_code
    message = body.get("message") if isinstance(body, dict) else body if isinstance(body, str) else None
    # The server's own words; the status stays an attribute (exit codes use it), not text.
    text = str(message) if message else f"the governor answered HTTP {status} ({response.reason_phrase})"
    raise GovernorError(text, status=status, body=body)


_raise_for = raise_for_answer  # the name tests/integration/test_http_errors.py imports
