"""Containment with real process trees, for each backend this machine offers.

Every process a test starts carries a unique marker in its argv; the tests look for it
in ``/proc/*/cmdline`` (zombies excluded: a zombie is dead), and the ``marker`` fixture
SIGKILLs whatever still carries it when the test ends, passed or failed.

Tests that need something this machine (or this user) lacks skip with the reason. When
run as root, one test re-runs this module as an unprivileged user (``setpriv``).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proc_support import marked
from proctor.enforcement import _linux
from proctor.enforcement import containment as containment_module
from proctor.enforcement.containment import Capabilities, Contained, Containment, Limits, probe
from proctor.enforcement.measure import measure, prepare
from proctor.errors import EnforcementError
from unpriv_support import assert_passes_unprivileged

PROCS = Path(__file__).parent / "procs"
TREE = PROCS / "victim_tree.py"
SUPERVISOR = PROCS / "victim_supervisor.py"
CAPS: Capabilities = probe()
ROOT = os.geteuid() == 0

BASE = ["session", "subreaper", "pdeathsig"]
CONFIGS: dict[str, list[str] | None] = {
    "cgroup2": [*BASE, "cgroup2"],
    "cgroup1-freezer": [*BASE, "cgroup1:freezer"],
    "pgroup+subreaper": BASE,
    "pidns": [*BASE, "pidns"],
    "strongest": None,
}


def containment(config: str) -> Containment:
    """The containment for a named configuration, or skip if this machine lacks it."""
    try:
        return Containment(CAPS, backends=CONFIGS[config])
    except EnforcementError as e:
        pytest.skip(f"{config} is not available here ({'root' if ROOT else 'unprivileged'}): {e}")


def describe(pids: list[int], tree: Contained) -> str:
    """What a test needs to know about processes that survived: their /proc records."""
    spec = tree.tree_spec
    who = f"supervisor {os.getpid()}, child {tree.pid} (start {spec.child_start}), seen {len(spec.seen)}"
    return f"{who}: " + "; ".join(f"{_linux.read_stat(p)} seen={p in spec.seen}" for p in pids)


def gone_within(pids: Callable[[], list[int]], seconds: float) -> list[int]:
    """Poll until ``pids()`` is empty; what is left when time is up."""
    deadline = time.monotonic() + seconds
    while (left := pids()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


def readline(stream: object, timeout: float = 15.0) -> bytes:
    fd = stream.fileno()  # type: ignore[attr-defined]
    ready, _, _ = select.select([fd], [], [], timeout)
    assert ready, "no line from the child in time"
    return stream.readline()  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(scope="module", autouse=True)
def _no_lasting_subreaper() -> Iterator[None]:
    """Containment makes the test process a child subreaper; undo it for the tests after us.

    (A subreaper adopts every orphan of every subprocess the process ever starts, and a
    later test checking that some daemon is gone would find it as our zombie.)
    """
    yield
    _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 0)
    containment_module._subreaper_set = False


def start_tree(c: Containment, marker: str, closing: list[Contained], *extra: str) -> Contained:
    tree = c.spawn([sys.executable, str(TREE), marker, *extra], stdout=subprocess.PIPE)
    closing.append(tree)
    assert readline(tree.stdout) == b"ready\n"
    return tree


# -- terminate_tree: nothing survives, for every backend --------------------------------


@pytest.mark.parametrize("stubborn", [False, True], ids=["sigterm", "ignores-sigterm"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_terminate_tree_leaves_no_process_alive(
    config: str, stubborn: bool, marker: str, closing: list[Contained]
) -> None:
    c = containment(config)
    tree = start_tree(c, marker, closing, *(["stubborn"] if stubborn else []))
    before = set(marked(marker))
    assert len(before) >= 60
    assert len(before - set(tree.alive())) <= 2  # the runaway replaces itself every 10 ms
    report = tree.terminate_tree(grace=0.3)
    left = marked(marker)
    assert left == [], describe(left, tree)  # dead when terminate_tree returns, not eventually
    assert report.signal == ("SIGKILL" if stubborn else "SIGTERM")
    assert report.processes_killed >= len(before) - 5  # the runaway replaces itself meanwhile
    assert tree.alive() == []
    assert tree.wait(timeout=1) < 0
    assert tree.terminate_tree().signal == "none"


@pytest.mark.parametrize("config", list(CONFIGS))
def test_terminate_tree_without_grace_is_fast(config: str, marker: str, closing: list[Contained]) -> None:
    c = containment(config)
    tree = start_tree(c, marker, closing)
    report = tree.terminate_tree(grace=0)
    assert marked(marker) == []
    assert report.signal == "SIGKILL"
    assert report.seconds < 1.0


@pytest.mark.parametrize("config", ["cgroup2", "cgroup1-freezer", "pidns", "strongest"])
def test_alive_lists_exactly_the_tree(config: str, marker: str, closing: list[Contained]) -> None:
    c = containment(config)
    tree = start_tree(c, marker, closing)
    time.sleep(0.05)
    # The runaway replaces itself every 10 ms, so allow a couple of differences between
    # the two scans; on a loaded machine the scans can lag more, so take the best of a
    # few snapshot pairs (a tree the containment lost track of differs in every one).
    differences = []
    for _ in range(5):
        alive, seen = set(tree.alive()), set(marked(marker))
        extra = 2 + ("userns" in tree.backends)  # + the relay, unprivileged
        if len(seen - alive) <= 2 and len(alive - seen) <= extra:
            break
        differences.append((sorted(seen - alive), sorted(alive - seen)))
    else:
        raise AssertionError(f"alive() and the process table differ in every snapshot: {differences}")


def test_close_kills_what_is_left_and_removes_the_cgroups(marker: str, closing: list[Contained]) -> None:
    c = containment("strongest")
    tree = start_tree(c, marker, closing)
    groups = [g.path for g in tree._tree.spec.groups]
    tree.close()
    assert marked(marker) == []
    assert all(not os.path.exists(g) for g in groups)
    tree.close()  # idempotent


# -- the supervisor dies: the tree must die with it -------------------------------------


def run_supervisor(marker: str, config: str) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    backends = CONFIGS[config]
    sup = subprocess.Popen(
        [sys.executable, str(SUPERVISOR), marker, "default" if backends is None else ",".join(backends)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    line = readline(sup.stdout)
    assert line, f"the supervisor failed: {sup.wait()}"
    return sup, json.loads(line)


@pytest.mark.parametrize("config", ["strongest", "pidns"])
def test_supervisor_sigkilled_takes_the_whole_tree(config: str, marker: str) -> None:
    containment(config)  # skip when unavailable
    sup, info = run_supervisor(marker, config)
    pids = info["pids"]
    assert isinstance(pids, list)
    assert len(pids) >= 60
    with sup:
        sup.kill()
    left = gone_within(lambda: marked(marker), 2.0)
    assert left == [], f"survived the supervisor ({info['backends']}): {left}"


def test_supervisor_sigkilled_without_pidns_the_next_supervisor_kills_the_rest(marker: str) -> None:
    # The documented gap: PDEATHSIG is not inherited, so without a pid namespace only the
    # direct child dies with the supervisor; the rest is killed by the next supervisor
    # that starts, from the cgroup the dead one left behind.
    containment("cgroup2")
    sup, info = run_supervisor(marker, "cgroup2")
    with sup:
        sup.kill()
    assert gone_within(lambda: [p for p in marked(marker) if p == info["child"]], 2.0) == []
    assert len(marked(marker)) >= 60
    assert Containment(CAPS).reap_stale() == 0  # the constructor already did it
    assert marked(marker) == []


# -- the supervisor stops (or dies, or loses its watchdog): the tree must not run on ------

GUARDED = """
import json, subprocess, sys, time
from proctor.enforcement.containment import Containment

