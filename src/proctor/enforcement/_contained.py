"""A running, contained process tree: wait for it, measure it, kill all of it.

Threads: the supervisor typically blocks in :meth:`Contained.wait` in one thread while
another calls :meth:`Contained.terminate_tree` on a revocation. Reaping the direct child
is serialised by a lock and its status kept, so both see the same exit status, and no
reaping ever targets a pid that is not provably ours (``subprocess`` is never asked to
reap, so it cannot reap a reused pid either). A guarded tree (``spawn(lease_ttl=…)``)
also has a heartbeat thread, which may kill the tree when its watchdog is lost.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, ClassVar

from proctor.enforcement._cgroups import groups_usage
from proctor.enforcement._linux import ProcStat
from proctor.enforcement._spawn import STATUS
from proctor.enforcement._tree import ProcessTree, TreeSpec
from proctor.enforcement._watchdog import GONE, LAPSED, Heartbeat, log_lost
from proctor.errors import EnforcementError

__all__ = ["TerminationReport", "Contained"]

_KILL_TIMEOUT = 5.0
_IDLE_REAP = 1.0
_EXIT_AFTER_WATCHDOG = 1.0
_COMMAND_WAIT_S = 0.005


@dataclass(frozen=True)
class TerminationReport:
    """How a tree was terminated.

    Attributes:
        signal: ``"SIGTERM"`` if the tree ended within the grace period, ``"SIGKILL"`` if
            it had to be killed, ``"none"`` if nothing was left running.
        processes_killed: distinct processes of the tree (helpers excluded) that were
            running when termination began or appeared during it.
        seconds: from the call until every process was gone.
    """

    signal: str
    processes_killed: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """Serialise for the ``execution.terminated`` event.

        Returns:
            ``{"signal", "processes_killed", "ms"}``.
        """
        return {
            "signal": self.signal,
            "processes_killed": self.processes_killed,
            "ms": int(self.seconds * 1000),
        }


class Contained:
    """A running, contained process tree; made by ``Containment.spawn``.

    Attributes:
        pid: the direct child: the command, or with a pid namespace the relay whose
            exit status is the command's (the command itself runs as pid 2 inside).
        backends: the containment mechanisms in force.
        argv: the command line.
        stdin: like ``Popen.stdin`` (``None`` unless ``PIPE`` was asked for).
        stdout: like ``Popen.stdout``.
        stderr: like ``Popen.stderr``.
    """

    _direct: ClassVar[set[int]] = set()
    _direct_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        *,
        popen: subprocess.Popen[bytes],
        argv: list[str],
        backends: tuple[str, ...],
        tree: ProcessTree,
        pidfd: int,
        status_fd: int = -1,
    ) -> None:
        """Take over a started child (internal: ``Containment.spawn`` calls this).

        Args:
            popen: the started child.
            argv: its command line.
            backends: what contains it.
            tree: the tree tracker.
            pidfd: a pidfd of the child.
            status_fd: read end of the pipe through which an init relay reports the
                command's wait status, or -1.
        """
        self._popen = popen
        self.pid = popen.pid
        self.argv = argv
        self.backends = backends
        self.stdin: IO[bytes] | None = popen.stdin
        self.stdout: IO[bytes] | None = popen.stdout
        self.stderr: IO[bytes] | None = popen.stderr
        self._tree = tree
        self._pidfd = pidfd
        self._status_fd = status_fd
        self._lock = threading.Lock()
        self._term_lock = threading.Lock()
        self._returncode: int | None = None
        self._user = 0.0
        self._system = 0.0
        self._maxrss = 0
        self._closed = False
        self._final_usage: dict[str, int] | None = None
        self._heartbeat: Heartbeat | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._ended_by = 0  # why the init relay's watch ended it (_watchdog.LAPSED/GONE)
        self.lost_watchdog: str | None = None
        with Contained._direct_lock:
            Contained._direct.add(self.pid)

    @classmethod
    def direct_children(cls) -> set[int]:
        """The direct children of every live ``Contained`` in this process.

        Returns:
            Their pids (a copy).
        """
        with cls._direct_lock:
            return set(cls._direct)

    def hold_command(self, stop: threading.Event | None = None) -> bool:
        """Keep the command's pidfd, which :meth:`terminate_tree` signals first (``ProcessTree``)."""
        return not self._closed and self._tree.hold_command(stop)

    @property
    def tree_spec(self) -> TreeSpec:
        """What was set up for this tree (read-only use)."""
        return self._tree.spec

    # -- the watchdog ------------------------------------------------------------------

    def guard(self, heartbeat: Heartbeat, watchdog: subprocess.Popen[bytes] | None) -> None:
        """Start heartbeating to this tree's watchdog (internal: ``Containment.spawn``).

        Args:
            heartbeat: the supervisor's side, not yet started.
            watchdog: the watchdog process, or ``None`` when the pid namespace's init is it.
        """
        self._heartbeat, self._watchdog = heartbeat, watchdog
        if watchdog is not None:
            with Contained._direct_lock:
                Contained._direct.add(watchdog.pid)  # a child of ours, never of the tree
        heartbeat.start()

    def watchdog_lost(self, reason: str) -> None:
        """The watchdog is gone or unresponsive: kill the tree (called by the heartbeat thread).

        An init relay that exits because the command did is no loss.

        Args:
            reason: why the watchdog is considered lost.
        """
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        if self._tree.spec.pidns is not None and poller.poll(int(_EXIT_AFTER_WATCHDOG * 1000)):
            return
        if self._watchdog is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(timeout=_EXIT_AFTER_WATCHDOG)
            if self._watchdog.returncode in (LAPSED, GONE):  # it did its job: the tree is dead
                with contextlib.suppress(EnforcementError):
                    self.terminate_tree(grace=0)
                return
        self.lost_watchdog = reason
        log_lost(self.pid, reason)
        with contextlib.suppress(EnforcementError):
            self.terminate_tree(grace=0)

    @property
    def lapsed(self) -> bool:
        """Whether the watchdog killed the tree: no heartbeat for the lease TTL, or the
        supervisor's end closed without "done". Known once the direct child is reaped
        (pid namespace) or the watchdog process has exited."""
        if self._ended_by in (LAPSED, GONE):
            return True
        return self._watchdog is not None and self._watchdog.poll() in (LAPSED, GONE)

    # -- exit status -----------------------------------------------------------------

    def _account(self, ru: Any) -> None:
        self._user += ru.ru_utime
        self._system += ru.ru_stime
        self._maxrss = max(self._maxrss, ru.ru_maxrss)

    def poll(self) -> int | None:
        """The exit status if the direct child has exited (reaping it), else ``None``.

        Returns:
            Like ``Popen.returncode``: the exit code, or ``-N`` for signal ``N``.

        Raises:
            EnforcementError: the child was reaped by someone else (its status is lost).
        """
        with self._lock:
            if self._returncode is not None:
                return self._returncode
            try:
                pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError as e:
                raise EnforcementError(f"pid {self.pid} was reaped outside containment") from e
            if pid == 0:
                return None
            self._account(ru)
            code = os.waitstatus_to_exitcode(self._command_status(status))
            self._returncode = code
            self._popen.returncode = code  # so subprocess never waits on a pid that may be reused
            with Contained._direct_lock:
                Contained._direct.discard(self.pid)
            return code

    def _command_status(self, own: int) -> int:
        # With a pid namespace the direct child is a relay; the command's own wait status
        # came through the status pipe, unless the relay itself was killed.
        if self._status_fd < 0:
            return own
        try:
            os.set_blocking(self._status_fd, False)
            data = os.read(self._status_fd, STATUS.size)
        except OSError:
            data = b""
        finally:
            os.close(self._status_fd)
            self._status_fd = -1
        if len(data) != STATUS.size:
            return own
        status, self._ended_by = STATUS.unpack(data)
        return int(status)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the direct child to exit.

        Args:
            timeout: seconds, or ``None`` to wait as long as it takes.

        Returns:
            Its exit status, as :meth:`poll`.

        Raises:
            subprocess.TimeoutExpired: ``timeout`` passed first (as ``Popen.wait``).
            EnforcementError: as :meth:`poll`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        while True:
            code = self.poll()
            if code is not None:
                self._reap_orphans()
                return code
            wait_for = _IDLE_REAP
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise subprocess.TimeoutExpired(self.argv, timeout or 0.0)
                wait_for = min(wait_for, remaining)
            if not poller.poll(int(wait_for * 1000) + 1):
                self._reap_orphans(full=True)  # orphans reparented to us must not pile up as zombies

    def _exited(self) -> bool:
        if self._returncode is not None:
            return True
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(0))

    def _reap_orphans(self, *, full: bool = False) -> None:
        """Reap the tree's orphans that were reparented to us (a subreaper) and exited.

        The processes seen in the tree are checked first (a few reads); the whole of
        ``/proc`` is scanned only when ``full`` and a zombie child remains.
        """
        if self._tree.spec.pidns is not None:
            return  # orphans in a pid namespace go to its init relay, never to us
        for pid in self._tree.seen_orphan_zombies():
            self._reap_one(pid)
        if not full:
            return
        try:
            if os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return  # no child of ours is a zombie: nothing to scan /proc for
        except ChildProcessError:
            return
        for pid in self._tree.orphan_zombies():
            self._reap_one(pid)

    def _reap_one(self, pid: int) -> None:
        with contextlib.suppress(ChildProcessError):
            got, _, ru = os.wait4(pid, os.WNOHANG)
            if got == pid:
                self._account(ru)

    # -- the tree -------------------------------------------------------------------

    def alive(self) -> list[int]:
        """Every live process of the tree, by every mechanism in force.

        Returns:
            Sorted pids (including proctor's relays when there is a pid namespace).
        """
        if self._closed and self._returncode is not None:
            return []
        self.poll()
        members = sorted(self._tree.members(thorough=True))
        self._reap_orphans(full=True)
        return members

    def _counted(self, members: dict[int, ProcStat]) -> set[tuple[int, int]]:
        helpers = self._tree.helpers() if self._tree.spec.pidns_mode else set()
        return {(pid, st.starttime) for pid, st in members.items() if pid not in helpers}

    def terminate_tree(self, *, grace: float = 0.5) -> TerminationReport:
        """SIGTERM every process of the tree, then after ``grace`` SIGKILL every one.

        Safe to call from any thread, also while another waits; a second call while one
        runs waits for it and then finds nothing left.

        Args:
            grace: seconds between SIGTERM and SIGKILL; 0 kills at once.

        Returns:
            What was done and how long until every process was gone.

        Raises:
            EnforcementError: processes were still alive 5 s after SIGKILL (stuck in
                the kernel); their pids are in the message.
        """
        t0 = time.monotonic()
        with self._term_lock:
            # The command first, through its held pidfd: no /proc read before that signal.
            listed, early = self._tree.signal_command(signal.SIGTERM) if grace > 0 else (set(), None)
            members = self._tree.members()
            if not members and early is None and self._settled():
                self._reap_orphans()
                return TerminationReport("none", 0, time.monotonic() - t0)
            counted = self._counted(members) | listed | ({early} if early is not None else set())
            if grace > 0 and self._graceful(members, counted, t0 + grace, early):
                self._reap_orphans()
                return TerminationReport("SIGTERM", len(counted), time.monotonic() - t0)
            self._kill_until_gone(counted)
            self._reap_orphans()
            return TerminationReport("SIGKILL", len(counted), time.monotonic() - t0)

    def _settled(self) -> bool:
        self.poll()
        return self._returncode is not None

    def _graceful(
        self,
        members: dict[int, ProcStat],
        counted: set[tuple[int, int]],
        deadline: float,
        early: tuple[int, int] | None,
    ) -> bool:
        signalled = self._tree.signal(signal.SIGTERM, members, sent=early)
        if early is not None:  # its end, not a /proc scan competing with it for the CPU
            self._tree.wait_command(min(deadline - time.monotonic(), _COMMAND_WAIT_S))
        pause = 0.0002
        while True:
            self.poll()
            members = self._tree.members()
            counted |= self._counted(members)
            if not members:
                return True
            fresh = {p: st for p, st in members.items() if p not in signalled}
            if fresh:
                signalled |= self._tree.signal(signal.SIGTERM, fresh)
            now = time.monotonic()
            if now >= deadline:
                return False
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, 0.01)

    def _kill_until_gone(self, counted: set[tuple[int, int]]) -> None:
        deadline = time.monotonic() + _KILL_TIMEOUT
        pause, last_kill = 0.0001, 0.0
        while True:
            now = time.monotonic()
            if now - last_kill > 0.01:
                self._tree.kill()
                last_kill = now
            self.poll()
            members = self._tree.members()
            counted |= self._counted(members)
            if not members and self._exited():
                self.poll()
                return
            if time.monotonic() >= deadline:
                left = sorted(members)
                raise EnforcementError(f"processes {left} of pid {self.pid} survived SIGKILL for 5 s")
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    # -- usage and cleanup ------------------------------------------------------------

    def resource_usage(self) -> dict[str, int]:
        """Resources the tree used so far (final once it has been reaped).

        ``user_ms``/``system_ms`` come from the cgroup when there is one (every process,
        reaped or not), else from ``wait4`` of the child and of reaped orphans (which
        counts only descendants that were waited for). ``max_rss_kb`` is the largest
        resident set of a reaped process. With a memory cgroup, ``memory_peak_kb`` is
        the tree's peak charge (page cache included) and ``oom_kills`` counts kills by
        the limit; with a pids cgroup, ``pids_limit_hits`` counts refused forks.

        Returns:
            At least ``max_rss_kb``, ``user_ms`` and ``system_ms``.
        """
        if self._final_usage is not None:
            return dict(self._final_usage)
        usage = {
            "max_rss_kb": self._maxrss,
            "user_ms": int(self._user * 1000),
            "system_ms": int(self._system * 1000),
        }
        usage.update(groups_usage(self._tree.spec.groups))
        return usage

    def close(self) -> None:
        """Kill whatever is left of the tree, remove its cgroups, close its pipes. Idempotent.

        Pipes asked for with ``PIPE`` are closed as ``Popen.__exit__`` would: finish
        reading them first.

        Raises:
            EnforcementError: processes survived SIGKILL (see :meth:`terminate_tree`).
        """
        if self._closed:
            return
        if self._heartbeat is not None:
            self._heartbeat.stop(done=True)  # before the kill: losing the watchdog is expected now
        try:
            # A pid namespace is empty once its init relay (or the relay above it) is reaped.
            if not (self._settled() and self._tree.spec.pidns is not None) and (
                self._tree.members() or not self._settled()
            ):
                self.terminate_tree(grace=0)
            self._reap_orphans(full=True)
        finally:
            self._final_usage = self.resource_usage()
            for g in self._tree.spec.groups:
                g.remove()
            self._tree.release()
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            if self._status_fd >= 0:
                os.close(self._status_fd)
                self._status_fd = -1
            for stream in (self.stdin, self.stdout, self.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self._reap_watchdog()
            self._closed = True

    def _reap_watchdog(self) -> None:
        dog = self._watchdog
        if dog is None:
            return
        try:
            dog.wait(timeout=2)  # it exits on "done"
        except subprocess.TimeoutExpired:
            dog.kill()
            dog.wait()
        with Contained._direct_lock:
            Contained._direct.discard(dog.pid)

    def __enter__(self) -> Contained:
        """Use as a context manager that closes (kills what is left) on exit.

        Returns:
            ``self``.
        """
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close (see :meth:`close`)."""
        self.close()
