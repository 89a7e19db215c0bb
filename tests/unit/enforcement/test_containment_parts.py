"""The pieces of containment that need no process tree: parsing, probing, planning."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from proctor.enforcement import _cgroups, _linux
from proctor.enforcement.containment import (
    BACKENDS,
    Capabilities,
    Containment,
    Limits,
    TerminationReport,
    probe,
)
from proctor.errors import EnforcementError

MOUNTINFO = """\
24 1 0:22 / /sys rw,nosuid - sysfs sysfs rw
31 24 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
37 31 0:34 /outer /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
50 1 0:40 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
"""

CGROUP = """\
9:name=systemd:/
6:freezer:/outer/inner
4:memory:/job/42
2:cpu,cpuacct:/
0::/user.slice/session-1.scope
"""


FakeTree = tuple[list[_linux.Mount], dict[str, str], Path]


@pytest.fixture
def fake_tree(tmp_path: Path) -> FakeTree:
    text = MOUNTINFO.replace("/sys/fs/cgroup", str(tmp_path / "cg"))
    (tmp_path / "mountinfo").write_text(text)
    (tmp_path / "cgroup").write_text(CGROUP)
    for sub in ("memory/job/42", "freezer/inner", "unified/user.slice/session-1.scope", "cpu,cpuacct"):
        (tmp_path / "cg" / sub).mkdir(parents=True)
    mounts = _linux.read_mountinfo(str(tmp_path / "mountinfo"))
    own = _linux.own_cgroups(str(tmp_path / "cgroup"))
    return mounts, own, tmp_path / "cg"


def test_mountinfo_is_parsed_with_escapes_and_super_options(fake_tree: FakeTree) -> None:
    mounts, _, _ = fake_tree
    by_point = {m.mount_point.rsplit("/", 1)[-1]: m for m in mounts}
    assert by_point["with space"].fstype == "ext4"
    assert by_point["cpu,cpuacct"].super_options >= {"cpu", "cpuacct"}
    assert by_point["unified"].fstype == "cgroup2"
    assert by_point["freezer"].root == "/outer"


def test_own_cgroups_by_controller(fake_tree: FakeTree) -> None:
    _, own, _ = fake_tree
    assert own[""] == "/user.slice/session-1.scope"
    assert own["memory"] == "/job/42"
    assert own["cpu"] == own["cpuacct"] == "/"
    assert own["name=systemd"] == "/"


def test_cgroup_dir_follows_the_mount_and_our_place_in_it(fake_tree: FakeTree) -> None:
    mounts, own, cg = fake_tree
    assert _cgroups.cgroup_dir(mounts, own, "") == str(cg / "unified/user.slice/session-1.scope")
    assert _cgroups.cgroup_dir(mounts, own, "memory") == str(cg / "memory/job/42")
    # The freezer hierarchy is mounted from /outer, so /outer/inner is <mount>/inner.
    assert _cgroups.cgroup_dir(mounts, own, "freezer") == str(cg / "freezer/inner")
    assert _cgroups.cgroup_dir(mounts, own, "cpuacct") == str(cg / "cpu,cpuacct")
    assert _cgroups.cgroup_dir(mounts, own, "pids") is None  # not in /proc/self/cgroup
    assert _cgroups.cgroup_dir(mounts, {"pids": "/"}, "pids") is None  # not mounted


def test_writable_base_needs_our_cgroup_procs_to_be_writable(tmp_path: Path) -> None:
    assert _cgroups.writable_base(None) is None
    assert _cgroups.writable_base(str(tmp_path)) is None  # no cgroup.procs
    (tmp_path / "cgroup.procs").write_text("")
    assert _cgroups.writable_base(str(tmp_path)) == str(tmp_path)


def test_read_stat_of_this_process() -> None:
    st = _linux.read_stat(os.getpid())
    assert st is not None
    assert st.pid == os.getpid()
    assert st.ppid == os.getppid()
    assert st.pgrp == os.getpgrp()
    assert st.session == os.getsid(0)
    assert not st.zombie
    assert _linux.read_stat(2**22 + 1) is None


def test_probe_is_cheap_and_serialisable() -> None:
    probe()  # the namespace test forks once per process
    t0 = time.perf_counter()
    caps = probe()
    assert time.perf_counter() - t0 < 0.005
    data = caps.to_json()
    assert set(data) == {
        "cgroup2",
        "cgroup2_controllers",
        "cgroup1",
        "user_namespaces",
        "pid_namespaces",
        "net_namespaces",
        "mount_namespaces",
        "privileged_namespaces",
        "subreaper",
        "pdeathsig",
    }
    assert caps.subreaper
    assert caps.pdeathsig


@pytest.mark.parametrize(
    "limits",
    [
        {"memory_mb": 0},
        {"memory_mb": -1},
        {"memory_mb": True},
        {"max_pids": 1.5},
        {"cpu_seconds": "1"},
        {"no_network": 1},
    ],
    ids=str,
)
def test_limits_validate_themselves(limits: dict[str, object]) -> None:
    with pytest.raises(EnforcementError, match="Limits"):
        Limits(**limits)  # type: ignore[arg-type]


NOTHING = Capabilities()
EVERYTHING = Capabilities(
    cgroup2="/cg2",
    cgroup2_controllers=(),
    cgroup1={"freezer": "/f", "memory": "/m", "pids": "/p"},
    user_namespaces=True,
    pid_namespaces=True,
    net_namespaces=True,
    mount_namespaces=True,
    privileged_namespaces=True,
    subreaper=True,
    pdeathsig=True,
)
UNPRIVILEGED = Capabilities(
    user_namespaces=True,
    pid_namespaces=True,
    net_namespaces=True,
    mount_namespaces=True,
    subreaper=True,
    pdeathsig=True,
)


def test_strongest_selection_and_plans() -> None:
    c = Containment(EVERYTHING)
    assert "cgroup1:freezer" not in c.backends  # cgroup v2 kills better
    assert c.planned_backends() == ("session", "subreaper", "pdeathsig", "cgroup2", "pidns", "mountns")
    assert c.planned_backends(Limits(memory_mb=10, max_pids=5, no_network=True, cpu_seconds=3)) == (
        "session",
        "subreaper",
        "pdeathsig",
        "cgroup2",
        "cgroup1:memory",
        "cgroup1:pids",
        "pidns",
        "mountns",
        "netns",
        "rlimit",
    )
    v2_limits = Capabilities(cgroup2="/cg2", cgroup2_controllers=("memory", "pids"), subreaper=True)
    assert (
        Containment(v2_limits).planned_backends(Limits(memory_mb=10, max_pids=5))
        == (
            "session",
            "subreaper",
            "cgroup2",
            "cgroup2:memory",
            "cgroup2:pids",
            "rlimit",
        )[:5]
    )


def test_unprivileged_namespaces_go_through_a_user_namespace() -> None:
    plan = Containment(UNPRIVILEGED).planned_backends(Limits(no_network=True))
    assert plan == ("session", "subreaper", "pdeathsig", "pidns", "mountns", "userns", "netns")
    # A mount namespace alone (no pid namespace) needs the user namespace too.
    only_mounts = Containment(UNPRIVILEGED, backends=["session", "mountns"])
    assert only_mounts.planned_backends() == ("session", "mountns", "userns")


def test_fail_closed_when_a_limit_cannot_be_enforced() -> None:
    c = Containment(NOTHING)
    assert c.planned_backends() == ("session",)
    for limits in (Limits(memory_mb=1), Limits(max_pids=1), Limits(no_network=True)):
        with pytest.raises(EnforcementError, match="needs"):
            c.planned_backends(limits)


def test_forcing_an_unavailable_or_unknown_backend_is_an_error() -> None:
    with pytest.raises(EnforcementError, match="not available"):
        Containment(NOTHING, backends=["cgroup2"])
    with pytest.raises(EnforcementError, match="unknown"):
        Containment(EVERYTHING, backends=["jail"])
    assert Containment(EVERYTHING, backends=list(BACKENDS)).backends == BACKENDS


def test_termination_report_json() -> None:
    assert TerminationReport("SIGKILL", 3, 0.0042).to_json() == {
        "signal": "SIGKILL",
        "processes_killed": 3,
        "ms": 4,
    }
