"""Following the trust changes that other governor processes record (shared mode,
ADR 0016).

Each governor process keeps trust in memory: the principals it read, the active policy
engine. In the exclusive mode it is the only writer, and it updates that memory as it
records each change. With several processes on one store (``proctor serve --shared``),
a revocation, a suspension or a policy activation recorded by process A must also
reach process B's memory and the enforcers that stream from B, within the same
latency as on A. :class:`TrustFollower` does that:

1. It remembers the log size up to which it applied changes (at start-up: the size
   before the state was checked and the engine loaded, so nothing recorded after that
   is missed; what it applies twice is idempotent).
2. When woken (:class:`ChangeSignal`) it reads the log's size; if the log grew, it
   reads the new entries in index order and parses only those whose canonical text
   names a trust change (``"type":"principal.changed"``, ``"revocation"``,
   ``"policy.activated"``; RFC 8785 writes the member exactly so), or a warrant issued
   (``"warrant.issued"``: the rate counters policies read count every process's).
3. For each, in log order: a principal changed or revoked is forgotten from the cache
   (read again from the store on next use); a revoked execution stops counting as
   running; a revoked bundle is withdrawn if it is the active one. After the batch, if
   a bundle was activated, the store's active bundle is verified with its signer's key
   and compiled, and installed unless the engine is already as new (versions only go
   forward; the admin lock orders this with the process's own pushes). A bundle that
   does not load leaves no engine (deny everything), as at start-up.
4. Then it publishes the batch's revocations and activations to this process's event
   streams, in log order. In shared mode the follower is the *only* publisher of
   recorded changes, this process's own included (:class:`FollowedBroadcaster` turns
   the administration's publish into a wake-up): a stream never sees a change twice,
   nor a later change before an earlier one (a client that resumes after the last
   ``seq`` it saw misses nothing).
5. Only then does it advance its position. If a round fails (the store cannot be
   read), the position stays and the next round retries; once it has been behind for
   longer than ``stale_after``, the trust view says so (``lagging``): this process
   denies authorizations and refuses starts and renewals (503) until it catches up,
   and reports not ready.

Wake-up: :class:`ChangeSignal` is an interface. On SQLite no notification crosses
processes, so :class:`PollingSignal` wakes the follower every few milliseconds (a read
of one ``meta`` row when nothing changed) and at once when this process recorded a
change. A PostgreSQL store plugs ``LISTEN/NOTIFY`` in behind the same interface
(:class:`~proctor.store.notify_pg.PgNotifySignal`: every append notifies on commit; a
safety poll of 250 ms and a round after each reconnection cover a missed one);
:func:`change_signal` picks the store's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proctor.authorization.keys import load_public_key
from proctor.errors import LogIntegrityError, ProctorError
from proctor.governor.admin import REVOCATION_KINDS
from proctor.governor.stream import Broadcaster, early_revocation
from proctor.governor.trust import TrustView
from proctor.policy import PolicyEngine, SignedBundle
from proctor.store.base import LogStore
from proctor.store.state import StateStore

__all__ = [
    "DEFAULT_POLL_S",
    "DEFAULT_STALE_AFTER_S",
    "ChangeSignal",
    "FollowedBroadcaster",
    "PollingSignal",
    "TrustFollower",
    "change_signal",
]

_log = logging.getLogger("proctor.governor")

DEFAULT_POLL_S = 0.003
"""How often :class:`PollingSignal` wakes the follower (seconds)."""
DEFAULT_STALE_AFTER_S = 2.0
"""How long the follower may stay behind the log before this process stops serving."""

_PRINCIPAL = b'"type":"principal.changed"'
_REVOCATION = b'"type":"revocation"'
_POLICY = b'"type":"policy.activated"'
_ISSUED = b'"type":"warrant.issued"'

Message = dict[str, Any]


class ChangeSignal(Protocol):
    """What wakes the follower: another process may have recorded a change, or this one did."""

    def wait(self, timeout: float) -> None:
        """Return once woken (:meth:`wake`, or another process's change), or after
        ``timeout`` seconds, whichever comes first."""
        ...

    def wake(self) -> None:
        """This process recorded a change: wake the follower now."""
        ...

    def close(self) -> None:
        """Stop waking; a :meth:`wait` returns at once from now on."""
        ...

    def announce(self, kind: str, target: str) -> None:
        """Tell the other processes of a revocation before it is recorded (ADR 0021),
        where the signal can carry it; never blocks."""
        ...

    def on_revocation(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(kind, target)`` for each revocation another process announces."""
        ...


class PollingSignal:
    """SQLite's :class:`ChangeSignal`: wakes every ``interval`` seconds (the follower
    then reads the log's size), and at once on :meth:`wake`."""

    def __init__(self, interval: float = DEFAULT_POLL_S) -> None:
        if interval <= 0:
            raise ValueError(f"expected a positive poll interval, found {interval}")
        self._interval = interval
        self._woken = threading.Event()
        self._closed = False

    def wait(self, timeout: float) -> None:
        """Sleep until woken, the interval or ``timeout``, whichever is first."""
        if self._closed:
            return
        self._woken.wait(min(timeout, self._interval))
        self._woken.clear()

    def wake(self) -> None:
        """Wake the follower now."""
        self._woken.set()

    def close(self) -> None:
        """Stop sleeping."""
        self._closed = True
        self._woken.set()

    def announce(self, kind: str, target: str) -> None:
        """Nothing: on SQLite no message crosses processes; the others hear the
        revocation from the log, within one poll of its commit."""

    def on_revocation(self, callback: Callable[[str, str], None]) -> None:
        """Nothing: no process announces anything here (:meth:`announce`)."""


def change_signal(store: str | None) -> ChangeSignal:
    """The wake-up of a shared governor's follower on ``store``: polling on the data
    directory's SQLite file (``None``), ``LISTEN/NOTIFY`` on a PostgreSQL URL.

    Raises:
        StoreError: ``store`` is not a PostgreSQL URL.
    """
    if store is None:
        return PollingSignal()
    from proctor.store.notify_pg import PgNotifySignal  # noqa: PLC0415 - psycopg only with a URL
    from proctor.store.open import check_store_url  # noqa: PLC0415

    return PgNotifySignal(check_store_url(store))


class FollowedBroadcaster(Broadcaster):
    """Shared mode's broadcaster: a recorded change published by this process wakes
    the follower, which publishes it in log order with everyone else's
    (:meth:`deliver`); a revocation not yet recorded (``seq`` -1: pushed before its
    commit, ADR 0021) goes out at once, as in the exclusive mode — and, where the
    signal can carry it (PostgreSQL's ``NOTIFY``), to the other nodes' streams too,
    which also hear theirs here."""

    def __init__(self, signal: ChangeSignal) -> None:
        super().__init__()
        self._signal = signal
        signal.on_revocation(self._announced)

    def publish(self, message: dict[str, Any]) -> None:
        """Wake the follower for a recorded change; publish an unrecorded one now."""
        seq = message.get("seq")
        if type(seq) is int and seq >= 0:
            self._signal.wake()
            return
        super().publish(message)
        kind, target = message.get("kind"), message.get("target")
        if message.get("type") == "revocation" and type(kind) is str and type(target) is str:
            self._signal.announce(kind, target)

    def _announced(self, kind: str, target: str) -> None:
        """Another node's revocation, not yet recorded (its record follows through the
        log): to this node's streams now. Only a known kind; it can only stop things."""
        if kind in REVOCATION_KINDS:
            super().publish(early_revocation(kind, target))

    def deliver(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every stream (the follower's call, in log order)."""
        super().publish(message)

    def follow(
        self,
        trust: TrustView,
        state: StateStore,
        revoked_execution: Callable[[str], None],
        admin_lock: threading.Lock,
        *,
        log_store: LogStore,
        start: int,
        issued: Callable[[str, int], None] | None = None,
    ) -> TrustFollower:
        """Start the :class:`TrustFollower` that publishes here, woken by this broadcaster's
        signal, reading ``log_store`` from log size ``start`` (its committed size, not
        the log writer's, which may count a commit in flight)."""
        follower = TrustFollower(
            trust=trust,
            state=state,
            size=log_store.tree_size,
            entries=log_store.entries,
            revoked_execution=revoked_execution,
            admin_lock=admin_lock,
            broadcaster=self,
            signal=self._signal,
            start=start,
            issued=issued,
        )
        follower.start()
        return follower


class TrustFollower:
    """Applies the trust changes recorded after ``start`` to this process (module docstring)."""

    def __init__(
        self,
        *,
        trust: TrustView,
        state: StateStore,
        size: Callable[[], int],
        entries: Callable[[int, int], Iterable[tuple[int, bytes]]],
        revoked_execution: Callable[[str], None],
        admin_lock: threading.Lock,
        broadcaster: FollowedBroadcaster,
        signal: ChangeSignal,
        start: int,
        issued: Callable[[str, int], None] | None = None,
        stale_after: float = DEFAULT_STALE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        trust: the view to keep current (principals forgotten, engines installed).
        state: the store (active bundle, signer keys).
        size: the log's durable size, read from the store.
        entries: the stored entries in ``[start, end)``, in index order.
        revoked_execution: told of an execution another process revoked.
        admin_lock: orders engine changes with this process's own admin changes.
        broadcaster: where the changes go to this process's event streams.
        signal: what wakes the follower.
        start: the log size up to which this process's trust is current.
        issued: told of every warrant issued (principal, unix second), for the rate
            counters policies read.
        stale_after: seconds behind before this process stops serving.
        clock: monotonic seconds.
        """
        self._trust = trust
        self._state = state
        self._size = size
        self._entries = entries
        self._revoked_execution = revoked_execution
        self._admin_lock = admin_lock
        self._broadcaster = broadcaster
        self._signal = signal
        self._applied = start
        self._issued = issued
        self._stale_after = stale_after
        self._clock = clock
        self._behind_since: float | None = None
        self._false_hint = 0
        self._round = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def applied(self) -> int:
        """The log size up to which trust changes are applied here."""
        return self._applied

    def start(self) -> None:
        """Follow in a background thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="proctor-trust-follower", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop following."""
        self._stopping.set()
        self._signal.close()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._signal.wait(0.5)
            if self._stopping.is_set():
                return
            self.follow()

    def follow(self) -> bool:
        """One round: apply what was recorded since the last; whether it caught up.
        A failure is logged and retried next round (and, long enough, makes this
        process stop serving: module docstring, step 5)."""
        try:
            self.poll()
        except Exception as e:  # noqa: BLE001 - the follower must never die; it reports instead
            now = self._clock()
            if self._behind_since is None:
                self._behind_since = now
            _log.warning("cannot follow the trust changes of the other governor processes: %s", e)
            if now - self._behind_since >= self._stale_after:
                self._trust.set_lagging(
                    f"this governor process has not read the trust changes recorded by the others for "
                    f"{now - self._behind_since:.1f} s ({e}); it serves nothing until it has"
                )
            return False
        self._behind_since = None
        self._trust.set_lagging(None)
        return True

    def poll(self) -> int:
        """Apply every change recorded up to the log's current size (steps 2-5).

        Returns:
            The log size now applied.

        Raises:
            StoreError: the store cannot be read (nothing advanced).
            LogIntegrityError: an entry is missing.
        """
        with self._round:
            # The size a notification announced, if ahead: the entries are read up to it
            # without first reading the size (a round trip less between another node's
            # commit and this node's streams). It is a hint: committed before it was
            # delivered, but anyone connected may NOTIFY, so if the entries stop short
            # of it the stored size decides, as without a hint.
            hinted = self._announced()
            if hinted <= self._false_hint:
                hinted = 0  # one that ran ahead of the log before is not used again
            size = hinted if hinted > self._applied else self._size()
            if size <= self._applied:
                return self._applied
            messages: list[Message] = []
            revoked: list[str] = []
            expected, activated = self._read(self._applied, size, messages, revoked)
            if expected != size and size == hinted:
                self._false_hint = hinted
                size = max(self._size(), expected)
                more, again = self._read(expected, size, messages, revoked)
                expected, activated = more, activated or again
            if expected != size:
                raise LogIntegrityError(
                    f"expected entries up to {size}, found up to {expected}", index=expected
                )
            if activated:
                self._sync_engine()
            for message in messages:
                self._broadcaster.deliver(message)
            # After the streams heard: marking an execution no longer running reads its
            # row (its principal's count); until then the count is one too high, which
            # refuses a start rather than admitting one. The kill does not wait for it.
            for execution_id in revoked:
                self._revoked_execution(execution_id)
            self._applied = size
            return size

    def _announced(self) -> int:
        """The log size the latest notification announced (0: none, or a signal that
        does not say, as :class:`PollingSignal`)."""
        announced = getattr(self._signal, "announced", 0)
        return announced if type(announced) is int else 0

    def _read(self, start: int, end: int, messages: list[Message], revoked: list[str]) -> tuple[int, bool]:
        """Apply the entries stored in ``[start, end)`` (step 3), contiguous from
        ``start``; the index after the last one read, and whether one activated a
        bundle.

        Raises:
            LogIntegrityError: an entry is out of order.
        """
        activated = False
        expected = start
        for index, raw in self._entries(start, end):
            if index != expected:
                raise LogIntegrityError(
                    f"expected entry {expected} of the log, found {index}", index=expected
                )
            expected += 1
            if _PRINCIPAL in raw or _REVOCATION in raw or _POLICY in raw:
                activated |= self._apply(index, orjson.loads(raw), messages, revoked)
            elif self._issued is not None and _ISSUED in raw:
                self._count(orjson.loads(raw))
        return expected, activated

    def _apply(self, index: int, event: Any, messages: list[Message], revoked: list[str]) -> bool:
        """One change (step 3); whether it activated a bundle. A revoked execution is
        added to ``revoked``, marked once the streams heard (:meth:`poll`)."""
        if not isinstance(event, dict):
            return False
        kind = event.get("type")
        if kind == "principal.changed":
            self._trust.forget_principal(str(event.get("principal", "")))
        elif kind == "revocation":
            target = event.get("target")
            if not isinstance(target, dict):
                return False
            what, which = str(target.get("kind", "")), str(target.get("id", ""))
            if what == "principal":
                self._trust.forget_principal(which)
            elif what == "execution":
                revoked.append(which)
            elif what == "policy":
                with self._admin_lock:
                    self._trust.policy_withdrawn(which)
            messages.append({"type": "revocation", "seq": index, "kind": what, "target": which})
        elif kind == "policy.activated":
            messages.append({"type": "policy", "seq": index, "bundle": str(event.get("bundle", ""))})
            return True
        return False

    def _count(self, event: Any) -> None:
        """A ``warrant.issued`` event: one more warrant of its principal, at its second."""
        if self._issued is None or not isinstance(event, dict):
            return
        stamp, principal = event.get("time"), event.get("principal")
        if type(stamp) is not str or type(principal) is not str:
            return
        try:
            at = datetime.fromisoformat(stamp[:19]).replace(tzinfo=UTC).timestamp()
        except ValueError:
            return  # not one of ours (the log accepted it: canonical, but not our stamp)
        self._issued(principal, int(at))

    def _sync_engine(self) -> None:
        """Install the store's active bundle unless the engine is as new (step 3)."""
        active = self._state.active_bundle()
        if active is None:
            return
        digest, doc = active
        current = self._trust.engine
        if current is not None and current.bundle_digest == digest:
            return
        if self._state.is_revoked("policy", digest):
            return  # withdrawn (the revocation's own step), never reinstalled
        try:
            signed = SignedBundle.from_json(orjson.loads(doc))
            signer = self._state.principal(signed.signer)
            if signer is None:
                raise ProctorError(f"its signer {signed.signer!r} is not a principal")
            signed.verify(Ed25519PublicKey.from_public_bytes(load_public_key(signer.public_key)))
            engine = PolicyEngine.compile(signed.bundle)
        except (ProctorError, ValueError) as e:
            with self._admin_lock:
                self._trust.policy_failed(f"the active bundle {digest} does not load: {e}")
            return
        with self._admin_lock:
            current = self._trust.engine
            if current is None or current.bundle.version < engine.bundle.version:
                self._trust.policy_activated(engine)
