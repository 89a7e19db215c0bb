"""The lineage log: append-only, Merkle-hashed, checkpointed, provable.

Invariants (each guarded below, each with a test named after it):

1. An append is acknowledged only after its batch committed durably (SQLite WAL with
   ``synchronous=FULL``); a failed commit acknowledges nothing and leaves the log as
   it was.
2. A checkpoint is signed only over entries that are already durable, and only by the
   one process holding the append lock, from a tree state it checked against the
   latest stored checkpoint: no two signed checkpoints can be inconsistent.
3. Entries are canonical events (:mod:`proctor.lineage.events`); an event's parent
   link must name an earlier entry by its true leaf hash. Bad input is refused before
   anything is written.
4. Proofs read stored interior hashes (:mod:`proctor.lineage.tiles`); they never
   rehash the tree.

Appends go through one writer thread that commits them in groups (group commit): it
takes every waiting append, up to ``batch_size`` entries, into one transaction and one
checkpoint signature. A caller's ``append_many`` is never split: its events are
contiguous and commit together.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from proctor.datadir import DataDir
from proctor.errors import (
    CheckpointError,
    EventError,
    LineageError,
    LogAppendError,
    LogClosedError,
    LogIntegrityError,
    LogLockedError,
    NoteError,
    ProctorError,
    ProofRequestError,
)
from proctor.lineage.audit import LogReport, check_log
from proctor.lineage.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from proctor.lineage.events import Event
from proctor.lineage.merkle import consistency_path, inclusion_path, leaf_hash, range_hash
from proctor.lineage.note import NoteSigner, NoteVerifier
from proctor.lineage.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, TreeBuilder, node_location
from proctor.store.base import LogStore
from proctor.store.sqlite import SQLiteStore

_log = logging.getLogger("proctor.lineage")

__all__ = ["Append", "Chain", "Deferred", "EventLike", "Later", "Log", "LogReport", "Side"]

EventLike = Event | Mapping[str, Any] | bytes
"""What :meth:`Log.append` accepts: an :class:`Event`, an event object, or JSON bytes."""

Chain = Callable[[int, bytes], "EventLike | None"]
"""Builds the event that follows another, given that event's index and leaf hash."""

