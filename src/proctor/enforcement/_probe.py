"""What this machine lets the supervisor use for containment, probed at run time.

Cgroups come from ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` plus permission
checks (no group is created). Namespaces are tried for real, once per process, in a
forked child that calls ``unshare`` and reports what worked through its exit status:
a sysctl can say "allowed" while a seccomp filter or an LSM says no, and only the
kernel's answer counts.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from proctor.enforcement import _cgroups, _linux

__all__ = ["Capabilities", "probe", "probe_ahead"]

_log = logging.getLogger("proctor.enforcement.containment")

_V1_CONTROLLERS = ("freezer", "memory", "pids")

# Exit-status bits of the namespace probe child.
_PID_DIRECT = 1
_NET_DIRECT = 2
_USER = 4
_PID_IN_USER = 8
_NET_IN_USER = 16
_MNT_DIRECT = 32
_MNT_IN_USER = 64


@dataclass(frozen=True)
class Capabilities:
    """The containment mechanisms available to this process on this machine.

    Attributes:
        cgroup2: our writable cgroup v2 directory, under which per-execution groups are
            created, or ``None`` (not mounted, not writable, or no way to kill a group).
        cgroup2_controllers: v2 controllers enabled for our child groups (``memory``,
            ``pids`` …); limits need them.
        cgroup1: writable cgroup v1 directories by controller (``freezer``, ``memory``,
            ``pids``).
        user_namespaces: a user namespace can be created.
        pid_namespaces: a pid namespace can be created (directly, or inside a user namespace).
        net_namespaces: a network namespace can be created (likewise).
        mount_namespaces: a private mount namespace can be created and a tmpfs mounted
            in it (directly, or inside a user namespace), which showing the measured
            copies at their own paths needs.
        privileged_namespaces: pid and network namespaces need no user namespace
            (CAP_SYS_ADMIN).
        subreaper: ``PR_SET_CHILD_SUBREAPER`` is available.
        pdeathsig: ``PR_SET_PDEATHSIG`` is available.
    """

    cgroup2: str | None = None
    cgroup2_controllers: tuple[str, ...] = ()
    cgroup1: dict[str, str] = field(default_factory=dict)
    user_namespaces: bool = False
    pid_namespaces: bool = False
    net_namespaces: bool = False
    mount_namespaces: bool = False
    privileged_namespaces: bool = False
    subreaper: bool = False
    pdeathsig: bool = False

    def to_json(self) -> dict[str, Any]:
        """Serialise for logs and the ``execution.started`` event.

        Returns:
            A JSON-ready dict with every attribute.
        """
        return {
            "cgroup2": self.cgroup2,
            "cgroup2_controllers": list(self.cgroup2_controllers),
            "cgroup1": dict(sorted(self.cgroup1.items())),
            "user_namespaces": self.user_namespaces,
            "pid_namespaces": self.pid_namespaces,
            "net_namespaces": self.net_namespaces,
            "mount_namespaces": self.mount_namespaces,
            "privileged_namespaces": self.privileged_namespaces,
            "subreaper": self.subreaper,
            "pdeathsig": self.pdeathsig,
        }


def _try_unshare(flags: int) -> bool:
    try:
        _linux.unshare(flags)
    except OSError:
        return False
    return True


def _try_private_mounts() -> bool:
    # A namespace is not enough: a security module may still refuse mounts in it
    # (Ubuntu's restricted user namespaces). Mount a tmpfs the way staging does, in
    # this child's own namespace, after making sure nothing propagates to the host.
    if not _try_unshare(_linux.CLONE_NEWNS):
        return False
    try:
        _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_SLAVE)
        where = next((d for d in ("/tmp", "/dev") if os.path.isdir(d)), None)  # noqa: S108 - see _staging
        if where is None:
            return False
        _linux.mount("proctor-probe", where, "tmpfs", _linux.MS_NOSUID | _linux.MS_NODEV, "mode=0700")
        _linux.umount2(where, _linux.MNT_DETACH)
    except OSError:
        return False
    return True


def _namespace_child() -> None:  # pragma: no cover - runs in the forked child
    bits = 0
    try:
        if _try_unshare(_linux.CLONE_NEWPID):
            bits |= _PID_DIRECT
        if _try_unshare(_linux.CLONE_NEWNET):
            bits |= _NET_DIRECT
        if bits & _PID_DIRECT and _try_private_mounts():
            bits |= _MNT_DIRECT
        if _try_unshare(_linux.CLONE_NEWUSER):
            bits |= _USER
            if _try_unshare(_linux.CLONE_NEWPID):
                bits |= _PID_IN_USER
            if _try_unshare(_linux.CLONE_NEWNET):
                bits |= _NET_IN_USER
            if _try_private_mounts():
                bits |= _MNT_IN_USER
    finally:
        os._exit(bits)  # report through the exit status; nothing is ever executed


_probing = threading.Lock()


def _namespaces() -> int:
    with _probing:  # one probe, whichever threads ask (probe_ahead's and the spawn's)
        return _probe_namespaces()


def probe_ahead() -> None:
    """Start the namespace probe (a fork, a few ms) in a thread now, so that it is done
    by the time :func:`probe` needs it (``proctor run`` starts it before asking the
    governor, ADR 0022). Nothing is decided here: :func:`probe` waits for it."""
    threading.Thread(target=_namespaces, name="proctor-probe", daemon=True).start()


@functools.cache
def _probe_namespaces() -> int:
    # Namespaces do not come and go while a process runs: one forked probe per process.
    # The child is forked the way contained children are (subprocess, not os.fork, which
    # warns in threaded processes) and exits from preexec_fn without executing anything.
    try:
        child = subprocess.Popen(
            ["proctor-namespace-probe"],  # noqa: S607 - a name only: the child never executes
            executable=sys.executable,
            preexec_fn=_namespace_child,  # noqa: PLW1509 - the child only calls unshare and _exit
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        code = child.wait()
    except (OSError, subprocess.SubprocessError):
        return 0
    return code if 0 <= code < 128 else 0


def _prctl_works(option: int) -> bool:
    try:
        _linux.prctl_get(option)
    except OSError:
        return False
    return True


def probe() -> Capabilities:
    """Find what this process may use for containment.

    Cheap (well under 5 ms): the namespace test forks once per process and is then
    remembered; the cgroup part re-reads the mount table each time.

    Returns:
        The capabilities; what is missing is ``None``/``False``, never an error.
    """
    try:
        mounts = _linux.read_mountinfo()
    except OSError:
        mounts = []
    own = _linux.own_cgroups()
    v2 = _cgroups.writable_base(_cgroups.cgroup_dir(mounts, own, ""))
    if (
        v2 is not None
        and not _cgroups.cgroup2_kill_supported(v2)
        and not os.path.exists(os.path.join(v2, "cgroup.freeze"))
    ):
        v2 = None  # a group we could neither kill nor freeze is no use for termination
    v1 = {}
    for controller in _V1_CONTROLLERS:
        base = _cgroups.writable_base(_cgroups.cgroup_dir(mounts, own, controller))
        if base is not None:
            v1[controller] = base
    ns = _namespaces()
    user = bool(ns & _USER)
    caps = Capabilities(
        cgroup2=v2,
        cgroup2_controllers=_cgroups.cgroup2_child_controllers(v2) if v2 else (),
        cgroup1=v1,
        user_namespaces=user,
        pid_namespaces=bool(ns & (_PID_DIRECT | _PID_IN_USER)),
        net_namespaces=bool(ns & (_NET_DIRECT | _NET_IN_USER)),
        mount_namespaces=bool(ns & _MNT_DIRECT) or bool(ns & _USER and ns & _MNT_IN_USER),
        privileged_namespaces=bool(ns & _PID_DIRECT) and bool(ns & _NET_DIRECT),
        subreaper=_prctl_works(_linux.PR_GET_CHILD_SUBREAPER),
        pdeathsig=_prctl_works(_linux.PR_GET_PDEATHSIG),
    )
    _log.debug("containment capabilities: %s", caps.to_json())
    return caps
