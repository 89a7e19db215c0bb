"""The log's writer: sequencing, group commit and recovery, mixed into
:class:`~proctor.lineage.log.Log`.

Appends go through one writer thread that commits them in groups: it takes every
waiting append, up to ``batch_size`` entries, into one transaction and one checkpoint
signature. Indices are assigned when an append is queued (``Log.submit``), in queue
order; if an append fails in the writer, every one queued after it fails too and the
sequence restarts from the durable size, so nothing is ever committed at an index other
than the one its caller was given. This module guards invariants 1 and 2 of
:mod:`proctor.lineage.log` (acknowledge only what is durable; sign only what is
durable, from a tree state checked against the latest checkpoint).

Why one module: the writer thread, the shared turn (take the sequencer, resync, append,
release) and recovery after a failed commit all move the same three pieces of state (the
pending queue, the next index, the tree) under one lock; split across modules, each
would reach into the others' private state and the invariants above could no longer be
read in one place.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import OrderedDict

from proctor.errors import (
    CheckpointError,
    EventError,
    LineageError,
    LogAppendError,
    LogIntegrityError,
    NoteError,
    ProctorError,
    StoreError,
)
from proctor.lineage._appends import STOP, Append, b64
from proctor.lineage.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from proctor.lineage.events import Event
from proctor.lineage.merkle import leaf_hash, range_hash
from proctor.lineage.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, TreeBuilder, node_location
from proctor.note import NoteSigner, NoteVerifier
from proctor.store.base import LogStore
from proctor.store.locks import Sequencer

__all__ = ["BUSY_APPENDS", "FOLLOW_WAIT_S", "GroupCommit", "Nodes"]

_log = logging.getLogger("proctor.lineage")


FOLLOW_WAIT_S = 0.01
"""The longest a batch is held open for an append announced to follow one of its own."""

BUSY_APPENDS = 4
"""A batch holding at least this many callers' appends (side writes alone do not count)
makes the log busy: the writer lingers before the next (``Log(linger=…)``), as
PostgreSQL's ``commit_siblings``, and the governor mints in its helper."""


class Nodes:
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


