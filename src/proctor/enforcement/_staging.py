"""Sealed copies of measured files, and showing them under their own paths.

What runs is always a copy of the measured bytes, never the measured file itself
(ADR 0007). :func:`sealed_copy` copies a file into a memfd, seals it (no write, grow,
shrink, nor further sealing) and only then hashes it, so the digest that is checked
is the digest of bytes that nobody can change any more.

Run from a memfd, a program sees ``/proc/self/fd/N`` as a script's path (``$0``,
``__file__``) and ``/memfd:…`` as its ``/proc/self/exe``. Where the command gets a
private mount namespace (the ``mountns`` backend: root, or a user namespace), the
child shows each copy at the measured file's own path instead (:func:`show_copies`),
in this order:

1. ``/`` becomes a recursive slave: nothing mounted here propagates to the host.
2. The targets (the measured files' real paths) are opened ``O_PATH`` first.
3. A tmpfs is mounted on a scratch directory, each sealed memfd is copied into a file
   on it (a kernel copy of bytes that cannot change), and the tmpfs is remounted
   read-only. Until then only this child can reach it: it is mounted in a namespace
   that holds nothing else, and a process that could reach in through
   ``/proc/<pid>/root`` could as well write the child's memory. Afterwards nobody
   without CAP_SYS_ADMIN over the namespace can write it.
4. Each copy is bind-mounted over its target, and the scratch tmpfs is detached.
5. Checked last: the executable's real path opens to its copy (same device and
   inode) and that descriptor is what is executed, so ``/proc/self/exe`` names the
   real path; each script's path, as the interpreter will be given it, resolves to its
   copy. Any mismatch fails the start.

A script is read by its path, so a swap of that path between step 5 and the
interpreter's ``open`` would be read instead of the copy (a rename over a mount point
detaches it): :func:`~proctor.enforcement.measure.prepare` registers a command for
showing only when nobody but root can change its scripts' paths
(:func:`proctor.enforcement._trust.pinned`); otherwise it runs from its memfds.

A memfd cannot be bind-mounted (it lives on the kernel's internal mount, outside every
namespace), hence the tmpfs copy. The path → copy registry lets
:meth:`~proctor.enforcement.containment.Containment.spawn` find the copies of a
prepared command from what it is given (``exec_path``, ``argv``, ``pass_fds``); when it
cannot, or has no mount namespace, the command runs from the memfds as prepared —
the same bytes, only the paths differ.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import mmap
import os
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass

from proctor.enforcement import _linux
from proctor.errors import IntegrityError

__all__ = [
    "StagedCopy",
    "Staging",
    "snapshot",
    "sealed_copy",
    "Snapshots",
    "SNAPSHOTS",
    "copy_mode",
    "close_quietly",
    "register",
    "unregister",
    "staging_for",
    "show_copies",
]

_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_MFD_NOEXEC_SEAL = 0x0008  # Linux 6.3+: a memfd that can never be made executable
_MFD_EXEC = 0x0010  # Linux 6.3+: say so explicitly (vm.memfd_noexec may refuse it)
# Directories a scratch tmpfs is mounted *over*, in the child's own mount namespace only
# (and detached before exec): nothing is ever written to the directory itself.
_SCRATCH = ("/tmp", "/dev", "/run", "/mnt", "/var/tmp")  # noqa: S108
_FD_PATH = re.compile(r"/proc/self/fd/(\d+)")


@dataclass(frozen=True)
class StagedCopy:
    """One sealed copy of a measured file.

    Attributes:
        fd: the sealed memfd.
        target: the measured file's real path, where the copy is shown.
        shown: for a script, the path its interpreter is given when the copy is
            shown (as ``execvp`` would pass it, or as the command line has it);
            ``None`` for the executable.
        mode: permission bits for the shown copy (read and execute bits of the original).
    """

    fd: int
    target: str
    shown: str | None
    mode: int


@dataclass(frozen=True)
class Staging:
    """How to run a prepared command with its copies shown under their own paths.

    Attributes:
        argv: the command line then (each script by its own path).
        copies: the sealed copies, the executable first.
    """

    argv: tuple[str, ...]
    copies: tuple[StagedCopy, ...]


def _memfd(name: str, *, executable: bool) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    wanted = _MFD_EXEC if executable else _MFD_NOEXEC_SEAL
    try:
        return os.memfd_create(name, flags | wanted)
    except OSError as e:
        # EINVAL: a kernel before 6.3 (every memfd may be executed there). EACCES:
        # vm.memfd_noexec=2 refuses executable memfds; the copy can still be shown in
        # a mount namespace, and executing the memfd itself will fail (closed).
        if e.errno not in (22, 13):
            raise
        return os.memfd_create(name, flags)


def _hash_sealed(fd: int) -> str:
    size = os.fstat(fd).st_size
    if size == 0:
        return "sha256:" + hashlib.sha256(b"").hexdigest()
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as view:
        return "sha256:" + hashlib.sha256(view).hexdigest()


def snapshot(src: int, what: str, path: str, *, executable: bool) -> tuple[int, str]:
    """Copy an opened file into a memfd, seal it, and hash the sealed copy.

    Args:
        src: the file, opened for reading.
        what: its role (names the memfd).
        path: its path (names the memfd).
        executable: whether the copy may be executed.

    Returns:
        ``(memfd, "sha256:<hex>")``: the sealed copy (close-on-exec, at offset 0) and
        the digest of exactly its bytes.

    Raises:
        OSError: copying or sealing failed.
    """
    memfd = _memfd(f"proctor-{what}:{os.path.basename(path)}", executable=executable)
    try:
        offset = 0
        while True:  # until end of file: the size may change while we copy
            n = os.sendfile(memfd, src, offset, 1 << 30)
            if n == 0:
                break
            offset += n
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, _SEALS)
        return memfd, _hash_sealed(memfd)  # sealed first: what is hashed is what will run
    except BaseException:
        os.close(memfd)
        raise


def sealed_copy(src: int, expected: str, what: str, path: str, *, executable: bool) -> int:
    """A :func:`snapshot` that must have the measured digest.

    Args:
        src: the measured file, opened for reading.
        expected: its measured digest.
        what: its role (for messages).
        path: its path (for messages).
        executable: whether the copy will be executed.

    Returns:
        The sealed memfd.

    Raises:
        IntegrityError: the copy's digest is not the measured one.
        OSError: copying or sealing failed.
    """
    memfd, found = snapshot(src, what, path, executable=executable)
    if not hmac.compare_digest(found, expected):
        os.close(memfd)
        raise IntegrityError(
            f"{what} {path!r} changed since it was measured: expected {expected}, found {found}"
        )
    return memfd


class Snapshots:
    """Sealed copies made while measuring, kept for staging the same files.

    A copy is immutable, so staging the one whose digest was measured (and authorized)
    needs no second read nor hash. At most ``size`` are kept; the oldest is closed.

    Args:
        size: how many copies to keep.
    """

    def __init__(self, size: int = 16) -> None:
        """Start empty."""
        self._size = size
        self._lock = threading.Lock()
        self._copies: OrderedDict[tuple[str, str], int] = OrderedDict()

    def put(self, path: str, digest: str, fd: int) -> None:
        """Keep a sealed copy (the store owns it now).

        Args:
            path: the measured file.
            digest: the digest of the copy.
            fd: the sealed memfd.
        """
        with self._lock:
            old = self._copies.pop((path, digest), None)
            self._copies[(path, digest)] = fd
            evicted = [self._copies.popitem(last=False)[1] for _ in range(len(self._copies) - self._size)]
        close_quietly((*evicted, *(() if old is None else (old,))))

    def take(self, path: str, digest: str) -> int | None:
        """Hand over the copy of ``path`` with ``digest``, if one is kept.

        Args:
            path: the measured file.
            digest: its measured digest.

        Returns:
            The sealed memfd (the caller owns it now), or ``None``.
        """
        with self._lock:
            return self._copies.pop((path, digest), None)


SNAPSHOTS = Snapshots()
"""The copies :func:`~proctor.enforcement.measure.measure` made, for ``prepare``."""


# -- the registry ------------------------------------------------------------------------

_lock = threading.Lock()
_staged: dict[int, tuple[tuple[int, int], tuple[str, ...], frozenset[int], Staging]] = {}


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def register(exec_fd: int, argv: tuple[str, ...], pass_fds: tuple[int, ...], staging: Staging) -> None:
    """Remember how a prepared command's copies can be shown.

    Args:
        exec_fd: the executable's sealed memfd (what ``exec_path`` names).
        argv: the command line as prepared (scripts as ``/proc/self/fd/M``).
        pass_fds: the descriptors as prepared.
        staging: how to show the copies.
    """
    with _lock:
        _staged[exec_fd] = (_identity(exec_fd), argv, frozenset(pass_fds), staging)


def unregister(exec_fd: int) -> None:
    """Forget a prepared command (before its descriptors are closed).

    Args:
        exec_fd: as given to :func:`register`.
    """
    with _lock:
        _staged.pop(exec_fd, None)


def staging_for(exec_path: str | None, argv: tuple[str, ...], pass_fds: tuple[int, ...]) -> Staging | None:
    """The staging of a prepared command, if exactly it is being started.

    Args:
        exec_path: what will be executed.
        argv: the command line.
        pass_fds: the descriptors the command keeps.

    Returns:
        The staging, or ``None`` (not a prepared command, or changed since).
    """
    match = _FD_PATH.fullmatch(exec_path or "")
    if match is None:
        return None
    fd = int(match.group(1))
    with _lock:
        entry = _staged.get(fd)
    if entry is None:
        return None
    identity, prepared_argv, prepared_fds, staging = entry
    try:
        same = _identity(fd) == identity
    except OSError:
        return None
    if not same or prepared_argv != argv or not prepared_fds <= set(pass_fds):
        return None
    return staging


# -- in the child: show the copies at their own paths ------------------------------------


def _scratch() -> str:
    for path in _SCRATCH:
        if os.path.isdir(path) and not os.path.islink(path):
            return path
    raise OSError(2, f"no scratch directory to stage on (tried {', '.join(_SCRATCH)})")


def _mount_scratch(where: str) -> None:
    flags = _linux.MS_NOSUID | _linux.MS_NODEV
    try:
        # Huge pages make copying a large executable about twice as fast.
        _linux.mount("proctor-staging", where, "tmpfs", flags, "mode=0700,huge=within_size")
    except OSError:
        _linux.mount("proctor-staging", where, "tmpfs", flags, "mode=0700")


def _copy(src: int, dst: int) -> None:
    size = os.fstat(src).st_size
    offset = 0
    while offset < size:
        n = os.sendfile(dst, src, offset, size - offset)
        if n == 0:
            raise OSError(5, f"short copy: {offset} of {size} bytes")
        offset += n


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def show_copies(
    copies: tuple[StagedCopy, ...], exec_fd: int | None
) -> None:  # pragma: no cover - forked child
    """Show each sealed copy at its own path, in this (new, private) mount namespace.

    Runs in the forked child, after ``unshare(CLONE_NEWNS)``: imports nothing, logs
    nothing. Steps as in the module docstring.

    Args:
        copies: the copies, the executable first.
        exec_fd: the descriptor ``exec`` will run (``/proc/self/fd/N``); replaced by
            one opened on the executable's real path, once checked to be its copy.

    Raises:
        OSError: a step failed, or a path does not resolve to its copy.
    """
    # 1. Nothing mounted from here on may reach the host's mount table.
    _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_SLAVE)
    # 2. The targets, before the scratch tmpfs could hide any of them.
    targets: dict[str, int] = {}
    for copy in copies:
        if copy.target not in targets:
            targets[copy.target] = os.open(copy.target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    # 3. Copies on a private tmpfs, made read-only before anything is shown.
    scratch = _scratch()
    _mount_scratch(scratch)
    top = os.open(scratch, os.O_DIRECTORY | os.O_CLOEXEC)
    staged: dict[str, int] = {}
    for i, copy in enumerate(copies):
        if copy.target in staged:
            continue  # the same file twice (``sh /bin/sh``): one copy, same digest
        name = str(i)
        out = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, copy.mode, dir_fd=top)
        try:
            _copy(copy.fd, out)
        finally:
            os.close(out)
        staged[copy.target] = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=top)
    os.close(top)
    _linux.mount(
        None, scratch, None, _linux.MS_REMOUNT | _linux.MS_RDONLY | _linux.MS_NOSUID | _linux.MS_NODEV
    )
    # 4. Each copy over its target; the scratch mount goes (the copies stay reachable).
    for target, fd in staged.items():
        _linux.mount(f"/proc/self/fd/{fd}", f"/proc/self/fd/{targets[target]}", None, _linux.MS_BIND)
    _linux.umount2(scratch, _linux.MNT_DETACH)
    # 5. What will be executed and read is the copy, by device and inode.
    for copy in copies:
        want = os.fstat(staged[copy.target])
        if copy.shown is None:
            if exec_fd is None:
                raise OSError(22, "the executable's copy has no descriptor to execute")
            opened = os.open(copy.target, os.O_PATH | os.O_CLOEXEC)
            if not _same(os.fstat(opened), want):
                raise OSError(1, f"{copy.target} does not resolve to its measured copy")
            os.dup2(opened, exec_fd, inheritable=False)
            os.close(opened)
        elif not _same(os.stat(copy.shown), want):
            raise OSError(1, f"{copy.shown} does not resolve to its measured copy")
    for fd in (*targets.values(), *staged.values()):
        with contextlib.suppress(OSError):
            os.close(fd)


def copy_mode(st: os.stat_result, *, executable: bool) -> int:
    """Permission bits for the shown copy of a file.

    Args:
        st: the original's status.
        executable: whether the copy is what is executed.

    Returns:
        The original's read and execute bits, readable (and for the executable,
        executable) by its owner — the child, which creates it.
    """
    return (stat.S_IMODE(st.st_mode) & 0o555) | 0o400 | (0o100 if executable else 0)


def close_quietly(fds: tuple[int, ...]) -> None:
    """Close descriptors, ignoring those already closed.

    Args:
        fds: the descriptors.
    """
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
