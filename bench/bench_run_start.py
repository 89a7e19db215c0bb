"""``proctor run``'s start, beyond its round trips to the governor: what the enforcer
itself adds before (and after) the command runs.

    python bench/bench_run_start.py [--runs N] [--baseline-src DIR]

Runs the real ``Supervisor`` (what ``proctor run -- true`` runs after its imports) in
this process, against a real governor (``proctor serve`` on SQLite), ``N`` times, and
times each run's round trips to the governor (authorize, start, finish: the calls of
``Governors.json`` and ``Governors.request``, as the supervisor makes them). Prints per
run, as medians and p90:

- ``total``: the whole governed run of ``true``;
- ``round trips``: the three calls to the governor, as this process waited for them;
- ``beyond round trips``: the difference, the enforcer's own work on the run's path
  (measure, the sealed copy, the warrant verified locally, the contained start, the
  wait for ``true``, the watches stopped, the tree closed);
- ``start beyond round trips``: of it, what comes before the command starts (until
  ``PendingStart.go``, or on an older tree ``Containment.spawn``, returns), less the
  waits for the governor's answers before then — the start overhead beyond the
  authorize round trip that issue 16 asks to bring to ≤ 3 ms p50;
- the yardstick ``subprocess.run(["true"])`` from the same process, interleaved;
- ``command started beyond round trips``: the same for a governed run of ``date
  +%s.%N``, up to the instant the command itself read the clock (after its exec and
  dynamic linking) rather than until ``go`` returned, which is later: the tree is
  tracked and its heartbeat started once the command runs. Beside it, the yardstick
  ``subprocess.run: command started``, the same instant for a plain ``subprocess.run``.

``--baseline-src DIR`` runs the same measurement in a second process on another
revision's ``src`` (``git archive REV src | tar -x -C DIR``), the two alternating in
batches, so that the machine's drift falls on both.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BATCH = 10
FIGURES = (
    "total",
    "round trips",
    "beyond round trips",
    "start beyond round trips",
    "subprocess.run",
    "command started beyond round trips",
    "subprocess.run: command started",
)
CLOCK = ["date", "+%s.%N"]
"""The command that says when it started: its first reading of the wall clock (after its
own exec and dynamic linking, as for any command)."""


def _clock_read(output: bytes, wall0: float, perf0: float) -> float:
    """The instant ``date`` printed, on ``time.perf_counter``'s scale (``wall0`` and
    ``perf0`` read together)."""
    return perf0 + float(output.split()[0]) - wall0


def supervised_runs(server_url: str, key_path: str, runs: int) -> dict[str, list[float]]:
    """``runs`` governed runs of ``true`` in this process: per-run milliseconds."""
    from proctor.authorization.keys import PrincipalKey  # noqa: PLC0415
    from proctor.enforcement import _failover, containment  # noqa: PLC0415
    from proctor.enforcement.supervisor import RunOptions, Supervisor  # noqa: PLC0415

    calls: list[tuple[float, float]] = []  # (start, end) of each call to the governor
    started = [0.0]  # when the command was started (spawn or go returned)

    def timed(fn: Any, into: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                into(t0, time.perf_counter())

        return wrapper

    _failover.Governors.request = timed(  # type: ignore[method-assign]
        _failover.Governors.request, lambda t0, t1: calls.append((t0, t1))
    )
    pending = getattr(containment, "PendingStart", None)  # this tree: the go starts it
    owner, name = (pending, "go") if pending is not None else (containment.Containment, "spawn")
    setattr(owner, name, timed(getattr(owner, name), lambda t0, t1: started.__setitem__(0, t1)))
    key = PrincipalKey.load(Path(key_path))
    out: dict[str, list[float]] = {name: [] for name in FIGURES}
    for i in range(runs + 3):
        calls.clear()
        sink = io.BytesIO()
        t0 = time.perf_counter()
        status = Supervisor(RunOptions(server_url, key, quiet=True), ["true"], stdout=sink, stderr=sink).run()
        total = time.perf_counter() - t0
        if status != 0:
            raise SystemExit(f"proctor's run of true exited {status}")
        t1 = time.perf_counter()
        subprocess.run(["true"], check=True)
        plain = time.perf_counter() - t1
        if i < 3:
            continue  # warm-up
        waits = _covered(calls, t0, t0 + total)
        before = _covered(calls, t0, started[0])
        out["total"].append(total * 1000)
        out["round trips"].append(waits * 1000)
        out["beyond round trips"].append((total - waits) * 1000)
        out["start beyond round trips"].append((started[0] - t0 - before) * 1000)
        out["subprocess.run"].append(plain * 1000)
        # When the command itself began: a governed run of date, and a plain one.
        calls.clear()
        sink = io.BytesIO()
        wall0, t0 = time.time(), time.perf_counter()
        status = Supervisor(RunOptions(server_url, key, quiet=True), CLOCK, stdout=sink, stderr=sink).run()
        if status != 0:
            raise SystemExit(f"proctor's run of date exited {status}: {sink.getvalue()[-300:]!r}")
        began = _clock_read(sink.getvalue(), wall0, t0)
        before = _covered(calls, t0, began)
        out["command started beyond round trips"].append((began - t0 - before) * 1000)
        wall0, t0 = time.time(), time.perf_counter()
        plain_out = subprocess.run(CLOCK, check=True, capture_output=True).stdout
        out["subprocess.run: command started"].append((_clock_read(plain_out, wall0, t0) - t0) * 1000)
    return out


def _covered(spans: list[tuple[float, float]], lo: float, hi: float) -> float:
    """How long, between ``lo`` and ``hi``, at least one of ``spans`` was under way
    (calls that overlap, such as the warrant key fetched beside the authorization,
    count once)."""
    total, reach = 0.0, lo
    for began, ended in sorted(spans):
        begin, end = max(began, reach), min(ended, hi)
        if end > begin:
            total += end - begin
            reach = end
    return total


def _p90(xs: list[float]) -> float:
    return sorted(xs)[max(int(len(xs) * 0.9) - 1, 0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--baseline-src", type=Path, help="another revision's src, measured in turns")
    ap.add_argument("--worker", nargs=3, metavar=("URL", "KEY", "RUNS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        url, key, runs = args.worker
        print(json.dumps(supervised_runs(url, key, int(runs))))
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from gov_server import GovernorServer  # noqa: PLC0415
    from gov_support import POLICIES  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        server = GovernorServer(Path(tmp) / "gov", policy=POLICIES / "run")
        try:
            sides = {"this tree": ROOT / "src"}
            if args.baseline_src:
                sides["baseline"] = args.baseline_src.resolve()
            got: dict[str, dict[str, list[float]]] = {s: {} for s in sides}
            for _ in range(max(args.runs // BATCH, 1)):
                for side, src in sides.items():
                    env = {**os.environ, "PYTHONPATH": str(src)}
                    done = subprocess.run(
                        [sys.executable, __file__, "--worker", server.url, str(server.key), str(BATCH)],
                        env=env, capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    for name, xs in json.loads(done.stdout).items():
                        got[side].setdefault(name, []).extend(xs)
        finally:
            server.stop()
    print(f"{'side':<10} {'figure':<36} {'p50 ms':>8} {'p90 ms':>8} {'n':>5}")
    for side, figures in got.items():
        for name, xs in figures.items():
            print(f"{side:<10} {name:<36} {statistics.median(xs):8.2f} {_p90(xs):8.2f} {len(xs):5d}")


if __name__ == "__main__":
    main()
