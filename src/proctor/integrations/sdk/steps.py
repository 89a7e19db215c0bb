"""The steps of one governed call, synchronous and asynchronous (used by
:mod:`~proctor.integrations.sdk.governed`, which is the public face).

One governed call, in order (each step fails closed: an error is a denial and the
function does not run, or, once it runs, a recorded end):

1. Bind the call's arguments to the function's signature (defaults applied): they are
   the ``arguments`` of ``POST /v1/authorize``, action ``tool.call``, resource the tool
   name, ``executable_digest`` the digest of the function's definition
   (:mod:`~proctor.integrations.sdk.definition`). Both are bound into the warrant.
2. Not allowed (a deny, a pending approval not given in time, a governor that cannot
   be reached): :class:`~proctor.errors.DeniedError`, the function never ran.
3. The warrant verifies and covers exactly this call; the execution starts with the
   measurement ``{"tool": {"resource": TOOL, "definition_digest": DIGEST}}``, which the
   governor checks against the warrant (measurement steps 5-8). A refused start is a
   denial.
4. While the function runs, the lease is renewed every TTL/3 (a thread for a plain
   function, a task for a coroutine function), on signed answers only. A refused
   renewal (revoked, a policy change), or no valid answer before the lease ends, ends
   the call: an ``async`` call is cancelled at once; a synchronous one cannot be
   stopped from outside Python, so it runs to its end, its result is withheld and
   :class:`~proctor.errors.TerminatedError` is raised (its side effects happened: keep
   long synchronous tools interruptible, or run them as ``async``).
5. The end is recorded: ``completed`` with ``stdout_digest`` the result's digest, or
   ``failed`` with the exception's type (the exception is re-raised), or
   ``terminated``. A result is returned only once its end is recorded (a governor that
   cannot record it: :class:`~proctor.errors.GovernorError`). The receipt is then
   fetchable (``client.receipt(call.execution)``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proctor.errors import GovernorError, TerminatedError
from proctor.integrations.sdk.aclient import AsyncClient
from proctor.integrations.sdk.client import Client
from proctor.integrations.sdk.protocol import result_digest
from proctor.integrations.sdk.results import Authorization, Lease

__all__ = [
    "GovernedCall",
    "LeaseKeeper",
    "approval_wait",
    "authorize_async",
    "authorize_sync",
    "close_async",
    "close_sync",
    "denied_unless_allowed",
    "keep_async",
    "open_async",
    "open_sync",
]

_APPROVAL_POLL_S = 0.5
_log = logging.getLogger("proctor.sdk")


@dataclass
class GovernedCall:
    """One governed call, as it goes (the ``as`` target of ``with governed(...)``).

    Attributes:
        tool: the tool name (the resource).
        arguments: the exact arguments bound into the warrant.
        definition_digest: the definition digest bound into the warrant.
        authorization: the governor's answer.
        lease: the started execution (``None`` before it started).
        result: set it inside a ``with`` block: its digest is recorded at the end.
        result_digest: the digest recorded (``stdout_digest``).
        status: how the end was recorded (``completed``, ``failed``, ``terminated``).
        terminated: why governance ended it while it ran, ``""`` if it did not.
    """

    tool: str
    arguments: dict[str, Any]
    definition_digest: str
    authorization: Authorization | None = None
    lease: Lease | None = None
    result: Any = None
    result_digest: str = ""
    status: str = ""
    terminated: str = ""
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def execution(self) -> str:
        """The execution's id (``""`` before it started)."""
        return self.lease.execution if self.lease is not None else ""

    def end(self, reason: str) -> None:
        """Mark it terminated by governance (the first reason wins)."""
        if not self._ended.is_set():
            self.terminated = reason
            self._ended.set()


def denied_unless_allowed(auth: Authorization, tool: str) -> None:
    """Step 2: raise the denial unless a warrant was issued."""
    if not auth.allowed:
        raise auth.denial(tool)


