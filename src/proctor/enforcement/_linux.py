"""Linux primitives that containment needs and the standard library lacks (Python 3.11).

``prctl``, ``unshare``, ``setns``, ``mount`` and ``umount2`` go through libc with ctypes; ``/proc`` and
``/proc/self/mountinfo`` are parsed here so the rest of the package works on typed
records. Everything is read at call time: nothing here caches what the machine allows.

Process identity: a pid alone can be reused once its process is reaped, so a process
is identified by ``(pid, starttime)`` (field 22 of ``/proc/<pid>/stat``) and signalled
through a pidfd opened and then re-checked against that start time, which closes the
reuse window (``pidfd_send_signal`` targets the process the pidfd was opened on).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
from dataclasses import dataclass

__all__ = [
    "CLONE_NEWNS",
    "CLONE_NEWNET",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "PR_SET_PDEATHSIG",
    "PR_GET_PDEATHSIG",
    "PR_SET_CHILD_SUBREAPER",
    "PR_GET_CHILD_SUBREAPER",
    "PR_SET_DUMPABLE",
    "MS_RDONLY",
    "MS_NOSUID",
    "MS_NODEV",
    "MS_REMOUNT",
    "MS_BIND",
    "MS_REC",
    "MS_SLAVE",
    "MNT_DETACH",
    "prctl",
    "prctl_get",
    "set_name",
    "fork",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "reset_signal",
    "ProcStat",
    "read_stat",
    "list_pids",
    "pidns_of",
    "ns_pids",
    "signal_process",
    "Mount",
    "read_mountinfo",
    "own_cgroups",
    "has_cap_sys_admin",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_DUMPABLE = 4
_PR_SET_NAME = 15

# mount(2) flags and umount2(2)'s MNT_DETACH.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
MNT_DETACH = 2

_CAP_SYS_ADMIN = 21

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int
_unshare = _libc.unshare
_unshare.argtypes = [ctypes.c_int]
_unshare.restype = ctypes.c_int
_setns = _libc.setns
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_setns.restype = ctypes.c_int
_mount = _libc.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_mount.restype = ctypes.c_int
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_umount2.restype = ctypes.c_int
_fork = _libc.fork
_fork.argtypes = []
_fork.restype = ctypes.c_int
_signal = _libc.signal
_signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
_signal.restype = ctypes.c_void_p


def _check(result: int, what: str) -> int:
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def prctl(option: int, arg2: int = 0) -> int:
    """Call ``prctl(2)``; safe in a forked child (no allocation beyond ctypes' own).

    Args:
        option: the ``PR_*`` option.
        arg2: its first argument.

    Returns:
        The call's non-negative result.

    Raises:
        OSError: the kernel refused.
    """
    return _check(_prctl(option, arg2, 0, 0, 0), "prctl")


def prctl_get(option: int) -> int:
    """Call a ``prctl(2)`` getter that stores an ``int`` through its first argument.

    Args:
        option: a ``PR_GET_*`` option such as ``PR_GET_CHILD_SUBREAPER``.

    Returns:
        The stored value.

    Raises:
        OSError: the kernel refused (or does not know the option).
    """
    value = ctypes.c_int(0)
    _check(_prctl(option, ctypes.addressof(value), 0, 0, 0), "prctl")
    return value.value


def fork() -> int:
    """``fork(2)`` without Python's at-fork handlers; only for a child that is already forked.

    Between ``fork`` and ``exec`` (in ``preexec_fn``) the process is single-threaded and
    will only make system calls; running the at-fork callbacks that libraries register
    with ``os.register_at_fork`` there would cost time and could take their locks.

    Returns:
        0 in the new child, its pid in the caller.

    Raises:
        OSError: the kernel refused (no memory, a pids limit).
    """
    return _check(_fork(), "fork")


def set_name(name: bytes) -> None:
    """Name the calling thread (``comm``, shown by ``ps``; 15 bytes at most).

    A relay forked from the supervisor keeps the supervisor's command line; its name
    says what it is. Failure is ignored: the name is cosmetic.

    Args:
        name: the new name.
    """
    buf = ctypes.create_string_buffer(name[:15])
    _prctl(_PR_SET_NAME, ctypes.addressof(buf), 0, 0, 0)


def unshare(flags: int) -> None:
    """Call ``unshare(2)`` for the calling thread.

    ``CLONE_NEWPID`` only affects the children created afterwards (the caller stays in
    its namespace); ``CLONE_NEWUSER`` requires a single-threaded caller.

    Args:
        flags: ``CLONE_NEW*`` bits.

    Raises:
        OSError: the kernel refused (no privilege, namespaces disabled, threads).
    """
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """Call ``setns(2)`` for the calling thread.

    Args:
        fd: an open ``/proc/<pid>/ns/*`` file.
        nstype: the ``CLONE_NEW*`` bit of that namespace kind.

    Raises:
        OSError: the kernel refused.
    """
    _check(_setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """Call ``mount(2)``; safe in a forked child.

    Args:
        source: the source (a device, a file to bind, ``None`` for a remount).
        target: where to mount (``/proc/self/fd/N`` names an opened file).
        fstype: the filesystem type (``tmpfs``), or ``None``.
        flags: ``MS_*`` bits.
        data: filesystem options (``mode=0700``), or ``None``.

    Raises:
        OSError: the kernel refused.
    """
    encode = os.fsencode
    _check(
        _mount(
            None if source is None else encode(source),
            encode(target),
            None if fstype is None else encode(fstype),
            flags,
            None if data is None else encode(data),
        ),
        f"mount {target}",
    )


def umount2(target: str, flags: int) -> None:
    """Call ``umount2(2)``.

    Args:
        target: the mount point.
        flags: ``MNT_DETACH`` and the like.

    Raises:
        OSError: the kernel refused.
    """
    _check(_umount2(os.fsencode(target), flags), f"umount {target}")


def reset_signal(sig: int) -> None:
    """Give a signal its default action, bypassing Python's handler table.

    For a forked child that will never run Python signal handlers again (and where
    ``signal.signal`` may refuse to run outside the main thread).

    Args:
        sig: the signal.
    """
    _signal(sig, None)  # SIG_DFL is the null pointer


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` that containment uses.

    Attributes:
        pid: the process id, as seen from this process's pid namespace.
        state: the one-letter state (``R``, ``S``, ``D``, ``T``, ``Z`` …).
        ppid: the parent's pid (0 when the parent is outside our pid namespace).
        pgrp: the process group id.
        session: the session id.
        starttime: clock ticks after boot at which the process started.
    """

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    starttime: int

    @property
    def zombie(self) -> bool:
        """Whether the process has exited (a zombie is dead; only its parent has not reaped it)."""
        return self.state in ("Z", "X")


def read_stat(pid: int) -> ProcStat | None:
    """Read ``/proc/<pid>/stat``.

    Args:
        pid: the process.

    Returns:
        The parsed record, or ``None`` when the process no longer exists.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain ") ", so split on the last.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return ProcStat(
            pid=pid,
            state=fields[0].decode("ascii"),
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            session=int(fields[3]),
            starttime=int(fields[19]),
        )
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def list_pids() -> list[int]:
    """Every process id visible in ``/proc``.

    Returns:
        The pids (threads are not listed; they share their process's fate).
    """
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def pidns_of(pid: int, *, for_children: bool = False) -> tuple[int, int] | None:
    """The identity ``(st_dev, st_ino)`` of a process's pid namespace.

    Args:
        pid: the process.
        for_children: read ``pid_for_children`` (the namespace its next children join).

    Returns:
        The namespace identity, or ``None`` when the process is gone or not ours to inspect.
    """
    name = "pid_for_children" if for_children else "pid"
    try:
        st = os.stat(f"/proc/{pid}/ns/{name}")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def ns_pids(ns: tuple[int, int]) -> list[int]:
    """Every visible process in a pid namespace (zombies included).

    Args:
        ns: the namespace identity from :func:`pidns_of`.

    Returns:
        The pids, as seen from this process.
    """
    return [pid for pid in list_pids() if pidns_of(pid) == ns]


def signal_process(pid: int, starttime: int, sig: int) -> bool:
    """Send a signal to exactly the process ``(pid, starttime)``, never to a reuse of its pid.

    Args:
        pid: the process id.
        starttime: its start time, as read when it was found.
        sig: the signal.

    Returns:
        ``True`` if the signal was sent; ``False`` if the process is gone (or its pid
        now names another process).
    """
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        current = read_stat(pid)
        if current is None or current.starttime != starttime:
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError as e:
        if e.errno == errno.ESRCH:
            return False
        raise
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of ``/proc/self/mountinfo``.

    Attributes:
        root: the path inside the filesystem that is mounted.
        mount_point: where it is mounted.
        fstype: the filesystem type (``cgroup``, ``cgroup2`` …).
        super_options: the per-superblock options (for cgroup v1, the controllers).
    """

    root: str
    mount_point: str
    fstype: str
    super_options: frozenset[str]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 …).
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[Mount]:
    """Parse the mount table of this process (proc(5), ``mountinfo``).

    Args:
        path: the file to read (tests pass a copy).

    Returns:
        The mounts in table order; unparsable lines are skipped.
    """
    mounts = []
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, sep, right = line.rstrip("\n").partition(" - ")
            if not sep:
                continue
            lf, rf = left.split(" "), right.split(" ")
            if len(lf) < 5 or len(rf) < 3:
                continue
            mounts.append(
                Mount(
                    root=_unescape(lf[3]),
                    mount_point=_unescape(lf[4]),
                    fstype=rf[0],
                    super_options=frozenset(rf[2].split(",")),
                )
            )
    return mounts


def own_cgroups(path: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's cgroup in each hierarchy.

    Args:
        path: the file to read.

    Returns:
        Controller name → path inside that hierarchy; the cgroup v2 (unified) entry is
        under the key ``""`` and named v1 hierarchies under ``name=<name>``.
    """
    result: dict[str, str] = {}
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) != 3:
                continue
            for controller in parts[1].split(",") if parts[1] else [""]:
                result[controller] = parts[2]
    return result


def has_cap_sys_admin() -> bool:
    """Whether this process holds CAP_SYS_ADMIN (may create namespaces without a user namespace).

    Returns:
        The bit from ``CapEff`` in ``/proc/self/status``.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except (OSError, ValueError):
        return False
    return False
