"""A supervisor that cannot act must not leave its tree running: heartbeats and a watchdog.

The supervisor sends a heartbeat (one byte) every ``min(0.1, ttl / 4)`` seconds from a
thread of its own (:class:`Heartbeat`) over a socket pair to a *watchdog* it does not
control, which answers each one. The watchdog kills the whole tree when

- no heartbeat arrived for ``ttl`` seconds (the lease TTL): the supervisor is stopped
  (``SIGSTOP``), wedged, or starved;
- the socket reached end-of-file without a "done": the supervisor died.

And the supervisor kills the tree itself when its watchdog stops answering for ``ttl``
or is gone while the command runs: each side watches the other.

Who the watchdog is, per backend:

``pidns``
    The pid namespace's init relay (see :mod:`proctor.enforcement._spawn`). When it
    exits, the kernel kills every process in the namespace. The command cannot signal
    it (an init ignores signals from inside its namespace that it has no handler for,
    and the relay blocks the rest) nor name anything outside the namespace.
otherwise
    A separate process forked from the supervisor after the command
    (:class:`WatchdogProcess`): in a session of its own, outside the execution's
    cgroups, non-dumpable, with termination signals blocked. It kills like
    ``terminate_tree`` does — ``cgroup.kill`` or freeze-kill-thaw where there is a
    cgroup, else stop-then-kill of the session, process group, descendants and orphans.
    A governed process running as the same user can still signal it (and the
    supervisor): only the pid namespace keeps the tree from reaching them.

Why the governed program cannot keep the watchdog fed: the socket is close-on-exec and
never passed to the command; a socket, unlike a pipe, cannot be reopened through
``/proc/<pid>/fd``; ``pidfd_getfd`` and ``/proc/<pid>/mem`` need ptrace rights over the
holder, which the command lacks — over the relays, which hold capabilities in the user
namespace that the command (a non-root user there) does not; over the watchdog process,
which is non-dumpable. A command running as root (outside a user namespace) has those
rights: root inside the tree is outside what this can hold.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from proctor.enforcement import _linux
from proctor.enforcement._tree import ProcessTree, TreeSpec

__all__ = [
    "LAPSED",
    "GONE",
    "RELAY_BLOCKED",
    "period_for",
    "Heartbeat",
    "watch",
    "WatchdogProcess",
    "log_lost",
]

_log = logging.getLogger("proctor.enforcement.containment")

LAPSED = 3
"""Exit status of the watchdog process (and flag of the init relay) after a lapse."""
GONE = 4
"""Likewise, after the supervisor died (end-of-file)."""

_BEAT = b"."
_DONE = b"D"
_ACK = b"a"
_KILL_ROUNDS = 200

RELAY_BLOCKED = frozenset(
    {
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGPIPE,
        signal.SIGALRM,
    }
)
"""Signals proctor's relays and watchdog block: only SIGKILL (and SIGSTOP) reach them."""


def period_for(ttl: float) -> float:
    """The heartbeat period for a lease TTL.

    Args:
        ttl: seconds.

    Returns:
        ``min(0.1, ttl / 4)``.
    """
    return min(0.1, ttl / 4)