marker, backends, ttl, tree, command = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
c = Containment(backends=None if backends == "default" else backends.split(","))
argv = [sys.executable, tree, marker] if command == "tree" else [sys.executable, "-c", command, marker]
t = c.spawn(argv, stdout=subprocess.PIPE, lease_ttl=ttl)
if t.stdout.readline().strip() != b"ready":
    sys.exit("the tree did not start")
print(json.dumps({"pids": t.alive(), "child": t.pid, "backends": list(t.backends)}), flush=True)
sys.stdin.readline()
status = t.wait()
# Without a pid namespace, whether the watchdog lapsed is known once it has exited
# (Contained.lapsed): on a loaded machine that can be a moment after the tree died.
for _ in range(100 if status == -9 else 0):
    if t.lapsed:
        break
    time.sleep(0.05)
print(json.dumps({"status": status, "lapsed": t.lapsed, "lost": t.lost_watchdog}), flush=True)
t.close()
"""
TTL = 1.0


def run_guarded(
    tmp_path: Path, marker: str, config: str, command: str = "tree"
) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    """A supervisor (a process of its own, to stop or kill) of a tree spawned with a lease."""
    script = tmp_path / "guarded.py"
    script.write_text(GUARDED)
    backends = CONFIGS[config]
    selection = "default" if backends is None else ",".join(backends)
    sup = subprocess.Popen(
        [sys.executable, str(script), marker, selection, str(TTL), str(TREE), command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    line = readline(sup.stdout)
    assert line, f"the supervisor failed: {sup.wait()}"
    return sup, json.loads(line)


def finish_guarded(sup: subprocess.Popen[bytes]) -> dict[str, object]:
    """Let a (resumed) supervisor wait for its tree and report how it ended."""
    out, _ = sup.communicate(b"\n", timeout=60)
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    return result


def tree_of(sup: subprocess.Popen[bytes], marker: str) -> Callable[[], list[int]]:
    """The marked processes other than the supervisor and its watchdog (forks of it)."""

    def pids() -> list[int]:
        return [p for p in marked(marker) if p != sup.pid and _comm(p) != "proctor-watch"]

    return pids


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


@pytest.mark.parametrize("config", list(CONFIGS))
def test_stopped_supervisor_the_watchdog_kills_the_tree_within_the_lease_ttl(
    config: str, tmp_path: Path, marker: str
) -> None:
    containment(config)  # skip when unavailable
    sup, info = run_guarded(tmp_path, marker, config)
    tree = tree_of(sup, marker)
    assert len(tree()) >= 60
    os.kill(sup.pid, signal.SIGSTOP)
    try:
        left = gone_within(tree, TTL + 10)  # TTL, then the kill; generous for a loaded machine
        assert left == [], f"the tree ran on under a stopped supervisor ({info['backends']}): {left}"
        time.sleep(0.3)
        assert tree() == []  # and stays dead: nothing was left to fork
    finally:
        os.kill(sup.pid, signal.SIGCONT)
    result = finish_guarded(sup)
    assert result["lapsed"] is True
    assert result["status"] == -signal.SIGKILL


@pytest.mark.parametrize("config", ["pidns", "pgroup+subreaper"])
def test_a_heartbeating_supervisor_keeps_its_tree_beyond_the_ttl(
    config: str, tmp_path: Path, marker: str
) -> None:
    containment(config)
    command = f"import time; print('ready', flush=True); time.sleep(3 * {TTL})"
    sup, _ = run_guarded(tmp_path, marker, config, command=command)
    result = finish_guarded(sup)
    assert result == {"status": 0, "lapsed": False, "lost": None}


@pytest.mark.parametrize("config", ["cgroup2", "cgroup1-freezer"])
def test_supervisor_sigkilled_without_pidns_the_watchdog_kills_the_rest(
    config: str, tmp_path: Path, marker: str
) -> None:
    """Exact where a cgroup holds the tree; without one, orphans that left the session are
    no longer attributable once the supervisor (their subreaper) is gone."""
    containment(config)
    sup, info = run_guarded(tmp_path, marker, config)
    tree = tree_of(sup, marker)
    with sup:
        sup.kill()
    left = gone_within(tree, 5.0)
    assert left == [], f"survived the supervisor ({info['backends']}): {left}"


@pytest.mark.parametrize("config", ["cgroup2", "pgroup+subreaper"])
def test_a_killed_watchdog_makes_the_supervisor_kill_the_tree(
    config: str, tmp_path: Path, marker: str
) -> None:
    """Each side watches the other: a tree that kills the watchdog does not run on."""
    containment(config)
    sup, info = run_guarded(tmp_path, marker, config)
    tree = tree_of(sup, marker)
    dogs = [p for p in marked(marker) if _comm(p) == "proctor-watch"]
    assert len(dogs) == 1, dogs
    os.kill(dogs[0], signal.SIGKILL)
    left = gone_within(tree, TTL + 10)
    assert left == [], f"the tree ran on without its watchdog ({info['backends']}): {left}"
    result = finish_guarded(sup)
    assert result["lost"] == "the watchdog is gone"
    assert result["lapsed"] is False


# -- limits ----------------------------------------------------------------------------

HOG = "import sys; data = b'x' * (int(sys.argv[1]) << 20); print('allocated', flush=True)"


@pytest.mark.skipif(
    not ("memory" in CAPS.cgroup1 or "memory" in CAPS.cgroup2_controllers), reason="no memory cgroup"
)
def test_memory_limit_kills_an_allocation_beyond_it(marker: str, closing: list[Contained]) -> None:
    c = Containment(CAPS)
    within = c.spawn(
        [sys.executable, "-c", HOG, "8", marker], limits=Limits(memory_mb=64), stdout=subprocess.PIPE
    )
    closing.append(within)
    assert within.wait(timeout=10) == 0
    beyond = c.spawn(
        [sys.executable, "-c", HOG, "256", marker], limits=Limits(memory_mb=64), stdout=subprocess.PIPE
    )
    closing.append(beyond)
    assert beyond.wait(timeout=10) == -signal.SIGKILL
    assert beyond.stdout is not None
    assert beyond.stdout.read() == b""
    assert beyond.resource_usage().get("oom_kills", 0) >= 1
    assert "cgroup1:memory" in beyond.backends or "cgroup2:memory" in beyond.backends


BOMB = """
import os, sys, time
n = 0
for _ in range(150):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(1000)
        os._exit(0)
    n += 1
