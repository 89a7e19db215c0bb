"""Writes that several governor processes must see at once, batched on one thread.

With several governor processes on one store (``proctor serve --shared``, ADR 0016), a
nonce must be claimed in the store before its request is served, and a renewed lease
written there before it is answered: the store, not one process's memory, is the
authority. One transaction per request would put every request behind SQLite's write
lock (and its fsync) on its own. :class:`WriteBatcher` gathers whatever is waiting into
one call of its ``run`` function (one transaction), on its own thread, and answers each
caller through a future: a burst of requests costs one commit, and no event loop waits
for the lock.

Failing closed: if ``run`` raises, every item of the batch gets the exception (the
caller refuses its request); an item is never answered with a guess. After
:meth:`WriteBatcher.close`, new items fail at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from proctor.errors import StoreError

__all__ = ["WriteBatcher"]

_I = TypeVar("_I")
_R = TypeVar("_R")

_log = logging.getLogger("proctor.governor")
_STOP = object()


class WriteBatcher(Generic[_I, _R]):
    """Runs items in batches, one batch at a time, on one thread. Thread-safe."""

    def __init__(self, run: Callable[[list[_I]], list[_R]], *, name: str, max_batch: int = 512) -> None:
        """Args:
        run: takes the items of one batch and returns one result per item, in order
            (one transaction); raising fails every item of the batch.
        name: the thread's name (``proctor-`` is prefixed).
        max_batch: the most items one call of ``run`` takes.
        """
        if max_batch < 1:
            raise ValueError(f"expected max_batch >= 1, found {max_batch}")
        self._run = run
        self._max = max_batch
        self._queue: queue.SimpleQueue[tuple[_I, Future[_R]] | object] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"proctor-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: _I) -> Future[_R]:
        """Queue ``item`` for the next batch; its result (or exception) arrives in the future."""
        future: Future[_R] = Future()
        with self._lock:
            if self._closed:
                future.set_exception(StoreError("the store's write batcher is closed"))
                return future
            self._queue.put((item, future))
        return future

    def close(self) -> None:
        """Finish the batches already queued, then stop (later items fail at once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self._max:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
            self._answer(batch)  # type: ignore[arg-type]

    def _answer(self, batch: list[tuple[_I, Future[_R]]]) -> None:
        try:
            results = self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise StoreError(f"expected {len(batch)} results from one batch, found {len(results)}")
        except Exception as e:  # noqa: BLE001 - every caller hears of it; the thread goes on
            if not isinstance(e, StoreError):
                _log.exception("a batch of store writes failed")
            for _, future in batch:
                future.set_exception(e)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
