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
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from proctor.authorization.warrants import VerifiedWarrant
from proctor.config import QuotaLimits
from proctor.errors import StoreError
from proctor.governor._flush import FlushClaim
from proctor.governor.counters import StartWindow
from proctor.governor.quotas import check_start
from proctor.lineage.log import Side
from proctor.store.state import StateStore, StoredExecution
from proctor.verification.lease import lease_lapsed

__all__ = ["ExecutionRegistry", "StartSlot", "Usage"]


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
    ) -> None:
        """Load what the store says is running.

        Args:
            leases: ``(execution id, lease deadline ms)`` of running executions.
            running: ``(execution id, principal)`` of running executions.
            side_write: queues a write for the log writer's next transaction.
        """
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
        self._verified: dict[str, VerifiedWarrant] = {}
        # warrant ids being started and execution ids being ended, until their commit.
        self._busy: set[str] = set()
        # principal → starts admitted and not yet recorded, and its starts of the last
        # minute (quotas; policies read the latter as starts_1m).
        self._starting: dict[str, int] = {}
        self._starts: dict[str, StartWindow] = {}

    # -- running counts ---------------------------------------------------------

    def running_count(self, principal: str) -> int:
        """How many executions of ``principal`` are running."""
        with self._lock:
            return len(self._running.get(principal, ()))

    def usage(self, principal: str, now: int) -> Usage:
        """What ``principal`` holds at ``now`` (unix seconds), in one reading."""
        with self._lock:
            window = self._starts.get(principal)
            return Usage(
                len(self._running.get(principal, ())),
                self._starting.get(principal, 0),
                window.count(now) if window is not None else 0,
            )

    def admit_start(self, principal: str, now: int, limits: QuotaLimits) -> StartSlot:
        """Admit one more start of ``principal`` under ``limits`` and reserve its slot,
        in one critical section (the slot counts as running until it is settled).

        Raises:
            QuotaError: the principal is at ``max_running`` (running and starting) or
                at ``max_starts_per_minute``; nothing was reserved.
        """
        with self._lock:
            window = self._starts.get(principal)
            refused = check_start(
                limits,
                principal,
                running=len(self._running.get(principal, ())) + self._starting.get(principal, 0),
                starts_1m=window.count(now) if window is not None else 0,
            )
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
            self._leases[execution_id] = lease_ms
            self._verified[execution_id] = verified
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

    def set_lease(self, execution_id: str, expires_ms: int) -> None:
        """Extend a lease; persisted with the log writer's next transaction."""
        with self._lock:
            self._leases[execution_id] = expires_ms
            self._unsaved[execution_id] = expires_ms
            queue = self._flush.claim()
        if queue:
            self._side_write(self._persist_leases)

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
        ``stored_ms`` (its row's, which lags behind the memory)."""
        with self._lock:
            return self._leases.get(execution_id, int(stored_ms))

    def lapsed(self, cutoff_ms: int) -> list[str]:
        """Executions whose lease had lapsed at ``cutoff_ms`` (:func:`lease_lapsed`)."""
        with self._lock:
            return [ex for ex, expires in self._leases.items() if lease_lapsed(expires, cutoff_ms)]

    def ended(self, execution_id: str) -> None:
        """Forget an ended execution's lease and presented warrant."""
        with self._lock:
            self._leases.pop(execution_id, None)
            self._verified.pop(execution_id, None)

    # -- presented warrants ---------------------------------------------------------

    def presented(self, execution_id: str) -> VerifiedWarrant | None:
        """The warrant verified at start, if this process still holds it."""
        with self._lock:
            return self._verified.get(execution_id)

    def remember(self, execution_id: str, verified: VerifiedWarrant) -> None:
        """Keep a presented warrant verified again (after a restart)."""
        with self._lock:
            self._verified[execution_id] = verified

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