print(n, flush=True)
time.sleep(1000)
"""


@pytest.mark.skipif(
    not ("pids" in CAPS.cgroup1 or "pids" in CAPS.cgroup2_controllers), reason="no pids cgroup"
)
def test_pids_limit_stops_a_fork_bomb(marker: str, closing: list[Contained]) -> None:
    c = Containment(CAPS)
    tree = c.spawn([sys.executable, "-c", BOMB, marker], limits=Limits(max_pids=20), stdout=subprocess.PIPE)
    closing.append(tree)
    forked = int(readline(tree.stdout))
    assert forked == 19  # 20 processes with the bomb itself
    assert len(marked(marker)) == 20
    assert tree.resource_usage().get("pids_limit_hits", 0) >= 1
    tree.terminate_tree(grace=0)
    assert marked(marker) == []


CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
    print("connected")
except OSError as e:
    print("failed", e.errno)
"""


@pytest.mark.skipif(not CAPS.net_namespaces, reason="no network namespaces")
def test_no_network_cannot_reach_a_loopback_listener(marker: str, closing: list[Contained]) -> None:
    c = Containment(CAPS)
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = str(server.getsockname()[1])
        free = c.spawn([sys.executable, "-c", CONNECT, port, marker], stdout=subprocess.PIPE)
        closing.append(free)
        assert free.wait(timeout=10) == 0
        assert free.stdout is not None
        assert free.stdout.read() == b"connected\n"  # the control: the listener is reachable
        server.accept()[0].close()
        jailed = c.spawn(
            [sys.executable, "-c", CONNECT, port, marker],
            limits=Limits(no_network=True),
            stdout=subprocess.PIPE,
        )
        closing.append(jailed)
        assert jailed.wait(timeout=10) == 0
        assert jailed.stdout is not None
        assert jailed.stdout.read().startswith(b"failed")
        with pytest.raises(BlockingIOError):
            server.accept()
        assert "netns" in jailed.backends


