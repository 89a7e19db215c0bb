"""Finding and killing every process of one execution.

Who is in the tree, by mechanism, strongest first:

1. cgroups: ``cgroup.procs`` of the execution's groups. Exact: every process forked
   inside stays inside (only a process privileged over the cgroup filesystem could
   move itself out).
2. pid namespace: every process whose ``/proc/<pid>/ns/pid`` is the execution's.
   Exact and inescapable; and killing the namespace's init makes the kernel kill all
   of it, with no new process allowed in meanwhile.
3. fallback: the direct child, every process of its session and process group, every
   process seen in the tree before, and every orphan reparented to the supervisor
   (a child subreaper) that started after the execution, with all their descendants.
   A process that leaves the session *and* is orphaned is attributed by the subreaper
   rule only; if the supervisor starts other children of its own while an execution
   runs in fallback mode, those are attributed to the execution too (over-killing
   rather than letting a process escape).

How it is killed: ``cgroup.kill`` or freeze-kill-thaw when a group allows it;
SIGKILL to the namespace's init; otherwise (and in addition, when neither exists)
SIGKILL to the child's process group — atomic against fork, where a fork loop can
outpace a ``/proc`` scan that takes longer than one generation — then SIGSTOP
everything found until a pass finds nothing new running (a stopped process cannot
fork), then SIGKILL everything. A fork loop that also leaves the process group in
every generation is attributed by scanning only, and can outrun it under load.

Signals go through pidfds checked against the start time found at enumeration, so a
reused pid is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from proctor.enforcement._cgroups import Group
from proctor.enforcement._linux import ProcStat, list_pids, ns_pids, pidns_of, read_stat, signal_process

__all__ = ["TreeSpec", "ProcessTree", "exited", "settled_pidns"]

_STOP_ROUNDS = 200
_HOLD_TRIES = 50
_HOLD_PAUSE_S = 0.01


@dataclass
class TreeSpec:
    """What was set up for one execution.

    Attributes:
        child: the direct child's pid (a relay when there is a pid namespace).
        child_start: its start time.
        session: the child leads a new session and process group (its pid is their id).
        pidns_mode: ``""`` (no pid namespace), ``"init"`` (the child is the namespace's
            init relay) or ``"userns"`` (the child is an outer relay whose only child is
            the init relay).
        groups: the execution's cgroups.
        pidns: the execution's pid namespace identity, or ``None``.
        direct_children: the pids of every contained direct child in this process (so
            the fallback does not claim another execution's child as an orphan).
    """

    child: int
    child_start: int
    session: bool
    pidns_mode: str
    groups: list[Group]
    pidns: tuple[int, int] | None
    direct_children: Callable[[], set[int]]
    seen: dict[int, int] = field(default_factory=dict)


class ProcessTree:
    """Enumerates, signals and kills one execution's processes."""

    def __init__(self, spec: TreeSpec) -> None:
        """Track the tree described by ``spec``.

        Args:
            spec: what was set up at spawn.
        """
        self.spec = spec
        self._me = os.getpid()
        self._killers = [g for g in spec.groups if g.can_freeze()]
        # One killing group is enough; prefer v2 (cgroup.kill is atomic against fork).
        self._killers.sort(key=lambda g: g.version, reverse=True)
        self._group_held = False  # the last scan saw a process (a zombie too) in the child's group
        self._command: tuple[int, int, int] | None = None  # (pidfd, pid, start time): hold_command
        self._command_lock = threading.Lock()
        self._released = False  # release() ran: nothing is held from now on

    @property
    def exact(self) -> bool:
        """Whether membership comes from a cgroup or a pid namespace rather than the fallback."""
        return bool(self.spec.groups) or self.spec.pidns is not None

    def members(self, *, thorough: bool = False) -> dict[int, ProcStat]:
        """The live (non-zombie) processes of the tree.

        Args:
            thorough: use every mechanism (cgroups and the pid namespace scan);
                otherwise the cheapest exact one.

        Returns:
            pid → its ``/proc`` record.
        """
        found: dict[int, ProcStat] = {}

        def add(pid: int) -> None:
            if pid == self._me or pid in found:
                return
            st = read_stat(pid)
            if st is not None and not st.zombie:
                found[pid] = st

        for group in self.spec.groups:
            for pid in group.pids():
                add(pid)
        if self.spec.pidns is not None and (thorough or not self.spec.groups):
            for pid in ns_pids(self.spec.pidns):
                add(pid)
        if not self.exact:
            found.update(self._fallback())
        add(self.spec.child)
        for pid, st in found.items():
            self.spec.seen[pid] = st.starttime
        return found

    def _fallback(self) -> dict[int, ProcStat]:
        stats: dict[int, ProcStat] = {}
        for pid in list_pids():
            st = read_stat(pid)
            if st is not None and pid != self._me:
                stats[pid] = st
        spec = self.spec
        others = spec.direct_children() - {spec.child}
        roots = []
        for pid, st in stats.items():
            if (
                pid == spec.child
                or (spec.session and spec.child in (st.session, st.pgrp))
                or spec.seen.get(pid) == st.starttime
                or (st.ppid == self._me and pid not in others and st.starttime >= spec.child_start)
            ):
                roots.append(pid)
        children: dict[int, list[int]] = {}
        for pid, st in stats.items():
            children.setdefault(st.ppid, []).append(pid)
        self._group_held = spec.session and any(st.pgrp == spec.child for st in stats.values())
        tree: set[int] = set()
        while roots:
            pid = roots.pop()
            if pid not in tree:
                tree.add(pid)
                roots.extend(children.get(pid, ()))
        return {pid: stats[pid] for pid in tree if not stats[pid].zombie}

    def helpers(self) -> set[int]:
        """proctor's own relays in the tree (not counted as the command's processes).

        Returns:
            Their pids.
        """
        if not self.spec.pidns_mode:
            return set()
        init = self.init_pid()
        return {self.spec.child} | ({init} if init is not None else set())

    def init_pid(self) -> int | None:
        """The pid namespace's init (the process the kernel kills the namespace with).

        Returns:
            Its pid, or ``None`` without a namespace or once it is gone.
        """
        if self.spec.pidns is None:
            return None
        if self.spec.pidns_mode == "init":
            return self.spec.child
        kids = _children(self.spec.child)
        if kids is None:
            kids = [pid for pid, st in self.members(thorough=True).items() if st.ppid == self.spec.child]
        return kids[0] if kids else None

    def hold_command(self, stop: threading.Event | None = None) -> bool:
        """Open and keep a pidfd of the command itself (not a relay), so that
        :meth:`signal_command` reaches it with one system call and no ``/proc`` read.

        Without a pid namespace the command is the direct child (unreaped, so its pid
        is its own). Inside one, it is the init relay's child: the pid read from the
        init's ``children`` is opened, then checked to still be a child of that init
        (a pid reused in between would be another process, whose parent is not the
        init; one whose parent is the init is of the tree anyway).

        Args:
            stop: given, try again for up to :data:`_HOLD_TRIES` pauses unless it is set
                (the relay starts the command a moment after the spawn returned).

        Returns:
            Whether the command is held (``False``: not started yet, or already gone).
        """
        for _ in range(_HOLD_TRIES if stop is not None else 1):
            if self._hold_once():
                return True
            if stop is None or stop.wait(_HOLD_PAUSE_S):
                return False
        return False

    def _hold_once(self) -> bool:
        if self._command is not None:
            return True
        parent, pid = -1, self.spec.child
        if self.spec.pidns_mode:
            init = self.init_pid()
            kids = _children(init) if init is not None else None
            if init is None or not kids:
                return False
            parent, pid = init, kids[0]
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False
        st = read_stat(pid)  # after the open: the process the pidfd names, if it is still ours
        ours = st is not None and not st.zombie
        if st is not None:  # the init's child; or the direct child, not a reuse of its pid
            ours = ours and (st.ppid == parent if parent >= 0 else st.starttime == self.spec.child_start)
        with self._command_lock:
            if st is None or not ours or self._released:
                os.close(fd)
                return False
            self._command = (fd, pid, st.starttime)
        return True

    def signal_command(self, sig: int) -> tuple[set[tuple[int, int]], tuple[int, int] | None]:
        """Send ``sig`` to the held command (:meth:`hold_command`) through its pidfd,
        after listing the cgroup's members (one read, no ``stat``): what was running
        when it was sent, which the kernel may kill (a pid namespace's, when its init
        follows the command) before an enumeration would see it.

        Nothing is sent in a pid namespace without a cgroup: its processes, killed with
        the init right after the command, could only be counted by the ``/proc`` scan
        that this signal would precede.

        Returns:
            The ``(pid, start time)`` of every process listed (start time -1 for one
            already reaped; proctor's relays left out), and the command's if it was
            running and the signal was sent, else ``None`` (not held, or exited).
        """
        with self._command_lock:  # never a descriptor that release() closed (and may be reused)
            held = self._command
            if held is None or (self.spec.pidns is not None and not self.spec.groups):
                return set(), None
            listed = [pid for group in self.spec.groups[:1] for pid in group.pids()]
            sent = not select.select([held[0]], [], [], 0)[0]  # readable once it has exited
            if sent:
                try:
                    signal.pidfd_send_signal(held[0], sig)
                except OSError:
                    sent = False  # it has exited (ESRCH); the enumeration finds the rest
        relays, found = self.helpers(), set()
        for pid in listed:
            if pid in relays:
                continue
            st = read_stat(pid) if pid != held[1] else None
            found.add((pid, held[2] if pid == held[1] else st.starttime if st is not None else -1))
        return found, (held[1], held[2]) if sent else None

    def wait_command(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the held command to exit (at once if none
        is held), without reading ``/proc`` meanwhile."""
        with self._command_lock:  # a copy: release() may close the held one meanwhile
            fd = os.dup(self._command[0]) if self._command is not None else -1
        if fd < 0:
            return
        try:
            select.select([fd], [], [], max(timeout, 0.0))
        finally:
            os.close(fd)

    def release(self) -> None:
        """Close the held command's pidfd (idempotent)."""
        with self._command_lock:
            held, self._command, self._released = self._command, None, True
            if held is not None:
                with contextlib.suppress(OSError):
                    os.close(held[0])

    def signal(
        self, sig: int, members: dict[int, ProcStat], *, sent: tuple[int, int] | None = None
    ) -> set[int]:
        """Send ``sig`` to each member, the command's processes before proctor's relays
        (which block it), and then to the child's process group.

        Args:
            sig: the signal.
            members: as returned by :meth:`members`.
            sent: ``(pid, start time)`` of a member already sent ``sig``
                (:meth:`signal_command`): not sent it twice.

        Returns:
            The pids that were signalled.
        """
        relays = self.helpers()
        order = sorted(members.items(), key=lambda item: item[0] in relays)
        done = (
            {sent[0]}
            if sent is not None and sent[0] in members and members[sent[0]].starttime == sent[1]
            else set()
        )
        done |= {pid for pid, st in order if pid not in done and signal_process(pid, st.starttime, sig)}
        if self.spec.session and self.spec.child in done:
            # Catches what was forked since the enumeration; the group id cannot have been
            # reused while its leader (the unreaped child) exists.
            with contextlib.suppress(OSError):
                os.killpg(self.spec.child, sig)
        return done

    def kill(self) -> None:
        """SIGKILL the whole tree with the strongest mechanism available."""
        if self._killers:
            self._killers[0].kill()
        if self.spec.pidns is not None:
            init = self.init_pid()
            st = read_stat(init) if init is not None else None
            if st is not None:
                signal_process(st.pid, st.starttime, signal.SIGKILL)
        if not self._killers and self.spec.pidns is None:
            self._kill_group()
            self._stop_then_kill()
        child = read_stat(self.spec.child)
        if child is not None and child.starttime == self.spec.child_start:
            signal_process(child.pid, child.starttime, signal.SIGKILL)

    def _kill_group(self) -> None:
        # The group id is the child's while the child (even as a zombie) or any member
        # (even a zombie, which only we reap) holds it: it cannot have been reused.
        if not self.spec.session:
            return
        child = read_stat(self.spec.child)
        if (child is not None and child.starttime == self.spec.child_start) or self._group_held:
            with contextlib.suppress(OSError):
                os.killpg(self.spec.child, signal.SIGKILL)

    def _stop_then_kill(self) -> None:
        stopped: dict[int, int] = {}
        refused: dict[int, int] = {}  # not ours to signal (EPERM): left to the survivors' check
        try:
            for _ in range(_STOP_ROUNDS):
                fresh = {
                    p: st
                    for p, st in self.members().items()
                    if stopped.get(p) != st.starttime and refused.get(p) != st.starttime
                }
                if not fresh:
                    break
                for pid, st in fresh.items():
                    sent = _signal(pid, st.starttime, signal.SIGSTOP)
                    if sent:
                        stopped[pid] = st.starttime
                    elif sent is None:
                        refused[pid] = st.starttime
        finally:  # whatever stopped the scan (an error, an interrupt), what it stopped dies
            for pid, start in stopped.items():
                _signal(pid, start, signal.SIGKILL)
        for pid, st in self.members().items():
            _signal(pid, st.starttime, signal.SIGKILL)

    def seen_orphan_zombies(self) -> list[int]:
        """Processes seen in the tree that are now zombie children of ours.

        Returns:
            Their pids (cheap: only the seen pids are read).
        """
        result = []
        for pid, start in list(self.spec.seen.items()):
            if pid == self.spec.child:
                continue
            st = read_stat(pid)
            if st is None or st.starttime != start:
                self.spec.seen.pop(pid, None)  # gone (reaped by its parent): forget it
                continue
            if st.zombie and st.ppid == self._me:
                result.append(pid)
        return result

    def orphan_zombies(self) -> list[int]:
        """Exited processes of the tree that were reparented to us (a subreaper) and await reaping.

        Only processes that provably belonged to the tree are listed, so reaping them
        never steals the exit status of another child of the supervisor.

        Returns:
            Their pids.
        """
        spec = self.spec
        others = spec.direct_children()
        result = []
        for pid in list_pids():
            if pid == spec.child or pid in others:
                continue
            st = read_stat(pid)
            if st is None or not st.zombie or st.ppid != self._me:
                continue
            if (
                spec.seen.get(pid) == st.starttime
                or (spec.session and spec.child in (st.session, st.pgrp))
                or any(g.holds_zombie(pid) for g in spec.groups)
            ):
                result.append(pid)
        return result


def _children(pid: int) -> list[int] | None:
    """The children of ``pid``'s main thread, or ``None`` if they cannot be read."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return None


_EXITING_MS = 200
"""How long :func:`settled_pidns` waits for a process whose namespaces are gone to
become waitable."""


def settled_pidns(pid: int, pidfd: int, *, for_children: bool) -> tuple[int, int] | None:
    """The pid namespace of ``pid`` (:func:`~proctor.enforcement._linux.pidns_of`), read
    once more if it was unreadable while the process had not exited: an exiting process loses its
    namespaces before it becomes waitable (``do_exit`` releases them before
    ``exit_notify``), so the relay of a command that ended at once can be in neither
    state for a moment — long enough to be seen on a busy machine. ``None`` still:
    the caller refuses unless the process has exited by then."""
    pidns = pidns_of(pid, for_children=for_children)
    if pidns is None and not exited(pidfd):
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)  # readable once the process exited
        poller.poll(_EXITING_MS)
        pidns = pidns_of(pid, for_children=for_children)
    return pidns


def _signal(pid: int, starttime: int, sig: int) -> bool | None:
    """``signal_process``, with a process this one may not signal (EPERM: another user's,
    a set-user-ID program's) answered ``None`` instead of raised: one such process must
    not stop the kill of the rest of the tree."""
    try:
        return signal_process(pid, starttime, sig)
    except PermissionError:
        return None


def exited(pidfd: int) -> bool:
    """Whether the process behind ``pidfd`` has exited (not reaped: ``WNOWAIT``)."""
    try:
        return os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except (OSError, AttributeError):
        return False  # cannot tell: the caller refuses, as before
