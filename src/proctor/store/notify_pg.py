"""Waking the trust follower of every governor node on PostgreSQL: ``LISTEN/NOTIFY``
(:class:`PgNotifySignal`, a :class:`~proctor.governor.follower.ChangeSignal`).

Every append to the log ``NOTIFY``s :data:`LOG_CHANNEL` inside its own transaction
(:class:`~proctor.store.postgres.PostgresLogStore`), with the new tree size as payload.
PostgreSQL delivers a notification only once its transaction commits, so a node woken
by one reads a log that already holds the change; a rolled-back append wakes no one.

A notification is a hint, never the record: the follower reads the log's committed size
and the entries after the position it applied (ADR 0016, decision 4). So:

1. :meth:`PgNotifySignal.wait` also returns after a safety interval
   (:data:`SAFETY_POLL_S`) without any notification: one missed (the listening session
   was down when it was sent; notifications are not queued for a session that is not
   listening) is late by at most that interval, never lost.
2. The listening session is a dedicated autocommit connection, served by a thread of
   its own. When it drops, the thread reconnects with a growing delay (up to
   :data:`MAX_BACKOFF_S`), ``LISTEN``s again, and then wakes the follower once: what was
   committed while nobody listened is read in that round, from the follower's last
   applied size.
3. ``close`` stops the thread; a ``wait`` after it returns at once.
4. :attr:`PgNotifySignal.announced` is the largest tree size a notification carried: the
   follower reads the entries up to it without reading the size first (a round trip
   less on the way from another node's commit to this node's streams), and falls back
   to the stored size when the entries stop short of it (anyone connected to the
   database may ``NOTIFY``: a payload is never the record).
5. A revocation goes to the other nodes before it is recorded too (ADR 0021):
   :meth:`PgNotifySignal.announce` ``NOTIFY``s :data:`REVOKE_CHANNEL` at once, outside
   any transaction, from a sender thread with a session of its own (never on the
   caller's thread: a revocation is queued from the event loop), and every other node's
   listener hands what it hears to its :meth:`~PgNotifySignal.on_revocation` callback,
   which tells that node's streams. Best effort, and only ever a stop: the recorded
   revocation follows through the log (step 4) whatever became of it; a payload that
   is not exactly ``{"from", "kind", "target"}`` strings is dropped, and a node ignores
   its own. Anyone who may ``NOTIFY`` on the database could so stop executions early —
   as anyone who may write to it could revoke them outright.
"""

from __future__ import annotations

import logging
import queue
import re
import secrets
import threading
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
from psycopg import sql

from proctor.store._pg import redact
from proctor.store.locks_pg import dedicated_session

__all__ = ["LOG_CHANNEL", "MAX_BACKOFF_S", "REVOKE_CHANNEL", "SAFETY_POLL_S", "PgNotifySignal"]

_log = logging.getLogger("proctor.store")

