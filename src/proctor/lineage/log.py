"""The lineage log: append-only, Merkle-hashed, checkpointed, provable.

Invariants (each guarded here or in the writer, :mod:`proctor.lineage._writer`, each
with a test named after it):

1. An append is acknowledged only after its batch committed durably (SQLite WAL with
   ``synchronous=FULL``); a failed commit acknowledges nothing and leaves the log as
   it was.
2. A checkpoint is stored in its entries' transaction and handed out only once that
   commits; it is signed by the one writer holding the lock, from a tree state checked
   against the latest stored checkpoint: no two signed checkpoints can be inconsistent.
3. Entries are canonical events (:mod:`proctor.lineage.events`); an event's parent
   link must name an earlier entry by its true leaf hash. Bad input is refused before
   anything is written.
4. Proofs read stored interior hashes (:mod:`proctor.lineage.tiles`); they never
   rehash the tree.

Appends go through one writer thread that commits them in groups (group commit, see
:mod:`proctor.lineage._writer`): it takes every waiting append, up to ``batch_size``
entries, into one transaction and one checkpoint signature. A caller's ``append_many``
is never split: its events are contiguous and commit together. This module holds the
public surface: opening, appending, and reading entries, checkpoints and proofs.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from proctor.datadir import DataDir
from proctor.errors import (
    LogAppendError,
    LogClosedError,
    LogIntegrityError,
    ProofRequestError,
)
from proctor.lineage._appends import (
    STOP,
    Append,
    Chain,
    Deferred,
    EventLike,
    Later,
    Notify,
    Side,
    b64,
    coerce,
)
from proctor.lineage._writer import GroupCommit, Nodes
from proctor.lineage.audit import LogReport, check_log
from proctor.lineage.checkpoint import Checkpoint
from proctor.lineage.merkle import consistency_path, inclusion_path, leaf_hash, range_hash
from proctor.lineage.tiles import TreeBuilder
from proctor.note import NoteSigner, NoteVerifier
from proctor.store.base import LogStore
from proctor.store.locks import FileSequencer, Sequencer
from proctor.store.open import open_log_store
from proctor.store.sqlite import SQLiteStore

_log = logging.getLogger("proctor.lineage")

__all__ = ["Append", "Chain", "Deferred", "EventLike", "Later", "Log", "LogReport", "Notify", "Side"]


class Log(GroupCommit):
    """One lineage log. Open it with :meth:`open`; create one with :meth:`initialize`."""

    def __init__(
        self,
        store: LogStore,
        signer: NoteSigner,
        *,
        lock_path: Path | None = None,
        sequencer: Sequencer | None = None,
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
                writes this log (an exclusive :class:`FileSequencer`). ``None`` only
                for stores that serialise writers themselves.
            sequencer: instead of ``lock_path``, the lock that makes one writer at a
                time assign indices (:mod:`proctor.store.locks`); a *shared* one lets
                several writers (processes, nodes) take turns on one log.
            batch_size: the most entries one group commit takes (a single
                ``append_many`` larger than this still commits whole).
            linger: at most this many seconds the writer waits, after the first append
                of a batch, for more before committing a batch that is not full — only
                while the log is busy (its last batch held ``_writer.BUSY_APPENDS``
                appends), so a lone caller never waits (0: commit what waits at once).
            always_linger: linger even when the previous batch held one append.
            tile_cache: how many complete tiles to keep in memory (each 16 KiB).
        """
        if batch_size < 1:
            raise ValueError(f"expected batch_size >= 1, found {batch_size}")
        self._store = store
        self._signer = signer
        self._verifier = signer.verifier
        if sequencer is None and lock_path is not None:
            sequencer = FileSequencer(lock_path)
        self._sequencer = sequencer
        self._batch_size = batch_size
        self._linger = linger
        self._always_linger = always_linger
        self._nodes = Nodes(store, tile_cache)
        self._state_lock = threading.Lock()
        self._seq_lock = threading.Lock()
        self._released = threading.Condition(self._seq_lock)
        self._holding = False
        self._held_since = 0.0
        self._yielding = False
        self._turn = 0
        self._next = 0
        self.deferred_timeout = 2.0
        self._queue: queue.SimpleQueue[Append | object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._builder: TreeBuilder | None = None
        self._latest: tuple[int, str] | None = None
        self._failed: LogAppendError | None = None
        self._commit_failure: LogAppendError | None = None
        self._closed = False

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(
        cls, data_dir: str | os.PathLike[str], *, shared: bool = False, store: str | None = None, **opts: Any
    ) -> Log:
        """Open the log of a data directory made by ``proctor init``.

        Reading needs nothing more; the first append takes the append lock. With ``shared``, several
        processes that open it so take turns appending (:mod:`proctor.store.locks`); without it the
        first keeps the lock. ``store``: a PostgreSQL URL, else the directory's file (store.open).

        Raises:
            ConfigError: the directory is not initialised or is malformed.
            StoreError: the database cannot be opened.
        """
        dd = DataDir.open(data_dir)
        signer = dd.log_signer()  # before the store opens: a bad key leaves nothing open
        st, seq = open_log_store(store, db_path=dd.db_path, lock_path=dd.lock_path, shared=shared)
        return cls(st, signer, sequencer=seq, **opts)

    @classmethod
    def initialize(
        cls, data_dir: str | os.PathLike[str], *, origin: str | None = None, **options: Any
    ) -> Log:
        """Create a data directory with a new log key and an empty, checkpointed log,
        atomically (:meth:`DataDir.build`: whole or not at all), and open it.

        Raises:
            ConfigError: the target is a symlink, not empty, already initialised, or
                cannot be written, or the origin is invalid; nothing was created.
            StoreError: the database cannot be created; nothing was created.
        """
        with DataDir.build(data_dir, origin=origin) as staged:
            cls.create(staged).close()
        return cls.open(data_dir, **options)

    @classmethod
    def create(cls, data: DataDir, **options: Any) -> Log:
        """Create the database and sign the empty tree in a data directory being built.

        For use inside :meth:`DataDir.build` (as :meth:`initialize` and
        ``proctor init`` do): close the returned log before the build completes.

        Args:
            data: the data directory being built.
            **options: as for :class:`Log`.

        Returns:
            The new, empty log, holding the append lock.

        Raises:
            StoreError: the database cannot be created.
        """
        store = SQLiteStore(data.db_path, create=True)
        try:
            log = cls(store, data.log_signer(), lock_path=data.lock_path, **options)
            log._start_writer()
        except BaseException:
            store.close()
            raise
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
            if self._builder is not None and (self._holding or not self._shared):
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
        batch = [coerce(e) for e in events]
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
        notify: Notify | None = None,
        followed: bool = False,
    ) -> Append:
        """Queue an append without waiting for it; the asynchronous form of the others.

        Args:
            events: appended contiguously and atomically (may be empty when ``side``
                is not: a side write alone commits without a new checkpoint).
            then: as in :meth:`append_chain`; run on the calling thread before queueing.
            later: reserves one more slot after the events (and ``then``'s): called
                at once as ``later(index of the last event, its leaf hash, deferred)``,
                it returns the fallback event and arranges for ``deferred.fill`` to be
                called with the real one (see :class:`Deferred`).
            side: writes that must commit in the same transaction as the events (for
                example a state row derived from them), called as ``write(conn,
                index=first index of these events)``. ``then`` may add to this list. If
                one raises, the whole batch fails and nothing is acknowledged.
            notify: called on the writer thread with the append once it is resolved
                (committed or failed: read :meth:`Append.result`); it must be quick and
                must not block (for example ``loop.call_soon_threadsafe``). It is never
                called while the log holds a lock of its own.
            followed: hold the batch open for an append queued behind (:meth:`Append.followed`).

        Returns:
            The pending append: :meth:`Append.wait` blocks, :meth:`Append.result` reads it.

        Raises:
            EventError: an event is not acceptable (nothing was queued).
            LogAppendError, LogLockedError: the log cannot append.
        """
        batch = [coerce(e) for e in events]
        self._start_writer()
        pending = Append(batch, side, notify, followed=followed)
        # Sequencing: indices are assigned here, in queue order, so that ``then`` can
        # bind to its cause's index on the caller's thread (the writer only commits).
        # If an append fails in the writer, every one queued after it fails too and the
        # sequence restarts from the durable size (_resequence).
        with self._seq_lock:
            if self._failed is not None:
                # One instance for every refusal: without its last traceback, or each
                # raise would add one (frames, and what they hold) for good.
                raise self._failed.with_traceback(None)
            self._sequence()
            first = self._next
            if then is not None and batch:
                try:
                    built = then(first + len(batch) - 1, leaf_hash(batch[-1].raw))
                    if built is not None:
                        batch.append(coerce(built))
                except Exception as e:  # noqa: BLE001 - reported to the caller, never lost
                    pending.then_error = e
            reserved = 0
            if later is not None and batch:
                deferred = Deferred()
                try:
                    pending.fallback = coerce(
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

    @property
    def commit_failure(self) -> LogAppendError | None:
        """Why the last commit failed, if none succeeded since (a full disk, say):
        the log cannot durably record right now. ``None`` once a commit succeeds."""
        return self._failed or self._commit_failure

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

    # -- reading ---------------------------------------------------------------

    def checkpoint(self) -> str:
        """The latest signed checkpoint (a C2SP signed note).

        Raises:
            LogIntegrityError: no checkpoint is stored.
        """
        self._check_open()
        with self._state_lock:
            if self._latest is not None and self._builder is not None and (self._holding or not self._shared):
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
        return {"leaf_index": index, "tree_size": size, "hashes": [b64(h) for h in path]}

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
        return {"old_size": old_size, "new_size": size, "hashes": [b64(h) for h in path]}

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
        """Finish pending appends (each stores its checkpoint), release the lock."""
        if self._closed:
            return
        writer = self._writer
        if writer is not None:
            self._queue.put(STOP)
            writer.join()
        self._fail_waiting(LogClosedError("the log was closed"))
        self._closed = True
        if self._sequencer is not None:
            self._sequencer.close()
        self._store.close()
