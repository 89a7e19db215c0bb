"""The governor's in-memory registry of executions: lease deadlines, running counts,
starts per principal, the warrants their enforcers presented, and which executions
are changing state.

This process is the only one that renews its leases, so their deadlines live here and
reach the ``executions`` table in batches through the log writer's next transaction:
a renewal never waits for SQLite's write lock. The table lags behind; this does not.

Starts are admitted here against the principal's quotas (:mod:`proctor.governor.quotas`):
the check and the reservation of a slot are one critical section under the registry's
lock, and a reserved slot counts as running until its start is recorded (then it *is*
running) or abandoned (then it is given back), so concurrent starts cannot overshoot.

Several governor processes on one store (shared mode, ADR 0016): this process no longer
renews every lease, so the store is the authority and the memory above only a cache of
what this process did:

- a lease is read from the execution's row (every renewal reads it anyway) and renewed
  *through* to it (:meth:`ExecutionRegistry.set_lease`: a conditional update, batched
  with the renewals waiting, applied only while the execution is ``running`` and its
  stored lease has not lapsed), so no two processes disagree on whether it is alive,
  and a lapsed lease is never revived behind a sweeper's back;
- the sweeper's candidates are the stored leases that lapsed (any process's);
- running and start counts are counted in the store. Every change of an execution's
  status (start, finish, sweep) runs under :class:`TransitionLock`, a lock taken in
  turns by the processes of one store and held until the change is durable, so a count
  read under it, plus the starts this process has admitted and not yet recorded, is
  exact: ``max_running`` and ``max_starts_per_minute`` hold across processes, a warrant
  starts one execution, and an execution ends once.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, NamedTuple

from proctor.authorization.warrants import VerifiedWarrant
from proctor.config import QuotaLimits
from proctor.errors import LogLockedError, StoreError
from proctor.governor._flush import FlushClaim
from proctor.governor.batching import WriteBatcher
from proctor.governor.counters import STARTS_WINDOW_S, StartWindow
from proctor.governor.quotas import check_start
from proctor.lineage.log import Side
from proctor.store.locks import FileSequencer, Sequencer
from proctor.store.state import StateStore, StoredExecution
from proctor.verification.lease import lease_lapsed

__all__ = [
    "LEASE_WRITE_TIMEOUT_S",
    "PRESENTED_CACHE_SIZE",
    "ExecutionRegistry",
    "StartSlot",
    "TransitionLock",
    "Usage",
    "transition_lock",
]

LEASE_WRITE_TIMEOUT_S = 10.0
"""Shared mode: how long a renewal waits for the store to take its lease (then it fails)."""

PRESENTED_CACHE_SIZE = 4096
"""How many presented warrants, verified, a registry keeps (about 2.3 KB each, so some
10 MB at most), least recently used out first. A cache: a renewal that misses verifies
the execution's stored warrant again (``Executions.presented``). Without a bound, shared
mode would keep one for every execution this process started or renewed and another
process finished or swept (``ended`` runs only where it ended)."""


class Usage(NamedTuple):
    """What one principal holds, read in one critical section.

    Attributes:
        running: executions with status ``running``.
        starting: starts admitted and not yet recorded (or abandoned).
        starts_1m: starts admitted in the last 60 seconds (recorded or being recorded).
    """

    running: int
    starting: int
    starts_1m: int


class StartSlot:
    """A start admitted by :meth:`ExecutionRegistry.admit_start`, until it is recorded
    (:meth:`ExecutionRegistry.started`) or given back (:meth:`ExecutionRegistry.abandon_start`)."""

    __slots__ = ("at", "principal", "settled")

    def __init__(self, principal: str, at: int) -> None:
        self.principal = principal
        self.at = at
        self.settled = False


class ExecutionRegistry:
    """Leases, running counts, starts, presented warrants and state-change claims.
    Thread-safe."""

    def __init__(
        self,
        leases: list[tuple[str, int]],
        running: list[tuple[str, str]],
        side_write: Callable[[Side], None],
        *,
        shared: StateStore | None = None,
    ) -> None:
        """Load what the store says is running.

        Args:
            leases: ``(execution id, lease deadline ms)`` of running executions.
            running: ``(execution id, principal)`` of running executions.
            side_write: queues a write for the log writer's next transaction.
            shared: the store other governor processes share (shared mode: leases and
                counts are read from it and leases renewed through to it); ``None``:
                this process is the only one (exclusive mode).
        """
        self._store = shared
        self._renewals: WriteBatcher[tuple[str, int, int], bool] | None = None
        if shared is not None:
            self._renewals = WriteBatcher(shared.renew_leases, name="lease-renewals")
        self._lock = threading.Lock()
        self._side_write = side_write
        self._leases: dict[str, int] = dict(leases)
        self._unsaved: dict[str, int] = {}
        self._flush = FlushClaim()
        # principal → its executions with status "running" (the concurrency counter
        # policies read on every authorization), mirrored from every status change.
        self._running: dict[str, set[str]] = {}
        for execution_id, principal in running:
            self._running.setdefault(principal, set()).add(execution_id)
        # execution id → the warrant its enforcer presented, as verified at start
        # (attenuations included): each renewal re-checks its expiry and revocation ids.
        # A bounded cache, least recently used first out (PRESENTED_CACHE_SIZE).
        self._verified: OrderedDict[str, VerifiedWarrant] = OrderedDict()
        self._verified_cap = PRESENTED_CACHE_SIZE
        # warrant ids being started and execution ids being ended, until their commit.
        self._busy: set[str] = set()
        # principal → starts admitted and not yet recorded, and its starts of the last
        # minute (quotas; policies read the latter as starts_1m).
        self._starting: dict[str, int] = {}
        self._starts: dict[str, StartWindow] = {}

    # -- running counts ---------------------------------------------------------

    def running_count(self, principal: str) -> int:
        """How many executions of ``principal`` are running (shared: in the store)."""
        if self._store is not None:
            return self._store.running_count(principal)
        with self._lock:
            return len(self._running.get(principal, ()))

    def usage(self, principal: str, now: int) -> Usage:
        """What ``principal`` holds at ``now`` (unix seconds), in one reading.

        Shared mode: ``running`` is counted in the store (every process's), ``starting``
        and ``starts_1m`` are this process's (the start itself checks them across
        processes, :meth:`admit_start`).
        """
        stored = self._store.running_count(principal) if self._store is not None else None
        with self._lock:
            window = self._starts.get(principal)
            starts_1m = 0
            if window is not None:
                starts_1m = window.count(now)
                if not window:  # every start aged out: no entry left behind per principal
                    del self._starts[principal]
            return Usage(
                len(self._running.get(principal, ())) if stored is None else stored,
                self._starting.get(principal, 0),
                starts_1m,
            )

    def admit_start(self, principal: str, now: int, limits: QuotaLimits) -> StartSlot:
        """Admit one more start of ``principal`` under ``limits`` and reserve its slot,
        in one critical section (the slot counts as running until it is settled).

        Shared mode: the caller holds the :class:`TransitionLock`, so the store's counts
        (read here) plus this process's starts not yet recorded are every process's.

        Raises:
            QuotaError: the principal is at ``max_running`` (running and starting) or
                at ``max_starts_per_minute``; nothing was reserved.
            StoreError: shared, and the store cannot be read; nothing was reserved.
        """
        stored: tuple[int, int] | None = None
        if self._store is not None:
            stored = (
                self._store.running_count(principal),
                self._store.starts_after(principal, now - STARTS_WINDOW_S),
            )
        with self._lock:
            window = self._starts.get(principal)
            starting = self._starting.get(principal, 0)
            if stored is None:
                running = len(self._running.get(principal, ()))
                starts_1m = window.count(now) if window is not None else 0
            else:
                running, starts_1m = stored[0], stored[1] + starting
            refused = check_start(limits, principal, running=running + starting, starts_1m=starts_1m)
            if refused is not None:
                raise refused
            if window is None:
                window = self._starts[principal] = StartWindow()
            window.add(now)
            self._starting[principal] = self._starting.get(principal, 0) + 1
            return StartSlot(principal, now)

    def _settle(self, slot: StartSlot) -> bool:
        """Release the slot's reservation (under the lock); whether it was still held."""
        if slot.settled:
            return False
        slot.settled = True
        left = self._starting.get(slot.principal, 0) - 1
        if left > 0:
            self._starting[slot.principal] = left
        else:
            self._starting.pop(slot.principal, None)
        return True

    def abandon_start(self, slot: StartSlot) -> None:
        """Give back a start that was not recorded: its slot and its count in the
        minute. Does nothing for a slot already settled."""
        with self._lock:
            if self._settle(slot):
                window = self._starts.get(slot.principal)
                if window is not None:
                    window.remove(slot.at)
                    if not window:
                        del self._starts[slot.principal]

    def started(
        self,
        execution_id: str,
        principal: str,
        lease_ms: int,
        verified: VerifiedWarrant,
        slot: StartSlot | None = None,
    ) -> None:
        """A started execution: running, with its lease and presented warrant; the
        start ``slot`` it was admitted with becomes this running execution."""
        with self._lock:
            if slot is not None:
                self._settle(slot)
            self._keep_verified(execution_id, verified)
            if self._store is None:  # shared: leases and running counts are the store's
                self._leases[execution_id] = lease_ms
                self._running.setdefault(principal, set()).add(execution_id)

    def not_running(self, execution_id: str, principal: str) -> None:
        """The execution no longer counts as running (terminating or ended)."""
        with self._lock:
            mine = self._running.get(principal)
            if mine is not None:
                mine.discard(execution_id)
                if not mine:
                    del self._running[principal]

    # -- leases -------------------------------------------------------------------

    def set_lease(self, execution_id: str, expires_ms: int, *, now_ms: int) -> bool:
        """Extend a lease; persisted with the log writer's next transaction.

        Shared mode: written through to the store at once (with the renewals waiting),
        only if the execution is still ``running`` and its stored lease has not lapsed
        at ``now_ms``.

        Returns:
            Whether the lease was extended (always, in the exclusive mode).

        Raises:
            StoreError: shared, and the store did not take it (the lease is not extended).
        """
        if self._renewals is not None:
            try:
                return self._renewals.submit((execution_id, expires_ms, now_ms)).result(LEASE_WRITE_TIMEOUT_S)
            except FutureTimeout as e:
                raise StoreError(f"the store did not take the lease within {LEASE_WRITE_TIMEOUT_S} s") from e
        with self._lock:
            self._leases[execution_id] = expires_ms
            self._unsaved[execution_id] = expires_ms
            queue = self._flush.claim()
        if queue:
            self._side_write(self._persist_leases)
        return True

    def _persist_leases(self, conn: Any, index: int = -1) -> None:
        with self._lock:
            rows, self._unsaved = self._unsaved, {}
            self._flush.ran()
        try:
            StateStore.write_leases(conn, rows)
        except StoreError:
            with self._lock:
                for ex, expires in rows.items():
                    self._unsaved.setdefault(ex, expires)
            raise

    def lease_expires_ms(self, record: StoredExecution) -> int:
        """The execution's lease deadline (memory first: the table lags behind)."""
        return self.lease_deadline(record["id"], record["lease_expires_ms"])

    def lease_deadline(self, execution_id: str, stored_ms: int) -> int:
        """The lease deadline of ``execution_id``: the one renewed in memory, else
        ``stored_ms`` (its row's, which lags behind the memory). Shared mode: always
        ``stored_ms`` (renewals are written through; any process may renew)."""
        if self._store is not None:
            return int(stored_ms)
        with self._lock:
            return self._leases.get(execution_id, int(stored_ms))

    def lapsed(self, cutoff_ms: int) -> list[str]:
        """Executions whose lease had lapsed at ``cutoff_ms`` (:func:`lease_lapsed`);
        shared mode: every process's, as stored."""
        if self._store is not None:
            return self._store.lapsed_executions(cutoff_ms)
        with self._lock:
            return [ex for ex, expires in self._leases.items() if lease_lapsed(expires, cutoff_ms)]

    def holds(self, execution_id: str) -> bool:
        """Whether this process holds the lease of ``execution_id`` (exclusive mode): a
        started execution, recorded before its lease was kept. ``False`` tells nothing
        (ended, another node's, or shared mode): ask the store."""
        with self._lock:
            return execution_id in self._leases

    def ended(self, execution_id: str) -> None:
        """Forget an ended execution's lease and presented warrant."""
        with self._lock:
            self._leases.pop(execution_id, None)
            self._verified.pop(execution_id, None)

    # -- presented warrants ---------------------------------------------------------

    def presented(self, execution_id: str) -> VerifiedWarrant | None:
        """The warrant verified at start, if this process still holds it (a cache: the
        caller verifies the stored one again on ``None``)."""
        with self._lock:
            verified = self._verified.get(execution_id)
            if verified is not None:
                self._verified.move_to_end(execution_id)
            return verified

    def remember(self, execution_id: str, verified: VerifiedWarrant) -> None:
        """Keep a presented warrant verified again (after a restart, or once forgotten)."""
        with self._lock:
            self._keep_verified(execution_id, verified)

    def _keep_verified(self, execution_id: str, verified: VerifiedWarrant) -> None:
        """Keep ``verified`` as the most recently used (under the lock), forgetting the
        least recently used beyond :data:`PRESENTED_CACHE_SIZE`."""
        cache = self._verified
        cache[execution_id] = verified
        cache.move_to_end(execution_id)
        while len(cache) > self._verified_cap:
            cache.popitem(last=False)

    # -- state changes ------------------------------------------------------------------

    def claim(self, key: str) -> bool:
        """Claim the right to change ``key`` (a warrant or execution id) until :meth:`release`."""
        with self._lock:
            if key in self._busy:
                return False
            self._busy.add(key)
            return True

    def release(self, key: str) -> None:
        """Give back a claim."""
        with self._lock:
            self._busy.discard(key)

    def close(self) -> None:
        """Stop writing leases through (shared mode; renewals queued are answered first)."""
        if self._renewals is not None:
            self._renewals.close()