def approval_wait(auth: Authorization, timeout: float) -> str:
    """Step 2: the approval to wait for, or ``""`` (not pending, or no wait allowed)."""
    if auth.allowed or auth.approval is None or auth.approval.status != "pending" or timeout <= 0:
        return ""
    return auth.approval.id


# -- synchronous ----------------------------------------------------------------------


def authorize_sync(client: Client, call: GovernedCall, parent: str, approval_timeout: float) -> Authorization:
    """Steps 1-2: ask for a warrant; wait for a required approval up to ``approval_timeout``."""
    kw: dict[str, Any] = {"arguments": call.arguments, "executable_digest": call.definition_digest}
    auth = client.authorize(call.tool, parent_warrant=parent, **kw)
    waiting = approval_wait(auth, approval_timeout)
    deadline = time.monotonic() + approval_timeout
    while waiting and time.monotonic() < deadline:
        time.sleep(_APPROVAL_POLL_S)
        try:
            status = client.approval(waiting).status
        except GovernorError as e:
            return Authorization.denied(f"approval {waiting}: no answer from the governor: {e}")
        if status == "approved":
            return client.authorize(call.tool, parent_warrant=parent, approval=waiting, **kw)
        if status != "pending":
            return Authorization.denied(f"approval {waiting} was {status}")
    if waiting:
        return Authorization.denied(f"approval {waiting} was not given within {approval_timeout:g} s")
    return auth


