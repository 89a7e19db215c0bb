"""``proctor run true`` beside ``subprocess.run(["true"])`` and ``bwrap ... true``.

All start ``true`` and wait for it, from this process, one after another, rows
interleaved round by round (so drift in the machine's load falls on all of them):

- ``subprocess.run(["true"])``: the yardstick, a plain fork and exec;
- ``bwrap --unshare-all ... true`` (Debian's bubblewrap): a sandbox with new namespaces
  and no policy, no record;
- ``python -c pass``: the interpreter's start-up, which ``proctor run`` (a Python CLI) pays;
- proctor's containment in process (measure the executable, spawn it contained in its
  own session and cgroup when available, wait), without asking the governor;
- ``proctor run -- true`` against a real ``proctor serve`` on loopback: the CLI's start,
  the signed authorize round trip (the decision, a warrant, the durable log), the
  execution start with its lease, the contained spawn, and the finish report.

A second group runs the same governed run of ``true`` in this process (the
``Supervisor`` behind ``proctor run``, no interpreter start, no imports) and splits it
(``bench/bench_run_start.py``, in a process of its own): the waits for the governor's three answers, and what
the enforcer adds before the command starts beyond them (measure, the sealed copy, the
warrant checked locally, the contained start: issue 16's "start overhead beyond the
authorize round trip").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

from bench.lib import REPO, Context, Member, PeerUnavailable, Record, version_of, which

POLICY = REPO / "tests" / "integration" / "policies" / "run"
BWRAP = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all", "--die-with-parent",
         "--new-session"]  # fmt: skip


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def contained_true() -> None:
    """proctor's containment of ``true`` in this process, without the governor."""
    from proctor.enforcement.containment import Containment  # noqa: PLC0415
    from proctor.enforcement.measure import measure, prepare  # noqa: PLC0415

    prepared = prepare(measure(["true"]))
    child = Containment().spawn(prepared.argv, exec_path=prepared.exec_path, pass_fds=prepared.pass_fds)
    prepared.close()
    status = child.wait()
    child.close()
    if status != 0:
        raise AssertionError(f"contained true exited {status}")


def measure(ctx: Context) -> list[Record]:
    from gov_server import GovernorServer  # noqa: PLC0415 - tests/ is on the path (bench/__main__)

    rounds: int = ctx.config["rounds"]
    group = "start true and wait"
    rows: dict[str, tuple[Callable[[], object] | None, str, dict[str, object]]] = {}
    rows["subprocess.run(['true'])"] = (lambda: subprocess.run(["true"], check=True), "", {"baseline": True})
    try:
        bwrap = which("bwrap")
        rows["bwrap --unshare-all true"] = (
            lambda: subprocess.run([bwrap, *BWRAP, "true"], check=True), "",
            {"peer": f"bubblewrap {_bwrap_version(bwrap)}"},
        )  # fmt: skip
    except PeerUnavailable as e:
        rows["bwrap --unshare-all true"] = (None, f"{e}; apt-get install bubblewrap", {"peer": "bubblewrap"})
    rows["python -c pass (interpreter start)"] = (
        lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
        "",
        {},
    )
    rows["proctor containment in process (no governor)"] = (contained_true, "", {})
    ctx.status("starting a governor")
    server = GovernorServer(ctx.work / "gov", policy=POLICY)
    try:
        command = [sys.executable, "-m", "proctor", "run", "--server", server.url, "--key", str(server.key),
                   "--", "true"]  # fmt: skip

        def proctor_run() -> None:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise AssertionError(f"proctor run true exited {done.returncode}: {done.stderr[-500:]}")

        rows["proctor run -- true (authorize, lease, contained, finish)"] = (proctor_run, "", {})
        ctx.status("proctor run's own start, in process")
        split = _supervised(server.url, str(server.key), max(rounds, 10))
        times: dict[str, list[float]] = {name: [] for name in rows}
        for fn, _, _ in rows.values():
            if fn is not None:
                fn()  # warm up: page cache, the governor's first request
        for r in range(rounds):
            ctx.status(f"round {r + 1} of {rounds}")
            for name, (fn, _, _) in rows.items():
                if fn is not None:
                    times[name].append(_timed(fn))
    finally:
        server.stop()
    out = []
    for name, (fn, why, extra) in rows.items():
        if fn is None:
            out.append(ctx.unavailable(name, "ms", why, group=group, **extra))
        else:
            out.append(ctx.record(name, times[name], "ms", group=group, **extra))
    inside = "governed run of true, in process"
    began = "the command's start, in process (date's own clock reading)"
    figures = (
        (inside, "subprocess.run", "subprocess.run(['true']), beside it"),
        (
            inside,
            "start beyond round trips",
            "start beyond the governor's answers (measure, warrant checked, contained start)",
        ),
        (inside, "round trips", "waits for the governor (authorize, start, finish)"),
        (inside, "total", "the whole governed run"),
        (
            began,
            "subprocess.run: command started",
            "subprocess.run(['date']): the command started, beside it",
        ),
        (began, "command started beyond round trips", "the command started, beyond the governor's answers"),
    )
    for group_of, figure, name in figures:
        baseline = {"baseline": True} if figure.startswith("subprocess.run") else {}
        out.append(ctx.record(name, split[figure], "ms", group=group_of, **baseline))
    return out


def _supervised(url: str, key: str, runs: int) -> dict[str, list[float]]:
    """``bench/bench_run_start.py``'s split of ``runs`` governed runs, measured in a
    process of its own: the size of the process that forks the child matters (a fork
    copies its page tables), and this one has loaded the whole suite."""
    script = REPO / "bench" / "bench_run_start.py"
    done = subprocess.run(
        [sys.executable, str(script), "--worker", url, key, str(runs)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    split: dict[str, list[float]] = json.loads(done.stdout)
    return split


def _bwrap_version(path: str) -> str:
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.split()[-1] if done.stdout.split() else version_of("bubblewrap")


MEMBER = Member(
    name="run",
    title="proctor run true vs subprocess.run and bwrap",
    quick={"rounds": 3},
    full={"rounds": 60},
    run=measure,
    meaning=(
        "What governing a command costs at its start. `proctor run` is a Python program: most of "
        "its time is the interpreter's start-up (the `python -c pass` row) and its imports (the "
        "command-line framework is not loaded for a plain `proctor run`, ADR 0022), then one "
        "signed round trip to the governor to authorize and one to start the lease, and the "
        "finish. A long-running job pays it once; a loop of tiny commands pays it each time. "
        "The second group is the same governed run in a process already started: the waits for "
        "the governor's three answers, and what the enforcer adds before the command starts "
        "beyond them (issue 16's target: 3 ms), its contained child set up while the governor "
        "decides (ADR 0024) and the warrant verified while the start is recorded (ADR 0026). "
        "The third, when the command itself is running (its first reading of the clock), beside "
        "the same instant for a plain `subprocess.run`."
    ),
)
