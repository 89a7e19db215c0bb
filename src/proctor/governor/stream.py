"""Pushing trust changes to enforcers: a broadcaster the governor publishes to, and
the server-sent event stream (``GET /v1/stream``) that reads from it.

Each message is a JSON object with a ``seq`` — the log index of the event it reports
(a revocation, or a policy activation) — so a client resumes after a reconnect from
the last ``seq`` it saw (``Last-Event-ID`` or ``?since=``) and misses nothing: the
stream first replays what the state store recorded after that index, then follows
live messages. Publishing is thread-safe; subscribers are asyncio queues.

Access (enforced by the route, with the parts here):

- A stream is opened by an authenticated, active principal; it carries only what that
  principal may see (:class:`StreamAudience`): policy activations and policy
  revocations; revocations of itself, of its own executions and warrants, and of the
  ancestors of the warrant of an execution of its own that it names (``?execution=``).
  An admin sees everything. A stream that names an execution carries no other
  execution's revocation (:meth:`StreamAudience.visible`).
- Open streams are counted per principal and in total (:class:`StreamSlots`), so that
  streams can never take the connections that authorize, renew and revoke need.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncGenerator, Callable, Collection
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from proctor.errors import PrincipalError, StreamLimitError  # StreamLimitError: re-exported here
from proctor.governor.model import RequestShapeError

if TYPE_CHECKING:
    from proctor.store.state import PrincipalRecord, StateStore

__all__ = [
    "DEFAULT_MAX_STREAMS",
    "DEFAULT_MAX_STREAMS_PER_PRINCIPAL",
    "MAX_SEQ",
    "Broadcaster",
    "EventStreamResponse",
    "EventStreams",
    "StreamAudience",
    "StreamLimitError",
    "StreamSlots",
    "StreamSource",
    "early_revocation",
    "sse_stream",
]

Message = dict[str, Any]
DEFAULT_MAX_STREAMS = 1024
"""Event streams open at once, by default (``proctor serve`` lowers it to half of the
connections its file descriptors allow)."""
DEFAULT_MAX_STREAMS_PER_PRINCIPAL = 64
"""Event streams one principal may hold open, by default (one per running execution)."""
MAX_SEQ = (1 << 62) - 1
"""The largest ``since`` accepted (a log index; SQLite integers are 64-bit)."""
_EVENT_ID = re.compile(r"-1|0|[1-9][0-9]{0,17}")


def early_revocation(kind: str, target: str) -> Message:
    """The message of a revocation not yet recorded (ADR 0021): ``seq`` -1, always sent;
    its recorded copy, with its log index, follows."""
    return {"type": "revocation", "seq": -1, "kind": kind, "target": target, "recorded": False}


class Broadcaster:
    """Fan-out of trust-change messages to every connected stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (its loop, its queue, the id of the thread running that loop, the execution it names)
        self._subscribers: list[
            tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]], int, str]
        ] = []

    def publish(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every subscriber (callable from any thread).

        Messages reach each subscriber through its loop, in the order published; but an
        unrecorded revocation (``seq`` -1: always sent, so its place among the others
        does not matter) published on a subscriber's own loop thread goes into its
        queue at once: a revoked execution runs on for every loop iteration in between.
        A subscriber that names an execution gets no other execution's revocation (it
        would only wake to drop it, before the one that matters: ADR 0021, decision 3).
        """
        direct = threading.get_ident() if message.get("seq") == -1 else None
        named = (
            message.get("target")
            if message.get("type") == "revocation" and message.get("kind") == "execution"
            else None
        )
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue, thread, execution in subscribers:
            if execution and named is not None and named != execution:
                continue
            if thread == direct:
                queue.put_nowait(message)
                continue
            try:
                loop.call_soon_threadsafe(queue.put_nowait, message)
            except RuntimeError:  # the loop closed; the subscriber is gone
                self.unsubscribe(queue)

    def subscribe(self, execution: str = "") -> asyncio.Queue[dict[str, Any]]:
        """A queue that receives every message published from now on; naming an
        ``execution``, of execution revocations only that execution's."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        with self._lock:
            self._subscribers.append((asyncio.get_running_loop(), queue, threading.get_ident(), execution))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop delivering to ``queue``."""
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s[1] is not queue]


class StreamSlots:
    """How many event streams are open, per principal and in total; a new one is
    admitted only under both caps."""

    def __init__(
        self, *, total: int = DEFAULT_MAX_STREAMS, per_principal: int = DEFAULT_MAX_STREAMS_PER_PRINCIPAL
    ) -> None:
        """Args:
        total: the most streams open at once.
        per_principal: the most streams one principal may hold open.

        Raises:
            ValueError: a cap below 1.
        """
        if type(total) is not int or type(per_principal) is not int or total < 1 or per_principal < 1:
            raise ValueError(
                f"expected stream caps of at least 1, found total={total!r}, per_principal={per_principal!r}"
            )
        self.total = total
        self.per_principal = per_principal
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._count = 0

    def acquire(self, principal: str) -> str | None:
        """Take a slot for ``principal``; ``None`` if taken, else why not."""
        with self._lock:
            held = self._open.get(principal, 0)
            if held >= self.per_principal:
                return f"{principal!r} already holds {held} open streams (at most {self.per_principal})"
            if self._count >= self.total:
                return f"{self._count} streams are open (at most {self.total})"
            self._open[principal] = held + 1
            self._count += 1
            return None

    def release(self, principal: str) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        with self._lock:
            held = self._open.get(principal, 0)
            if held <= 1:
                self._open.pop(principal, None)
            else:
                self._open[principal] = held - 1
            if held:
                self._count -= 1

    def open(self, principal: str | None = None) -> int:
        """How many streams are open (of ``principal``, or in all)."""
        with self._lock:
            return self._count if principal is None else self._open.get(principal, 0)


class StreamAudience:
    """Which trust-change messages a principal may see on its stream.

    Who owns a warrant or an execution never changes once recorded, so owners are
    cached (bounded; an unknown target is not cached: it may be recorded later).
    """

    _CACHE = 4096

    def __init__(self, owner: Callable[[str, str], str | None]) -> None:
        """Args:
        owner: ``(kind, target)`` → the principal an ``execution`` or ``warrant``
            belongs to, or ``None`` if unknown.
        """
        self._owner = owner
        self._owners: dict[tuple[str, str], str] = {}

    def owner(self, kind: str, target: str) -> str | None:
        """The principal the execution or warrant ``target`` belongs to."""
        key = (kind, target)
        hit = self._owners.get(key)
        if hit is not None:
            return hit
        found = self._owner(kind, target)
        if found is not None:
            if len(self._owners) >= self._CACHE:
                self._owners.clear()
            self._owners[key] = found
        return found

    def visible(
        self,
        message: Message,
        *,
        caller: str,
        admin: bool,
        chain: Collection[str] = (),
        execution: str = "",
    ) -> bool:
        """Whether ``caller`` may see ``message``.

        Args:
            message: a stream message (``type`` ``policy`` or ``revocation``).
            caller: the stream's principal.
            admin: whether the caller is an active admin (sees everything).
            chain: warrant ids whose revocations the caller follows besides its own
                (the ancestors of its execution's warrant).
            execution: the execution the stream follows (``?execution=``; ``""``: none).
                Of execution revocations, such a stream carries only that execution's,
                admin or not: revoking one execution never concerns another (a renewal
                re-checks only its own, rule 1 of :func:`proctor.verification.recheck.
                recheck`), and the enforcer of each of a principal's other executions
                would otherwise wake, and ask the governor again, at every revocation of
                a sibling (the revoked one's kill competing with them for the CPU).
        """
        kind, target = message.get("kind"), message.get("target")
        if execution and message.get("type") == "revocation" and kind == "execution":
            return target == execution
        if admin or message.get("type") == "policy":
            return True
        if message.get("type") != "revocation":
            return False
        if type(target) is not str:
            return False
        if kind == "policy":
            return True
        if kind == "principal":
            return target == caller
        if kind == "warrant" and target in chain:
            return True
        if kind in ("warrant", "execution"):
            return self.owner(kind, target) == caller
        return False


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
    visible: Callable[[Message], bool] | None = None,
    alive: Callable[[], bool] | None = None,
    execution: str = "",
) -> AsyncGenerator[bytes, None]:
    """Server-sent events: the backlog after ``since``, then live messages.

    Args:
        broadcaster: where live messages come from.
        backlog: returns the recorded messages with ``seq > since``, in order (run in a
            worker thread: it reads the store).
        since: the last sequence number the client saw (-1: everything).
        keepalive: seconds between comment lines that keep idle connections open.
        visible: which messages this stream carries (default: all).
        alive: checked before each keep-alive; the stream ends once it says ``False``
            (its principal was suspended, say).
        execution: the execution the stream names (``?execution=``): other executions'
            revocations are not even queued for it (``visible`` refuses them too).
    """
    queue = broadcaster.subscribe(execution)
    try:
        last = since

        # Subscribe first, then read the backlog: nothing published in between is lost
        # (duplicates are dropped by sequence number below).
        def replay() -> tuple[list[Message], int]:
            recorded = backlog(since)
            newest = max((int(m["seq"]) for m in recorded), default=since)
            return [m for m in recorded if visible is None or visible(m)], newest

        shown, newest = await asyncio.to_thread(replay)
        last = max(last, newest)
        for message in shown:
            yield _frame(message)
        yield b": live\n\n"
        while True:
            try:
                async with asyncio.timeout(keepalive):  # no task per wait, as wait_for makes
                    message = await queue.get()
            except TimeoutError:
                if alive is not None and not alive():
                    return
                yield b": keepalive\n\n"
                continue
            seq = int(message["seq"])
            if seq >= 0:  # a recorded change, in log order: each once
                if seq <= last:
                    continue
                last = seq
            # seq -1: a revocation pushed before the log recorded it (its recorded copy
            # follows, unless the log cannot record it: applied anyway): always sent
            if visible is None or visible(message):
                yield _frame(message)
    finally:
        broadcaster.unsubscribe(queue)


class EventStreamResponse(StreamingResponse):
    """A server-sent event stream that gives its slot back however it ends."""

    media_type = "text/event-stream"  # what /openapi.json documents for GET /v1/stream

    def __init__(self, events: AsyncGenerator[bytes, None], release: Callable[[], None]) -> None:
        super().__init__(
            events,
            media_type=self.media_type,
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )
        self._events = events
        self._release: Callable[[], None] | None = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()
            await self._events.aclose()


class StreamSource(Protocol):
    """What :class:`EventStreams` uses of the governor (a protocol, so that this module,
    which the service imports, does not import the service: ADR 0012)."""

    @property
    def state(self) -> StateStore:
        """The governance state tables (owners of executions and warrants)."""

    @property
    def broadcaster(self) -> Broadcaster:
        """Where live trust changes are published."""

    def principal(self, name: str) -> PrincipalRecord | None:
        """A principal as governance sees it (revoked counts as suspended)."""

    def is_admin(self, principal: str) -> bool:
        """Whether ``principal`` is an active admin."""

    def trust_changes(self, since: int) -> list[dict[str, Any]]:
        """The recorded trust changes after log index ``since``, in log order."""


class EventStreams:
    """``GET /v1/stream`` of one governor: admission, audience, the stream itself."""

    def __init__(self, governor: StreamSource, slots: StreamSlots, *, keepalive: float = 5.0) -> None:
        """Args:
        governor: whose trust changes are streamed.
        slots: the caps on open streams.
        keepalive: seconds between keep-alive comments (and liveness checks).
        """
        self.governor = governor
        self.slots = slots
        self.keepalive = keepalive
        self.audience = StreamAudience(self._owner)

    def _owner(self, kind: str, target: str) -> str | None:
        state = self.governor.state
        record = state.execution(target) if kind == "execution" else state.warrant(target)
        return None if record is None else str(record["principal"])

    def _active(self, principal: str) -> bool:
        record = self.governor.principal(principal)
        return record is not None and record.status == "active"

    def open(
        self, principal: str, *, since: int, last_event_id: str | None, execution: str
    ) -> EventStreamResponse:
        """The stream of an authenticated ``principal``.

        Args:
            principal: who signed the request.
            since: the last ``seq`` the client saw (-1: everything).
            last_event_id: the ``Last-Event-ID`` header, if any (the larger one wins;
                one that is not a sequence number is ignored, as SSE clients resend it).
            execution: an execution of the caller whose warrant chain it follows too
                (``""``: none).

        Raises:
            RequestShapeError: ``since`` outside ``[-1, MAX_SEQ]`` (422).
            PrincipalError: the caller is not active, or ``execution`` is not its own
                (403).
            StreamLimitError: the caller's or the server's streams are all taken (429).
        """
        if not -1 <= since <= MAX_SEQ:
            raise RequestShapeError(f"since: expected a log index in [-1, {MAX_SEQ}], found {since}")
        if last_event_id is not None and _EVENT_ID.fullmatch(last_event_id.strip()):
            since = max(since, int(last_event_id.strip()))
        if not self._active(principal):
            raise PrincipalError(f"{principal!r} is not an active principal")
        admin = self.governor.is_admin(principal)
        chain: frozenset[str] = frozenset()
        if execution:
            record = self.governor.state.execution(execution)
            if record is None or (record["principal"] != principal and not admin):
                raise PrincipalError(f"no execution {execution!r} of {principal!r}")
            chain = frozenset(self.governor.state.warrant_chain(str(record["warrant"])))
        refused = self.slots.acquire(principal)
        if refused is not None:
            raise StreamLimitError(f"no event stream is free: {refused}")

        def visible(message: Message) -> bool:
            return self.audience.visible(
                message, caller=principal, admin=admin, chain=chain, execution=execution
            )

        events = sse_stream(
            self.governor.broadcaster,
            self.governor.trust_changes,
            since=since,
            keepalive=self.keepalive,
            visible=visible,
            alive=lambda: self._active(principal),
            execution=execution,
        )
        return EventStreamResponse(events, lambda: self.slots.release(principal))