def transition_lock(data_path: Path, store: str | None) -> TransitionLock:
    """Shared mode: the :class:`TransitionLock` of the governor processes serving one
    store: a lock file in the data directory ``data_path`` (its processes are on this
    host), or with a PostgreSQL ``store`` a session advisory lock in the database,
    whose nodes may be on any host, each with its own data directory
    (:func:`~proctor.store.locks_pg.pg_transition_lock`, which says what holds when
    its session is lost). Nothing is opened until the first change.

    Raises:
        StoreError: ``store`` is not a PostgreSQL URL.
    """
    if store is None:
        return TransitionLock(FileSequencer(data_path / "executions.lock", shared=True))
    from proctor.store.locks_pg import pg_transition_lock  # noqa: PLC0415 - psycopg only with a URL
    from proctor.store.open import check_store_url  # noqa: PLC0415

    return TransitionLock(pg_transition_lock(check_store_url(store)))


class TransitionLock:
    """Shared mode: one change of an execution's status at a time, across the governor
    processes of one store, held until the change is durable (module docstring).

    A thread lock inside the process, and ``sequencer`` between processes: a lock taken
    in turns (:class:`~proctor.store.locks.FileSequencer` with ``shared=True`` on a
    data directory; on PostgreSQL an advisory lock). Exclusive mode needs none: the
    registry's claims and counts are exact in one process.
    """

    def __init__(self, sequencer: Sequencer, *, timeout: float = 5.0) -> None:
        """Args:
        sequencer: the lock between processes (taken and given back for each change).
        timeout: how long a change waits for it (then :class:`~proctor.errors.LogLockedError`).
        """
        self._sequencer = sequencer
        self._timeout = timeout
        self._local = threading.Lock()

    @contextlib.contextmanager
    def held(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock for one change (both locks, released however the block ends).

        Args:
            timeout: how long to wait for it (default: the lock's).

        Raises:
            LogLockedError: another process held it past the timeout; nothing changed.
        """
        timeout = self._timeout if timeout is None else timeout
        if not self._local.acquire(timeout=timeout):
            raise LogLockedError(f"another change of an execution held the lock for {timeout} s")
        try:
            self._sequencer.acquire(timeout)
            try:
                yield
            finally:
                self._sequencer.release()
        finally:
            self._local.release()

    def close(self) -> None:
        """Free what the lock between processes holds."""
        self._sequencer.close()
