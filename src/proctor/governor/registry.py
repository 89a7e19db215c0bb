"""The governor's in-memory registry of executions: lease deadlines, running counts,
the warrants their enforcers presented, and which executions are changing state.

This process is the only one that renews its leases, so their deadlines live here and
reach the ``executions`` table in batches through the log writer's next transaction:
a renewal never waits for SQLite's write lock. The table lags behind; this does not.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from proctor.authorization.warrants import VerifiedWarrant
from proctor.errors import StoreError
from proctor.governor._flush import FlushClaim
from proctor.lineage.log import Side

__all__ = ["ExecutionRegistry"]


class ExecutionRegistry:
    """Leases, running counts, presented warrants and state-change claims. Thread-safe."""

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

    # -- running counts ---------------------------------------------------------

    def running_count(self, principal: str) -> int:
        """How many executions of ``principal`` are running."""
        with self._lock:
            return len(self._running.get(principal, ()))

    def started(self, execution_id: str, principal: str, lease_ms: int, verified: VerifiedWarrant) -> None:
        """A started execution: running, with its lease and presented warrant."""
        with self._lock:
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
            conn.executemany(
                "UPDATE executions SET lease_expires_ms = ? WHERE id = ? AND status = 'running'",
                [(expires, ex) for ex, expires in rows.items()],
            )
        except sqlite3.Error as e:
            with self._lock:
                for ex, expires in rows.items():
                    self._unsaved.setdefault(ex, expires)
            raise StoreError(f"cannot persist lease deadlines: {e}") from e

    def lease_expires_ms(self, record: dict[str, Any]) -> int:
        """The execution's lease deadline (memory first: the table lags behind)."""
        with self._lock:
            return self._leases.get(record["id"], int(record["lease_expires_ms"]))

    def lapsed(self, cutoff_ms: int) -> list[str]:
        """Executions whose lease ended before ``cutoff_ms``."""
        with self._lock:
            return [ex for ex, expires in self._leases.items() if expires < cutoff_ms]

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
