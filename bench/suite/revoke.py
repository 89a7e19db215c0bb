"""Revoke → dead, against the number of executions running on the governor.

A real ``proctor serve`` on loopback, N executions under ``proctor run`` (each an enforcer
holding its lease and its ``GET /v1/stream`` open, its command a ``sh`` that sleeps).
Each trial starts one more, waits until it runs, then the admin revokes it
(``POST /v1/revocations``, signed) and the clock stops when every process of its tree is
gone (seen on their pidfds by a thread of its own, ``tests/proc_support.DeathWatch``: the
moment is caught even when the tree dies before the revocation's answer arrives, which it
does since revocations are pushed before they are recorded, ADR 0021).

The call is sent two ways, alternating trial by trial: on a socket of its own, signed
and written in one ``send`` (``bench.lib.SocketClient``: what the call costs proctor),
and through ``proctor.client.GovernorClient``, the client ``proctor revoke`` uses
(``http.client`` since ADR 0023; before it, httpx: about 0.3 to 0.5 ms more per request
on this machine).

The yardstick, at the same N and so under the same load: ``kill -9`` of a plain child
process, seen the same way: the floor of any "dead" figure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.lib import REPO, Context, Member, Record, SocketClient

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


def _revocation(
    run: list[str], marker: str, send: Callable[[str], object], watch_of: Callable[[list[int]], Any]
) -> float:
    """One governed sleeper started, revoked through ``send(execution)``: ms from the
    call until its tree is dead."""
    from proc_support import marked  # noqa: PLC0415 - tests/ is on the path

    proc = subprocess.Popen([*run, sys.executable, "-c", SLEEPER, marker],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        execution = _started(proc)
        time.sleep(0.2)
        pids = marked(marker, exclude=b"proctor")
        if not pids:
            raise AssertionError(f"no process carries {marker}")
        watch = watch_of(pids)  # the moment the tree died, even before the answer
        t0 = time.perf_counter()
        send(execution)
        took = (watch.wait() - t0) * 1000
        proc.wait(timeout=30)
        return float(took)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def measure(ctx: Context) -> list[Record]:
    from gov_server import GovernorServer  # noqa: PLC0415 - tests/ is on the path
    from proc_support import DeathWatch  # noqa: PLC0415
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
    admin_key = PrincipalKey.load(server.data / "keys" / "admin.key")
    admin = GovernorClient(server.url, admin_key)
    raw = SocketClient(server.url, admin_key)

    def by_client(execution: str) -> None:
        admin.json("POST", "/v1/revocations", {"kind": "execution", "target": execution, "reason": "bench"})

    def by_socket(execution: str) -> None:
        body = orjson.dumps({"kind": "execution", "target": execution, "reason": "bench"})
        status, answer = raw.request("POST", "/v1/revocations", body)
        if status != 200:
            raise AssertionError(f"the revocation answered {status}: {answer[:300]!r}")

    try:
        for n in counts:
            while len(background) < n - 1:
                ctx.status(f"starting execution {len(background) + 1} of {n - 1} in the background")
                proc = subprocess.Popen([*run, "sh", "-c", "sleep 3600; :", f"{tag}-bg"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
                _started(proc)
                background.append(proc)
            lean: list[float] = []
            by_governor_client: list[float] = []
            kills: list[float] = []
            for t in range(trials):  # the two clients alternate, so the same load falls on both
                ctx.status(f"{n} running: revocation {t + 1} of {trials}")
                lean.append(_revocation(run, f"{tag}-{n}-{t}-s", by_socket, DeathWatch))
                by_governor_client.append(_revocation(run, f"{tag}-{n}-{t}-c", by_client, DeathWatch))
                plain = subprocess.Popen([sys.executable, "-c", SLEEPER, f"{tag}-{n}-{t}-plain"])
                time.sleep(0.2)
                watch = DeathWatch([plain.pid])  # seen the same way as the governed tree
                t0 = time.perf_counter()
                os.kill(plain.pid, signal.SIGKILL)
                kills.append((watch.wait() - t0) * 1000)
                plain.wait()
            group = f"revoke → dead, {n} running"
            curve = {"curve": "revoke-vs-executions", "x": n}
            out.append(ctx.record(f"revoke call → tree dead, {n} running", lean, "ms", group=group,
                                  series="revoke call → tree dead", **curve))  # fmt: skip
            out.append(ctx.record(f"revoke call by proctor.client → tree dead, {n} running",
                                  by_governor_client, "ms", group=group,
                                  series="the same, call sent by proctor.client", **curve))  # fmt: skip
            out.append(ctx.record(f"kill -9 → dead, {n} running", kills, "ms", group=group,
                                  series="kill -9 (yardstick)", baseline=True, **curve))  # fmt: skip
    finally:
        raw.close()
        admin.close()
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
    full={"running": [1, 10, 25, 50], "trials": 60},
    run=measure,
    meaning=(
        "How soon a revoked execution stops, from the moment an administrator's revocation call is "
        "sent until the last process of its tree is gone, and whether that grows with the number of "
        "executions the governor supervises (each holds an event stream the revocation is pushed to)."
    ),
)
