"""A contained start set up to the command and waiting for the go (:class:`PendingStart`).

:meth:`proctor.enforcement.containment.Containment.prepare` forks the child and puts it
in its cgroups and namespaces, all while the caller waits on something else (``proctor
run``: the governor recording the start); the child then waits on a gate pipe (step 7
of :mod:`proctor.enforcement._spawn`). :meth:`PendingStart.go` lets it show its measured
copies and start the command; :meth:`PendingStart.cancel`, or leaving the ``with``
block without a go, ends it with nothing of the command run.

Fail closed, in order of the ways a start can go wrong:

1. The caller never says go (an exception, a denial): ``cancel`` writes a byte that is
   not the go, and the child exits; so it does too if the supervisor dies (the gate's
   other end closes, and PDEATHSIG), or after the gate's timeout.
2. The go comes after the gate's deadline: refused in the parent (the child might have
   given up), the start cancelled, an :class:`~proctor.errors.EnforcementError` raised.
3. The set-up failed in the child: the report pipe says which step, as for an
   unprepared start, and the cgroups are removed.
4. The caller is interrupted after the go, before the child is forked: the fork is
   waited for (a bounded time, through further interrupts) before anything the child
   is given is closed, and whatever it started is ended, its whole tree — through its
   cgroups when it cannot be tracked, as when tracking fails after a go.
5. A cancelled child that does not leave (stopped by someone, stuck in the kernel) does
   not hold the caller: after :data:`END_WAIT_S` its cgroups are killed (SIGKILL ends
   a stopped process too) and it is waited for once more, as long; then the caller goes
   on, and a child still there dies with this process (PDEATHSIG) or, continued,
   reads the refusal on its gate. Nothing it was given is closed, nor its cgroups
   removed, until ``Popen`` returns (the spawner thread finishes the cancel then).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from types import TracebackType

from proctor.enforcement import _linux
from proctor.enforcement._cgroups import Group
from proctor.enforcement._contained import Contained
from proctor.enforcement._plan import Plan
from proctor.enforcement._spawn import GO, GO_MESSAGE, drain_report
from proctor.enforcement._spawner import start_watchdog
from proctor.enforcement._tree import ProcessTree, TreeSpec, exited, settled_pidns
from proctor.enforcement._watchdog import Heartbeat
from proctor.errors import EnforcementError

__all__ = ["PendingStart", "guard", "track_started"]

NO_GO = b"x"
"""What :meth:`PendingStart.cancel` writes to the gate: any byte but the go."""

ABANDON_WAIT_S = 5.0
"""How long a go interrupted while the child is forked waits for the fork to be over."""
END_WAIT_S = 2.0
"""How long a cancel waits for the child to leave, before and after killing its cgroups."""


class PendingStart:
    """A child set up and waiting for the go (internal: built by ``Containment``).

    Args:
        name: the command's name, for errors.
        future: ``Popen``'s future (the spawner thread's).
        gate: the gate's write end, or -1 for an ungated start (:meth:`go` only waits).
        deadline: ``time.monotonic()`` after which :meth:`go` refuses.
        report: the report pipe ``(read end, write end)``, both this process's.
        after_fork: descriptors this process closes once the child is forked.
        groups: the execution's cgroups, removed if the start fails.
        leased: prepared with a lease TTL (a watchdog, a heartbeat socket).
        track: turns the started process into the :class:`Contained` (given the TTL
            that came with the go, if any).
        on_failure: releases what ``track`` would have taken over.
        session: the child leads a session and process group of its own (the plan's
            ``session``): what :func:`_kill_untracked` may kill by its id.
    """

    def __init__(
        self,
        *,
        name: str,
        future: Future[subprocess.Popen[bytes]],
        gate: int,
        deadline: float,
        report: tuple[int, int],
        after_fork: list[int],
        groups: list[Group],
        leased: bool,
        track: Callable[[subprocess.Popen[bytes], float | None], Contained],
        on_failure: Callable[[], None],
        session: bool = False,
    ) -> None:
        self._name = name
        self._future = future
        self._gate = gate
        self._deadline = deadline
        self._report_r, self._report_w = report
        self._after_fork = after_fork
        self._groups = groups
        self._leased = leased
        self._track = track
        self._on_failure = on_failure
        self._session = session
        self._done = False

    @property
    def usable(self) -> bool:
        """Whether :meth:`go` may still start the command: neither done, nor too late,
        nor failed already (the child's set-up raised before any go)."""
        if self._done or (self._gate >= 0 and time.monotonic() > self._deadline):
            return False
        future = self._future
        return not (future.done() and future.exception() is not None)

    def go(self, *, lease_ttl: float | None = None) -> Contained:
        """Let the child start the command, and track it.

        Args:
            lease_ttl: the lease's TTL in seconds, replacing the one it was prepared with
                (a lease known only now: the watchdog's limit comes with the go).

        Returns:
            The running, contained tree.

        Raises:
            EnforcementError: the go came too late, a TTL for a start prepared without a
                lease, or the start failed; nothing of the command is left running.
        """
        if self._done:
            raise EnforcementError("this prepared start was already let go or cancelled")
        if lease_ttl is not None and not (
            self._leased and type(lease_ttl) in (int, float) and math.isfinite(lease_ttl) and lease_ttl > 0
        ):
            self.cancel()
            raise EnforcementError(
                f"a lease TTL of {lease_ttl!r} for a start prepared with no lease, or not > 0"
            )
        if lease_ttl is not None and self._gate < 0:
            self.cancel()
            raise EnforcementError("only a gated start takes its lease TTL with the go")
        self._done = True
        if self._gate >= 0:
            if time.monotonic() > self._deadline:
                self._end(NO_GO)
                raise EnforcementError(
                    f"the prepared start of {self._name!r} waited past its gate's deadline; nothing started"
                )
            self._close_gate(GO_MESSAGE.pack(GO, float(lease_ttl or 0.0)))
        try:
            popen = self._future.result()
        except (OSError, subprocess.SubprocessError) as e:
            self._close_fd(self._report_w)
            self._report_w = -1
            detail = drain_report(self._report_r)
            self._fail()
            raise EnforcementError(f"cannot start {self._name!r}: {detail or e}") from e
        except BaseException:
            self._abandon(lease_ttl)  # 4.
            raise
        self._forked()
        try:
            return self._track(popen, lease_ttl)
        except BaseException:
            self._end_untracked(popen, END_WAIT_S)
            raise

    def _abandon(self, lease_ttl: float | None) -> None:
        # Interrupted (KeyboardInterrupt, SystemExit) after the go, while the spawner thread
        # was still forking: the child may start the command. Nothing it is given may be
        # closed before the fork is over (a number reused meanwhile would reach it), so
        # wait for the fork, a bounded time, through further interrupts; then end the
        # tree it started (tracked, to reach all of it), or at least the child.
        deadline = time.monotonic() + ABANDON_WAIT_S
        while not self._future.done() and time.monotonic() < deadline:
            with contextlib.suppress(BaseException):  # a second ^C waits too
                futures.wait([self._future], timeout=0.05)
        popen = None
        if self._future.done() and self._future.exception() is None:
            popen = self._future.result()
        if popen is None:
            self._fail()
            return
        self._forked()
        try:
            contained = self._track(popen, lease_ttl)
        except BaseException:  # noqa: BLE001 - untracked: ended by its groups and its child
            self._end_untracked(popen, ABANDON_WAIT_S)
            return
        try:
            contained.terminate_tree(grace=0)
        finally:
            contained.close()

    def _end_untracked(self, popen: subprocess.Popen[bytes], wait: float) -> None:
        """End a started child that could not be tracked (it failed, or was interrupted):
        the command may be running, with children of its own. Its cgroups' members first
        (what the child forked is there too), then, unless ``track_started`` already did
        and reaped the child, its whole tree by :func:`_kill_untracked`, then the child,
        then the groups."""
        self._kill_groups()
        try:
            with contextlib.suppress(Exception):
                _kill_untracked(popen, session=self._session, groups=self._groups)
            with contextlib.suppress(Exception):
                popen.kill()
                popen.wait(timeout=wait)
        finally:  # a second interrupt still leaves no group behind
            self._remove_groups()

    def cancel(self) -> None:
        """End the child without running the command (idempotent; after :meth:`go`, nothing)."""
        if self._done:
            return
        self._done = True
        self._end(NO_GO)

    def __enter__(self) -> PendingStart:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cancel()

    def _end(self, byte: bytes) -> None:
        self._close_gate(byte)
        # The child exits on the byte, and Popen returns (rule 5 if it does not).
        if not futures.wait([self._future], timeout=END_WAIT_S).done:
            self._kill_groups()
            if not futures.wait([self._future], timeout=END_WAIT_S).done:
                # Still not over: what it was given stays open until Popen returns; the
                # spawner thread ends it then.
                self._future.add_done_callback(lambda _: self._ended())
                return
        self._ended()

    def _ended(self) -> None:
        """The rest of :meth:`_end`, once Popen returned: the child ended, and reaped."""
        try:
            popen = self._future.result()
            popen.kill()  # an outer relay (user namespace): its init has the byte too
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=END_WAIT_S)  # else killed: gone once it leaves the kernel
            for pipe in (popen.stdin, popen.stdout, popen.stderr):
                if pipe is not None:
                    pipe.close()
        except Exception:  # noqa: BLE001, S110 - Popen failed (the child never ran): nothing to end
            pass
        finally:
            self._fail()

    def _close_gate(self, byte: bytes) -> None:
        # Written now, closed once the child is forked: the spawner thread may not have
        # forked yet, and the child closes its copy of this end first (it must have one).
        if self._gate < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._gate, byte)  # never EPIPE: this process holds the read end until forked
        self._after_fork.append(self._gate)
        self._gate = -1

    def _fail(self) -> None:
        self._forked()
        self._on_failure()
        self._remove_groups()

    def _forked(self) -> None:
        for fd in (*self._after_fork, self._report_r, self._report_w):
            self._close_fd(fd)
        self._after_fork = []
        self._report_r = self._report_w = -1

    def _kill_groups(self) -> None:
        """SIGKILL every member of the execution's cgroups (what cannot be, is left)."""
        for group in self._groups:
            with contextlib.suppress(Exception):
                group.kill()

    def _remove_groups(self) -> None:
        for g in self._groups:
            g.remove()
        self._groups = []

    @staticmethod
    def _close_fd(fd: int) -> None:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _kill_untracked(popen: subprocess.Popen[bytes], *, session: bool, groups: list[Group]) -> None:
    """SIGKILL the whole tree of a started child that could not be tracked, before the
    child is reaped (while its pid, and its process group's id, are still its own).

    1. This process's children that started before the child (so cannot be of its tree:
       another execution's, a watchdog, the application's own) and the tracked
       executions' children: never claimed below. One that started since, and is no
       tracked execution's child, is claimed: the fallback's choice, over-killing rather
       than letting a process of the tree escape (``_tree``).
    2. Its process group, when it leads one (``session``): atomic against fork, and
       needs no descriptor (the failure may be that there are none left).
    3. ``ProcessTree.kill`` with what was set up: its cgroups when it has any; otherwise,
       stopped then killed, every process of the fallback's attribution — the child's
       descendants, its session, and the orphans reparented to this process (a
       subreaper) since the child started — a command that left its session with
       ``setsid`` included. Skipped when the child's start time or this process's children cannot
       be read (the fallback could then claim a process that is not the tree's).

    Nothing when the child was reaped already (its ids may be another's now); the child
    itself is left to the caller, which kills and reaps it.
    """
    if popen.returncode is not None:
        return
    st = _linux.read_stat(popen.pid)
    others = _own_children()
    if session:
        with contextlib.suppress(OSError):
            os.killpg(popen.pid, signal.SIGKILL)
    if st is None or others is None:
        return
    earlier = {pid for pid in others if (seen := _linux.read_stat(pid)) and seen.starttime < st.starttime}
    others = earlier | (Contained.direct_children() - {popen.pid})
    spec = TreeSpec(
        child=popen.pid,
        child_start=st.starttime,
        session=session,
        pidns_mode="",
        groups=groups,
        pidns=None,
        direct_children=lambda: others,
    )
    ProcessTree(spec).kill()


