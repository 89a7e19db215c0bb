#!/usr/bin/env python3
"""Governor processes on one store (ADR 0016): HTTP authorizations/s with ``proctor
serve --workers 1`` and ``--workers 2`` on this host, beside the exclusive ``proctor
serve`` as the yardstick, side by side in one run; with ``--postgres``, the same on one
PostgreSQL database and 1, 2 and 3 governor nodes (``proctor serve --shared``, each its
own data directory, as on separate hosts).

Run from the repository root::

    python bench/bench_nodes.py                  # 2 rounds of 10 s per variant, SQLite
    python bench/bench_nodes.py --quick          # 1 round of 5 s
    python bench/bench_nodes.py --postgres       # also PostgreSQL: workers and 1-3 nodes
    python bench/bench_nodes.py --rounds 3 --connections 64

Each variant serves a fresh store (the basic bundle, 8 principals, request rates
unlimited) on loopback; ``wrk`` replays pre-signed ``POST /v1/authorize`` requests
(``bench/wrk_signed.lua``, one fresh nonce each) from the same machine, so wrk's own CPU
comes out of the same two cores. With several nodes, one wrk per node shares the
connections, each with requests of its own, and the table sums them. Variants alternate
round by round, so that a change in the machine's other load falls on all of them
alike. After each run the log is verified (``proctor log verify``: one tree, no gaps,
the state agreeing with it).

Columns: authorizations/s (wrk's count over its duration; every answer must be an
allow), wrk's p50/p99 latency (the slowest node's, with several), the servers' CPU in
cores (every process of every node), and the ratio to ``--workers 1`` on the same
store in the same round. The issue's bar: ``--workers 2`` at least 1.5 times
``--workers 1`` on two cores.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.bench_governor import (
    BASIC,
    LUA,
    REPO,
    free_port,
    loadavg,
    new_data_dir,
    prepare_wrk,
    proc_cpu_split,
)
from bench.lib import settle
from proctor.authorization.keys import PrincipalKey
from proctor.config import MAX_QUOTA, QuotaLimits
from proctor.governor.service import Governor, initialize
from proctor.policy import PolicyBundle


class Variant:
    """One way to serve: the store, how many nodes, and ``proctor serve``'s options."""

    def __init__(self, name: str, *, postgres: bool = False, nodes: int = 1, extra: list[str] | None = None):
        self.name = name
        self.postgres = postgres
        self.nodes = nodes
        self.extra = extra or []

    @property
    def base(self) -> str:
        """The variant whose figure is this one's 1.00x (``--workers 1`` on the same store)."""
        return "pg --workers 1" if self.postgres else "--workers 1"


SQLITE_VARIANTS = [
    Variant("exclusive (proctor serve)"),
    Variant("--workers 1", extra=["--workers", "1"]),
    Variant("--workers 2", extra=["--workers", "2"]),
]
PG_VARIANTS = [
    Variant("pg exclusive", postgres=True),
    Variant("pg --workers 1", postgres=True, extra=["--workers", "1"]),
    Variant("pg --workers 2", postgres=True, extra=["--workers", "2"]),
    Variant("pg 2 nodes", postgres=True, nodes=2, extra=["--shared"]),
    Variant("pg 3 nodes", postgres=True, nodes=3, extra=["--shared"]),
]


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


