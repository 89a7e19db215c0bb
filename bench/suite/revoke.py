"""Revoke → dead, against the number of executions running on the governor.

A real ``proctor serve`` on loopback, N executions under ``proctor run`` (each an enforcer
holding its lease and its ``GET /v1/stream`` open, its command a ``sh`` that sleeps).
Each trial starts one more, waits until it runs, then the admin revokes it
(``POST /v1/revocations``, signed) and the clock stops when every process of its tree is
gone (polled in ``/proc``, as ``tests/proc_support.py`` finds them).

The yardstick, at the same N and so under the same load: ``kill -9`` of a plain child
process, polled the same way until it is gone: the floor of any "dead" figure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bench.lib import REPO, Context, Member, Record

POLICY = REPO / "tests" / "integration" / "policies" / "run"
SLEEPER = "import time; time.sleep(600)"


def _started(proc: subprocess.Popen[str]) -> str:
    """The execution id ``proctor run`` prints when its command started."""
    if proc.stderr is None:
        raise AssertionError("expected proctor run's stderr piped")
    line = proc.stderr.readline()
    if "started" not in line:
        raise AssertionError(f"proctor run did not start: {line!r}")
    return line.split("execution ", 1)[1].split()[0]


def _wait_gone(pids: list[int], deadline_s: float = 30.0) -> None:
    from proc_support import alive  # noqa: PLC0415 - tests/ is on the path

    end = time.monotonic() + deadline_s
    while any(alive(p) for p in pids):
        if time.monotonic() > end:
            raise AssertionError(f"processes {pids} still alive after {deadline_s} s")
        time.sleep(0.0002)


def measure(ctx: Context) -> list[Record]:
    from gov_server import GovernorServer  # noqa: PLC0415 - tests/ is on the path
    from proc_support import marked  # noqa: PLC0415
    from proctor.authorization.keys import PrincipalKey  # noqa: PLC0415
    from proctor.client import GovernorClient  # noqa: PLC0415

    counts: list[int] = ctx.config["running"]
    trials: int = ctx.config["trials"]
    lifted = "[quotas.principals.alice]\nmax_running = 100000\nmax_starts_per_minute = 100000\nmax_streams = 100000\n"
    ctx.status("starting a governor")
    server = GovernorServer(ctx.work / "gov", policy=POLICY, config=lifted)
    background: list[subprocess.Popen[str]] = []
    out: list[Record] = []
    tag = f"bnch{os.getpid()}"
    run = [sys.executable, "-m", "proctor", "run", "--server", server.url, "--key", str(server.key), "--"]
    try:
        admin = GovernorClient(server.url, PrincipalKey.load(server.data / "keys" / "admin.key"))
        for n in counts:
            while len(background) < n - 1:
                ctx.status(f"starting execution {len(background) + 1} of {n - 1} in the background")
                proc = subprocess.Popen([*run, "sh", "-c", "sleep 3600; :", f"{tag}-bg"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
                _started(proc)
                background.append(proc)
            ours: list[float] = []
            kills: list[float] = []
            for t in range(trials):
                ctx.status(f"{n} running: revocation {t + 1} of {trials}")
                marker = f"{tag}-{n}-{t}"
                proc = subprocess.Popen([*run, sys.executable, "-c", SLEEPER, marker],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
                execution = _started(proc)
                time.sleep(0.2)
                pids = marked(marker, exclude=b"proctor")
                if not pids:
                    raise AssertionError(f"no process carries {marker}")
                t0 = time.perf_counter()
                admin.json(
                    "POST", "/v1/revocations", {"kind": "execution", "target": execution, "reason": "bench"}
                )
                _wait_gone(pids)
                ours.append((time.perf_counter() - t0) * 1000)
                proc.wait(timeout=30)
                if proc.stderr is not None:
                    proc.stderr.close()
                plain = subprocess.Popen([sys.executable, "-c", SLEEPER, f"{marker}-plain"])
                time.sleep(0.2)
                t0 = time.perf_counter()
                os.kill(plain.pid, signal.SIGKILL)
                plain.wait()  # reaped: a zombie is dead, and the parent here is this process
                kills.append((time.perf_counter() - t0) * 1000)
            group = f"revoke → dead, {n} running"
            curve = {"curve": "revoke-vs-executions", "x": n}
            out.append(ctx.record(f"proctor revoke call → tree dead, {n} running", ours, "ms", group=group,
                                  series="proctor revoke → dead", **curve))  # fmt: skip
            out.append(ctx.record(f"kill -9 → reaped, {n} running", kills, "ms", group=group,
                                  series="kill -9 (yardstick)", baseline=True, **curve))  # fmt: skip
    finally:
        for proc in background:
            proc.terminate()
        for proc in background:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
        server.stop()
    return out


MEMBER = Member(
    name="revoke",
    title="Revoke → dead vs running executions",
    quick={"running": [1, 3], "trials": 2},
    full={"running": [1, 10, 25, 50], "trials": 10},
    run=measure,
    meaning=(
        "How soon a revoked execution stops, from the moment an administrator's revocation call is "
        "sent until the last process of its tree is gone, and whether that grows with the number of "
        "executions the governor supervises (each holds an event stream the revocation is pushed to)."
    ),
)