class Heartbeat:
    """The supervisor's side: beats from its own thread and watches the answers.

    Args:
        sock: the supervisor's end of the socket pair.
        ttl: the lease TTL in seconds.
        on_lost: called once (from the heartbeat thread) with a reason when the
            watchdog is gone or has not answered for ``ttl``.
    """

    def __init__(self, sock: socket.socket, ttl: float, on_lost: Callable[[str], None]) -> None:
        """Hold the socket; :meth:`start` starts beating."""
        self._sock = sock
        self._ttl = ttl
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proctor-heartbeat", daemon=True)

    def start(self) -> None:
        """Start the heartbeat thread."""
        self._thread.start()

    def _run(self) -> None:
        period = period_for(self._ttl)
        last_answer = time.monotonic()
        flags = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
        while not self._stop.wait(period):
            try:
                self._sock.send(_BEAT, flags)
            except BlockingIOError:
                pass  # the watchdog is not reading: the answer check below decides
            except OSError:
                return self._lost("the watchdog is gone")
            try:
                while True:
                    if not self._sock.recv(4096, socket.MSG_DONTWAIT):
                        return self._lost("the watchdog is gone")
                    last_answer = time.monotonic()
            except BlockingIOError:
                pass
            except OSError:
                return self._lost("the watchdog is gone")
            if time.monotonic() - last_answer > self._ttl:
                return self._lost(f"the watchdog did not answer for {self._ttl:.1f} s")
        return None

    def _lost(self, reason: str) -> None:
        if not self._stop.is_set():
            self._on_lost(reason)

    def stop(self, *, done: bool) -> None:
        """Stop beating and close the socket. Idempotent.

        Args:
            done: tell the watchdog the execution is over (it then exits without
                killing); otherwise it sees end-of-file, as if the supervisor died.
        """
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1)
        if done:
            with contextlib.suppress(OSError):
                self._sock.send(_DONE, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        self._sock.close()


def watch(sock_fd: int, ttl: float, *, child_pidfd: int = -1, reap: Callable[[], bool] | None = None) -> int:
    """The watchdog's side: wait for heartbeats, answer each; return why it stopped.

    Runs in a forked relay or watchdog process: imports nothing, logs nothing.

    Args:
        sock_fd: the watchdog's end of the socket pair.
        ttl: seconds without a heartbeat after which the supervisor is given up.
        child_pidfd: a pidfd to wake up on (the init relay's command), or -1.
        reap: called on every wake-up; ``True`` ends the watch (the command exited).

    Returns:
        0 when ``reap`` ended it or the supervisor said "done"; :data:`LAPSED`;
        :data:`GONE`.
    """
    os.set_blocking(sock_fd, False)
    poller = select.poll()
    poller.register(sock_fd, select.POLLIN)
    if child_pidfd >= 0:
        poller.register(child_pidfd, select.POLLIN)
    deadline = time.monotonic() + ttl
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return LAPSED
        events = poller.poll(int(remaining * 1000) + 1)
        if reap is not None and reap():
            return 0
        if not any(fd == sock_fd for fd, _ in events):
            continue
        try:
            data = os.read(sock_fd, 4096)
        except BlockingIOError:
            continue
        except OSError:
            return GONE
        if not data:
            return GONE
        if _DONE in data:
            return 0
        deadline = time.monotonic() + ttl
        with contextlib.suppress(OSError):
            os.write(sock_fd, _ACK)  # full (the supervisor is stopped): it catches up later


class WatchdogProcess:
    """The watchdog of a tree without a pid namespace: a process of its own.

    Args:
        spec: the tree, as the supervisor tracks it.
        sock_fd: the watchdog's end of the socket pair.
        ttl: the lease TTL in seconds.
        direct_children: the supervisor's contained direct children now (excluded
            from the tree, as the supervisor excludes them).
    """

    def __init__(self, spec: TreeSpec, sock_fd: int, ttl: float, direct_children: set[int]) -> None:
        """Prepare everything the forked watchdog needs, in the supervisor, before the fork."""
        frozen = frozenset(direct_children)
        # Built here, so that "orphans reparented to the supervisor" still means the
        # supervisor; and the watchdog, a child of the supervisor too, is never a member.
        self._tree = ProcessTree(
            replace(spec, direct_children=lambda: set(frozen | {os.getpid()}), seen=dict(spec.seen))
        )
        self._sock_fd = sock_fd
        self._ttl = ttl

    def __call__(self) -> None:  # pragma: no cover - runs in the forked watchdog
        """Watch; kill the tree unless the supervisor said "done" (also if watching failed)."""
        why = GONE
        try:
            _linux.set_name(b"proctor-watch")
            _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
            signal.pthread_sigmask(signal.SIG_BLOCK, RELAY_BLOCKED)
            keep = self._sock_fd
            os.closerange(0, keep)
            os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
            why = watch(keep, self._ttl)
        except BaseException:  # noqa: BLE001 - fail closed: kill below, whatever happened
            why = GONE
        if why == 0:
            os._exit(0)
        try:
            for _ in range(_KILL_ROUNDS):
                self._tree.kill()
                if not self._tree.members():
                    break
                time.sleep(0.005)
        finally:
            os._exit(why)


def log_lost(pid: int, reason: str) -> None:
    """Log that a tree is being killed because its watchdog is lost.

    Args:
        pid: the tree's direct child.
        reason: why.
    """
    _log.warning("killing the tree of pid %d: %s", pid, reason)