LOG_CHANNEL = "proctor_log"
"""The channel every append to the log notifies (payload: the new tree size)."""
REVOKE_CHANNEL = "proctor_revoke"
"""The channel a revocation is announced on before it is recorded (step 5; payload: JSON
``{"from": <the announcing signal>, "kind": …, "target": …}``)."""
_MAX_TARGET = 512  # characters of a revocation target a payload may carry
SAFETY_POLL_S = 0.25
"""How long :meth:`PgNotifySignal.wait` waits at most without a notification."""
MAX_BACKOFF_S = 2.0
"""The longest pause between two attempts to reconnect the listening session."""
_FIRST_BACKOFF_S = 0.05
_CLOSE_CHECK_S = 0.2  # how often the listening thread looks whether it should stop
_CHANNEL_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PgNotifySignal:
    """Wakes the follower on a notification of ``channel``, on :meth:`wake`, or after
    ``safety_poll`` seconds (module docstring). Thread-safe; the listening thread
    starts at once."""

    def __init__(
        self,
        dsn: str,
        *,
        channel: str = LOG_CHANNEL,
        safety_poll: float = SAFETY_POLL_S,
        max_backoff: float = MAX_BACKOFF_S,
        connect_timeout: float = 5.0,
    ) -> None:
        """Start listening on ``channel`` in the database at ``dsn``.

        Args:
            dsn: the database (a libpq URI or ``key=value`` string).
            channel: the channel (a lower-case SQL identifier).
            safety_poll: the longest :meth:`wait` without a notification (seconds).
            max_backoff: the longest pause between reconnection attempts (seconds).
            connect_timeout: seconds to wait for each connection attempt.

        Raises:
            ValueError: a channel that is not a lower-case identifier, or an interval
                that is not positive.
        """
        if not _CHANNEL_NAME.fullmatch(channel):
            raise ValueError(f"expected a channel of lower-case letters, digits and _, found {channel!r}")
        if safety_poll <= 0 or max_backoff <= 0:
            raise ValueError(
                f"expected positive intervals, found safety_poll={safety_poll}, max_backoff={max_backoff}"
            )
        self._dsn = dsn
        self._where = redact(dsn)
        self._channel = channel
        self._safety_poll = safety_poll
        self._max_backoff = max_backoff
        self._connect_timeout = connect_timeout
        self._woken = threading.Event()
        self._closed = threading.Event()
        self._listening = threading.Event()
        self._sessions = 0
        self._notifications = 0
        self._announced = 0
        self._backoff = _FIRST_BACKOFF_S
        self._me = secrets.token_hex(8)  # tells this signal's own announcements apart
        self._on_revocation: Callable[[str, str], None] | None = None
        self._outbox: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._sender_lock = threading.Lock()
        self._thread = threading.Thread(target=self._listen, name="proctor-listen", daemon=True)
        self._thread.start()

    @property
    def listening(self) -> bool:
        """Whether the listening session is up (else only the safety poll wakes)."""
        return self._listening.is_set()

    @property
    def sessions(self) -> int:
        """How many listening sessions were opened (1 + the reconnections)."""
        return self._sessions

    @property
    def announced(self) -> int:
        """The largest log size a notification carried (0 if none did); a hint (step 4)."""
        return self._announced

    @property
    def notifications(self) -> int:
        """How many notifications were received."""
        return self._notifications

    def wait_listening(self, timeout: float) -> bool:
        """Wait until the listening session is up; whether it is."""
        return self._listening.wait(timeout)

    def wait(self, timeout: float) -> None:
        """Return on a notification, on :meth:`wake`, or after ``timeout`` or the
        safety interval, whichever comes first."""
        if self._closed.is_set():
            return
        self._woken.wait(min(timeout, self._safety_poll))
        self._woken.clear()

    def wake(self) -> None:
        """This process recorded a change: wake the follower now."""
        self._woken.set()

    def on_revocation(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(kind, target)`` for each revocation another node announces
        (step 5), on the listening thread (it must not block). A node that hears
        announcements also makes them: its sender's session is opened now, so that the
        first revocation does not wait for a connection."""
        self._on_revocation = callback
        self._start_sender()

    def announce(self, kind: str, target: str) -> None:
        """Tell the other nodes of a revocation now, before it is recorded (step 5).
        Never blocks: the sender thread ``NOTIFY``s."""
        if self._closed.is_set():
            return
        self._start_sender()
        self._outbox.put((kind, target))

    def _start_sender(self) -> None:
        with self._sender_lock:
            if self._sender is None and not self._closed.is_set():
                self._sender = threading.Thread(target=self._send, name="proctor-announce", daemon=True)
                self._sender.start()

    def close(self) -> None:
        """Stop listening; a :meth:`wait` returns at once from now on."""
        self._closed.set()
        self._woken.set()
        self._outbox.put(None)
        for thread in (self._thread, self._sender):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=_CLOSE_CHECK_S + self._connect_timeout + 1)

    def _send(self) -> None:
        """The sender thread: one session of its own, opened at once and kept. An
        announcement that fails is sent again once on a new session (the old one may
        have been cut while idle); if that fails too it is dropped — the recorded
        revocation still reaches every node — and logged."""
        conn: psycopg.Connection[Any] | None = None
        try:
            conn = self._sender_session()
        except psycopg.Error:
            conn = None  # opened again for the first announcement
        try:
            while (item := self._outbox.get()) is not None:
                payload = orjson.dumps({"from": self._me, "kind": item[0], "target": item[1]}).decode()
                for attempt in (1, 2):
                    try:
                        if conn is None or conn.closed:
                            conn = self._sender_session()
                        conn.execute("SELECT pg_notify(%s, %s)", (REVOKE_CHANNEL, payload))
                        break
                    except psycopg.Error as e:
                        if conn is not None:
                            conn.close()
                        conn = None
                        if attempt == 2:
                            _log.warning(
                                "could not announce a revocation on %s before it is recorded (it "
                                "reaches the other nodes once recorded): %s",
                                self._where,
                                str(e).strip(),
                            )
        finally:
            if conn is not None:
                conn.close()

    def _sender_session(self) -> psycopg.Connection[Any]:
        return dedicated_session(
            self._dsn, application_name="proctor-announce", connect_timeout=self._connect_timeout
        )

    def _heard(self, payload: str) -> None:
        """A revocation another node announced (step 5): strictly shaped, or dropped."""
        callback = self._on_revocation
        if callback is None or len(payload) > 2 * _MAX_TARGET:
            return
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict) or set(message) != {"from", "kind", "target"}:
            return
        sender, kind, target = message["from"], message["kind"], message["target"]
        if not all(type(v) is str for v in (sender, kind, target)) or sender == self._me:
            return
        if not target or len(target) > _MAX_TARGET:
            return
        try:
            callback(kind, target)
        except Exception:  # noqa: BLE001 - the listening thread must go on
            _log.exception("a revocation announced by another node could not be passed on")

    def _listen(self) -> None:
        """The listening thread: connect, ``LISTEN``, relay notifications; on any
        failure reconnect after a pause that grows to ``max_backoff`` (step 2)."""
        while not self._closed.is_set():
            try:
                self._session()
            except psycopg.Error as e:
                backoff = self._backoff
                if self._listening.is_set() or backoff == _FIRST_BACKOFF_S:
                    _log.warning(
                        "not listening for log changes on %s (polling every %s s until back): %s",
                        self._where,
                        self._safety_poll,
                        str(e).strip(),
                    )
                self._listening.clear()
                self._closed.wait(backoff)
                self._backoff = min(backoff * 2, self._max_backoff)
            except Exception:  # noqa: BLE001 - the thread must never die silently; it retries
                _log.exception("the listening session on %s failed", self._where)
                self._listening.clear()
                self._closed.wait(self._max_backoff)

    def _session(self) -> None:
        """One listening session, until it fails (raises) or the signal closes."""
        conn: psycopg.Connection[Any] = dedicated_session(
            self._dsn, application_name="proctor-listen", connect_timeout=self._connect_timeout
        )
        with conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(REVOKE_CHANNEL)))
            self._sessions += 1
            self._backoff = _FIRST_BACKOFF_S  # it is up: after a failure, retry soon
            self._listening.set()
            # Whatever committed while nobody listened is read in this round (step 2).
            self._woken.set()
            while not self._closed.is_set():
                for notification in conn.notifies(timeout=_CLOSE_CHECK_S, stop_after=1):
                    if notification.channel == REVOKE_CHANNEL:
                        self._heard(notification.payload)
                        continue
                    self._notifications += 1
                    payload = notification.payload
                    if 0 < len(payload) <= 19 and payload.isascii() and payload.isdigit():  # a BIGINT
                        self._announced = max(self._announced, int(payload))
                    self._woken.set()
        self._listening.clear()
