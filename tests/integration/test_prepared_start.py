"""A prepared start (``Containment.prepare``): the child is set up while the caller waits
on something else, and runs nothing of the command before the go.

Each configuration of ``test_containment`` (and, re-run unprivileged, the user namespace's
outer relay): the command's marker file appears only after ``go``; a cancel, a ``with``
block left without a go, a late go, and a supervisor killed while the start is pending
all leave no command run and no child or cgroup behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from proc_support import held, marked
from proctor.enforcement import _pending as pending_module
from proctor.enforcement import containment as containment_module
from proctor.enforcement._pending import PendingStart
from proctor.enforcement.containment import Capabilities, Contained, Containment, probe
from proctor.enforcement.measure import measure, prepare
from proctor.errors import EnforcementError
from unpriv_support import assert_passes_unprivileged

CAPS: Capabilities = probe()
ROOT = os.geteuid() == 0
BASE = ["session", "subreaper", "pdeathsig"]
CONFIGS: dict[str, list[str] | None] = {
    "cgroup2": [*BASE, "cgroup2"],
    "pgroup-subreaper": BASE,
    "pidns": [*BASE, "pidns"],
    "strongest": None,
}
SETTLE = 0.3
"""How long a test waits for what must not happen (a command started without a go)."""


def containment(config: str) -> Containment:
    try:
        return Containment(CAPS, backends=CONFIGS[config])
    except EnforcementError as e:
        pytest.skip(f"{config} is not available here ({'root' if ROOT else 'unprivileged'}): {e}")


def children() -> set[int]:
    """This process's live children (every thread's), zombies excluded."""
    found: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            text = Path(f"/proc/self/task/{tid}/children").read_text()
        except OSError:
            continue
        for pid in map(int, text.split()):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                found.add(pid)
    return found


def wait_until(check: object, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return bool(check())  # type: ignore[operator]


def own_groups() -> set[str]:
    """The cgroup2 directories of this process's executions (named by ``execution_id``)."""
    if CAPS.cgroup2 is None:
        return set()
    return {str(p) for p in Path(CAPS.cgroup2).rglob("gate-*")}


@pytest.fixture
def touch(tmp_path: Path) -> tuple[list[str], Path]:
    """A command that creates a marker file, and the file."""
    mark = tmp_path / "ran"
    return ["/bin/sh", "-c", f"touch {mark}"], mark


@pytest.mark.parametrize("config", list(CONFIGS))
def test_nothing_of_the_command_runs_before_the_go(config: str, touch: tuple[list[str], Path]) -> None:
    argv, mark = touch
    before = children()
    pending = containment(config).prepare(argv, execution_id=f"gate-{config}")
    time.sleep(SETTLE)  # the child is set up by now, waiting
    assert not mark.exists(), "the command ran before the go"
    assert children() - before, "no child was prepared ahead of the go"
    tree: Contained = pending.go()
    try:
        assert tree.wait() == 0
        assert mark.exists(), "the command did not run after the go"
    finally:
        tree.close()
    with pytest.raises(EnforcementError, match="already let go"):
        pending.go()
    assert wait_until(lambda: not (children() - before))
    assert not own_groups()


@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_cancelled_start_runs_nothing_and_leaves_nothing(
    config: str, touch: tuple[list[str], Path]
) -> None:
    argv, mark = touch
    before = children()
    pending = containment(config).prepare(argv, execution_id=f"gate-{config}")
    time.sleep(SETTLE)
    pending.cancel()
    pending.cancel()  # idempotent
    time.sleep(SETTLE)
    assert not mark.exists(), "a cancelled start ran its command"
    assert wait_until(lambda: not (children() - before)), "the cancelled child is still there"
    assert not own_groups(), "a cancelled start left its cgroup"
    with pytest.raises(EnforcementError, match="already let go or cancelled"):
        pending.go()


def test_leaving_the_with_block_without_a_go_cancels(touch: tuple[list[str], Path]) -> None:
    argv, mark = touch
    before = children()

    class RefusedError(Exception):
        pass

    with pytest.raises(RefusedError), containment("strongest").prepare(argv, execution_id="gate-with"):
        raise RefusedError  # as the governor refusing the start
    time.sleep(SETTLE)
    assert not mark.exists()
    assert wait_until(lambda: not (children() - before))
    assert not own_groups()


