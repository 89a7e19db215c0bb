"""Waking an event loop from the log writer: one ``call_soon_threadsafe`` (one write to
the loop's self-pipe) per group commit, however many of the loop's requests it held."""

from __future__ import annotations

import asyncio
import threading

from proctor.lineage.log import Append, Notify

__all__ = ["Waker"]


class Waker:
    """Settles the futures of one event loop whose appends were resolved."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[asyncio.Future[None]] = []

    def notifier(self, done: asyncio.Future[None]) -> Notify:
        """A ``notify`` for :meth:`Log.submit` that settles ``done`` on the loop."""

        def notify(appended: Append) -> None:
            with self._lock:
                self._ready.append(done)
                first = len(self._ready) == 1
            if first:
                self._loop.call_soon_threadsafe(self._settle)

        return notify

    def _settle(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for done in ready:
            if not done.done():
                done.set_result(None)