def new_store(
    root: Path, name: str, variant: Variant, cluster: Any
) -> tuple[list[Path], str | None, list[Any]]:
    """A fresh store for ``variant``: its nodes' data directories, the PostgreSQL URL
    (``None``: the first directory's own SQLite file), and the principals' keys."""
    if not variant.postgres:
        data, keys = new_data_dir(root, name, BASIC, 8)
        return [data], None, keys
    dsn = cluster.dsn(cluster.create_database())
    data = root / name
    initialize(data, origin="bench.example/nodes", store=dsn)
    config = data / "config.toml"
    text = config.read_text()
    for quota in ("max_requests_per_second", "max_authorizations_per_second"):
        text = text.replace(f"{quota} = {getattr(QuotaLimits, quota)}\n", f"{quota} = {MAX_QUOTA}\n")
    config.write_text(text)
    keys = []
    with Governor(data, store=dsn) as g:
        for i in range(8):
            k = PrincipalKey.generate(f"agent{i}")
            g.add_principal(k.name, k.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
            keys.append(k)
        admin = PrincipalKey.load(data / "keys" / "admin.key")
        bundle = PolicyBundle.from_directory(BASIC, version=1)
        signed = bundle.signed(Ed25519PrivateKey.from_private_bytes(admin.private_bytes()), "admin")
        g.push_policy(signed.to_json(), by="admin")
    # Each node its own copy of the keys and configuration, as on its own host.
    dirs = [data]
    for n in range(1, variant.nodes):
        copy = root / f"{name}-node{n}"
        shutil.copytree(data, copy)
        dirs.append(copy)
    return dirs, dsn, keys


def run(
    nodes: list[Served], keys: list[Any], work: Path, connections: int, duration: float, cap: float
) -> dict[str, Any]:
    """One wrk per node at once, ``connections`` shared between them; the sums."""
    share = max(1, connections // len(nodes))
    files = [prepare_wrk(keys, work, duration, cap)[0] for _ in nodes]
    settle()
    cpu0, t0 = sum(tree_cpu_s(n.proc.pid) for n in nodes), time.monotonic()
    procs = []
    for served, path in zip(nodes, files, strict=True):
        cmd = ["wrk", "-t1" if len(nodes) > 1 else "-t2", f"-c{share}", f"-d{duration:g}s", "--timeout", "60s",
               "-s", str(LUA), served.url, "--", str(path), "1" if len(nodes) > 1 else "2"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate() for p in procs]
    wall = time.monotonic() - t0
    cpu = sum(tree_cpu_s(n.proc.pid) for n in nodes) - cpu0
    for path in files:
        path.unlink()
    total, p50s, p99s, secs = 0, [], [], 0.0
    for proc, (out, err) in zip(procs, outs, strict=True):
        m = re.search(r"^WRK_JSON (.*)$", out, re.M)
        if proc.returncode != 0 or m is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {out}\n{err}")
        w = json.loads(m.group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non2xx or w["errors"].get("status", 0) or w["threads_exhausted"]:
            raise RuntimeError(f"some requests failed or ran out: {out}")
        total += w["requests"]
        secs = max(secs, w["duration_us"] / 1e6)
        p50s.append(w["latency_us"]["p50"] / 1000)
        p99s.append(w["latency_us"]["p99"] / 1000)
    return {
        "per_s": total / secs,
        "requests": total,
        "p50_ms": max(p50s),
        "p99_ms": max(p99s),
        "cores": cpu / wall,
    }


def verify(data: Path, store: str | None) -> None:
    cmd = [sys.executable, "-m", "proctor", "log", "verify", "--data", str(data), "--json"]
    if store is not None:
        cmd += ["--store", store]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    if r.returncode != 0 or not json.loads(r.stdout)["ok"]:
        raise RuntimeError(f"log verify failed: {r.stdout}\n{r.stderr}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="one round of 5 s per variant")
    ap.add_argument("--rounds", type=int, help="rounds (each variant once per round; default 2, 1 quick)")
    ap.add_argument("--duration", type=float, help="seconds per wrk run (default 10, 5 quick)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--cap", type=float, default=5000.0, help="requests/s to pre-sign for (default 5000)")
    ap.add_argument("--postgres", action="store_true", help="also PostgreSQL: --workers and 1-3 nodes")
    ap.add_argument("--only-postgres", action="store_true", help="PostgreSQL variants only")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not on PATH (apt-get install -y wrk)", file=sys.stderr)
        return 2
    rounds = args.rounds or (1 if args.quick else 2)
    duration = args.duration or (5.0 if args.quick else 10.0)
    variants = [] if args.only_postgres else list(SQLITE_VARIANTS)
    cluster = None
    if args.postgres or args.only_postgres:
        from pg_support import PgCluster  # noqa: PLC0415 - only with --postgres

        cluster = PgCluster()
        cluster.start()
        variants += PG_VARIANTS
    tmp = Path(tempfile.mkdtemp(prefix="bench-nodes-", dir="/tmp"))
    results: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    print(f"load average at the start: {loadavg()} ({os.cpu_count()} CPUs)", flush=True)
    try:
        for r in range(rounds):
            for v in variants:
                name = f"r{r}-{len(results[v.name])}-{v.name.replace(' ', '_').replace('-', '')}"
                dirs, store, keys = new_store(tmp, name, v, cluster)
                served: list[Served] = []
                try:
                    for n, data in enumerate(dirs):
                        extra = list(v.extra) + (["--store", store] if store else [])
                        if v.nodes > 1:
                            extra += ["--node", f"node{n}"]
                        served.append(Served(data, extra, tmp / f"serve-{name}-{n}.log"))
                    row = run(served, keys, tmp, args.connections, duration, args.cap)
                finally:
                    for s in served:
                        s.stop()
                verify(dirs[0], store)
                results[v.name].append(row)
                print(f"  .. round {r + 1}: {v.name}: {row['per_s']:,.0f}/s", flush=True)
        print(
            f"\nAuthorizations/s over HTTP, wrk -c{args.connections} on the same host, {duration:g} s per run"
        )
        header = f"{'variant':<28}{'round':>6}{'authz/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'server cores':>14}{'vs workers 1':>14}"
        print(header)
        print("-" * len(header))
        for v in variants:
            for i, row in enumerate(results[v.name]):
                ratio = row["per_s"] / results[v.base][i]["per_s"]
                print(
                    f"{v.name:<28}{i + 1:>6}{row['per_s']:>10,.0f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
                    f"{row['cores']:>14.2f}{ratio:>13.2f}x"
                )
        for one, two in (("--workers 1", "--workers 2"), ("pg --workers 1", "pg --workers 2")):
            if one not in results:
                continue
            ratios = [b["per_s"] / a["per_s"] for a, b in zip(results[one], results[two], strict=True)]
            verdict = "met" if min(ratios) >= 1.5 else "NOT met"
            print(f"\n{two} / {one}: {', '.join(f'{x:.2f}x' for x in ratios)} (bar >= 1.5x: {verdict})")
        print(f"load average at the end: {loadavg()}")
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if cluster is not None:
            cluster.remove()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
