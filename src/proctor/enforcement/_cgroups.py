"""Per-execution cgroups: finding writable hierarchies, creating groups, limits, kill, stats.

Where groups go: under the supervisor's *own* cgroup in each hierarchy, as
``<own>/proctor/<execution-id>``. Nesting where the supervisor already is keeps every
limit already placed on the supervisor (and on whatever runs it) in force, and needs
no more privilege than the supervisor was delegated. Nothing is hardcoded: mount
points come from ``/proc/self/mountinfo``, our place in each hierarchy from
``/proc/self/cgroup``.

Ownership: a group's name ends in ``@<pid>-<starttime>`` of the supervisor that made
it. A supervisor that is SIGKILLed cannot remove its groups (nor, without a pid
namespace, kill what runs in them); :func:`reap_stale` lets the next one do both.

Killing a group:

- v2 with ``cgroup.kill`` (Linux 5.14+): one write; the kernel SIGKILLs every member
  and whatever they fork meanwhile.
- v2 without it, and the v1 freezer: freeze, SIGKILL every member, thaw. A frozen
  process cannot fork, so a fork loop cannot outrun the kill.

A process is moved into its groups by the child itself, before ``exec``, by writing
``0`` ("the writer") to ``cgroup.procs`` through descriptors the parent opened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time

from proctor.enforcement._linux import Mount, read_stat
from proctor.errors import EnforcementError

__all__ = [
    "PARENT_NAME",
    "cgroup_dir",
    "writable_base",
    "cgroup2_kill_supported",
    "cgroup2_child_controllers",
    "Group",
    "owner_tag",
    "reap_stale",
    "groups_usage",
]

PARENT_NAME = "proctor"


def cgroup_dir(mounts: list[Mount], own: dict[str, str], controller: str) -> str | None:
    """The directory of this process's cgroup in one hierarchy.

    Args:
        mounts: the mount table.
        own: this process's cgroups (from ``own_cgroups``).
        controller: ``""`` for the v2 (unified) hierarchy, else a v1 controller name.

    Returns:
        The directory, or ``None`` when that hierarchy is not mounted (visibly) here.
    """
    rel = own.get(controller)
    if rel is None:
        return None
    for m in mounts:
        if controller == "":
            if m.fstype != "cgroup2":
                continue
        elif m.fstype != "cgroup" or controller not in m.super_options:
            continue
        root = m.root.rstrip("/")
        if rel != root and not rel.startswith(root + "/"):
            continue  # our cgroup is outside the part of the hierarchy mounted here
        path = os.path.join(m.mount_point, rel[len(root) :].lstrip("/"))
        if os.path.isdir(path):
            return path.rstrip("/") or "/"
    return None


def writable_base(path: str | None) -> str | None:
    """``path`` if per-execution groups can be created under it and processes moved in.

    Args:
        path: our cgroup directory in some hierarchy.

    Returns:
        ``path``, or ``None`` if we lack the permissions.
    """
    if path is None:
        return None
    parent = os.path.join(path, PARENT_NAME)
    where = parent if os.path.isdir(parent) else path
    if not os.access(where, os.W_OK | os.X_OK):
        return None
    # Moving a process needs write access to cgroup.procs of the common ancestor.
    if not os.access(os.path.join(path, "cgroup.procs"), os.W_OK):
        return None
    return path


def cgroup2_kill_supported(base: str) -> bool:
    """Whether child groups of ``base`` have ``cgroup.kill`` (Linux 5.14+).

    Args:
        base: a cgroup v2 directory.

    Returns:
        ``True`` if ``cgroup.kill`` is there (the root cgroup has none, so the kernel
        version decides there).
    """
    if os.path.exists(os.path.join(base, "cgroup.kill")):
        return True
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 14)


def cgroup2_child_controllers(base: str) -> tuple[str, ...]:
    """The v2 controllers enabled for the children of ``base``.

    Only these can limit a per-execution group; enabling more would mean writing to
    a cgroup that is not ours (``base`` holds the supervisor itself).

    Args:
        base: a cgroup v2 directory.

    Returns:
        Controller names, such as ``("memory", "pids")``.
    """
    try:
        with open(os.path.join(base, "cgroup.subtree_control"), encoding="ascii") as f:
            return tuple(sorted(f.read().split()))
    except OSError:
        return ()


def owner_tag(pid: int | None = None) -> str:
    """The ownership suffix of group names made by process ``pid`` (default: this one).

    Args:
        pid: the supervisor.

    Returns:
        ``@<pid>-<starttime>``.

    Raises:
        EnforcementError: the process does not exist.
    """
    pid = os.getpid() if pid is None else pid
    st = read_stat(pid)
    if st is None:
        raise EnforcementError(f"process {pid} does not exist")
    return f"@{pid}-{st.starttime}"


def _owner_alive(name: str) -> bool:
    _, at, owner = name.rpartition("@")
    pid, dash, start = owner.partition("-")
    if not (at and dash and pid.isdigit() and start.isdigit()):
        return True  # not one of ours (or of an older format): leave it alone
    st = read_stat(int(pid))
    return st is not None and st.starttime == int(start)


def reap_stale(base: str, *, version: int, controller: str = "") -> tuple[int, int]:
    """Kill and remove the groups under ``<base>/proctor`` whose supervisor is dead.

    Args:
        base: our cgroup directory in the hierarchy.
        version: 1 or 2.
        controller: the v1 controller, ``""`` for v2.

    Returns:
        ``(groups removed, processes killed)``.
    """
    parent = os.path.join(base, PARENT_NAME)
    try:
        names = os.listdir(parent)
    except OSError:
        return 0, 0
    removed = killed = 0
    for name in names:
        path = os.path.join(parent, name)
        if "@" not in name or not os.path.isdir(path) or _owner_alive(name):
            continue
        group = Group(path, version=version, controller=controller)
        for _ in range(10):
            pids = group.pids()
            if not pids:
                break
            killed += len(pids)
            if group.can_freeze():
                with contextlib.suppress(EnforcementError):
                    group.kill()
            else:
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        if group.remove(timeout=0.5):
            removed += 1
    return removed, killed


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except OSError:
        return None


class Group:
    """One per-execution cgroup in one hierarchy.

    Attributes:
        path: the group's directory.
        version: 1 or 2.
        controller: the v1 controller (``freezer``, ``memory``, ``pids``), ``""`` for v2.
        rel: the group's path as ``/proc/<pid>/cgroup`` shows it (v2 only), or ``""``.
    """

    def __init__(self, path: str, *, version: int, controller: str, rel: str = "") -> None:
        """Wrap an existing group directory (use :meth:`create` to make one).

        Args:
            path: the group's directory.
            version: 1 or 2.
            controller: the v1 controller, ``""`` for v2.
            rel: the path ``/proc/<pid>/cgroup`` shows for members (v2).
        """
        self.path = path
        self.version = version
        self.controller = controller
        self.rel = rel

    @classmethod
    def create(cls, base: str, name: str, *, version: int, controller: str = "", own_rel: str = "") -> Group:
        """Create ``<base>/proctor/<name>``.

        Args:
            base: our cgroup directory in the hierarchy.
            name: the execution's group name (unique).
            version: 1 or 2.
            controller: the v1 controller, ``""`` for v2.
            own_rel: our own cgroup path as ``/proc/self/cgroup`` shows it (v2).

        Returns:
            The new group.

        Raises:
            EnforcementError: the directory could not be created (it exists, or no permission).
        """
        parent = os.path.join(base, PARENT_NAME)
        path = os.path.join(parent, name)
        for _ in range(5):
            with contextlib.suppress(FileExistsError):
                os.mkdir(parent)
            try:
                os.mkdir(path)
                break
            except FileNotFoundError:
                continue  # another supervisor removed the empty parent meanwhile; again
            except OSError as e:
                raise EnforcementError(f"cannot create cgroup {path}: {e.strerror}") from e
        else:
            raise EnforcementError(f"cannot create cgroup {path}: its parent keeps disappearing")
        rel = f"{own_rel.rstrip('/')}/{PARENT_NAME}/{name}" if version == 2 else ""
        return cls(path, version=version, controller=controller, rel=rel)

    def file(self, name: str) -> str:
        """The path of one of the group's control files.

        Args:
            name: the file name (``cgroup.procs``, ``memory.max`` …).

        Returns:
            Its path.
        """
        return os.path.join(self.path, name)

    def write(self, name: str, value: str) -> None:
        """Write a control file.

        Args:
            name: the file name.
            value: what to write.

        Raises:
            EnforcementError: the kernel refused the value.
        """
        try:
            _write(self.file(name), value)
        except OSError as e:
            raise EnforcementError(f"cannot write {value!r} to {self.file(name)}: {e.strerror}") from e

    def read(self, name: str) -> str | None:
        """Read a control file.

        Args:
            name: the file name.

        Returns:
            Its content, or ``None`` if it is missing or unreadable.
        """
        return _read(self.file(name))

    def keyed(self, name: str) -> dict[str, int]:
        """Read a flat keyed file (``cpu.stat``, ``memory.events`` …).

        Args:
            name: the file name.

        Returns:
            Key → integer value; empty when the file is missing.
        """
        result: dict[str, int] = {}
        for line in (self.read(name) or "").splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                result[key] = int(value)
        return result

    def pids(self) -> list[int]:
        """The live members (the kernel lists no zombies).

        Returns:
            Their pids; empty once the group is gone.
        """
        text = self.read("cgroup.procs")
        return [int(p) for p in text.split()] if text else []

    def open_procs(self) -> int:
        """Open ``cgroup.procs`` for a child to join by writing ``0`` before it execs.

        Returns:
            A close-on-exec write descriptor.

        Raises:
            EnforcementError: it cannot be opened.
        """
        try:
            return os.open(self.file("cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise EnforcementError(f"cannot open {self.file('cgroup.procs')}: {e.strerror}") from e

    def can_freeze(self) -> bool:
        """Whether this group can be frozen (v2, or the v1 freezer).

        Returns:
            ``True`` for a v2 group or a v1 freezer group.
        """
        return self.version == 2 or self.controller == "freezer"

    def kill(self, *, freeze_timeout: float = 0.2) -> None:
        """SIGKILL every member, atomically with respect to fork.

        Args:
            freeze_timeout: how long to wait for a freeze before killing anyway.

        Raises:
            EnforcementError: the group cannot be killed this way.
        """
        if self.version == 2 and os.path.exists(self.file("cgroup.kill")):
            self.write("cgroup.kill", "1")
            return
        if not self.can_freeze():
            raise EnforcementError(f"cgroup {self.path} can neither be killed nor frozen")
        self._set_frozen(True, freeze_timeout)
        try:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # frozen: cannot exit and be reused meanwhile
        finally:
            self._set_frozen(False, freeze_timeout)

    def _set_frozen(self, frozen: bool, timeout: float) -> None:
        if self.version == 2:
            self.write("cgroup.freeze", "1" if frozen else "0")
        else:
            self.write("freezer.state", "FROZEN" if frozen else "THAWED")
        deadline = time.monotonic() + timeout
        while not self._is_frozen(frozen) and time.monotonic() < deadline:
            time.sleep(0.0005)

    def _is_frozen(self, frozen: bool) -> bool:
        if self.version == 2:
            return self.keyed("cgroup.events").get("frozen") == int(frozen)
        return (self.read("freezer.state") or "").strip() == ("FROZEN" if frozen else "THAWED")

    def remove(self, *, timeout: float = 2.0) -> bool:
        """Remove the group (its members must be dead), then the shared parent if empty.

        Args:
            timeout: how long to retry while the kernel still counts exiting members.

        Returns:
            ``True`` if the group is gone.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(self.path)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)
        # Other executions may share the parent: removing it fails harmlessly while they run.
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.path))
        return True

    def holds_zombie(self, pid: int) -> bool:
        """Whether an exited (zombie) process was a member (v2 keeps its cgroup until reaped).

        Args:
            pid: the zombie.

        Returns:
            ``True`` if ``/proc/<pid>/cgroup`` names this group.
        """
        if self.version != 2:
            return False
        try:
            with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
                return any(line.rstrip("\n") == f"0::{self.rel}" for line in f)
        except OSError:
            return False