@pytest.mark.slow
def test_cpu_seconds_limit(marker: str, closing: list[Contained]) -> None:
    c = Containment(CAPS)
    tree = c.spawn([sys.executable, "-c", "while True: pass", marker], limits=Limits(cpu_seconds=1))
    closing.append(tree)
    assert tree.wait(timeout=10) == -signal.SIGXCPU
    assert tree.resource_usage()["user_ms"] >= 500


def test_limits_that_cannot_be_enforced_are_refused() -> None:
    bare = Containment(CAPS, backends=["session"])
    for limits in (Limits(memory_mb=64), Limits(max_pids=10), Limits(no_network=True), Limits(cpu_seconds=1)):
        with pytest.raises(EnforcementError, match="needs"):
            bare.spawn(["true"], limits=limits)
    with pytest.raises(EnforcementError, match="unknown containment backend"):
        Containment(CAPS, backends=["chroot"])


# -- starting, waiting, usage ------------------------------------------------------------


def test_a_command_that_cannot_start_is_an_error_and_leaves_nothing(marker: str) -> None:
    c = Containment(CAPS)
    parent = os.path.join(CAPS.cgroup2 or "/nonexistent", "proctor")
    before = set(os.listdir(parent)) if os.path.isdir(parent) else set()
    with pytest.raises(EnforcementError, match="cannot start"):
        c.spawn(["/nonexistent/program", marker])
    after = set(os.listdir(parent)) if os.path.isdir(parent) else set()
    assert after <= before


SHOW = """
import json, os, sys
fds = {}
for f in os.listdir("/proc/self/fd"):
    try:
        fds[f] = os.readlink(f"/proc/self/fd/{f}")
    except OSError:
        pass  # the directory listing's own descriptor, closed by now
print(json.dumps([sys.argv[0], fds, sys.prefix, os.readlink("/proc/self/exe")]))
"""


