"""The command's own pidfd (``Contained.hold_command``), which ``terminate_tree`` signals
first: it must name the command, never one of proctor's relays nor a process that
reused the command's pid, and the termination must still reach the whole tree.

Real contained trees, for each backend this machine offers (as ``test_containment``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from proc_support import DeathWatch, marked
from proctor.enforcement import _linux
from proctor.enforcement.containment import Capabilities, Contained, Containment, probe
from proctor.errors import EnforcementError

CAPS: Capabilities = probe()
BASE = ["session", "subreaper", "pdeathsig"]
CONFIGS: dict[str, list[str] | None] = {
    "cgroup2": [*BASE, "cgroup2"],
    "pgroup+subreaper": BASE,
    "pidns": [*BASE, "pidns"],
    "strongest": None,
}
SLEEPER = "import sys, time; time.sleep(600)"


def containment(config: str) -> Containment:
    try:
        return Containment(CAPS, backends=CONFIGS[config])
    except EnforcementError as e:
        pytest.skip(f"{config} is not available here: {e}")


def command_pid(marker: str) -> int:
    """The one process running the command (relays are forks of this process: their argv is not the marker)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = marked(marker)
        if len(found) == 1:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"expected one process carrying {marker}, found {marked(marker)}")


@pytest.mark.parametrize("config", list(CONFIGS))
def test_the_held_process_is_the_command(config: str, marker: str, closing: list[Contained]) -> None:
    tree = containment(config).spawn([sys.executable, "-c", SLEEPER, marker])
    closing.append(tree)
    pid = command_pid(marker)
    assert tree.hold_command(threading.Event())
    st = _linux.read_stat(pid)
    assert st is not None
    # Signal 0 sends nothing: it says which process the held pidfd names.
    listed, early = tree._tree.signal_command(0)
    if tree.tree_spec.pidns is not None and not tree.tree_spec.groups:
        assert (listed, early) == (set(), None)  # counted by the scan first, as before
        return
    assert early == (pid, st.starttime)
    # What a cgroup listed just before: the command, never a relay.
    assert listed == ({(pid, st.starttime)} if tree.tree_spec.groups else set())
    if tree.tree_spec.pidns_mode:
        assert pid != tree.pid  # the direct child is a relay there, and is not what is held


@pytest.mark.parametrize("config", list(CONFIGS))
def test_terminate_signals_the_held_command_and_kills_the_whole_tree(
    config: str, marker: str, closing: list[Contained]
) -> None:
    # The command forks a child that lives on: both must be dead when terminate returns.
    script = f"import os, time; os.fork(); time.sleep(600)  # {marker}"
    tree = containment(config).spawn([sys.executable, "-c", script, marker])
    closing.append(tree)
    deadline = time.monotonic() + 10
    while len(marked(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    procs = marked(marker)
    assert len(procs) == 2
    assert tree.hold_command(threading.Event())
    watch = DeathWatch(procs)
    report = tree.terminate_tree(grace=2.0)
    watch.wait()
    assert marked(marker) == []
    assert report.signal == "SIGTERM"  # both ended on SIGTERM, within the grace
    assert report.processes_killed == 2  # the command counted once, though signalled first


def test_a_command_that_ignores_sigterm_is_still_killed(marker: str, closing: list[Contained]) -> None:
    script = (
        f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)  # {marker}"
    )
    tree = containment("strongest").spawn([sys.executable, "-c", script, marker])
    closing.append(tree)
    command_pid(marker)
    time.sleep(0.2)  # the handler is installed
    assert tree.hold_command(threading.Event())
    report = tree.terminate_tree(grace=0.2)
    assert report.signal == "SIGKILL"
    assert marked(marker) == []


def test_nothing_is_signalled_once_the_command_has_exited(marker: str, closing: list[Contained]) -> None:
    # After the command exited and was reaped its pid may name another process: the held
    # pidfd still names the dead one, so nothing is sent (and hold_command opens nothing new).
    tree = containment("strongest").spawn([sys.executable, "-c", "import time; time.sleep(0.3)", marker])
    closing.append(tree)
    command_pid(marker)
    assert tree.hold_command(threading.Event())
    assert tree.wait(timeout=10) == 0
    assert tree._tree.signal_command(signal.SIGTERM)[1] is None


def test_hold_gives_up_when_told_to_stop(marker: str, closing: list[Contained]) -> None:
    tree = containment("strongest").spawn([sys.executable, "-c", "pass", marker])
    closing.append(tree)
    tree.wait(timeout=10)
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    assert not tree.hold_command(stop)
    assert time.monotonic() - started < 0.5
    assert tree._tree.signal_command(signal.SIGTERM)[1] is None


def test_close_releases_the_held_pidfd(marker: str, closing: list[Contained]) -> None:
    tree = containment("strongest").spawn([sys.executable, "-c", SLEEPER, marker])
    command_pid(marker)
    assert tree.hold_command(threading.Event())
    fds_before = set(os.listdir("/proc/self/fd"))
    tree.close()
    fds_after = set(os.listdir("/proc/self/fd"))
    assert tree._tree.signal_command(0) == (set(), None)
    assert not tree._tree.hold_command()  # released for good: nothing is held again
    assert len(fds_before - fds_after) >= 2  # the child's pidfd and the held one
    assert marked(marker) == []


def test_wait_command_returns_when_the_command_ends_and_at_once_without_one(
    marker: str, closing: list[Contained]
) -> None:
    tree = containment("strongest").spawn([sys.executable, "-c", "import time; time.sleep(0.3)", marker])
    closing.append(tree)
    started = time.monotonic()
    tree._tree.wait_command(5.0)  # nothing held yet: returns at once
    assert time.monotonic() - started < 0.5
    command_pid(marker)
    assert tree.hold_command(threading.Event())
    tree._tree.wait_command(10.0)
    assert time.monotonic() - started < 5.0  # the command's end, not the timeout
    assert tree.wait(timeout=10) == 0
