"""Which containment mechanisms one execution uses, decided before anything is started,
and its cgroups made to that plan (:func:`make_groups`).

Fail closed: a limit that none of the selected backends can enforce is an error here,
so nothing starts with an obligation silently dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from proctor.enforcement import _linux
from proctor.enforcement._cgroups import Group
from proctor.enforcement._probe import Capabilities
from proctor.errors import EnforcementError

__all__ = ["ORDER", "Limits", "Plan", "available", "make_groups", "make_plan"]

ORDER = (
    "session",
    "subreaper",
    "pdeathsig",
    "cgroup2",
    "cgroup2:memory",
    "cgroup2:pids",
    "cgroup1:freezer",
    "cgroup1:memory",
    "cgroup1:pids",
    "pidns",
    "mountns",
    "userns",
    "netns",
    "rlimit",
)
"""Every backend name a run can report, in the order they are reported."""


def _positive(name: str, value: int | None) -> None:
    if value is not None and (type(value) is not int or value <= 0):
        raise EnforcementError(f"Limits.{name} must be a positive integer or None, got {value!r}")


@dataclass(frozen=True)
class Limits:
    """Resource obligations for one execution.

    Attributes:
        memory_mb: memory limit for the whole tree (a memory cgroup is required).
        max_pids: most processes and threads at once in the tree (a pids cgroup is required).
        no_network: run in a network namespace without interfaces.
        max_output_bytes: enforced by the supervisor, not here.
        cpu_seconds: CPU time per process (``RLIMIT_CPU``).

    Raises:
        EnforcementError: a value is not a positive integer (or ``None``).
    """

    memory_mb: int | None = None
    max_pids: int | None = None
    no_network: bool = False
    max_output_bytes: int | None = None
    cpu_seconds: int | None = None

    def __post_init__(self) -> None:
        """Validate the values."""
        for name in ("memory_mb", "max_pids", "max_output_bytes", "cpu_seconds"):
            _positive(name, getattr(self, name))
        if type(self.no_network) is not bool:
            raise EnforcementError(f"Limits.no_network must be a bool, got {self.no_network!r}")


@dataclass(frozen=True)
class Plan:
    """The backends of one execution.

    Attributes:
        names: the backends in force, in :data:`ORDER`.
        v1: the cgroup v1 controllers to create a group in.
    """

    names: tuple[str, ...]
    v1: tuple[str, ...]

    def has(self, name: str) -> bool:
        """Whether ``name`` is in force.

        Args:
            name: a backend name.

        Returns:
            ``True`` if it is.
        """
        return name in self.names

    @property
    def relays(self) -> int:
        """How many of proctor's relay processes the execution's cgroups hold."""
        if not self.has("pidns"):
            return 0
        return 2 if self.has("userns") else 1


def available(caps: Capabilities) -> dict[str, bool]:
    """Which selectable backends this machine offers.

    Args:
        caps: the probed capabilities.

    Returns:
        Backend name → available.
    """
    return {
        "session": True,
        "subreaper": caps.subreaper,
        "pdeathsig": caps.pdeathsig,
        "cgroup2": caps.cgroup2 is not None,
        "cgroup1:freezer": "freezer" in caps.cgroup1,
        "cgroup1:memory": "memory" in caps.cgroup1,
        "cgroup1:pids": "pids" in caps.cgroup1,
        "pidns": caps.pid_namespaces,
        "mountns": caps.mount_namespaces,
        "netns": caps.net_namespaces,
        "rlimit": True,
    }


def make_plan(
    selected: tuple[str, ...],
    caps: Capabilities,
    *,
    memory_mb: int | None,
    max_pids: int | None,
    no_network: bool,
    cpu_seconds: int | None,
    forced: bool,
    staged: bool = False,
) -> Plan:
    """Decide the backends of one execution.

    Args:
        selected: the backends the containment may use.
        caps: the probed capabilities.
        memory_mb: the memory limit, if any.
        max_pids: the process limit, if any.
        no_network: whether the execution must have no network.
        cpu_seconds: the CPU time limit, if any.
        forced: the selection was forced (v1 memory/pids groups are then always made).
        staged: the command runs from measured copies, which a mount namespace can
            show at their own paths (``mountns``, when selected).

    Returns:
        The plan.

    Raises:
        EnforcementError: a limit cannot be enforced with the selected backends.
    """
    sel = set(selected)
    names: list[str] = [n for n in ("session", "subreaper", "pdeathsig", "cgroup2", "pidns") if n in sel]
    v1: list[str] = []
    if "cgroup1:freezer" in sel:
        v1.append("freezer")
    for kind, field, needed in (("memory", "memory_mb", memory_mb), ("pids", "max_pids", max_pids)):
        if "cgroup2" in sel and kind in caps.cgroup2_controllers and needed:
            names.append(f"cgroup2:{kind}")
        elif f"cgroup1:{kind}" in sel and (needed or forced):
            v1.append(kind)
        elif needed:
            raise EnforcementError(
                f"Limits.{field}={needed} needs a {kind} cgroup, and none of the selected "
                f"backends ({', '.join(selected)}) provides one here"
            )
    names.extend(f"cgroup1:{c}" for c in v1)
    if no_network:
        if "netns" not in sel:
            raise EnforcementError("Limits.no_network needs a network namespace, which is not selected")
        names.append("netns")
    if cpu_seconds is not None:
        if "rlimit" not in sel:
            raise EnforcementError("Limits.cpu_seconds needs the rlimit backend")
        names.append("rlimit")
    if staged and "mountns" in sel:
        names.append("mountns")
    if {"pidns", "netns", "mountns"} & set(names) and not caps.privileged_namespaces:
        names.append("userns")
    return Plan(names=tuple(n for n in ORDER if n in names), v1=tuple(v1))


def make_groups(caps: Capabilities, plan: Plan, name: str, limits: Limits) -> list[Group]:
    """Create the execution's cgroups named ``name``, with ``limits`` written (all or none)."""
    groups: list[Group] = []
    try:
        if plan.has("cgroup2") and caps.cgroup2 is not None:
            own = _linux.own_cgroups().get("", "/")
            g = Group.create(caps.cgroup2, name, version=2, own_rel=own)
            groups.append(g)
            wanted = [c for c in ("memory", "pids") if plan.has(f"cgroup2:{c}")]
            if wanted:
                parent = Group(os.path.dirname(g.path), version=2, controller="")
                parent.write("cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
            if plan.has("cgroup2:memory") and limits.memory_mb:
                g.write("memory.max", str(limits.memory_mb << 20))
                if os.path.exists(g.file("memory.swap.max")):
                    g.write("memory.swap.max", "0")
            if plan.has("cgroup2:pids") and limits.max_pids:
                g.write("pids.max", str(limits.max_pids + plan.relays))
        for controller in plan.v1:
            g = Group.create(caps.cgroup1[controller], name, version=1, controller=controller)
            groups.append(g)
            if controller == "memory" and limits.memory_mb:
                g.write("memory.limit_in_bytes", str(limits.memory_mb << 20))
                if os.path.exists(g.file("memory.memsw.limit_in_bytes")):
                    g.write("memory.memsw.limit_in_bytes", str(limits.memory_mb << 20))
            if controller == "pids" and limits.max_pids:
                g.write("pids.max", str(limits.max_pids + plan.relays))
    except BaseException:
        for g in groups:
            g.remove()
        raise
    return groups