@pytest.mark.parametrize("config", ["pgroup-subreaper", "strongest"])
def test_a_go_after_the_deadline_is_refused(config: str, touch: tuple[list[str], Path]) -> None:
    argv, mark = touch
    before = children()
    pending = containment(config).prepare(argv, execution_id=f"gate-{config}", gate_timeout=0.1)
    assert pending.usable
    time.sleep(0.3)
    assert not pending.usable  # what proctor run asks before it relies on a head start
    with pytest.raises(EnforcementError, match="past its gate's deadline; nothing started"):
        pending.go()
    time.sleep(SETTLE)
    assert not mark.exists()
    assert wait_until(lambda: not (children() - before))
    assert not own_groups()


@pytest.mark.parametrize("config", ["pgroup-subreaper", "strongest"])
def test_a_child_never_let_go_gives_up_by_itself(
    config: str, touch: tuple[list[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its supervisor alive but silent (a stuck thread): the child exits at its timeout."""
    argv, mark = touch
    monkeypatch.setattr(containment_module, "GATE_SLACK_S", 0.0)
    before = children()
    pending = containment(config).prepare(argv, execution_id=f"gate-{config}", gate_timeout=0.2)
    try:
        assert wait_until(lambda: not (children() - before)), "the child kept waiting past its timeout"
        assert not mark.exists()
    finally:
        pending.cancel()
    assert not own_groups()


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_a_gate_timeout_must_be_a_positive_number(timeout: str) -> None:
    with pytest.raises(EnforcementError, match="gate_timeout must be a positive number"):
        containment("pgroup-subreaper").prepare(["true"], gate_timeout=float(timeout))


def test_a_prepared_start_that_cannot_execute_says_why(tmp_path: Path) -> None:
    pending = containment("strongest").prepare([str(tmp_path / "missing")], execution_id="gate-missing")
    with pytest.raises(EnforcementError, match=r"cannot start .*missing"):
        pending.go().wait()
    assert not own_groups()


def test_a_measured_command_prepared_ahead_runs_from_its_sealed_copy(tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho measured\n")
    script.chmod(0o755)
    sealed = prepare(measure([str(script)]))
    try:
        pending = containment("strongest").prepare(
            sealed.argv, exec_path=sealed.exec_path, pass_fds=sealed.pass_fds, stdout=subprocess.PIPE
        )
        script.write_text("#!/bin/sh\necho swapped\n")  # after the measure: the copy runs
        tree = pending.go()
    finally:
        sealed.close()
    try:
        assert tree.stdout is not None
        assert tree.stdout.read() == b"measured\n"
        assert tree.wait() == 0
    finally:
        tree.close()


KILLED = textwrap.dedent(
    """
    import sys, time
    from proctor.enforcement.containment import Containment
    pending = Containment().prepare(["/bin/sh", "-c", "touch " + sys.argv[1]], execution_id="gate-killed")
    print("prepared", flush=True)
    time.sleep(60)
    """
)


def test_a_supervisor_killed_while_its_start_is_pending_leaves_no_command(tmp_path: Path) -> None:
    mark = tmp_path / "ran"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(mark)], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"prepared\n"
        time.sleep(SETTLE)
        found = {int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()}
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            found |= {int(p) for p in Path(f"/proc/{proc.pid}/task/{tid}/children").read_text().split()}
        assert found, "the supervisor prepared no child"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

        def gone() -> bool:
            return not any(Path(f"/proc/{p}").exists() and _state(p) != "Z" for p in found)

        assert wait_until(gone), "the pending child outlived its supervisor"
        time.sleep(SETTLE)
        assert not mark.exists(), "a pending start ran its command after its supervisor died"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    Containment()  # reaps what the killed supervisor's groups held, and the groups
    assert not own_groups()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.slow
@pytest.mark.skipif(not ROOT, reason="already unprivileged (this is the re-run)")
def test_unprivileged_rerun_passes() -> None:
    assert_passes_unprivileged(__file__, timeout=120)


@pytest.mark.parametrize("config", ["pgroup-subreaper", "strongest"])
def test_descriptors_are_each_closed_once(config: str) -> None:
    """The gate's write end belongs to the pending start alone: closing it twice would close
    whatever took its number since (the tree's pidfd, a heartbeat socket)."""
    before = held()
    tree = containment(config).prepare(["sleep", "30"], lease_ttl=5.0).go()
    try:
        os.fstat(tree._pidfd)  # still this tree's
        if tree._status_fd >= 0:
            os.fstat(tree._status_fd)
        report = tree.terminate_tree(grace=0.1)
        assert report.processes_killed >= 1
    finally:
        tree.close()
    pending = containment(config).prepare(["sleep", "30"], lease_ttl=5.0)
    pending.cancel()
    assert wait_until(lambda: not held() - before), f"descriptors leaked: {held() - before}"


def test_a_lease_ttl_with_the_go_needs_a_start_prepared_with_a_lease(touch: tuple[list[str], Path]) -> None:
    argv, mark = touch
    before = children()
    pending = containment("strongest").prepare(argv)
    with pytest.raises(EnforcementError, match="prepared with no lease"):
        pending.go(lease_ttl=5.0)
    time.sleep(SETTLE)
    assert not mark.exists()
    assert wait_until(lambda: not (children() - before))


STOPPED = textwrap.dedent(
    """
    import json, os
    from proctor.enforcement.containment import Containment
    c = Containment(backends=json.loads(os.environ["GATE_BACKENDS"]))
    pending = c.prepare(["/bin/sh", "-c", "sleep 30; true", os.environ["GATE_MARK"]], lease_ttl=60.0)
    tree = pending.go(lease_ttl=0.5)
    print(tree.pid, flush=True)
    tree.wait()
    """
)


@pytest.mark.skipif(not ROOT, reason="cgroup2 and the pid namespace's init as watchdog need root here")
@pytest.mark.parametrize("config", ["strongest", "cgroup2"], ids=["init-watchdog", "watchdog-process"])
def test_the_watchdog_holds_the_ttl_that_came_with_the_go(config: str) -> None:
    """Prepared with a 60 s lease, let go with 0.5 s: a supervisor stopped (SIGSTOP) has
    its tree killed after about 0.5 s, not 60 — by the pid namespace's init, or without
    one by the watchdog process."""
    marker = f"gate-ttl-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "GATE_MARK": marker, "GATE_BACKENDS": json.dumps(CONFIGS[config])}
    proc = subprocess.Popen([sys.executable, "-c", STOPPED], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip()
        assert wait_until(lambda: bool(marked(marker)), 5.0), "the command did not start"
        os.kill(proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        assert wait_until(lambda: not marked(marker), 10.0), "the tree outlived the go's TTL"
        took = time.monotonic() - stopped
        assert took < 5.0, f"killed after {took:.1f} s: the prepared TTL (60 s) held, not the go's"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    Containment()  # reaps the stopped supervisor's groups


def test_a_let_go_start_gets_its_watchdog_while_another_start_is_pending() -> None:
    """Without a pid namespace the watchdog is a process of its own, forked at the go. The
    spawner thread is then held in another pending start's ``Popen``: the watchdog must not
    wait for it (the command let go would run unwatched, its ``go`` stuck)."""
    c = containment("cgroup2")
    a = c.prepare(["sleep", "30"], lease_ttl=5.0, gate_timeout=10.0)
    time.sleep(SETTLE)  # A forked, waiting on its gate
    b = c.prepare(["true"], gate_timeout=3.0)  # queued behind A in the spawner thread
    trees: list[Contained] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: trees.append(a.go()), daemon=True)
    thread.start()
    thread.join(timeout=2.0)
    try:
        assert not thread.is_alive(), "A's go waited for B's pending start"
        assert time.monotonic() - started < 2.0
    finally:
        thread.join(timeout=15)
        b.cancel()
        for tree in trees:
            tree.terminate_tree(grace=0)
            tree.close()


def test_cancel_cleans_up_when_the_child_could_not_even_be_forked() -> None:
    """``Popen`` can fail with a ValueError (a NUL in the environment) before any fork:
    cancelling then still removes the cgroup and closes every descriptor."""
    before = held()
    pending = containment("cgroup2").prepare(
        ["true"], env={"X": "a\0b"}, lease_ttl=5.0, execution_id="gate-nul"
    )
    time.sleep(0.2)
    assert not pending.usable  # failed already: proctor run prepares another
    pending.cancel()
    assert not own_groups(), "a cgroup was left behind"
    assert not held() - before, f"descriptors were left open: {held() - before}"


def test_an_ungated_start_cannot_be_prepared() -> None:
    """Without a gate the command would start as soon as it is set up, and a cancel could
    not keep it from running: only ``spawn`` starts that way, letting it go at once."""
    with pytest.raises(EnforcementError, match="gate_timeout must be a positive number"):
        containment("pgroup-subreaper").prepare(["true"], gate_timeout=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_an_interrupt_during_the_go_ends_what_started(config: str, tmp_path: Path) -> None:
    """A ^C while ``go`` waits for the child to start the command: the go was sent, so the
    command may be running; it is ended, its whole tree, and nothing is left behind."""
    mark = tmp_path / "ran"
    before, fds = children(), held()
    pending = containment(config).prepare(
        ["/bin/sh", "-c", f"sleep 0.4; touch {mark}"], lease_ttl=5.0, execution_id=f"gate-int-{config}"
    )
    time.sleep(SETTLE)  # set up, waiting for the go
    future = pending._future
    real = future.result
    interrupted: list[bool] = []

    def result(*args: object, **kwargs: object) -> object:
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt  # as the signal handler raises it in the waiting thread
        return real(*args, **kwargs)  # type: ignore[arg-type]

    future.result = result  # type: ignore[method-assign,assignment]
    with pytest.raises(KeyboardInterrupt):
        pending.go(lease_ttl=5.0)
    assert interrupted
    time.sleep(0.8)  # longer than the command's sleep
    assert not mark.exists(), "the command kept running after the interrupted go"
    assert wait_until(lambda: not (children() - before)), "a process of the start was left"
    assert wait_until(lambda: not own_groups()), "a cgroup was left behind"
    assert wait_until(lambda: not held() - fds), f"descriptors were left open: {held() - fds}"


def go_interrupted(pending: PendingStart) -> None:
    """The go, interrupted (KeyboardInterrupt, as the signal handler raises it in the
    waiting thread) while it waits for the spawner's fork; the fork then goes on."""
    future = pending._future
    real = future.result
    raised: list[bool] = []

    def result(*args: object, **kwargs: object) -> object:
        if not raised:
            raised.append(True)
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    future.result = result  # type: ignore[method-assign,assignment]
    with pytest.raises(KeyboardInterrupt):
        pending.go(lease_ttl=5.0)


@pytest.mark.parametrize("interrupted", [False, True], ids=["failed", "interrupted"])
@pytest.mark.parametrize("config", ["cgroup2", "pgroup-subreaper", "strongest"])
def test_a_start_that_cannot_be_tracked_ends_what_it_forked(
    config: str, interrupted: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The go was sent, the command runs and has forked, and tracking it fails (or fails
    after an interrupt during the go) leaving the child as it was: what the command forked
    is ended through the execution's cgroups (or, without them, its process group and the
    tree's scan), not only the child, and nothing is left behind. (The real
    ``track_started`` kills the tree itself before it reaps the child: the test below.)"""
    mark = tmp_path / "ran"
    before, fds = children(), held()
    pending = containment(config).prepare(
        ["/bin/sh", "-c", f"(sleep 0.5; touch {mark}) & sleep 30"],
        lease_ttl=5.0,
        execution_id=f"gate-untracked-{config}-{interrupted}",
    )
    time.sleep(SETTLE)  # set up, waiting for the go

    def untrackable(popen: subprocess.Popen[bytes], **_: object) -> Contained:
        time.sleep(0.2)  # the command is running and has forked by now
        raise EnforcementError("tracking failed")  # the child left running, not reaped

    monkeypatch.setattr(containment_module, "track_started", untrackable)
    if interrupted:
        go_interrupted(pending)
    else:
        with pytest.raises(EnforcementError, match="tracking failed"):
            pending.go(lease_ttl=5.0)
    time.sleep(0.8)  # longer than the forked subshell's sleep
    assert not mark.exists(), "what the command forked kept running"
    assert wait_until(lambda: not (children() - before)), "a process of the start was left"
    assert wait_until(lambda: not own_groups()), "a cgroup was left behind"
    assert wait_until(lambda: not held() - fds), f"descriptors were left open: {held() - fds}"


@pytest.mark.parametrize("interrupted", [False, True], ids=["failed", "interrupted"])
@pytest.mark.parametrize("config", ["cgroup2", "pgroup-subreaper", "strongest"])
def test_an_untrackable_start_ends_what_left_its_session_too(
    config: str,
    interrupted: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """The real ``track_started`` fails after the go (its own ``pidfd_open`` of the child
    runs out of descriptors; the kill's own calls do not) while the command runs, and what
    the command forked has left its session and process group (``setsid``): killing the
    child's group does not reach it; the tree's own kill does (its cgroups, or the
    fallback's scan of the child's descendants and of the orphans reparented to this
    subreaper), before the child is reaped; and a child of this process that started
    before is not the tree's and is left alone."""
    mark = tmp_path / "ran"
    contain = containment(config)  # (skips where it is not available: before anything is started)
    bystander = subprocess.Popen(["sleep", "30"])  # this process's own, started before: not the tree's
    request.addfinalizer(bystander.wait)  # run last: after the kill below
    request.addfinalizer(bystander.kill)
    time.sleep(0.02)  # a clock tick apart (start times count ticks)
    before, fds = children(), held()
    pending = contain.prepare(
        ["/bin/sh", "-c", f"setsid /bin/sh -c 'sleep 0.6; touch {mark}' & sleep 30"],
        lease_ttl=5.0,
        execution_id=f"gate-setsid-{config}-{interrupted}",
    )
    time.sleep(SETTLE)  # set up, waiting for the go
    real_open = os.pidfd_open
    child = next(iter(children() - before))

    def exhausted(pid: int, flags: int = 0) -> int:
        if pid != child:  # only the tracking's own call runs out (the kills then work)
            return real_open(pid, flags)
        time.sleep(0.2)  # the command is running, and its setsid'd child too, by now
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "pidfd_open", exhausted)
    try:
        if interrupted:
            go_interrupted(pending)
        else:
            with pytest.raises(EnforcementError, match="cannot track"):
                pending.go(lease_ttl=5.0)
    finally:
        monkeypatch.setattr(os, "pidfd_open", real_open)
    time.sleep(0.9)  # longer than the escaped process's sleep
    assert bystander.poll() is None, "a child of this process that is not the tree's was killed"
    assert not mark.exists(), "what the command forked out of its session kept running"
    assert wait_until(lambda: not (children() - before)), "a process of the start was left"
    assert wait_until(lambda: not own_groups()), "a cgroup was left behind"
    assert wait_until(lambda: not held() - fds), f"descriptors were left open: {held() - fds}"


@pytest.mark.parametrize("config", ["cgroup2", "pgroup-subreaper"])
def test_a_cancel_is_not_held_by_a_child_that_does_not_leave(
    config: str, touch: tuple[list[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child stopped by someone (SIGSTOP, as a process of the same user may) never reads
    the refusal: the cancel waits a bounded time, kills the child's cgroup if it has one
    (a stopped process dies of SIGKILL), and returns either way."""
    argv, mark = touch
    monkeypatch.setattr(pending_module, "END_WAIT_S", 0.3)
    before = children()
    pending = containment(config).prepare(argv, execution_id=f"gate-stuck-{config}")
    assert wait_until(lambda: children() - before)
    time.sleep(SETTLE)  # set up, waiting on its gate
    (child,) = children() - before
    os.kill(child, signal.SIGSTOP)
    assert wait_until(lambda: _state(child) == "T")
    cancelled = threading.Thread(target=pending.cancel, daemon=True)
    began = time.monotonic()
    cancelled.start()
    cancelled.join(timeout=10)
    try:
        assert not cancelled.is_alive(), "the cancel waited on a child that never left"
        assert time.monotonic() - began < 5
        if config == "cgroup2":  # killed through its cgroup, and the cgroup removed
            assert wait_until(lambda: child not in children())
            assert not own_groups()
        else:  # no cgroup to kill it by: continued, it reads the refusal and leaves
            assert _state(child) == "T"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGCONT)
    assert wait_until(lambda: not (children() - before)), "the child stayed after it was continued"
    assert not mark.exists(), "a cancelled start ran its command"