def _own_children() -> set[int] | None:
    """This process's children now (every thread's), or ``None`` if they cannot be read."""
    found: set[int] = set()
    try:
        for tid in os.listdir("/proc/self/task"):
            with (
                contextlib.suppress(FileNotFoundError),  # a thread that ended meanwhile
                open(f"/proc/self/task/{tid}/children", encoding="ascii") as f,
            ):
                found.update(int(pid) for pid in f.read().split())
    except (OSError, ValueError):
        return None
    return found


def track_started(
    popen: subprocess.Popen[bytes],
    *,
    argv: list[str],
    plan: Plan,
    groups: list[Group],
    pidns_mode: str,
    status_fd: int,
) -> Contained:
    """The tree of a started child (its pidfd, and its own pid namespace checked).

    Raises:
        EnforcementError: it cannot be tracked, or did not get its pid namespace; it is
            killed.
    """
    pid = popen.pid
    pidfd = -1
    try:
        pidfd = os.pidfd_open(pid)
        st = _linux.read_stat(pid)
        pidns = None
        if pidns_mode:
            pidns = settled_pidns(pid, pidfd, for_children=pidns_mode == "userns")
            if pidns is None and exited(pidfd):
                # A short command can end before its namespace is looked at (a
                # zombie's /proc/PID/ns cannot be read). Its init is gone, and with it
                # everything in its namespace; the session and cgroups still track
                # whatever else it left, as for a tree without a pid namespace.
                pass
            elif pidns is None or pidns == _linux.pidns_of(os.getpid()):
                raise EnforcementError(f"pid {pid} did not get a pid namespace of its own")
    except (OSError, EnforcementError) as e:
        try:
            with contextlib.suppress(Exception):  # what it cannot kill, the child's end still does
                _kill_untracked(popen, session=plan.has("session"), groups=groups)
        finally:  # an interrupt too: the child is ended and reaped, its pidfd closed
            popen.kill()
            popen.wait()
            if pidfd >= 0:
                os.close(pidfd)
        if isinstance(e, EnforcementError):
            raise
        raise EnforcementError(f"cannot track pid {pid}: {e.strerror}") from e
    spec = TreeSpec(
        child=pid,
        child_start=st.starttime if st is not None else 0,
        session=plan.has("session"),
        pidns_mode=pidns_mode,
        groups=groups,
        pidns=pidns,
        direct_children=Contained.direct_children,
    )
    return Contained(
        popen=popen,
        argv=argv,
        backends=plan.names,
        tree=ProcessTree(spec),
        pidfd=pidfd,
        status_fd=status_fd,
    )


def guard(contained: Contained, beat: socket.socket, watch_end: socket.socket, ttl: float) -> None:
    """Give a started tree its watchdog and start heartbeating to it (fail closed)."""
    watchdog = None
    if contained.tree_spec.pidns is None:  # with a pid namespace, its init is the watchdog
        try:
            watchdog = start_watchdog(
                contained.tree_spec, watch_end.fileno(), ttl, Contained.direct_children()
            )
        except (OSError, subprocess.SubprocessError) as e:
            contained.close()
            raise EnforcementError(f"cannot start the watchdog of pid {contained.pid}: {e}") from e
    contained.guard(Heartbeat(beat, ttl, contained.watchdog_lost), watchdog)