def groups_usage(groups: list[Group]) -> dict[str, int]:
    """What the kernel accounted for an execution's cgroups (for ``Contained.resource_usage``).

    Args:
        groups: the execution's groups.

    Returns:
        ``user_ms``/``system_ms`` (v2 ``cpu.stat``), ``memory_peak_kb`` and
        ``oom_kills`` (a memory group), ``pids_limit_hits`` (a pids group): each where
        the groups account it.
    """
    usage: dict[str, int] = {}
    for g in groups:
        if g.version == 2:
            cpu = g.keyed("cpu.stat")
            if "user_usec" in cpu and "system_usec" in cpu:
                usage["user_ms"] = cpu["user_usec"] // 1000
                usage["system_ms"] = cpu["system_usec"] // 1000
            peak = g.read("memory.peak")
            if peak and peak.strip().isdigit():
                usage["memory_peak_kb"] = int(peak) // 1024
            if "oom_kill" in (events := g.keyed("memory.events")):
                usage["oom_kills"] = events["oom_kill"]
            if "max" in (events := g.keyed("pids.events")):
                usage["pids_limit_hits"] = events["max"]
        elif g.controller == "memory":
            peak = g.read("memory.max_usage_in_bytes")
            if peak and peak.strip().isdigit():
                usage["memory_peak_kb"] = int(peak) // 1024
            usage["oom_kills"] = g.keyed("memory.oom_control").get("oom_kill", 0)
        elif g.controller == "pids":
            usage["pids_limit_hits"] = g.keyed("pids.events").get("max", 0)
    return usage
