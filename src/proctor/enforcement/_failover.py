"""Fail-over across the governors of one deployment (``proctor run --server A,B,...``).

The enforcer keeps one list of governor URLs and asks them through :class:`Governors`.
The rules, numbered as the code cites them:

1. Every governor is of one deployment. Once the enforcer trusts a warrant key (given
   with ``--warrant-key``, or the one that verified the warrant), a governor is asked
   nothing more before it presented that warrant key and the log key of the first
   governor that did, compared in constant time. One that presents other keys is
   *foreign*: it is never asked again, so a governor of another deployment cannot keep
   a lease alive nor be the one whose silence hides a revocation. (With one URL there
   is nothing to compare: it is asked as before, and no extra request is made.)
2. A governor that does not answer in time — refused, reset, timed out — or answers 429
   or 5xx (503: not ready, it lost its store or fell behind) is passed over for the
   next. Any other answer is the deployment's: a 403 or 404 to a renewal is acted upon,
   not asked again elsewhere.
3. Every attempt has its own timeout, and a call may carry a deadline (the lease's
   end): each attempt gets at most its share of the time left, so that the last
   governor still has time to answer before the lease ends; none starts after it.
4. An answer the caller does not accept (``accept`` raises
   :class:`~proctor.errors.VerificationError`: a lease answer that is not signed for
   this request, ADR 0017) is no answer: the next governor is asked, as in rule 2.
5. The governor that answered last is asked first. When it changes, event streams open
   on another governor are shut down, and :meth:`Governors.follow` reopens them on the
   new one from the last sequence number seen (``?since=``): a revocation recorded
   while the enforcer switched is replayed, not missed.

Safety never rests on this module: the watchdog kills the tree when no renewal
succeeded before the lease's end, whichever governors were tried.
"""

from __future__ import annotations

import base64
import hmac
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from proctor.authorization.keys import PrincipalKey
from proctor.client import Answer, GovernorClient, GovernorError, Streamed
from proctor.errors import VerificationError

__all__ = ["MIN_ATTEMPT_S", "STREAM_SILENCE_S", "Answered", "Governors", "governor_urls"]

MIN_ATTEMPT_S = 0.2
"""The shortest timeout an attempt gets while time is left (rule 3)."""
STREAM_SILENCE_S = 15.0
"""Seconds an event stream may stay silent before it is given up: three of the
governor's keep-alive periods (5 s). A governor that stops answering renewals is left
sooner (rule 5)."""
_PASS_OVER = frozenset({429})


def governor_urls(text: str | Sequence[str]) -> tuple[str, ...]:
    """The governor URLs of ``--server``: comma-separated, the option repeated, or both.

    Args:
        text: one string (``"http://a:8700,http://b:8700"``) or several.

    Returns:
        The URLs in order, without trailing slashes.

    Raises:
        ValueError: an empty entry, a URL that is not ``http(s)://host[:port]``, or one
            listed twice (says which).
    """
    parts = [text] if isinstance(text, str) else list(text)
    urls: list[str] = []
    for part in parts:
        for raw in part.split(","):
            url = raw.strip().rstrip("/")
            if not url:
                raise ValueError(f"--server: expected governor URLs separated by commas, found {part!r}")
            split = urlsplit(url)
            if split.scheme not in ("http", "https") or not split.hostname:
                raise ValueError(
                    f"--server: expected http://HOST[:PORT] or https://HOST[:PORT], found {raw!r}"
                )
            if url in urls:
                raise ValueError(f"--server: {url} is listed twice")
            urls.append(url)
    if not urls:
        raise ValueError("--server: expected at least one governor URL, found none")
    return tuple(urls)


@dataclass(frozen=True)
class Answered:
    """One governor's answer: the response, who gave it, when the request was sent."""

    response: Answer
    url: str
    sent: float
    """``time.monotonic()`` when the answered request was sent (lease rule 5)."""

    def json(self) -> Any:
        """The answer's JSON.

        Raises:
            ValueError: it is not JSON.
        """
        return self.response.json()


