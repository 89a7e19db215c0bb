"""Finding the processes a test started, by a marker in their argv (tests and bench/);
and the descriptors this process holds, by what they are."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie is dead; only its parent has not reaped it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return not f.read().rsplit(b") ", 1)[1].startswith(b"Z")
    except (OSError, IndexError):
        return False


def marked(marker: str, *, exclude: bytes | None = None) -> list[int]:
    """Live processes whose argv carries ``marker`` (and not ``exclude``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker.encode() in cmdline and (exclude is None or exclude not in cmdline) and alive(int(entry)):
            found.append(int(entry))
    return found


class DeathWatch:
    """When the last of ``pids`` exited, seen by a thread blocked on their pidfds (a
    pidfd polls readable once its process exited, zombie or reaped): no polling loop
    competes with the caller for the CPU, and the moment is known even when the caller
    was busy (waiting for an HTTP answer, say) as the processes died.

    Use: ``watch = DeathWatch(pids)``, do what should kill them, then ``watch.wait()``
    for the ``time.perf_counter()`` of the last exit.
    """

    def __init__(self, pids: list[int]) -> None:
        self._fds: list[int] = []
        for pid in pids:
            try:
                self._fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                continue  # already gone
        self._poll = select.poll()
        for fd in self._fds:
            self._poll.register(fd, select.POLLIN)
        self._done: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        left = set(self._fds)
        while left:
            for fd, _ in self._poll.poll(60_000):
                if fd in left:
                    left.discard(fd)
                    self._poll.unregister(fd)
        self._done = time.perf_counter()

    def wait(self, timeout: float = 30.0) -> float:
        """The ``perf_counter`` of the last exit.

        Raises:
            AssertionError: some process was still alive after ``timeout`` seconds.
        """
        self._thread.join(timeout)
        try:
            if self._done is None:
                raise AssertionError(f"processes still alive after {timeout} s")
            return self._done
        finally:
            if not self._thread.is_alive():
                for fd in self._fds:
                    os.close(fd)


def kill_marked(marker: str, seconds: float = 5.0, *, find: Callable[[str], list[int]] | None = None) -> None:
    """SIGSTOP everything marked until nothing new appears (a stopped process cannot
    fork, so a runaway cannot stay ahead), then SIGKILL it all.

    Args:
        marker: what the processes carry.
        seconds: how long to keep at it.
        find: how the marked processes are found (default :func:`marked`).
    """
    marked_by = find or marked
    deadline = time.monotonic() + seconds
    stopped: set[int] = set()
    while (fresh := set(marked_by(marker)) - stopped) and time.monotonic() < deadline:
        for pid in fresh:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= fresh
    while (pids := marked_by(marker)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


def end_run(proc: subprocess.Popen[str], marker: str) -> None:
    """After a test of a ``proctor run`` child: kill it if it still runs, reap it, close
    its pipes, and SIGKILL whatever of its tree still carries ``marker``."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    for pid in marked(marker):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


START_KINDS = ("pipe:", "socket:", "anon_inode:[pidfd]")
"""What a contained start opens in its supervisor: pipes (gate, report, status), sockets
(the heartbeat), pidfds."""


def held(kinds: tuple[str, ...] = START_KINDS) -> Counter[str]:
    """The descriptors this process holds of these kinds, by what they are (``pipe:[inode]``
    and the like). Unlike descriptor numbers, which any thread of the test process may
    close or reuse meanwhile (an earlier test's watch closing its inotify descriptor), a
    pipe's or socket's inode is its own: ``held() - before`` is what stayed open."""
    out: Counter[str] = Counter()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the listing's own descriptor, closed since
            continue
        if target.startswith(kinds):
            out[target] += 1
    return out