class LeaseKeeper:
    """Renews one lease every TTL/3 in a daemon thread until stopped (step 4)."""

    def __init__(self, client: Client, lease: Lease, call: GovernedCall, on_end: Callable[[], None]) -> None:
        self._client, self._lease, self._call, self._on_end = client, lease, call, on_end
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"proctor-lease-{lease.execution}", daemon=True
        )

    def start(self) -> None:
        """Start renewing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and wait for the thread (at most one renewal in flight)."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        ttl = self._lease.lease_ttl_ms / 1000
        deadline = time.monotonic() + ttl  # counted from after the start answer: never late
        while True:
            wait = min(ttl / 3, max(0.0, deadline - time.monotonic()))
            if self._stop.wait(wait):
                return
            if time.monotonic() >= deadline:
                self._call.end("lease-lost")
                self._on_end()
                return
            sent = time.monotonic()
            try:
                renewal = self._client.renew(self._lease)
            except Exception as e:  # noqa: BLE001 - no valid answer: the lease ends at its deadline unless one comes
                _log.warning("proctor: renewal of %s: %s", self._lease.execution, e)
                continue
            if not renewal.ok:
                self._call.end(renewal.terminate)
                self._on_end()
                return
            deadline = sent + ttl


def open_sync(client: Client, call: GovernedCall, parent: str, approval_timeout: float) -> None:
    """Steps 1-3 for a :class:`Client`: authorized and started, or ``DeniedError``."""
    call.authorization = authorize_sync(client, call, parent, approval_timeout)
    denied_unless_allowed(call.authorization, call.tool)
    call.lease = client.start(
        call.authorization,
        resource=call.tool,
        arguments=call.arguments,
        definition_digest=call.definition_digest,
    )


def close_sync(client: Client, call: GovernedCall, error: BaseException | None) -> None:
    """Step 5 for a :class:`Client`: record the end (``error``: what the function raised)."""
    lease = call.lease
    if lease is None:
        return
    if call.terminated:
        try:
            call.status = client.finish(lease, outcome="terminated", reason=call.terminated).status
        except GovernorError:
            call.status = "terminated"  # the governor records it itself at the lease's end
        raise TerminatedError(
            f"{call.tool}: execution {lease.execution} was terminated by governance ({call.terminated}); "
            "its result is withheld",
            execution=lease.execution,
            reason=call.terminated,
        )
    if error is not None:
        detail = f"{type(error).__name__}: {error}"[:1000]
        try:
            call.status = client.finish(lease, outcome="failed", reason="exception", detail=detail).status
        except GovernorError:
            call.status = "failed"
        return
    call.result_digest = result_digest(call.result)
    call.status = client.finish(lease, outcome="completed", result_digest=call.result_digest).status
    if call.status == "terminated":  # governance ended it after the last renewal
        raise TerminatedError(
            f"{call.tool}: execution {lease.execution} was terminated by governance before it ended",
            execution=lease.execution,
            reason="revoked",
        )


# -- asynchronous ---------------------------------------------------------------------


async def authorize_async(
    client: AsyncClient, call: GovernedCall, parent: str, approval_timeout: float
) -> Authorization:
    """:func:`authorize_sync` for an :class:`AsyncClient`."""
    kw: dict[str, Any] = {"arguments": call.arguments, "executable_digest": call.definition_digest}
    auth = await client.authorize(call.tool, parent_warrant=parent, **kw)
    waiting = approval_wait(auth, approval_timeout)
    deadline = time.monotonic() + approval_timeout
    while waiting and time.monotonic() < deadline:
        await asyncio.sleep(_APPROVAL_POLL_S)
        try:
            status = (await client.approval(waiting)).status
        except GovernorError as e:
            return Authorization.denied(f"approval {waiting}: no answer from the governor: {e}")
        if status == "approved":
            return await client.authorize(call.tool, parent_warrant=parent, approval=waiting, **kw)
        if status != "pending":
            return Authorization.denied(f"approval {waiting} was {status}")
    if waiting:
        return Authorization.denied(f"approval {waiting} was not given within {approval_timeout:g} s")
    return auth


async def keep_async(
    client: AsyncClient, lease: Lease, call: GovernedCall, victim: asyncio.Task[Any]
) -> None:
    """Step 4 for a coroutine: renew every TTL/3; on the end, cancel ``victim``."""
    ttl = lease.lease_ttl_ms / 1000
    deadline = time.monotonic() + ttl
    while True:
        await asyncio.sleep(min(ttl / 3, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            call.end("lease-lost")
            victim.cancel()
            return
        sent = time.monotonic()
        try:
            renewal = await client.renew(lease)
        except Exception as e:  # noqa: BLE001 - no valid answer: the lease ends at its deadline unless one comes
            _log.warning("proctor: renewal of %s: %s", lease.execution, e)
            continue
        if not renewal.ok:
            call.end(renewal.terminate)
            victim.cancel()
            return
        deadline = sent + ttl


async def open_async(client: AsyncClient, call: GovernedCall, parent: str, approval_timeout: float) -> None:
    """:func:`open_sync` for an :class:`AsyncClient`."""
    call.authorization = await authorize_async(client, call, parent, approval_timeout)
    denied_unless_allowed(call.authorization, call.tool)
    call.lease = await client.start(
        call.authorization,
        resource=call.tool,
        arguments=call.arguments,
        definition_digest=call.definition_digest,
    )


async def close_async(client: AsyncClient, call: GovernedCall, error: BaseException | None) -> None:
    """:func:`close_sync` for an :class:`AsyncClient`."""
    lease = call.lease
    if lease is None:
        return
    if call.terminated:
        try:
            call.status = (await client.finish(lease, outcome="terminated", reason=call.terminated)).status
        except GovernorError:
            call.status = "terminated"
        raise TerminatedError(
            f"{call.tool}: execution {lease.execution} was terminated by governance ({call.terminated}); "
            "the call was cancelled",
            execution=lease.execution,
            reason=call.terminated,
        )
    if error is not None:
        reason = "cancelled" if isinstance(error, asyncio.CancelledError) else "exception"
        detail = f"{type(error).__name__}: {error}"[:1000]
        try:
            call.status = (await client.finish(lease, outcome="failed", reason=reason, detail=detail)).status
        except GovernorError:
            call.status = "failed"
        return
    call.result_digest = result_digest(call.result)
    call.status = (await client.finish(lease, outcome="completed", result_digest=call.result_digest)).status
    if call.status == "terminated":
        raise TerminatedError(
            f"{call.tool}: execution {lease.execution} was terminated by governance before it ended",
            execution=lease.execution,
            reason="revoked",
        )