class Governors:
    """Signed calls to the first governor of one deployment that answers in time.

    Args:
        urls: the governors, in the order to ask them (:func:`governor_urls`).
        key: the principal key that signs requests.
        on_note: told, in words, when a governor is passed over or found foreign.
        timeout: seconds per attempt when the caller names none.
    """

    def __init__(
        self,
        urls: Sequence[str],
        key: PrincipalKey,
        *,
        on_note: Callable[[str], None] = lambda _: None,
        timeout: float = 10.0,
    ) -> None:
        """Open one client per governor (no connection yet)."""
        if not urls:
            raise ValueError("expected at least one governor URL, found none")
        self.urls = tuple(urls)
        self._clients = [GovernorClient(url, key, timeout=timeout) for url in self.urls]
        self._timeout = timeout
        self._note = on_note
        self._lock = threading.Lock()
        self._first = 0  # rule 5
        self._foreign: set[int] = set()
        self._checked: set[int] = set()
        self._warrant_key: bytes | None = None
        self._log_key: str | None = None
        self._streams: dict[int, tuple[int, socket.socket | None]] = {}

    def close(self) -> None:
        """Close every connection pool."""
        for client in self._clients:
            client.close()

    @property
    def current(self) -> str:
        """The URL asked first now."""
        with self._lock:
            return self.urls[self._first]

    # -- rule 1: one deployment ---------------------------------------------------

    def trust(self, warrant_key: bytes, *, deadline: float | None = None) -> None:
        """Hold every governor asked from now on to ``warrant_key`` (rule 1); the log key
        is taken from the first that presents it. Nothing to do with a single URL.

        Raises:
            GovernorError: no governor presented this warrant key and its log key in time.
        """
        if len(self.urls) == 1:
            return
        self._warrant_key = warrant_key
        self.request("GET", "/v1/warrant-key", signed=False, deadline=deadline)

    def _identify(self, i: int, timeout: float) -> bool:
        """Whether governor ``i`` is of the trusted deployment (rule 1); ``False`` marks
        it foreign. Raises :class:`GovernorError` when it does not answer (rule 2)."""
        if self._warrant_key is None or i in self._checked:
            return True
        client, started = self._clients[i], time.monotonic()
        try:
            text = client.call("GET", "/v1/warrant-key", signed=False, timeout=timeout).text.strip()
            left = max(timeout - (time.monotonic() - started), 0.05)
            log_key = client.call("GET", "/v1/log/key", signed=False, timeout=left).text.strip()
        except GovernorError as e:
            if _passed_over(e):
                raise
            return self._foreign_one(i, f"it refused to show its keys: HTTP {e.status}")
        try:
            presented = base64.b64decode(text, validate=True)
        except ValueError:
            presented = b""
        with self._lock:
            same = hmac.compare_digest(presented, self._warrant_key)
            if same and self._log_key is None:
                self._log_key = log_key
            if same and hmac.compare_digest(log_key.encode(), (self._log_key or "").encode()):
                self._checked.add(i)
                return True
        return self._foreign_one(i, f"its {'log' if same else 'warrant'} key differs")

    def _foreign_one(self, i: int, why: str) -> bool:
        with self._lock:
            self._foreign.add(i)
            if self._first == i:
                self._first = self._next_after(i)
        self._note(f"{self.urls[i]} is not a governor of this deployment ({why}); not asked again")
        return False

    # -- rules 2 and 3: fail-over with bounded attempts ----------------------------

    def request(
        self,
        method: str,
        target: str,
        body: Any = None,
        *,
        signed: bool = True,
        timeout: float | None = None,
        deadline: float | None = None,
        accept: Callable[[Answered], object] | None = None,
        on_sent: Callable[[], object] | None = None,
    ) -> Answered:
        """Ask the governors in turn until one answers (rules 2, 3, 4).

        Args:
            timeout: seconds per attempt (default: the client's).
            deadline: ``time.monotonic()`` after which no attempt starts nor lasts.
            accept: raises :class:`~proctor.errors.VerificationError` for an answer
                that is to count as none (rule 4).
            on_sent: called each time a request is on a governor's socket, before its
                answer is read (see :meth:`GovernorClient.call`).

        Returns:
            The first answer that is not a pass-over (rule 2).

        Raises:
            GovernorError: an answer that refuses (its status), or none in time (the
                last failure's status: 0 unreachable, 429 or 5xx), naming every governor
                asked.
        """
        cap = self._timeout if timeout is None else timeout
        order = self._order()
        if not order:
            raise GovernorError("no governor of this deployment is left in --server", status=0)
        failures: list[str] = []
        last: GovernorError | None = None
        for n, i in enumerate(order):
            attempt = _attempt_timeout(cap, deadline, time.monotonic(), len(order) - n)
            if attempt is None:
                break
            sent = time.monotonic()
            try:
                if not self._identify(i, attempt):
                    continue
                spent = time.monotonic() - sent
                response = self._clients[i].call(
                    method, target, body, signed=signed, timeout=max(attempt - spent, 0.05), on_sent=on_sent
                )
            except GovernorError as e:
                if not _passed_over(e):
                    self._answered(i, failures)
                    raise
                last = e
                failures.append(f"{self.urls[i]}: {e}")
                continue
            answered = Answered(response, self.urls[i], sent)
            if accept is not None:
                try:
                    accept(answered)
                except VerificationError as e:  # rule 4: no answer from this one
                    self._note(f"{self.urls[i]}: answer not accepted, asking the next governor: {e}")
                    last = GovernorError(f"answer not accepted: {e}", status=0)
                    failures.append(f"{self.urls[i]}: answer not accepted: {e}")
                    continue
            self._answered(i, failures)
            return answered
        if last is None:
            raise GovernorError("no governor of this deployment answered in time", status=0)
        raise GovernorError(
            "no governor answered in time (" + "; ".join(failures) + ")", status=last.status, body=last.body
        )

    def json(self, method: str, target: str, body: Any = None, **kw: Any) -> Any:
        """:meth:`request`, the answer's JSON only (``ValueError`` if it is not JSON)."""
        return self.request(method, target, body, **kw).json()

    def text(self, target: str) -> str:
        """A public plain-text read (the warrant key) through :meth:`request`."""
        return self.request("GET", target, signed=False).response.text

    def text_ahead(self, target: str) -> Callable[[], str]:
        """Start :meth:`text` in a thread now; the call returned waits for its text (or
        raises what it raised). ``proctor run`` reads the warrant key this way while it
        is being authorized, instead of after (ADR 0022)."""
        future: Future[str] = Future()

        def read() -> None:
            try:
                future.set_result(self.text(target))
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(e)

        threading.Thread(target=read, name="proctor-ahead", daemon=True).start()
        return future.result

    def _order(self) -> list[int]:
        with self._lock:
            count = len(self.urls)
            return [
                (self._first + k) % count
                for k in range(count)
                if (self._first + k) % count not in self._foreign
            ]

    def _next_after(self, i: int) -> int:
        count = len(self.urls)
        for k in range(1, count + 1):
            if (i + k) % count not in self._foreign:
                return (i + k) % count
        return i

    def _answered(self, i: int, failures: Sequence[str]) -> None:
        """Rule 5: ``i`` answered; ask it first from now on, and move the streams."""
        self._move(i, only_from=None, why="; ".join(failures) or "it answered")

    def passed_over(self, url: str, why: str) -> None:
        """Ask the governor after ``url`` first, if ``url`` is asked first now (its event
        stream failed, say)."""
        i = self.urls.index(url)
        self._move(self._next_after(i), only_from=i, why=why)

    def _move(self, i: int, *, only_from: int | None, why: str) -> None:
        with self._lock:
            before = self._first
            if only_from is not None and before != only_from:
                return
            self._first = i
            stale = [s for s in self._streams.values() if s[0] != i]
        if before != i:
            self._note(f"{self.urls[i]} asked first from now on ({self.urls[before]}: {why})")
        for _, sock in stale:
            _shut(sock)

    # -- rule 5: the event stream, on the governor asked first ----------------------

    @contextmanager
    def _stream(self, url: str, target: str, timeout: float) -> Iterator[Streamed]:
        i = self.urls.index(url)
        if not self._identify(i, timeout):
            raise GovernorError(f"{url} is not of this deployment", status=0)
        with self._clients[i].stream(target, timeout=timeout, read=STREAM_SILENCE_S) as r:
            token = id(r)
            with self._lock:
                self._streams[token] = (i, r.socket)
                moved = self._first != i
            try:
                if moved:  # the others moved on while this one opened
                    _shut(self._streams[token][1])
                yield r
            finally:
                with self._lock:
                    self._streams.pop(token, None)

    def follow(
        self,
        query: str,
        since: int,
        on_message: Callable[[dict[str, Any]], None],
        stop: threading.Event,
        *,
        timeout: float = 5.0,
    ) -> None:
        """Read ``GET /v1/stream?since=N&QUERY`` until ``stop`` is set, on the governor
        asked first, reopening it from the last ``seq`` seen whenever it ends or moves
        (rule 5).

        Args:
            query: more query parameters (``execution=ex_…``).
            since: the log index after which messages are wanted.
            on_message: called with each message, in order.
            stop: ends the loop.
            timeout: seconds to connect and be answered.
        """
        backoff, failures = 0.1, 0
        while not stop.is_set():
            url = self.current
            try:
                with self._stream(url, f"/v1/stream?since={since}&{query}", timeout) as response:
                    backoff, failures, data = 0.1, 0, []
                    for line in response.iter_lines():
                        if stop.is_set():
                            return
                        if line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line == "" and data:
                            message = orjson.loads("".join(data))
                            data = []
                            since = max(since, int(message.get("seq", since)))
                            on_message(message)
            except (GovernorError, ValueError, OSError) as e:  # refused or cut
                self.passed_over(url, f"event stream: {type(e).__name__}: {e}")
                failures += 1
                if failures >= len(self.urls):  # every governor tried: wait a little
                    stop.wait(backoff)
                    backoff, failures = min(backoff * 2, 2.0), 0


def _attempt_timeout(cap: float, deadline: float | None, now: float, left: int) -> float | None:
    """Rule 3: an attempt's timeout, or ``None`` when the deadline has passed."""
    if deadline is None:
        return cap
    remaining = deadline - now
    if remaining <= 0:
        return None
    return min(cap, remaining, max(remaining / max(left, 1), MIN_ATTEMPT_S))


def _passed_over(error: GovernorError) -> bool:
    """Rule 2: no answer in time, too busy, or not ready."""
    return error.status == 0 or error.status >= 500 or error.status in _PASS_OVER


def _shut(sock: socket.socket | None) -> None:
    """Wake a thread blocked reading ``sock`` (closing alone would not, on Linux)."""
    if sock is not None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