@pytest.mark.parametrize("config", ["mountns", "memfd"])
def test_runs_what_prepare_staged_without_leaking_the_copies(
    config: str, tmp_path: Path, marker: str, closing: list[Contained]
) -> None:
    """With a mount namespace the copies are shown at their real paths; without one the
    command runs from the memfds. Either way no copy leaks into the command."""
    if config == "mountns" and not CAPS.mount_namespaces:
        pytest.skip("no mount namespaces here")
    if config == "mountns" and not ROOT:
        pytest.skip("the script is this user's: read from its memfd, not shown at its path (_trust.pinned)")
    c = Containment(CAPS, backends=None if config == "mountns" else BASE)
    script = tmp_path / "show.py"
    script.write_text(SHOW)
    m = measure([sys.executable, str(script), marker])
    with prepare(m) as p:
        tree = c.spawn(p.argv, exec_path=p.exec_path, pass_fds=p.pass_fds, stdout=subprocess.PIPE)
        closing.append(tree)
        _, script_fd = p.pass_fds
    assert tree.wait(timeout=10) == 0
    assert tree.stdout is not None
    argv0, fds, prefix, exe = json.loads(tree.stdout.read())
    assert prefix == sys.prefix  # the interpreter still finds its environment through argv[0]
    copies = {f: link for f, link in fds.items() if link.startswith("/memfd:")}
    if config == "mountns":
        assert "mountns" in tree.backends
        assert (argv0, exe) == (str(script), m.executable)
        assert copies == {}  # read through their paths: no descriptor is passed
    else:
        assert "mountns" not in tree.backends
        assert argv0 == f"/proc/self/fd/{script_fd}"
        assert exe.startswith("/memfd:proctor-executable:")
        assert list(copies) == [str(script_fd)]  # the script's, read through it; not the executable's
        assert copies[str(script_fd)].startswith("/memfd:proctor-script:show.py")


def test_wait_poll_and_a_concurrent_terminate(marker: str, closing: list[Contained]) -> None:
    c = Containment(CAPS)
    tree = c.spawn([sys.executable, "-c", "import time; time.sleep(1000)", marker])
    closing.append(tree)
    assert tree.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        tree.wait(timeout=0.05)
    killer = threading.Timer(0.1, tree.terminate_tree, kwargs={"grace": 0.2})
    killer.start()
    assert tree.wait(timeout=5) in (-signal.SIGTERM, -signal.SIGKILL)
    killer.join()
    usage = tree.resource_usage()
    assert {"max_rss_kb", "user_ms", "system_ms"} <= set(usage)
    assert usage["max_rss_kb"] > 0


def test_a_child_outlives_the_thread_that_spawned_it(marker: str, closing: list[Contained]) -> None:
    # PDEATHSIG follows the parent *thread*: children are forked by a long-lived thread.
    c = Containment(CAPS)
    trees: list[Contained] = []
    argv = [sys.executable, "-c", "import time; time.sleep(1000)", marker]
    spawner = threading.Thread(target=lambda: trees.append(c.spawn(argv)))
    spawner.start()
    spawner.join()
    closing.extend(trees)
    time.sleep(0.2)
    assert trees[0].poll() is None


def test_exit_status_passes_through(marker: str, closing: list[Contained]) -> None:
    c = Containment(CAPS)
    tree = c.spawn([sys.executable, "-c", "import sys; sys.exit(7)", marker])
    closing.append(tree)
    assert tree.wait(timeout=10) == 7
    killed = c.spawn(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)", marker]
    )
    closing.append(killed)
    assert killed.wait(timeout=10) == -signal.SIGUSR1


# -- the same, unprivileged ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not ROOT, reason="already unprivileged (this is the re-run)")
def test_unprivileged_rerun_passes() -> None:
    assert_passes_unprivileged(__file__, timeout=120)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_the_command_gets_its_streams_and_passed_descriptors_only(
    config: str, tmp_path: Path, marker: str, closing: list[Contained]
) -> None:
    """Also when the init of a pid namespace starts it (posix_spawn, not fork): an
    inheritable descriptor of the supervisor does not reach the command, a passed one
    does, and the signal mask is empty."""
    script = tmp_path / "show.py"
    script.write_text(
        SHOW.replace("print(json.dumps([", "print(json.dumps([open('/proc/self/status').read(), ")
    )
    stray_r, stray_w = os.pipe()
    passed_r, passed_w = os.pipe()
    os.set_inheritable(stray_r, True)
    try:
        tree = containment(config).spawn(
            [sys.executable, str(script), marker], pass_fds=(passed_r,), stdout=subprocess.PIPE
        )
        closing.append(tree)
        assert tree.wait(timeout=10) == 0
        assert tree.stdout is not None
        status, _, fds, _, _ = json.loads(tree.stdout.read())
    finally:
        for fd in (stray_r, stray_w, passed_r, passed_w):
            os.close(fd)
    assert set(fds) == {"0", "1", "2", str(passed_r)}
    assert "SigBlk:\t0000000000000000" in status