class GroupCommit:
    """The writer half of :class:`~proctor.lineage.log.Log` (its state is set there)."""

    _store: LogStore
    _signer: NoteSigner
    _verifier: NoteVerifier
    _sequencer: Sequencer | None
    _holding: bool
    _held_since: float
    _yielding: bool
    _turn: int
    _released: threading.Condition
    sequencer_timeout: float = 5.0
    """Shared sequencing: how long an append waits for the other writers."""
    hold_idle: float = 0.002
    """Shared sequencing: keep the lock this long after the last append drained."""
    hold_max: float = 0.02
    """Shared sequencing: give the lock back after holding it this long (once durable)."""
    _batch_size: int
    _linger: float
    _always_linger: bool
    busy: bool = False
    """Whether the last batch held at least :data:`BUSY_APPENDS` callers' appends (then the
    writer lingers before the next, and a caller may prefer to keep work off its own
    thread: :class:`proctor.governor.authorize.Authorizer` mints in its helper)."""
    _nodes: Nodes
    _state_lock: threading.Lock
    _seq_lock: threading.Lock
    _commit_failure: LogAppendError | None
    _next: int
    deferred_timeout: float
    _queue: queue.SimpleQueue[Append | object]
    _writer: threading.Thread | None
    _builder: TreeBuilder | None
    _latest: tuple[int, str] | None
    _failed: LogAppendError | None

    @property
    def origin(self) -> str:
        """The log's origin (the checkpoints' first line and the key name)."""
        return self._signer.name

    def _check_open(self) -> None:
        raise NotImplementedError

    @property
    def _shared(self) -> bool:
        return self._sequencer is not None and self._sequencer.shared

    def _start_writer(self) -> None:
        self._check_open()
        with self._state_lock:
            if self._failed is not None:
                raise self._failed.with_traceback(None)  # one instance, raised again and again
            if self._writer is not None:
                return
            sequencer = self._sequencer
            if sequencer is not None:
                sequencer.acquire(self.sequencer_timeout if sequencer.shared else 0.0)
            try:
                self._resync()  # shared: a start-up check; every hold resyncs again
            except BaseException:
                if sequencer is not None:
                    sequencer.release()
                raise
            with self._seq_lock:
                self._next = self._builder.size if self._builder is not None else 0
                self._holding = True
                self._held_since = time.monotonic()
                if self._shared:
                    self._release_sequencer()
            self._writer = threading.Thread(target=self._run, name="proctor-log-writer", daemon=True)
            self._writer.start()

    def _sequence(self) -> None:
        """Make this writer the one that assigns indices (called with ``_seq_lock`` held).

        Exclusive: it already is, from the first append on. Shared: take the sequencer
        lock if not held (and reload the right edge: another writer may have appended),
        or, once held longer than ``hold_max`` while another writer waits, give it back
        when what was sequenced is durable and queue behind the other writers.

        Raises:
            LogLockedError: another writer kept the lock past ``sequencer_timeout``.
            LogIntegrityError: the stored tree contradicts its signed checkpoint.
            StoreError: the store cannot be read.
        """
        sequencer = self._sequencer
        if sequencer is None or not sequencer.shared:
            return
        if self._holding and time.monotonic() - self._held_since > self.hold_max:
            if not sequencer.contended():
                self._held_since = time.monotonic()  # nobody waits: keep it, ask again later
                return
            # Wait for this hold to end (not for the lock to be free: another of our
            # threads may take the next hold first, and then this one goes on in it).
            self._yielding = True
            turn = self._turn
            while self._turn == turn:
                self._released.wait()
        if self._holding:
            return
        sequencer.acquire(self.sequencer_timeout)
        try:
            with self._state_lock:
                head = self._read_head()
                if not self._unchanged(head):
                    self._resync(head)  # the head just read: no second round trip for it
        except BaseException:
            sequencer.release()
            raise
        builder = self._builder
        self._next = builder.size if builder is not None else 0
        self._holding = True
        self._held_since = time.monotonic()

    def _release_sequencer(self) -> None:
        """Give the shared sequencer lock back (``_seq_lock`` held)."""
        if self._sequencer is not None:
            self._sequencer.release()
        self._holding = False
        self._yielding = False
        self._turn += 1
        self._released.notify_all()

    def _release_if_idle(self, *, idle: bool) -> None:
        """Shared: release once everything sequenced is durable, if the writer has been
        idle for ``hold_idle`` (``idle``) or a submitter is waiting to yield."""
        if not self._shared:
            return
        with self._seq_lock:
            builder = self._builder
            drained = builder is not None and self._next == builder.size and self._queue.empty()
            if self._holding and drained and (idle or self._yielding):
                self._release_sequencer()

    def _drop_hold(self) -> None:
        """Shared, after a failed commit: the tree state may be stale, so give the lock
        back; the next append takes it and reloads."""
        if self._shared:
            with self._seq_lock:
                if self._holding:
                    self._release_sequencer()

    def _read_head(self) -> tuple[int, tuple[int, str] | None]:
        """The store's size and latest checkpoint, read now (in that order; in one round
        trip where the store can, as PostgreSQL's ``head``)."""
        read = getattr(self._store, "head", None)
        if read is not None:
            head: tuple[int, tuple[int, str] | None] = read()
            return head
        return self._store.tree_size(), self._store.latest_checkpoint()

    def _unchanged(self, head: tuple[int, tuple[int, str] | None]) -> bool:
        """Whether ``head`` (:meth:`_read_head`) is this writer's (no reload)."""
        builder, latest = self._builder, self._latest
        if builder is None or latest is None:
            return False
        return head == (builder.size, latest)

    def _resync(self, head: tuple[int, tuple[int, str] | None] | None = None) -> None:
        """Load the right edge from the store and check it against the latest checkpoint.

        ``head``: the size and latest checkpoint, if the caller just read them under the
        lock this writer holds (:meth:`_read_head`); else they are read here.

        Signs a checkpoint for the stored size if the latest one is older (the
        previous writer stopped between commit and storing it).

        Raises:
            LogIntegrityError: the stored tree contradicts a signed checkpoint.
        """
        size, latest = self._read_head() if head is None else head
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
                if self._shared and self._holding:
                    try:
                        item = self._queue.get(timeout=self.hold_idle)
                    except queue.Empty:
                        self._release_if_idle(idle=True)
                        continue
                else:
                    item = self._queue.get()
                if item is STOP:
                    break
                batch = [item]  # type: ignore[list-item]
                count = len(batch[0].events)
                # Linger only under concurrency (the last batch held BUSY_APPENDS): a
                # lone caller never waits, a busy log commits fewer, larger batches.
                deadline = time.monotonic() + self._linger if self._linger and busy else 0.0
                while count < self._batch_size:
                    try:
                        wait = deadline - time.monotonic()
                        nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        if self._held_for_follower(batch):
                            continue  # what it waited for is queued now (or will not come)
                        break
                    if nxt is STOP:
                        stop = True
                        break
                    batch.append(nxt)  # type: ignore[arg-type]
                    count += len(nxt.events)  # type: ignore[attr-defined]
                # Busy: several callers' events were waiting together (side writes
                # alone, such as persisted nonces, do not count). Two are not enough: a
                # caller's next request often meets its own previous one's tail (an
                # MCP gateway's finish and its next call), and lingering then only
                # delays both (ADR 0006, amended).
                self.busy = sum(1 for p in batch if p.events) >= BUSY_APPENDS
                busy = self.busy or self._always_linger
                self._commit(batch)
                self._release_if_idle(idle=False)
        except BaseException as e:  # noqa: BLE001 - the writer must never die silently
            _log.exception("the log writer stopped; every append fails from now on")
            failure = LogAppendError(f"the log writer stopped: {e!r}")
            with self._state_lock:
                self._failed = failure
            for p in batch:  # the batch in hand, then everything queued
                if not p.done():
                    p.fail(failure)
            self._fail_waiting(failure)

    @staticmethod
    def _held_for_follower(batch: list[Append]) -> bool:
        """Whether an append of ``batch`` announced a follower not queued yet; if so,
        wait for it (at most :data:`FOLLOW_WAIT_S`, then no more): one commit for both."""
        for p in batch:
            follower = p.follower
            if follower is not None and not follower.is_set():
                follower.wait(FOLLOW_WAIT_S)
                follower.set()
                return True
        return False

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
        dropped: list[Append] = []
        with self._seq_lock:
            stop = False
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is STOP:
                    stop = True
                elif isinstance(item, Append):
                    dropped.append(item)
            if stop:
                self._queue.put(STOP)
            builder = self._builder
            if builder is not None:
                self._next = builder.size
        # Failed outside the sequencing lock: their callbacks may take locks that a
        # submitter holds while it waits for this one.
        for item in dropped:
            if not item.done():
                item.fail(LogAppendError("not appended: an append queued before it failed"))

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
                f"{b64(actual)}, found {b64(link.leaf_hash)}"
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
            self._take_deferred(p)
            try:
                for i, ev in enumerate(p.events):
                    self._check_parent(ev, first + start + i, first, leaves)
                    leaves.append(leaf_hash(ev.raw))
            except ProctorError as e:
                del leaves[start:]  # nothing of a failed append stays in the batch
                p.fail(e)
                broken = True
                continue
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
        # Invariant 2: the new tree head is signed now and stored in the entries' own
        # transaction; it is handed out (``_latest``) only once that transaction commits.
        checkpoint = (
            (
                builder.size,
                sign_checkpoint(Checkpoint(self.origin, builder.size, builder.root()), self._signer),
            )
            if leaves
            else None
        )
        try:
            self._store.append(first, raws, tiles, also=also, checkpoint=checkpoint)
        except BaseException as e:  # noqa: BLE001 - any failure means "not committed"
            builder.restore(state)
            error = LogAppendError(f"append of {len(raws)} entries at {first} not committed: {e}")
            self._commit_failure = error  # until a commit succeeds again (Log.commit_failure)
            for p, _ in accepted:
                p.fail(error)
            if self._shared:
                # Another writer may have appended (the store refused the index), or
                # the store is unreachable: reload when the lock is next taken.
                self._resequence()
                self._drop_hold()
                return
            try:
                with self._state_lock:
                    self._resync()
            except StoreError:
                pass  # unreachable: the next commit tries again (the store refuses a stale index)
            except BaseException as again:  # noqa: BLE001 - state unknown, fail closed
                # The stored state is unknown: refuse every further append.
                with self._state_lock:
                    self._failed = LogAppendError(
                        f"log state unknown after a failed commit ({again}); reopen the log"
                    )
            self._resequence()
            return
        self._commit_failure = None
        for t in tiles:
            self._nodes.remember(t)
        if checkpoint is not None:
            with self._state_lock:
                self._latest = checkpoint
        if broken:
            self._resequence()  # after the builder took this batch: the size is right
        for p, start in accepted:
            p.resolve(list(range(start, start + len(p.events))))
