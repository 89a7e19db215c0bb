"""The one thread that forks every contained child (:class:`Spawner`), and the watchdog
process of a tree without a pid namespace (:func:`start_watchdog`).

PDEATHSIG fires when the parent *thread* exits, not the process. Children are therefore
forked by one long-lived :class:`Spawner` thread that never exits before the process
does, whatever thread calls ``spawn``. What each child does between ``fork`` and
``exec`` is :mod:`proctor.enforcement._spawn`'s.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from proctor.enforcement import _linux
from proctor.enforcement._tree import TreeSpec
from proctor.enforcement._watchdog import WatchdogProcess

__all__ = ["Spawner", "spawner", "start_watchdog"]

T = TypeVar("T")


class Spawner:
    """The one long-lived thread that forks every contained child.

    Running ``fork`` here ties PDEATHSIG to a thread that lives as long as the process,
    and confines the pid-namespace switch (``unshare(CLONE_NEWPID)`` before the fork,
    ``setns`` back after it) to a thread that runs nothing else.
    """

    def __init__(self) -> None:
        """Create the spawner; its thread starts on first use."""
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._own_pidns: int | None = None

    def _loop(self) -> None:
        while True:
            fn, future = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller, who re-raises
                if isinstance(e, _PoisonedError):
                    with self._lock:
                        self._thread = None  # the next call starts a fresh thread
                    future.set_exception(e)
                    return _park()
                future.set_exception(e)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue ``fn`` for the spawner thread.

        Args:
            fn: what to run (a ``Popen`` call).

        Returns:
            Its future: what ``fn`` returns, or its exception.
        """
        future: Future[T] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="proctor-spawner", daemon=True)
                self._thread.start()
            self._queue.put((fn, future))  # type: ignore[arg-type]
        return future

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the spawner thread and return its result (or raise its exception).

        Args:
            fn: what to run (a ``Popen`` call).

        Returns:
            What ``fn`` returned.
        """
        return self.submit(fn).result()

    def popen(self, *, new_pidns: bool, **kwargs: object) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(**kwargs)`` from the spawner thread.

        Args:
            new_pidns: make the child the init of a new pid namespace (needs CAP_SYS_ADMIN).
            **kwargs: passed to ``Popen``.

        Returns:
            The started process.
        """
        return self.popen_later(new_pidns=new_pidns, **kwargs).result()

    def popen_later(self, *, new_pidns: bool, **kwargs: object) -> Future[subprocess.Popen[bytes]]:
        """:meth:`popen`, queued: its future resolves once ``Popen`` returns.

        A gated child (``ChildSetup.gate_fd``) keeps ``Popen`` and this thread waiting
        until it is let go, so other starts of this process queue behind it.

        Args:
            new_pidns: as for :meth:`popen`.
            **kwargs: passed to ``Popen``.

        Returns:
            The future of the started process.
        """

        def start() -> subprocess.Popen[bytes]:
            if not new_pidns:
                return subprocess.Popen(**kwargs)  # type: ignore[call-overload,no-any-return]
            if self._own_pidns is None:
                self._own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            _linux.unshare(_linux.CLONE_NEWPID)
            try:
                proc: subprocess.Popen[bytes] = subprocess.Popen(**kwargs)  # type: ignore[call-overload]
            except BaseException:
                self._leave_pidns(None)
                raise
            self._leave_pidns(proc)
            return proc

        return self.submit(start)

    def _leave_pidns(self, proc: subprocess.Popen[bytes] | None) -> None:
        if self._own_pidns is None:
            return
        try:
            _linux.setns(self._own_pidns, _linux.CLONE_NEWPID)
        except OSError as e:
            # This thread's next child would land in a dead namespace: retire the thread
            # (it stays parked, never exiting, so no PDEATHSIG fires) and the child.
            if proc is not None:
                proc.kill()
                proc.wait()
            raise _PoisonedError(f"cannot return to our pid namespace: {e}") from e


class _PoisonedError(OSError):
    """The spawner thread can no longer fork safely."""


def _park() -> None:
    threading.Event().wait()


_SPAWNER = Spawner()


def spawner() -> Spawner:
    """The process-wide spawner.

    Returns:
        The one :class:`Spawner` of this process.
    """
    return _SPAWNER


def start_watchdog(
    spec: TreeSpec, sock_fd: int, ttl: float, direct_children: set[int]
) -> subprocess.Popen[bytes]:
    """Fork the watchdog process of a tree without a pid namespace (see ``_watchdog``).

    It needs no PDEATHSIG (it must outlive the supervisor, to kill the tree when the
    supervisor dies), so it is forked from the calling thread, not queued for the spawner
    thread: that one may be held by another start waiting for its go, and a tree already
    let go must not run unwatched meanwhile.

    Args:
        spec: the tree.
        sock_fd: the watchdog's end of the heartbeat socket.
        ttl: the lease TTL in seconds.
        direct_children: the supervisor's contained direct children.

    Returns:
        The watchdog (a child of this process, to be reaped).
    """
    dog = WatchdogProcess(spec, sock_fd, ttl, direct_children)
    # The child never executes anything: the preexec_fn closes every other descriptor
    # (so Popen, seeing its error pipe closed, returns) and ends with _exit.
    return subprocess.Popen(
        ["proctor-watchdog"],  # noqa: S607 - a name only: the child never executes
        executable=sys.executable,
        preexec_fn=dog,  # noqa: PLW1509 - it only watches a socket and kills (no imports, no locks)
        start_new_session=True,
        close_fds=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