Later = Callable[[int, bytes, "Deferred"], "EventLike"]
"""Reserves the slot after an event: given its index, leaf hash and the handle to fill
later, returns the fallback event for that slot."""


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def _coerce(event: EventLike) -> Event:
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
    writer waits for it, at most ``Log.deferred_timeout`` seconds; if it is not filled
    in time, or is filled with ``None`` or an unacceptable event, the *fallback* event
    given at submit takes the slot instead (so the sequence never has a hole).
    """

    __slots__ = ("_filled", "error", "event", "side", "used_fallback")

    def __init__(self) -> None:
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
                self.event = _coerce(event)
                self.side = list(side or [])
            except ProctorError as e:
                self.event, self.error = None, e
        else:
            self.error = error
        self._filled.set()

    def wait(self, timeout: float) -> bool:
        return self._filled.wait(timeout)


class Append:
    """One caller's append, waiting for its batch to commit.

    A pre-acquired lock is the cheapest one-shot signal between threads: the writer
    releases it once, the caller's acquire returns. (A Future costs a Condition and
    several more lock round trips per append.) An asynchronous caller passes
    ``notify`` instead of waiting: the writer calls it once the append is resolved.
    """

    __slots__ = (
        "_done",
        "deferred",
        "error",
        "events",
        "fallback",
        "first",
        "indices",
        "notify",
        "side",
        "then_error",
    )

    def __init__(
        self,
        events: list[Event],
        side: list[Side] | None = None,
        notify: Callable[[], None] | None = None,
        first: int = -1,
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
        self._done = threading.Lock()
        self._done.acquire()

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
                self.notify()

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
            raise self.error
        if self.indices is None:
            raise LogAppendError("the append is not resolved yet")
        return self.indices


_STOP = object()


class _Nodes:
    """Reads tree nodes from stored tiles, with an LRU cache of tiles.

    Cached partial tiles are safe to serve: a hash, once in a tile, never changes
    (the tree only grows). A lookup past a cached partial tile's width re-reads it.
    """

    def __init__(self, store: LogStore, capacity: int) -> None:
        self._store = store
        self._cache: OrderedDict[tuple[int, int], Tile] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def _cached(self, key: tuple[int, int]) -> Tile | None:
        with self._lock:
            tile = self._cache.get(key)
            if tile is not None:
                self._cache.move_to_end(key)
            return tile

    def remember(self, tile: Tile) -> None:
        if self._capacity <= 0:
            return
        key = (tile.level, tile.index)
        with self._lock:
            old = self._cache.get(key)
            if old is None or old.width <= tile.width:
                self._cache[key] = tile
            self._cache.move_to_end(key)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)

    def node(self, level: int, index: int) -> bytes:
        tile_level, tile_index, row, pos = node_location(level, index)
        key = (tile_level, tile_index)
        tile = self._cached(key)
        h = None if tile is None else tile.hash_at(row, pos)
        if h is None:
            tile = self._store.tile(tile_level, tile_index)
            if tile is not None:
                self.remember(tile)
                h = tile.hash_at(row, pos)
        if h is None:
            raise LogIntegrityError(
                f"hash of tree node {level}/{index} is missing from tile {tile_level}/{tile_index}",
                index=index << level,
            )
        return h


class Log:
    """One lineage log. Open it with :meth:`open`; create one with :meth:`initialize`."""

    def __init__(
        self,
        store: LogStore,
        signer: NoteSigner,
        *,
        lock_path: Path | None = None,
        batch_size: int = 256,
        linger: float = 0.0,
        always_linger: bool = False,
        tile_cache: int = 4096,
    ) -> None:
        """Wrap a store. Prefer :meth:`open`.

        Args:
            store: where entries, tiles and checkpoints live.
            signer: the checkpoint key; its name is the log's origin.
            lock_path: a file to ``flock`` while appending, so that only one process
                writes this log. ``None`` only for stores that serialise writers
                themselves.
            batch_size: the most entries one group commit takes (a single
                ``append_many`` larger than this still commits whole).
            linger: at most this many seconds the writer waits, after the first append
                of a batch, for more before committing a batch that is not full — only
                while the log is busy (the previous batch held several appends), so a
                lone caller never waits (0: commit what is waiting at once).
            always_linger: linger even when the previous batch held one append.
            tile_cache: how many complete tiles to keep in memory (each 16 KiB).
        """
        if batch_size < 1:
            raise ValueError(f"expected batch_size >= 1, found {batch_size}")
        self._store = store
        self._signer = signer
        self._verifier = signer.verifier
        self._lock_path = lock_path
        self._batch_size = batch_size
        self._linger = linger
        self._always_linger = always_linger
        self._nodes = _Nodes(store, tile_cache)
        self._state_lock = threading.Lock()
        self._seq_lock = threading.Lock()
        self._next = 0
        self.deferred_timeout = 2.0
        self._queue: queue.SimpleQueue[Append | object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._builder: TreeBuilder | None = None
        self._latest: tuple[int, str] | None = None
        self._unstored: tuple[int, str] | None = None
        self._lock_file: IO[bytes] | None = None
        self._failed: LogAppendError | None = None
        self._closed = False

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], **options: Any) -> Log:
        """Open the log of a data directory made by ``proctor init``.

        Reading needs nothing more; the first append takes the append lock.

        Raises:
            ConfigError: the directory is not initialised or is malformed.
            StoreError: the database cannot be opened.
        """
        dd = DataDir.open(data_dir)
        store = SQLiteStore(dd.db_path)
        return cls(store, dd.log_signer(), lock_path=dd.lock_path, **options)

    @classmethod
    def initialize(
        cls, data_dir: str | os.PathLike[str], *, origin: str | None = None, **options: Any
    ) -> Log:
        """Create a data directory with a new log key and an empty, checkpointed log.

        Raises:
            ConfigError: the directory is already initialised, or the origin is invalid.
        """
        dd = DataDir.create(data_dir, origin=origin)
        store = SQLiteStore(dd.db_path, create=True)
        log = cls(store, dd.log_signer(), lock_path=dd.lock_path, **options)
        log._start_writer()
        return log

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- identity --------------------------------------------------------------

    @property
    def origin(self) -> str:
        """The log's origin (the checkpoints' first line and the key name)."""
        return self._signer.name

    @property
    def verifier(self) -> NoteVerifier:
        """The log's checkpoint verifier key."""
        return self._verifier

    def verifier_key(self) -> str:
        """The verifier key in signed-note form ``origin+keyid+base64(0x01||pub)``."""
        return self._verifier.to_string()

    @property
    def size(self) -> int:
        """The number of durable entries."""
        self._check_open()
        with self._state_lock:
            if self._builder is not None:
                return self._builder.size
        return self._store.tree_size()

    # -- appending -------------------------------------------------------------

    def append(self, event: EventLike) -> int:
        """Append one event and return its index once it is durable.

        Raises:
            EventError: the event is not acceptable (nothing was written).
            LogAppendError: the batch did not commit (nothing was acknowledged).
            LogLockedError: another process appends to this log.
        """
        return self.append_many([event])[0]

    def append_many(self, events: Iterable[EventLike]) -> list[int]:
        """Append events contiguously and atomically; return their indices.

        Every event is validated before anything is queued: one bad event rejects
        the whole call and writes nothing.

        Raises:
            EventError, LogAppendError, LogLockedError: as :meth:`append`.
        """
        batch = [_coerce(e) for e in events]
        if not batch:
            return []
        return self.submit(batch).wait()

    def submit(
        self,
        events: Iterable[EventLike],
        *,
        then: Chain | None = None,
        later: Later | None = None,
        side: list[Side] | None = None,
        notify: Callable[[], None] | None = None,
    ) -> Append:
        """Queue an append without waiting for it; the asynchronous form of the others.

        Args:
            events: appended contiguously and atomically (may be empty when ``side``
                is not: a side write alone commits without a new checkpoint).
            then: as in :meth:`append_chain`; it runs on the calling thread, before
                the append is queued.
            later: reserves one more slot after the events (and ``then``'s): called
                at once as ``later(index of the last event, its leaf hash, deferred)``,
                it returns the fallback event and arranges for ``deferred.fill`` to be
                called with the real one (see :class:`Deferred`).
            side: writes that must commit in the same transaction as the events (for
                example a state row derived from them), called as ``write(conn,
                index=first index of these events)``. ``then`` may add to this list. If
                one raises, the whole batch fails and nothing is acknowledged.
            notify: called on the writer thread once the append is resolved (committed
                or failed); it must be quick and must not block (for example
                ``loop.call_soon_threadsafe``).

        Returns:
            The pending append: :meth:`Append.wait` blocks, :meth:`Append.result`
            reads it once ``notify`` ran.

        Raises:
            EventError: an event is not acceptable (nothing was queued).
            LogAppendError, LogLockedError: the log cannot append.
        """
        batch = [_coerce(e) for e in events]
        self._start_writer()
        pending = Append(batch, side, notify)
        # Sequencing: indices are assigned here, in queue order, so that ``then`` can
        # bind to its cause's index on the caller's thread (the writer only commits).
        # If an append fails in the writer, every one queued after it fails too and the
        # sequence restarts from the durable size (_resequence).
        with self._seq_lock:
            if self._failed is not None:
                raise self._failed
            first = self._next
            if then is not None and batch:
                try:
                    built = then(first + len(batch) - 1, leaf_hash(batch[-1].raw))
                    if built is not None:
                        batch.append(_coerce(built))
                except Exception as e:  # noqa: BLE001 - reported to the caller, never lost
                    pending.then_error = e
            reserved = 0
            if later is not None and batch:
                deferred = Deferred()
                try:
                    pending.fallback = _coerce(
                        later(first + len(batch) - 1, leaf_hash(batch[-1].raw), deferred)
                    )
                    pending.deferred = deferred
                    reserved = 1
                except Exception as e:  # noqa: BLE001 - reported to the caller, never lost
                    pending.then_error = e
            pending.first = first
            self._next = first + len(batch) + reserved
            self._queue.put(pending)
        return pending

    @property
    def writer_error(self) -> LogAppendError | None:
        """Why the writer stopped (then every append fails), or ``None``."""
        return self._failed

    def start_writing(self) -> None:
        """Take the append lock and load the tree state now, instead of at the first append.

        Raises:
            LogLockedError: another process appends to this log.
            LogIntegrityError: the stored tree contradicts its signed checkpoint.
        """
        self._start_writer()

    def append_chain(self, event: EventLike, then: Chain) -> tuple[int, int | None, BaseException | None]:
        """Append ``event`` and, in the same commit, the event ``then`` builds from it.

        ``then(index, leaf_hash)`` runs on the calling thread once ``event``'s index is
        assigned (before it is queued), and returns the next event (or ``None``). It lets a caller bind a
        follow-up to the index of its cause — a warrant to its decision — without a
        second commit. If ``then`` raises or returns an unacceptable event, ``event``
        is still appended alone and the error is returned, never lost.

        Returns:
            ``(index, next_index or None, error of then or None)``.

        Raises:
            EventError, LogAppendError, LogLockedError: as :meth:`append`.
        """
        pending = self.submit([event], then=then)
        indices = pending.wait()
        return indices[0], indices[1] if len(indices) > 1 else None, pending.then_error

    def _start_writer(self) -> None:
        self._check_open()
        with self._state_lock:
            if self._failed is not None:
                raise self._failed
            if self._writer is not None:
                return
            self._take_lock()
            try:
                self._resync()
            except BaseException:
                self._release_lock()
                raise
            with self._seq_lock:
                self._next = self._builder.size if self._builder is not None else 0
            self._writer = threading.Thread(target=self._run, name="proctor-log-writer", daemon=True)
            self._writer.start()

    def _take_lock(self) -> None:
        if self._lock_path is None:
            return
        f = open(self._lock_path, "a+b")  # noqa: SIM115 - held for the life of the writer
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            f.close()
            raise LogLockedError(
                f"another process is appending to this log (lock {self._lock_path} is held)"
            ) from e
        self._lock_file = f

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _resync(self) -> None:
        """Load the right edge from the store and check it against the latest checkpoint.

        Signs a checkpoint for the stored size if the latest one is older (the
        previous writer stopped between commit and storing it).

        Raises:
            LogIntegrityError: the stored tree contradicts a signed checkpoint.
        """
        size = self._store.tree_size()
        latest = self._store.latest_checkpoint()
        cp: Checkpoint | None = None
        if latest is not None:
            cp = self._open_checkpoint(latest[1])
            if cp.size != latest[0]:
                raise LogIntegrityError(f"checkpoint stored under size {latest[0]} says size {cp.size}")
            if cp.size > size:
                raise LogIntegrityError(
                    f"a checkpoint of size {cp.size} was signed, but only {size} entries "
                    "are stored: entries were lost or removed",
                    index=size,
                )
        partial: list[Tile | None] = []
        level = 0
        while size >> (TILE_HEIGHT * level):
            nodes = size >> (TILE_HEIGHT * level)
            partial.append(self._store.tile(level, nodes // TILE_WIDTH) if nodes % TILE_WIDTH else None)
            level += 1
        builder = TreeBuilder.resume(size, partial)
        if cp is not None:
            root = builder.root() if cp.size == size else range_hash(self._nodes, 0, cp.size)
            if root != cp.root_hash:
                raise LogIntegrityError(
                    f"stored tree of size {cp.size} has root {root.hex()}, but the signed "
                    f"checkpoint says {cp.root_hash.hex()}"
                )
        builder.take_dirty()
        self._builder = builder
        if latest is None or latest[0] < size:
            note = sign_checkpoint(Checkpoint(self.origin, size, builder.root()), self._signer)
            self._store.put_checkpoint(size, note)
            self._latest = (size, note)
        else:
            self._latest = latest

    def _open_checkpoint(self, note: str) -> Checkpoint:
        try:
            return open_checkpoint(note, self._verifier)
        except (NoteError, CheckpointError) as e:
            raise LogIntegrityError(f"stored checkpoint does not verify: {e}") from e

    def _run(self) -> None:
        batch: list[Append] = []
        try:
            stop = False
            busy = self._always_linger
            while not stop:
                item = self._queue.get()
                if item is _STOP:
                    break
                batch = [item]  # type: ignore[list-item]
                count = len(batch[0].events)
                # Linger only under concurrency (the last batch had several appends): a
                # lone caller never waits, a busy log commits fewer, larger batches.
                deadline = time.monotonic() + self._linger if self._linger and busy else 0.0
                while count < self._batch_size:
                    try:
                        wait = deadline - time.monotonic()
                        nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    batch.append(nxt)  # type: ignore[arg-type]
                    count += len(nxt.events)  # type: ignore[attr-defined]
                # Busy: several callers' events were waiting together (side writes
                # alone, such as persisted nonces, do not count).
                busy = sum(1 for p in batch if p.events) > 1 or self._always_linger
                self._commit(batch)
        except BaseException as e:  # noqa: BLE001 - the writer must never die silently
            _log.exception("the log writer stopped; every append fails from now on")
            failure = LogAppendError(f"the log writer stopped: {e!r}")
            with self._state_lock:
                self._failed = failure
            for p in batch:  # the batch in hand, then everything queued
                if not p.done():
                    p.fail(failure)
            self._fail_waiting(failure)

    def _take_deferred(self, p: Append) -> None:
        """Put the deferred event (or its fallback) in the slot reserved for it."""
        deferred, fallback = p.deferred, p.fallback
        if deferred is None or fallback is None:
            return
        if deferred.wait(self.deferred_timeout) and deferred.event is not None:
            p.events.append(deferred.event)
            p.side.extend(deferred.side)
        else:
            if deferred.error is None:
                deferred.error = LogAppendError(f"not filled within {self.deferred_timeout} s")
            deferred.used_fallback = True
            p.events.append(fallback)
        p.deferred = None

    def _resequence(self) -> None:
        """After a failed append: fail everything queued (their indices assumed it) and
        assign from the durable size again."""
        with self._seq_lock:
            stop = False
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                elif isinstance(item, Append) and not item.done():
                    item.fail(LogAppendError("not appended: an append queued before it failed"))
            if stop:
                self._queue.put(_STOP)
            builder = self._builder
            if builder is not None:
                self._next = builder.size

    def _fail_waiting(self, error: LineageError) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Append) and not item.done():
                item.fail(error)

    def _leaf_hash_at(self, index: int, first: int, batch_leaves: list[bytes]) -> bytes:
        if index >= first:
            return batch_leaves[index - first]
        return self._nodes.node(0, index)

    def _check_parent(self, ev: Event, own: int, first: int, pending: list[bytes]) -> None:
        link = ev.parent
        if link is None:
            return
        if link.index >= own:
            raise EventError(f"parent.index: expected an earlier entry than {own}, found {link.index}")
        actual = self._leaf_hash_at(link.index, first, pending)
        if actual != link.leaf_hash:
            raise EventError(
                f"parent.leaf_hash: entry {link.index} has leaf hash "
                f"{_b64(actual)}, found {_b64(link.leaf_hash)}"
            )

    def _commit(self, batch: list[Append]) -> None:
        builder = self._builder
        if builder is None:  # cannot happen: the writer starts after _resync
            raise LogAppendError("the log writer has no tree state")
        if self._failed is not None:
            for p in batch:
                p.fail(self._failed)
            return
        state = builder.snapshot()
        first = builder.size
        leaves: list[bytes] = []
        raws: list[bytes] = []
        accepted: list[tuple[Append, int]] = []
        broken = False
        for p in batch:
            start = len(leaves)
            if broken or p.first != first + start:
                # An earlier append failed: the index this one was given is not its.
                broken = True
                p.fail(LogAppendError(f"not appended: an append queued before it failed (index {p.first})"))
                continue
            if p.deferred is not None and p.fallback is not None:
                self._take_deferred(p)
            try:
                hashes: list[bytes] = []
                for i, ev in enumerate(p.events):
                    self._check_parent(ev, first + start + i, first, leaves + hashes)
                    hashes.append(leaf_hash(ev.raw))
            except ProctorError as e:
                p.fail(e)
                broken = True
                continue
            leaves.extend(hashes)
            raws.extend(ev.raw for ev in p.events)
            accepted.append((p, first + start))
        if not accepted:
            if broken:
                self._resequence()
            return
        also = [functools.partial(fn, index=start) for p, start in accepted for fn in p.side]  # type: ignore[call-arg]
        for h in leaves:
            builder.append(h)
        tiles = builder.take_dirty()
        try:
            self._store.append(first, raws, tiles, also=also)
        except BaseException as e:  # noqa: BLE001 - any failure means "not committed"
            builder.restore(state)
            error = LogAppendError(f"append of {len(raws)} entries at {first} not committed: {e}")
            for p, _ in accepted:
                p.fail(error)
            try:
                with self._state_lock:
                    self._resync()
            except BaseException as again:  # noqa: BLE001 - state unknown, fail closed
                # The stored state is unknown: refuse every further append.
                with self._state_lock:
                    self._failed = LogAppendError(
                        f"log state unknown after a failed commit ({again}); reopen the log"
                    )
            self._resequence()
            return
        for t in tiles:
            self._nodes.remember(t)
        if leaves:
            # Invariant 2: the entries are durable now; sign the new tree head.
            note = sign_checkpoint(Checkpoint(self.origin, builder.size, builder.root()), self._signer)
            with self._state_lock:
                self._latest = (builder.size, note)
            self._store_checkpoint(builder.size, note)
        if broken:
            self._resequence()  # after the builder took this batch: the size is right
        for p, start in accepted:
            p.resolve(list(range(start, start + len(p.events))))

    def _store_checkpoint(self, size: int, note: str) -> None:
        try:
            if self._unstored is not None:
                self._store.put_checkpoint(*self._unstored)
                self._unstored = None
            self._store.put_checkpoint(size, note)
        except ProctorError:
            # Entries are durable; the checkpoint is re-signed byte-identically on the
            # next commit or open, so losing this row loses nothing.
            self._unstored = (size, note)

    # -- reading ---------------------------------------------------------------

    def checkpoint(self) -> str:
        """The latest signed checkpoint (a C2SP signed note).

        Raises:
            LogIntegrityError: no checkpoint is stored.
        """
        self._check_open()
        with self._state_lock:
            if self._latest is not None and self._builder is not None:
                return self._latest[1]
        latest = self._store.latest_checkpoint()
        if latest is None:
            raise LogIntegrityError("no checkpoint is stored")
        return latest[1]

    def checkpoint_size(self) -> int:
        """The tree size of :meth:`checkpoint`."""
        return Checkpoint.from_text(self.checkpoint().rsplit("\n\n", 1)[0] + "\n").size

    def leaf(self, index: int) -> bytes:
        """The canonical bytes of entry ``index``.

        Raises:
            ProofRequestError: ``index`` is not below the tree size.
            LogIntegrityError: the entry is missing from storage.
        """
        size = self.size
        if not 0 <= index < size:
            raise ProofRequestError(f"expected an index in [0, {size}), found {index}")
        data = self._store.entry(index)
        if data is None:
            raise LogIntegrityError(f"entry {index} is missing from storage", index=index)
        return data

    def leaf_hash(self, index: int) -> bytes:
        """The stored RFC 9162 leaf hash of entry ``index``."""
        size = self.size
        if not 0 <= index < size:
            raise ProofRequestError(f"expected an index in [0, {size}), found {index}")
        return self._nodes.node(0, index)

    def root(self, size: int) -> bytes:
        """The Merkle root of the first ``size`` entries, from stored hashes."""
        self._check_size(size)
        return range_hash(self._nodes, 0, size)

    def _check_size(self, size: int) -> int:
        current = self.size
        if not 0 <= size <= current:
            raise ProofRequestError(f"expected a tree size in [0, {current}], found {size}")
        return current

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> dict[str, Any]:
        """The RFC 9162 inclusion proof of entry ``index`` in the tree of ``tree_size``.

        Args:
            index: the entry.
            tree_size: the tree to prove against; by default the latest checkpoint's.

        Returns:
            ``{"leaf_index": N, "tree_size": T, "hashes": [base64, …]}``, leaf to root.

        Raises:
            ProofRequestError: ``index`` is not inside ``tree_size``, or the size is
                beyond the log.
        """
        size = self.checkpoint_size() if tree_size is None else tree_size
        self._check_size(size)
        if not 0 <= index < size:
            raise ProofRequestError(
                f"expected a leaf index in [0, {size}) for tree size {size}, found {index}"
            )
        path = inclusion_path(self._nodes, index, size)
        return {"leaf_index": index, "tree_size": size, "hashes": [_b64(h) for h in path]}

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> dict[str, Any]:
        """The RFC 9162 consistency proof between two tree sizes.

        Returns:
            ``{"old_size": M, "new_size": T, "hashes": [base64, …]}``.

        Raises:
            ProofRequestError: the sizes are not ``0 <= old <= new <= size``.
        """
        size = self.checkpoint_size() if new_size is None else new_size
        self._check_size(size)
        if not 0 <= old_size <= size:
            raise ProofRequestError(f"expected an old size in [0, {size}], found {old_size}")
        path = consistency_path(self._nodes, old_size, size)
        return {"old_size": old_size, "new_size": size, "hashes": [_b64(h) for h in path]}

    # -- auditing --------------------------------------------------------------

    def verify_all(self) -> LogReport:
        """Recompute every hash from the stored events and check every checkpoint.

        Raises:
            LogIntegrityError: something is broken; ``.index`` names the first
                broken entry where one can be named.
        """
        report = self.check_all()
        if not report.ok:
            raise LogIntegrityError(report.error or "log is broken", index=report.index)
        return report

    def check_all(self) -> LogReport:
        """Like :meth:`verify_all`, but returns the result instead of raising.

        See :func:`proctor.lineage.audit.check_log` for the steps.
        """
        self._check_open()
        return check_log(self._store, self._open_checkpoint)

    # -- closing ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("the log is closed")

    def close(self) -> None:
        """Finish pending appends, store the last checkpoint, release the lock."""
        if self._closed:
            return
        writer = self._writer
        if writer is not None:
            self._queue.put(_STOP)
            writer.join()
            if self._unstored is not None:
                self._store_checkpoint(*self._unstored)
        self._fail_waiting(LogClosedError("the log was closed"))
        self._closed = True
        self._release_lock()
        self._store.close()
