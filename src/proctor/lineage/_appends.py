"""What an append is while it waits for the log writer: :class:`Append`, the
:class:`Deferred` event whose slot is reserved before its content exists, and the
shapes of what callers pass (:data:`EventLike`, :data:`Chain`, :data:`Later`,
:data:`Side`). Re-exported by :mod:`proctor.lineage.log`."""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from proctor.errors import LogAppendError, ProctorError
from proctor.lineage.events import Event

__all__ = ["STOP", "Append", "Chain", "Deferred", "EventLike", "Later", "Notify", "Side", "b64", "coerce"]

EventLike = Event | Mapping[str, Any] | bytes
"""What :meth:`Log.append` accepts: an :class:`Event`, an event object, or JSON bytes."""

Chain = Callable[[int, bytes], "EventLike | None"]
"""Builds the event that follows another, given that event's index and leaf hash."""

Later = Callable[[int, bytes, "Deferred"], "EventLike"]
"""Reserves the slot after an event: given its index, leaf hash and the handle to fill
later, returns the fallback event for that slot."""


def b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def coerce(event: EventLike) -> Event:
    if isinstance(event, Event):
        return event
    if isinstance(event, bytes | bytearray | memoryview):
        return Event.from_bytes(bytes(event))
    return Event.from_dict(event)


Side = Callable[[Any, int], None]
"""A write to run inside a commit's transaction, given the store's connection and the
index of its append's first event."""


class Deferred:
    """An event whose slot in the log is reserved now and whose content comes later.

    :meth:`Log.submit` with ``later=`` reserves the index right after its events; the
    caller (any thread) calls :meth:`fill` with the event and its side writes. The
    writer waits for it until ``Log.deferred_timeout`` seconds after the slot was
    reserved (not after the writer reached it: slots reserved together expire together,
    so a stalled producer holds the log back once, never once per slot); if it is not
    filled in time, or is filled with ``None`` or an unacceptable event, the *fallback*
    event given at submit takes the slot instead (so the sequence never has a hole).
    """

    __slots__ = ("_filled", "error", "event", "reserved", "side", "used_fallback")

    def __init__(self) -> None:
        self.reserved = time.monotonic()
        self._filled = threading.Event()
        self.event: Event | None = None
        self.side: list[Side] = []
        self.error: BaseException | None = None
        self.used_fallback = False

    def fill(
        self, event: EventLike | None, side: list[Side] | None = None, error: BaseException | None = None
    ) -> None:
        """Provide the event (``None``: use the fallback, for ``error``). Thread-safe; once."""
        if self._filled.is_set():
            return
        if event is not None:
            try:
                self.event = coerce(event)
                self.side = list(side or [])
            except ProctorError as e:
                self.event, self.error = None, e
        else:
            self.error = error
        self._filled.set()

    def wait(self, timeout: float) -> bool:
        """Wait until filled, at most until ``timeout`` seconds after the slot was reserved."""
        return self._filled.wait(max(0.0, self.reserved + timeout - time.monotonic()))


Notify = Callable[["Append"], None]
"""Called on the writer thread with an append once it is resolved (committed or failed)."""


class Append:
    """One caller's append, waiting for its batch to commit.

    A pre-acquired lock is the cheapest one-shot signal between threads: the writer
    releases it once, the caller's acquire returns. (A Future costs a Condition and
    several more lock round trips per append.) An asynchronous caller passes
    ``notify`` instead of waiting: the writer calls it with the append once it is
    resolved.
    """

    __slots__ = (
        "_done",
        "deferred",
        "error",
        "events",
        "fallback",
        "first",
        "follower",
        "indices",
        "notify",
        "side",
        "then_error",
    )

    def __init__(
        self,
        events: list[Event],
        side: list[Side] | None = None,
        notify: Notify | None = None,
        first: int = -1,
        *,
        followed: bool = False,
    ) -> None:
        self.events = events
        self.first = first
        self.deferred: Deferred | None = None
        self.fallback: Event | None = None
        self.side = side if side is not None else []
        self.notify = notify
        self.then_error: BaseException | None = None
        self.indices: list[int] | None = None
        self.error: BaseException | None = None
        self.follower: threading.Event | None = threading.Event() if followed else None
        """Set once the append announced to follow this one is queued, or will not be
        (:meth:`Log.submit`'s ``followed``): until then the writer holds its batch open."""
        self._done = threading.Lock()
        self._done.acquire()

    def followed(self) -> None:
        """The append announced to follow this one is queued, or will not be."""
        if self.follower is not None:
            self.follower.set()

    def done(self) -> bool:
        return self.indices is not None or self.error is not None

    def resolve(self, indices: list[int]) -> None:
        self.indices = indices
        self._finish()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._finish()

    def _finish(self) -> None:
        self._done.release()
        if self.notify is not None:
            with contextlib.suppress(Exception):  # a caller's callback must not stop the writer
                self.notify(self)

    def wait(self) -> list[int]:
        """Block until the batch committed; its indices, or raise its error."""
        self.wait_quietly()
        return self.result()

    def wait_quietly(self) -> None:
        """Block until the batch is resolved, without raising (then read :meth:`result`)."""
        self._done.acquire()
        self._done.release()

    def result(self) -> list[int]:
        """The indices of a resolved append, or raise its error.

        Raises:
            LogAppendError: the append did not commit, or is not resolved yet.
        """
        if self.error is not None:
            raise self.error.with_traceback(None)  # shared by a batch: no traceback kept per raise
        if self.indices is None:
            raise LogAppendError("the append is not resolved yet")
        return self.indices


STOP = object()
"""Put on the writer's queue to stop it."""
