"""Recording a change: its events appended to the lineage log with the state writes
they imply, in one commit (both or neither), so the log can always explain the state.

:class:`Recorder` is what administration, authorization and executions append
through. It owns the plumbing around the log writer that they share:

- the **admin lock**, which serialises changes of governance (principals, policy,
  revocation): a change validates and counts admins under it, so two changes never
  decide on the same reading;
- one :class:`~proctor.governor._wake.Waker` per event loop, so that a request awaited
  on a loop is woken by the log writer without holding a thread;
- principal commits, which make the :class:`~proctor.governor.trust.TrustView` forget
  the principals they write before the commit (a read racing it is not kept) and after.

Side writes that are not worth failing for (a rejected request, nonces) are queued
with no event and their failure ignored: if the log cannot write, every authorization
fails closed on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from proctor.errors import ProctorError
from proctor.governor._wake import Waker
from proctor.governor.trust import TrustView
from proctor.lineage.log import Append, Chain, Later, Log, Notify, Side
from proctor.store.state import PrincipalRecord, StateStore

__all__ = ["Recorder"]

_WAKERS_BEFORE_PRUNING = 16


class Recorder:
    """Appends events with their state writes, for one governor."""

    def __init__(self, log: Log, state: StateStore, trust: TrustView) -> None:
        """Args:
        log: the lineage log (its writer commits events and side writes together).
        state: the governance state tables (their writers go into the commits).
        trust: told which principals a commit changes.
        """
        self._log = log
        self._state = state
        self._trust = trust
        self._admin_lock = threading.Lock()
        self._wakers: dict[asyncio.AbstractEventLoop, Waker] = {}

    @property
    def admin_lock(self) -> threading.Lock:
        """Held by every change of governance while it validates and queues its commit."""
        return self._admin_lock

    @property
    def busy(self) -> bool:
        """Whether the log's last commit held several callers' appends (:attr:`Log.busy`)."""
        return self._log.busy

    def waker(self, loop: asyncio.AbstractEventLoop) -> Waker:
        """The waker of ``loop`` (one per loop: servers keep one, tests come and go)."""
        waker = self._wakers.get(loop)
        if waker is None:
            if len(self._wakers) > _WAKERS_BEFORE_PRUNING:
                self._wakers = {k: v for k, v in self._wakers.items() if not k.is_closed()}
            waker = self._wakers[loop] = Waker(loop)
        return waker

    def submit(
        self,
        events: list[dict[str, Any]],
        *,
        side: list[Side] | None = None,
        then: Chain | None = None,
        later: Later | None = None,
        notify: Notify | None = None,
        followed: bool = False,
    ) -> Append:
        """Queue ``events`` with ``side`` for one commit (:meth:`Log.submit`); the
        pending append, whose indices are assigned at once.

        Raises:
            LogAppendError: the log cannot take the append (nothing was queued).
            EventError: an event is not canonical.
        """
        return self._log.submit(events, side=side, then=then, later=later, notify=notify, followed=followed)

    def record(self, events: list[dict[str, Any]], side: list[Side]) -> int:
        """Append ``events`` with ``side`` in one commit; the first event's index once
        durable.

        Raises:
            LogAppendError: the commit failed (nothing was recorded).
        """
        return self._log.submit(events, side=side).wait()[0]

    def commit_principals(
        self, events: list[dict[str, Any]], records: list[PrincipalRecord], *, side: list[Side] | None = None
    ) -> int:
        """Append ``events`` with the rows of ``records`` (and ``side``) in one commit;
        the first event's index. The caller holds the admin lock.

        Raises:
            LogAppendError: the commit failed (nothing was recorded).
        """
        for record in records:
            self._trust.forget_principal(record.name)
        try:
            writes = [*(side or []), *(self._state.principal_writer(r) for r in records)]
            return self._log.submit(events, side=writes).wait()[0]
        finally:
            for record in records:
                self._trust.forget_principal(record.name)

    def side_write(self, write: Side) -> None:
        """Queue ``write`` for the log writer's next transaction, with no event; a
        failure is ignored (see the module)."""
        with contextlib.suppress(ProctorError):
            self._log.submit([], side=[write])
