#!/usr/bin/env python3
"""Governor processes on one data directory (ADR 0016): HTTP authorizations/s with
``proctor serve --workers 1`` and ``--workers 2`` on this host, beside the exclusive
``proctor serve`` as the yardstick, side by side in one run.

Run from the repository root::

    python bench/bench_nodes.py                  # 2 rounds of 10 s per variant, ~2 minutes
    python bench/bench_nodes.py --quick          # 1 round of 5 s
    python bench/bench_nodes.py --rounds 3 --connections 64

Each variant serves a fresh data directory (the basic bundle, 8 principals, request
rates unlimited) on loopback; ``wrk`` replays pre-signed ``POST /v1/authorize`` requests
(``bench/wrk_signed.lua``, one fresh nonce each) from the same machine, so wrk's own CPU
comes out of the same two cores. Variants alternate round by round, so that a change in
the machine's other load falls on all of them alike. After each run the log is verified
(``proctor log verify``: one tree, no gaps, the state agreeing with it).

Columns: authorizations/s (wrk's count over its duration; every answer must be an
allow), wrk's p50/p99 latency, the server's CPU in cores (the parent and every worker
process), and the ratio to ``--workers 1`` of the same round. The issue's bar:
``--workers 2`` at least 1.5 times ``--workers 1`` on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_governor import BASIC, LUA, REPO, free_port, loadavg, new_data_dir, prepare_wrk, proc_cpu_split
from benchlib import settle

VARIANTS = {
    "exclusive (proctor serve)": [],
    "--workers 1": ["--workers", "1"],
    "--workers 2": ["--workers", "2"],
}


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children (the workers and their helpers)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            user, system = proc_cpu_split(current)
        except OSError:
            continue
        total += user + system
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == current:
                    todo.append(int(entry.name))
    return total


class Served:
    """``proctor serve`` (with extra options) on a fresh port, until stopped."""

    def __init__(self, data: Path, extra: list[str], log: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        cmd = [
            sys.executable,
            "-m",
            "proctor",
            "serve",
            "--data",
            str(data),
            "--port",
            str(self.port),
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready in 60 s")
            time.sleep(0.1)
        time.sleep(1.0)  # every worker up, not only the first that answered

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def run(
    served: Served, keys: list[Any], work: Path, connections: int, duration: float, cap: float
) -> dict[str, Any]:
    path, count, _ = prepare_wrk(keys, work, duration, cap)
    settle()
    cpu0, t0 = tree_cpu_s(served.proc.pid), time.monotonic()
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", "--timeout", "60s", "-s", str(LUA), served.url,
           "--", str(path), "2"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    cpu = tree_cpu_s(served.proc.pid) - cpu0
    path.unlink()
    m = re.search(r"^WRK_JSON (.*)$", r.stdout, re.M)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    w = json.loads(m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    if non2xx or w["errors"].get("status", 0) or w["threads_exhausted"]:
        raise RuntimeError(f"some requests failed or ran out: {r.stdout}")
    secs = w["duration_us"] / 1e6
    return {
        "per_s": w["requests"] / secs,
        "requests": w["requests"],
        "p50_ms": w["latency_us"]["p50"] / 1000,
        "p99_ms": w["latency_us"]["p99"] / 1000,
        "cores": cpu / wall,
        "presigned": count,
    }


def verify(data: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "proctor", "log", "verify", "--data", str(data), "--json"],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    if r.returncode != 0 or not json.loads(r.stdout)["ok"]:
        raise RuntimeError(f"log verify failed: {r.stdout}\n{r.stderr}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="one round of 5 s per variant")
    ap.add_argument("--rounds", type=int, help="rounds (each variant once per round; default 2, 1 quick)")
    ap.add_argument("--duration", type=float, help="seconds per wrk run (default 10, 5 quick)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--cap", type=float, default=5000.0, help="requests/s to pre-sign for (default 5000)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not on PATH (apt-get install -y wrk)", file=sys.stderr)
        return 2
    rounds = args.rounds or (1 if args.quick else 2)
    duration = args.duration or (5.0 if args.quick else 10.0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-nodes-", dir="/tmp"))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    print(f"load average at the start: {loadavg()} ({os.cpu_count()} CPUs)", flush=True)
    try:
        for r in range(rounds):
            for name, extra in VARIANTS.items():
                data, keys = new_data_dir(
                    tmp, f"r{r}-{len(results[name])}-{extra[-1] if extra else 'x'}", BASIC, 8
                )
                served = Served(data, extra, tmp / f"serve-{r}-{name.split()[-1]}.log")
                try:
                    row = run(served, keys, tmp, args.connections, duration, args.cap)
                finally:
                    served.stop()
                verify(data)
                results[name].append(row)
                print(f"  .. round {r + 1}: {name}: {row['per_s']:,.0f}/s", flush=True)
        base = results["--workers 1"]
        print(
            f"\nAuthorizations/s over HTTP, wrk -c{args.connections} on the same host, {duration:g} s per run"
        )
        header = f"{'variant':<28}{'round':>6}{'authz/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'server cores':>14}{'vs workers 1':>14}"
        print(header)
        print("-" * len(header))
        for name, rows in results.items():
            for i, row in enumerate(rows):
                ratio = row["per_s"] / base[i]["per_s"]
                print(
                    f"{name:<28}{i + 1:>6}{row['per_s']:>10,.0f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
                    f"{row['cores']:>14.2f}{ratio:>13.2f}x"
                )
        ratios = [w2["per_s"] / w1["per_s"] for w1, w2 in zip(base, results["--workers 2"], strict=True)]
        verdict = "met" if min(ratios) >= 1.5 else "NOT met"
        print(
            f"\n--workers 2 / --workers 1: {', '.join(f'{x:.2f}x' for x in ratios)} (bar >= 1.5x: {verdict})"
        )
        print(f"load average at the end: {loadavg()}")
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
