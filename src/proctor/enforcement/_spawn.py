"""Starting a contained child: what runs between ``fork`` and ``exec``, and in which thread.

Ordering in the child (each step needs the previous one):

1. ``PR_SET_PDEATHSIG=SIGKILL``, then check the supervisor is still alive (it may have
   died between ``fork`` and ``prctl``): the child holds the read end of a pipe whose
   only other holder is the supervisor; end-of-file means it is gone. (``getppid()``
   cannot be used: in a new pid namespace it is always 0.)
2. Join the per-execution cgroups (write ``0`` to descriptors the parent opened),
   so everything the command ever forks is born inside them.
3. Resource limits (``RLIMIT_CPU``).
4. Namespaces. Privileged: a network namespace here; the pid namespace was entered at
   ``fork`` (see :class:`Spawner`), so this child is already its init. Unprivileged: a
   user namespace mapping our own uid/gid to themselves, with the network and pid
   namespaces inside it; a pid namespace only applies to children, so this child forks
   the init and stays behind as an *outer relay* that exits as the init does. With
   measured copies to show (``mountns``), a mount namespace is created with the others.
5. Show the measured copies at their own paths in that mount namespace
   (:func:`proctor.enforcement._staging.show_copies`).
6. With a pid namespace, the init starts the command (``posix_spawn``, no copy of the
   Python process) and stays as an *init relay*: it
   reaps whatever is orphaned in the namespace and, when the command exits, writes
   the command's wait status to the status pipe and exits, which makes the kernel
   kill whatever the command left behind. The command is therefore never pid 1, and
   keeps ordinary signal semantics (an init ignores signals it has no handler for,
   even ``kill(getpid(), …)``). Relays block the usual termination signals; only
   SIGKILL ends them. Given a heartbeat socket, the init
   relay is also the supervisor's watchdog (:mod:`proctor.enforcement._watchdog`):
   no heartbeat for the lease TTL, or end-of-file, and it exits — the namespace dies.
7. With a gate (:meth:`proctor.enforcement.containment.Containment.prepare`), wait for
   the go: one byte ``g`` on a pipe whose other end only the supervisor holds. Anything
   else (another byte, end-of-file, no byte within the gate's timeout) and the child
   reports why and exits, the command never started. Everything above is preparation,
   done while the governor records the start; only the next steps follow its answer.
8. Mark the measured executable's descriptor close-on-exec, so ``execve`` of
   ``/proc/self/fd/N`` runs it and the command does not inherit it.

Every process in the chain has PDEATHSIG=SIGKILL towards its parent, checked against a
liveness pipe, so killing the supervisor kills the chain, and the init's death kills
the namespace. Any failure is written to a report pipe, so the parent can say which
step failed.

The child runs Python between ``fork`` and ``exec`` (``preexec_fn``), which is only
safe if it takes no lock another thread may hold: it imports nothing, logs nothing and
only calls ``os``/``ctypes`` on values computed before the fork.

PDEATHSIG fires when the parent *thread* exits, not the process. Children are therefore
forked by one long-lived thread (:mod:`proctor.enforcement._spawner`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import resource
import select
import signal
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

from proctor.enforcement import _linux
from proctor.enforcement._staging import StagedCopy, show_copies
from proctor.enforcement._watchdog import RELAY_BLOCKED, watch

__all__ = [
    "GO",
    "GO_MESSAGE",
    "STATUS",
    "NoGoError",
    "ChildSetup",
    "exec_fd_of",
    "drain_report",
]


_MAXFD = os.sysconf("SC_OPEN_MAX")
STATUS = struct.Struct("=ii")
"""What the init relay writes to the status pipe: the command's wait status, and 0 or
why the watchdog ended it (``_watchdog.LAPSED``/``GONE``)."""


def _gone(fd: int) -> bool:
    # Readable (or hung up) with nobody left to write means end-of-file: the other side is dead.
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    return bool(poller.poll(0))


def _fork_watched() -> tuple[int, int]:
    """Fork a child that dies with us: ``(pid, liveness fd)`` in the parent, ``(0, -1)`` in the child."""
    r, w = os.pipe()
    pid = _linux.fork()
    if pid == 0:
        os.close(w)
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if _gone(r):
            os._exit(125)  # the parent is gone already: nobody would kill us
        os.close(r)
        return 0, -1
    os.close(r)
    return pid, w


def _quiet(keep: tuple[int, ...]) -> None:  # pragma: no cover - runs in a forked relay
    # A relay holds nothing of the command's (pipes, the errpipe of subprocess, the
    # measured files) and no termination signal but SIGKILL reaches it.
    signal.pthread_sigmask(signal.SIG_BLOCK, RELAY_BLOCKED)
    low = 0
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _MAXFD)


def _exit_as(status: int) -> NoReturn:  # pragma: no cover - runs in a forked relay
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            _linux.reset_signal(sig)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
            os.kill(os.getpid(), sig)  # does nothing in an init: the exit code says it then
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _outer_relay(init: int, keep: int) -> NoReturn:  # pragma: no cover - runs in a forked relay
    _linux.set_name(b"proctor-relay")
    _quiet((keep,))
    while True:
        try:
            _, status = os.waitpid(init, 0)
            break
        except ChildProcessError:
            os._exit(255)
    _exit_as(status)


def _init_relay(command: int, status_fd: int, heartbeat_fd: int, ttl: float) -> NoReturn:  # pragma: no cover
    _linux.set_name(b"proctor-init")
    _quiet((status_fd, heartbeat_fd) if heartbeat_fd >= 0 else (status_fd,))
    status, why = 255 << 8, 0
    found: list[int] = []

    def reap(*, block: bool = False) -> bool:
        # The init reaps every orphan of the namespace; True once the command is reaped.
        while True:
            try:
                pid, st = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return False
            if pid == command:
                found.append(st)
                return True

    if heartbeat_fd < 0:
        reap(block=True)
    else:
        why = watch(heartbeat_fd, ttl, child_pidfd=os.pidfd_open(command), reap=reap)
    if found:
        status = found[0]
    elif why:
        status = signal.SIGKILL  # the namespace dies with this init: as if SIGKILLed
    with contextlib.suppress(OSError):
        os.write(status_fd, STATUS.pack(status, why))
    _exit_as(status)


@dataclass
class ChildSetup:
    """Everything the child does before ``exec``, computed in the parent.

    Attributes:
        report_fd: write end of the report pipe (close-on-exec).
        alive_fd: read end of the supervisor-liveness pipe.
        alive_peer: the write end, which the child closes first.
        pdeathsig: set ``PR_SET_PDEATHSIG=SIGKILL``.
        cgroup_fds: ``cgroup.procs`` descriptors to join.
        cpu_seconds: ``RLIMIT_CPU``, or ``None``.
        netns: create a network namespace.
        userns: create the namespaces inside a new user namespace (unprivileged).
        pidns: ``""`` (none), ``"init"`` (this child is already a new namespace's init)
            or ``"userns"`` (create it inside a user namespace, then fork its init).
        status_fd: write end of the status pipe (the init relay reports the command's
            wait status through it), or -1.
        uid: our uid (for the user namespace's map).
        gid: our gid.
        exec_fd: a descriptor to mark close-on-exec before ``exec``, or ``None``.
        argv: the command line (the init of a pid namespace starts the command itself).
        exec_path: the file to execute, or ``None`` to look ``argv[0]`` up in ``PATH``.
        env: the command's environment (``None``: inherited).
        pass_fds: the descriptors the command keeps besides 0, 1 and 2.
        stage: sealed copies to show at their own paths in a new mount namespace.
        heartbeat_fd: the watchdog's end of the heartbeat socket for the init relay, or -1.
        lease_ttl: seconds without a heartbeat after which the init relay gives up.
        gate_fd: read end of the gate pipe (step 7), or -1 for no gate.
        gate_peer: its write end, which the child closes first, or -1.
        gate_timeout: seconds the child waits for the go.
    """

    report_fd: int
    alive_fd: int
    alive_peer: int
    pdeathsig: bool
    cgroup_fds: tuple[int, ...]
    cpu_seconds: int | None
    netns: bool
    userns: bool
    pidns: str
    status_fd: int
    uid: int
    gid: int
    exec_fd: int | None
    argv: tuple[str, ...] = ()
    exec_path: str | None = None
    env: Mapping[str, str] | None = None
    pass_fds: tuple[int, ...] = ()
    stage: tuple[StagedCopy, ...] = ()
    heartbeat_fd: int = -1
    lease_ttl: float = 0.0
    gate_fd: int = -1
    gate_peer: int = -1
    gate_timeout: float = 0.0

    def _fail(self, step: str, e: BaseException) -> None:
        with contextlib.suppress(OSError):
            os.write(self.report_fd, f"{step}: {e}".encode(errors="replace"))

    def __call__(self) -> None:  # pragma: no cover - runs in the forked child
        """Run in the child between ``fork`` and ``exec`` (``preexec_fn``)."""
        step = "supervisor liveness"
        try:
            os.close(self.alive_peer)
            if self.gate_peer >= 0:
                os.close(self.gate_peer)
            if self.pdeathsig or self.pidns:
                step = "PR_SET_PDEATHSIG"
                _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
                if _gone(self.alive_fd):
                    os._exit(125)  # the supervisor died before prctl: nobody would kill us
            step = "joining the cgroups"
            for fd in self.cgroup_fds:
                os.write(fd, b"0")
            if self.cpu_seconds is not None:
                step = "RLIMIT_CPU"
                resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + 1))
            flags = (_linux.CLONE_NEWNET if self.netns else 0) | (_linux.CLONE_NEWNS if self.stage else 0)
            if self.userns:
                step = "user namespace"
                flags |= _linux.CLONE_NEWPID if self.pidns == "userns" else 0
                _linux.unshare(_linux.CLONE_NEWUSER | flags)
                _write_file("/proc/self/setgroups", "deny")
                _write_file("/proc/self/uid_map", f"{self.uid} {self.uid} 1")
                _write_file("/proc/self/gid_map", f"{self.gid} {self.gid} 1")
            elif flags:
                step = "network and mount namespaces"
                _linux.unshare(flags)
            if self.pidns == "userns":
                step = "pid namespace init"
                init, keep = _fork_watched()
                if init:
                    _outer_relay(init, keep)
            spawn = None
            if self.pidns:  # before the go: after it, only the spawn itself
                step = "preparing the command's start in the pid namespace"
                spawn = self._spawn_command()
            if self.gate_fd >= 0:
                step = "waiting for the go"
                ttl = _await_go(self.gate_fd, self.gate_timeout)
                self.lease_ttl = ttl or self.lease_ttl  # the go may bring the lease's TTL
            if self.stage:
                # After the go, not while the governor decides: a mount covers the path's
                # file as it is now, and a file renamed over the path later is not covered.
                # Mounted ahead, a rename during the authorization ran the unmeasured file.
                step = "showing the measured copies at their own paths"
                show_copies(self.stage, self.exec_fd)
            if spawn is not None:
                step = "starting the command in the pid namespace"
                _init_relay(spawn(), self.status_fd, self.heartbeat_fd, self.lease_ttl)
            if self.exec_fd is not None:
                step = "close-on-exec"
                os.set_inheritable(self.exec_fd, False)
        except BaseException as e:
            self._fail(step, e)
            raise

    def _spawn_command(self) -> Callable[[], int]:  # pragma: no cover - runs in the forked init
        """What starts the command from the namespace's init with ``posix_spawn``, all
        computed before the go (a forked copy of the supervisor pays for each page it
        first writes: after the go, only the spawn itself runs).

        ``posix_spawn`` runs the new process on this one's memory until it execs (a
        vfork), where ``fork`` would first copy the page tables of a whole Python
        process: about 1.5 ms of every start. The command needs nothing a fork would
        give it: it is born in the cgroups, namespaces, session and working directory
        set up above; it keeps its standard streams and the descriptors it was given
        (every other inheritable one is closed, as ``close_fds`` would); its signal
        mask is empty; and if this init dies the kernel kills the whole namespace, so
        it needs no PDEATHSIG of its own.
        """
        keep = {0, 1, 2, *self.pass_fds}
        actions = []
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd in keep:
                continue
            try:
                if not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
            except OSError:
                continue  # the directory's own descriptor, closed by now
        if self.exec_fd is not None:
            os.set_inheritable(self.exec_fd, False)  # execve of /proc/self/fd/N closes it
        env = os.environ if self.env is None else self.env
        spawn = os.posix_spawn if self.exec_path else os.posix_spawnp
        return functools.partial(
            spawn, self.exec_path or self.argv[0], list(self.argv), env, file_actions=actions, setsigmask=()
        )


GO = b"g"
"""The byte that lets a gated child start the command (step 7); the go message is this
byte and the lease's TTL (:data:`GO_MESSAGE`, 0 to keep the prepared one)."""
GO_MESSAGE = struct.Struct("=cd")


class NoGoError(OSError):
    """A gated child was not let go: cancelled, its supervisor gone, or too late."""


def _await_go(fd: int, timeout: float) -> float:  # pragma: no cover - runs in the forked child
    # Step 7: the go, or no command. poll retries on EINTR with the time left (PEP 475);
    # the message is shorter than PIPE_BUF, so it is written, and read, whole.
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    if not poller.poll(max(int(timeout * 1000), 1)):
        raise NoGoError(f"no go within {timeout:g} s")
    got = os.read(fd, GO_MESSAGE.size)
    if len(got) != GO_MESSAGE.size or got[:1] != GO:
        raise NoGoError("cancelled" if got else "the supervisor closed the gate")
    os.close(fd)
    ttl: float = GO_MESSAGE.unpack(got)[1]
    return ttl


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def exec_fd_of(exec_path: str | None, pass_fds: Sequence[int]) -> int | None:
    """The passed descriptor that ``exec_path`` executes (``/proc/self/fd/N``), if any.

    Args:
        exec_path: what will be executed.
        pass_fds: the descriptors the command keeps.

    Returns:
        ``N``, or ``None``.
    """
    match = re.fullmatch(r"/proc/self/fd/(\d+)", exec_path or "")
    if match and int(match.group(1)) in pass_fds:
        return int(match.group(1))
    return None


def drain_report(fd: int) -> str:
    """Read what a failed child wrote to its report pipe (half a second at most).

    Args:
        fd: the read end.

    Returns:
        The report, decoded.
    """
    chunks = []
    deadline = time.monotonic() + 0.5
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while time.monotonic() < deadline:
        if not poller.poll(50):
            break
        data = os.read(fd, 4096)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")
