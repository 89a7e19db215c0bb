#!/usr/bin/env python3
"""Benchmark the governor's authorization path: in process, with threads, and over HTTP.

Run from the repository root::

    python bench/bench_governor.py              # everything, about 5 minutes
    python bench/bench_governor.py --quick      # shorter runs, about 2 minutes
    python bench/bench_governor.py --profile    # also print the cProfile of the allow path
    python bench/bench_governor.py --sections 1,2 --json out.json

What it measures (docs/benchmarks-history.md, "Governor: authorization", has the results):

1. In-process ``Governor.authorize`` latency on one thread after warm-up: the
   decision, the warrant and the durable log append (decision and ``warrant.issued``
   in one commit via ``Log.submit``, the warrant bound to the decision's index), for
   an allow and for a deny, with the
   small ``tests/integration/policies/basic`` bundle and with that bundle plus 500
   unrelated generated policies. Also how latency grows with the state the request
   path scans (warrants issued to the principal in the last hour; stored nonces).
2. In-process throughput with 8 and 32 threads calling ``authorize``.
3. HTTP on loopback: ``proctor serve`` and two programmatic uvicorn servers
   (asyncio + h11, uvloop + httptools) in a subprocess; requests are pre-signed
   (RFC 9421, one fresh nonce each, so each is sent once) and sent by ``wrk`` with
   ``bench/wrk_signed.lua``. Also: an ablation without warrant minting (a bench-only
   patch), ``proctor serve`` started with 150,000 live nonces stored; a sustained run on one server; a plain httpx multi-thread client
   for comparison; and, when the throughput target is missed, a ``py-spy`` profile of
   the server (GIL time and wall time per request, by component and by thread).
4. Per-component costs in process (signature verification, nonce store, Cedar,
   biscuit mint, log commit, JSON, ...), to read the HTTP numbers against.

``--profile`` adds a cProfile summary (top 12 by cumulative time) of the allow path,
for the calling thread and for the log writer thread.

Needs ``wrk`` on PATH for section 3 (``apt-get install -y wrk``) and optionally
``py-spy`` (``pip install py-spy``) and ``uvloop``/``httptools`` for the variants that
use them. Everything is written under a temporary directory in /tmp, removed at the
end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import importlib.metadata
import io
import json
import math
import os
import platform
import pstats
import re
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

if __package__ in (
    None,
    "",
):  # run as a file (python bench/bench_governor.py): the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.lib import cpu_s, fmt_int, fmt_us, log_progress, pct, print_table, settle
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request, verify_request
from proctor.authorization.warrants import WarrantClaims, args_digest, mint_warrant, new_warrant_id
from proctor.canonical import loads
from proctor.config import MAX_QUOTA, QuotaLimits
from proctor.governor.model import AuthorizeRequest
from proctor.governor.nonces import NonceCache
from proctor.governor.service import Governor, initialize
from proctor.lineage.log import Log
from proctor.policy import PolicyBundle, PolicyEngine, PolicyRequest
from proctor.policy.commitment import ArgumentOpening

REPO = Path(__file__).resolve().parent.parent
BASIC = REPO / "tests" / "integration" / "policies" / "basic"
LUA = Path(__file__).resolve().parent / "wrk_signed.lua"
ORIGIN = "bench.local/governor"
GENERATED = 500
HTTPX_TIMEOUT = 60.0
SIGNATURE_WINDOW_S = 300

TARGETS = {"inprocess_p50_us": 1000.0, "http_authz_per_s": 2000.0}

EXE = "sha256:" + "e" * 64  # an exec request binds the measured executable
ALLOW = AuthorizeRequest(
    action="exec", resource="/usr/bin/pg_dump", argv=("pg_dump", "db1"), executable_digest=EXE
)
DENY = AuthorizeRequest(
    action="exec", resource="/usr/bin/rm", argv=("rm", "-rf", "/srv/db1"), executable_digest=EXE
)
ALLOW_BODY = orjson.dumps(
    {"action": "exec", "resource": "/usr/bin/pg_dump", "argv": ["pg_dump", "db1"], "executable_digest": EXE}
)

_now = time.perf_counter_ns


# -- helpers ---------------------------------------------------------------------------


def children_cpu_s() -> float:
    """User + system CPU seconds of reaped child processes."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads)."""
    user, system = proc_cpu_split(pid)
    return user + system


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a running process (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def system_busy_s() -> float:
    """CPU seconds all processes on the machine have used (from /proc/stat), all CPUs."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def proc_switches(pid: int) -> int:
    """Context switches (voluntary + involuntary) of all threads of a running process so far.

    Threads that have exited are not counted, so take deltas over a period in which the
    process keeps its threads (uvicorn's and anyio's worker threads stay).
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def time_each(fn: Callable[[int], Any], n: int) -> list[float]:
    """Per-call durations in µs of ``fn(i)`` for i in range(n)."""
    out = []
    for i in range(n):
        t0 = _now()
        fn(i)
        out.append((_now() - t0) / 1000)
    return out


def stats_us(samples: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50": pct(samples, 50),
        "p90": pct(samples, 90),
        "p99": pct(samples, 99),
        "mean": sum(samples) / len(samples),
        "max": max(samples),
    }


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def fsync_us(directory: Path, n: int = 50) -> float:
    """p50 of write(4 KiB) + fdatasync on a file in ``directory``."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        out = []
        for _ in range(n):
            t0 = _now()
            os.write(fd, b"x" * 4096)
            os.fdatasync(fd)
            out.append((_now() - t0) / 1000)
    finally:
        os.close(fd)
        path.unlink()
    return pct(out, 50)


def machine_info(tmp: Path) -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = "unknown"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
            break
    wrk = shutil.which("wrk")
    wrk_version = "not installed"
    if wrk:
        r = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (r.stdout or r.stderr).split("\n")[0].split(" Copyright")[0].strip()
    fs = subprocess.run(
        ["df", "-T", str(tmp)], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    import proctor  # noqa: PLC0415

    where = Path(proctor.__file__).resolve().parent
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=False
    )
    changed = len([x for x in dirty.stdout.splitlines() if x.strip()])
    return {
        "proctor imported from": str(where),
        "repository HEAD": head.stdout.strip()
        + (f" + {changed} uncommitted paths under src/" if changed else ""),
        "cpu": model,
        "nproc": str(os.cpu_count()),
        "affinity": str(len(os.sched_getaffinity(0))),
        "memory": mem,
        "kernel": platform.release(),
        "python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "sqlite": sqlite3.sqlite_version,
        "tmp filesystem": fs[1].split()[1] if len(fs) > 1 and fs[1] else "?",
        "fsync (4 KiB write + fdatasync) p50 µs": f"{fsync_us(tmp):.0f}",
        "wrk": wrk_version,
        **{
            d: version_of(d)
            for d in (
                "cedarpy",
                "biscuit-python",
                "cryptography",
                "fastapi",
                "starlette",
                "uvicorn",
                "anyio",
                "uvloop",
                "httptools",
                "httpx",
                "py-spy",
            )
        },
    }


# -- setting up a governor ---------------------------------------------------------------


def large_policy_dir(root: Path) -> Path:
    """The basic bundle plus GENERATED unrelated permit/forbid policies."""
    out = root / "policies-large"
    out.mkdir(parents=True, exist_ok=True)
    for f in BASIC.iterdir():
        if f.is_file():
            shutil.copy(f, out / f.name)
    lines = []
    for i in range(GENERATED):
        effect = "permit" if i % 2 == 0 else "forbid"
        lines.append(
            f'@id("gen-{i:03d}")\n'
            f'{effect} (principal, action == Proctor::Action::"exec", '
            f'resource == Proctor::Executable::"/opt/x/tool{i}") '
            f'when {{ principal.role == "r{i}" }};\n'
        )
    (out / "generated.cedar").write_text("\n".join(lines))
    return out


def new_data_dir(root: Path, name: str, policy_dir: Path, principals: int) -> tuple[Path, list[PrincipalKey]]:
    """An initialised data directory with a pushed bundle and ``principals`` agents (role dev)."""
    data = root / name
    initialize(data, origin=ORIGIN)
    # A throughput benchmark: each agent may send as fast as the server answers.
    config = data / "config.toml"
    text = config.read_text()
    for quota in ("max_requests_per_second", "max_authorizations_per_second"):
        text = text.replace(f"{quota} = {getattr(QuotaLimits, quota)}\n", f"{quota} = {MAX_QUOTA}\n")
    config.write_text(text)
    keys = []
    with Governor(data) as g:
        for i in range(principals):
            k = PrincipalKey.generate(f"agent{i}")
            g.add_principal(k.name, k.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
            keys.append(k)
        admin = PrincipalKey.load(data / "keys" / "admin.key")
        bundle = PolicyBundle.from_directory(policy_dir, version=1)
        signed = bundle.signed(Ed25519PrivateKey.from_private_bytes(admin.private_bytes()), "admin")
        g.push_policy(signed.to_json(), by="admin")
    return data, keys


SEEDED_NONCES = 150_000
"""The nonce table's steady state at 500 authz/s: nonces live for the 300 s signature window."""


def seed_nonces(data: Path, count: int) -> None:
    """Store ``count`` unexpired nonces, as ``count / 300`` requests/s would leave behind."""
    conn = sqlite3.connect(data / "proctor.db", timeout=30)
    try:
        expires = int(time.time()) + 3600
        conn.executemany(
            "INSERT INTO nonces VALUES (?, ?, ?)",
            ((f"agent{i % 8}", f"seed{i:012d}", expires) for i in range(count)),
        )
        conn.commit()
    finally:
        conn.close()


def checkpoint_rows(data: Path) -> int:
    conn = sqlite3.connect(f"file:{data / 'proctor.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0])
    finally:
        conn.close()


def table_rows(data: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{data / 'proctor.db'}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def add_principal(g: Governor, name: str) -> PrincipalKey:
    k = PrincipalKey.generate(name)
    g.add_principal(name, k.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
    return k


# -- 1. in-process latency ---------------------------------------------------------------


PER_PRINCIPAL = 200
"""Calls per principal in section 1: the rate counters then scan at most this many rows."""


def bench_latency(
    g: Governor, data: Path, prefix: str, req: AuthorizeRequest, warm: int, n: int
) -> dict[str, Any]:
    """``n`` timed ``authorize`` calls after ``warm`` untimed ones.

    The calls rotate over fresh principals, :data:`PER_PRINCIPAL` each, so that every
    call sees the same small state (the rate counters scan a principal's warrants of the
    last hour; section 1b shows how latency grows with them).
    """
    want = req is ALLOW
    names = [f"{prefix}-{i}" for i in range(math.ceil((warm + n) / PER_PRINCIPAL))]
    for name in names:
        add_principal(g, name)
    for i in range(warm):
        assert g.authorize(names[i // PER_PRINCIPAL], req).allowed is want
    settle()
    size0, cp0, cpu0, busy0, t0 = g.log.size, checkpoint_rows(data), cpu_s(), system_busy_s(), _now()

    def one(i: int) -> None:
        r = g.authorize(names[(warm + i) // PER_PRINCIPAL], req)
        if r.allowed is not want:
            raise AssertionError(f"expected allowed={want}, got {r.to_json()}")

    samples = time_each(one, n)
    wall = (_now() - t0) / 1e9
    cpu = cpu_s() - cpu0
    out = stats_us(samples)
    out["cpu_us"] = cpu / n * 1e6
    out["entries_per_call"] = (g.log.size - size0) / n
    out["commits_per_call"] = (checkpoint_rows(data) - cp0) / n
    out["other_cores"] = max(0.0, (system_busy_s() - busy0 - cpu) / wall)
    return out


def counters(g: Governor, principal: str, now: int) -> tuple[int, int, int]:
    """The three counts ``Authorizer._decide`` makes per request (rate_1m, rate_1h, budget_used)."""
    return (
        g.state.count_warrants(principal, now - 60),
        g.state.count_warrants(principal, now - 3600),
        g.state.count_warrants(principal, now - now % 86400),
    )


def bench_growth(g: Governor, principal: str, warrants: Sequence[int], n: int) -> list[dict[str, Any]]:
    """Allow latency when the principal already holds K warrants issued in the last hour.

    The K rows are inserted straight into the ``warrants`` table (what K earlier
    authorizations would have left), spread evenly over the last hour, so that the scan
    cost shows without K real calls.
    """
    out = []
    conn = g.state._conn()
    have = 0
    now = int(time.time())
    for k in warrants:
        rows = [
            (f"wr_seed_{principal}_{i}", principal, "", 1, now + 900, now - i % 3600) for i in range(have, k)
        ]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO warrants (id, principal, parent, decision_index, expires, issued) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
        have = k
        for _ in range(20):
            g.authorize(principal, ALLOW)
        s = stats_us(time_each(lambda _: g.authorize(principal, ALLOW), n))
        count = time_each(lambda _: counters(g, principal, now), n)
        out.append({"warrants": k, "authorize": s, "count_warrants_x3_p50": pct(count, 50)})
    return out


def profile_allow(data: Path, principal: str, n: int) -> str:
    """cProfile of ``authorize`` (allow): the calling thread and the log writer thread."""
    writer = cProfile.Profile()
    original = Log._run

    def run(self: Log) -> None:
        writer.enable()
        try:
            original(self)
        finally:
            writer.disable()

    Log._run = run  # type: ignore[method-assign,assignment]
    try:
        g = Governor(data)  # a fresh writer thread, started under the profiler by the first append
        try:
            for _ in range(200):
                g.authorize(principal, ALLOW)
            caller = cProfile.Profile()
            caller.enable()
            for _ in range(n):
                g.authorize(principal, ALLOW)
            caller.disable()
        finally:
            g.close()
    finally:
        Log._run = original  # type: ignore[method-assign]
    buf = io.StringIO()
    buf.write(f"cProfile of Governor.authorize (allow), {n} calls after 200 warm-up calls.\n")
    buf.write("\n== calling thread (waits for the writer in Append.wait), top 12 by cumulative time\n")
    pstats.Stats(caller, stream=buf).sort_stats("cumulative").print_stats(12)
    buf.write(
        "\n== log writer thread (whole life, including the 200 warm-up calls and idle waits in "
        "SimpleQueue.get), top 12 by cumulative time\n"
    )
    pstats.Stats(writer, stream=buf).sort_stats("cumulative").print_stats(12)
    return buf.getvalue()


# -- 2. in-process threads ---------------------------------------------------------------


def bench_threads(g: Governor, data: Path, threads: int, total: int) -> dict[str, Any]:
    """``threads`` threads call ``authorize`` (allow), ``total`` calls in all.

    Each thread has its own principals and moves to a fresh one every
    :data:`PER_PRINCIPAL` calls, as in section 1.
    """
    per = total // threads
    names = [[f"thr{threads}-{t}-{k}" for k in range(math.ceil(per / PER_PRINCIPAL))] for t in range(threads)]
    for mine in names:
        for name in mine:
            add_principal(g, name)
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def worker(t: int) -> None:
        mine = lat[t]
        try:
            barrier.wait()
            for i in range(per):
                t0 = _now()
                r = g.authorize(names[t][i // PER_PRINCIPAL], ALLOW)
                mine.append((_now() - t0) / 1000)
                if not r.allowed:
                    raise AssertionError(r.to_json())
        except BaseException as e:
            errors.append(e)

    ths = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    settle()
    cp0, cpu0 = checkpoint_rows(data), cpu_s()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    busy0 = system_busy_s()
    barrier.wait()
    t0 = _now()
    for th in ths:
        th.join()
    wall = (_now() - t0) / 1e9
    cpu = cpu_s() - cpu0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    others = max(0.0, (system_busy_s() - busy0 - cpu) / wall)
    switches = ru1.ru_nvcsw + ru1.ru_nivcsw - ru0.ru_nvcsw - ru0.ru_nivcsw
    sys_share = (ru1.ru_stime - ru0.ru_stime) / cpu if cpu else float("nan")
    if errors:
        raise errors[0]
    done = per * threads
    commits = checkpoint_rows(data) - cp0
    flat = [x for xs in lat for x in xs]
    return {
        "threads": threads,
        "authorizations": done,
        "seconds": wall,
        "per_s": done / wall,
        "cpu_us": cpu / done * 1e6,
        "sys_share": sys_share,
        "switches_per_authz": switches / done,
        "other_cores": others,
        "commits": commits,
        "per_commit": done / commits if commits else float("nan"),
        "p50": pct(flat, 50),
        "p99": pct(flat, 99),
    }


# -- 4. components -----------------------------------------------------------------------


def bench_components(g: Governor, large: Governor, n: int) -> list[tuple[str, float, str]]:
    """Per-call µs (p50) of the pieces of one authorization, each alone, in process."""
    rows: list[tuple[str, float, str]] = []
    key = add_principal(g, "comp")
    now = int(time.time())

    def p50(fn: Callable[[int], Any], reps: int = n) -> float:
        for i in range(min(50, reps)):
            fn(i)
        return pct(time_each(fn, reps), 50)

    signed = [sign_request("POST", "/v1/authorize", ALLOW_BODY, key, now=now) for _ in range(n + 50)]
    lower = [{k.lower(): v for k, v in h.items()} for h in signed]
    rows.append(
        (
            "sign_request (client side, for reference)",
            p50(lambda i: sign_request("POST", "/v1/authorize", ALLOW_BODY, key, now=now)),
            "",
        )
    )
    rows.append(
        (
            "verify_request: parse + digest + key lookup + Ed25519 verify",
            p50(
                lambda i: verify_request(
                    "POST",
                    "/v1/authorize",
                    ALLOW_BODY,
                    lower[i],
                    public_key_for=g.public_key_for,
                    now=now,
                    remember_nonce=lambda k, nn, e: True,
                )
            ),
            "nonce store stubbed out",
        )
    )
    rows.append(("  of which public_key_for (cached principal)", p50(lambda i: g.public_key_for("comp")), ""))
    # The replay cache: in memory (NonceCache), persisted by the log writer.
    for size in (0, 100_000):
        cache = NonceCache(g.state, now=now)
        for i in range(size):
            cache.remember("seed", f"seed{i:012d}", now + 300, now=now)
        fresh = [base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode() for _ in range(n + 50)]

        def remember(i: int, fresh: list[str] = fresh, cache: NonceCache = cache) -> bool:
            return cache.remember("comp", fresh[i], now + 300, now=now)

        rows.append((f"NonceCache.remember, {size:,} live nonces", p50(remember), "in memory"))
    rows.append(
        (
            "request body: canonical loads + AuthorizeRequest.from_json",
            p50(lambda i: AuthorizeRequest.from_json(loads(ALLOW_BODY))),
            "",
        )
    )
    rows.append(("state.principal (SQLite read + attrs JSON)", p50(lambda i: g.state.principal("comp")), ""))
    rows.append(("Governor.principal (cached)", p50(lambda i: g.principal("comp")), ""))
    rows.append(
        (
            "RateCounters.counts (1 min, 1 h, since 00:00 UTC)",
            p50(lambda i: g.counters.counts("comp", now)),
            "per-second buckets",
        )
    )
    preq = PolicyRequest(
        principal="comp",
        principal_attrs={"role": "dev", "zone": ""},
        action="exec",
        resource="/usr/bin/pg_dump",
        argv=("pg_dump", "db1"),
        zone="",
        counters={"rate_1m": 0, "rate_1h": 0, "concurrency": 0, "budget_used": 0},
    )
    for label, gov in (("basic bundle", g), (f"basic + {GENERATED} policies", large)):
        engine = gov.engine
        assert engine is not None

        def decide(i: int, e: PolicyEngine = engine) -> Any:
            return e.decide(preq, now=now)

        rows.append(
            (
                f"engine.decide (Cedar), {label}",
                p50(decide),
                f"{engine.slice_count} slices",
            )
        )
    unsliced = PolicyEngine.compile(large.engine.bundle, sliced=False)  # type: ignore[union-attr]
    rows.append(
        (
            f"engine.decide, basic + {GENERATED}, unsliced (reference)",
            p50(lambda i: unsliced.decide(preq, now=now)),
            "not what the governor runs",
        )
    )
    decision = g.engine.decide(preq, now=now)  # type: ignore[union-attr]
    wkey = PrincipalKey.load(g.data.path / "keys" / "warrant.key").private_bytes()

    def mint(i: int) -> None:
        claims = WarrantClaims(
            warrant_id=new_warrant_id(),
            principal="comp",
            action="exec",
            resource="/usr/bin/pg_dump",
            args_digest=args_digest(("pg_dump", "db1")),
            zone="",
            executable_digest="",
            obligations=dict(decision.obligations),
            not_before=now,
            expires=now + 60,
            lease_ttl_ms=3000,
            decision_index=i,
            parent="",
        )
        mint_warrant(claims, root_private_key=wkey)

    rows.append(
        (
            "mint_warrant (claims + biscuit build + sign)",
            p50(mint),
            "in the helper process under proctor serve",
        )
    )
    event = g.authorizer.decision_event(
        "comp",
        preq,
        decision,
        now=time.time(),
        now_s=now,
        parent_id="",
        opening=ArgumentOpening.new(preq.argv, None),
    )
    rows.append(
        (
            "log.append(decision event): durable commit, 1 thread",
            p50(lambda i: g.log.append(event), n // 2),
            "fsync + checkpoint sign",
        )
    )
    result = g.authorize("comp", ALLOW)
    from fastapi.responses import JSONResponse  # noqa: PLC0415 - only here

    rows.append(
        (
            "response: AuthorizeResult.to_json + JSONResponse render",
            p50(lambda i: JSONResponse(result.to_json())),
            "",
        )
    )
    return rows


# -- 3. HTTP -----------------------------------------------------------------------------

SERVER_CODE = r"""
import sys
import uvicorn
from proctor.governor.service import Governor
from proctor.governor.app import create_app

data, port, loop, http, patch = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
if patch == "nomint":
    # Bench-only ablation, not a valid configuration: the warrant is not minted (the
    # "token" is a placeholder), to show what minting costs the server process.
    import proctor.governor.issuance as _service
    _service.mint_warrant = lambda claims, root_private_key: "ablation-not-a-warrant." + claims.warrant_id
# As proctor serve: warrants minted in the helper process while the log is busy (not for the ablation).
governor = Governor(data, mint_helper=patch != "nomint")
governor.log.start_writing()
app = create_app(governor)
uvicorn.run(app, host="127.0.0.1", port=port, loop=loop, http=http, log_level="warning", access_log=False,
            proxy_headers=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A governor HTTP server in a subprocess."""

    def __init__(self, data: Path, variant: str, log_path: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if variant == "cli":
            cmd = [sys.executable, "-m", "proctor", "serve", "--data", str(data), "--port", str(self.port)]
        else:
            loop, http, *rest = variant.split("+")
            cmd = [
                sys.executable,
                "-c",
                SERVER_CODE,
                str(data),
                str(self.port),
                loop,
                http,
                rest[0] if rest else "-",
            ]
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready in 60 s")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def decisions(self) -> dict[str, float]:
        text = httpx.get(self.url + "/metrics", timeout=30).text
        out = {"allow": 0.0, "deny": 0.0}
        for m in re.finditer(r'^proctor_decisions_total\{outcome="(\w+)"\} (\S+)$', text, re.M):
            out[m.group(1)] = float(m.group(2))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def presign(
    keys: Sequence[PrincipalKey], count: int, path: Path | None = None
) -> tuple[list[dict[str, str]], int]:
    """``count`` signed allow requests, principals round-robin; written to ``path`` for wrk."""
    now = int(time.time())
    headers = []
    lines = []
    body = ALLOW_BODY.decode()
    for i in range(count):
        h = sign_request("POST", "/v1/authorize", ALLOW_BODY, keys[i % len(keys)], now=now)
        h["Content-Type"] = "application/json"
        headers.append(h)
        if path is not None:
            lines.append("\t".join(["POST", "/v1/authorize", body, *(f"{k}: {v}" for k, v in h.items())]))
    if path is not None:
        path.write_text("\n".join(lines) + "\n")
    return headers, now


def prepare_wrk(
    keys: Sequence[PrincipalKey], work: Path, duration: float, cap: float
) -> tuple[Path, int, int]:
    """Pre-sign enough requests for ``duration`` s at ``cap``/s; returns (file, count, created)."""
    count = math.ceil(cap * duration)
    path = work / f"requests-{time.monotonic_ns()}.tsv"
    _, created = presign(keys, count, path)
    return path, count, created


def run_wrk(
    server: Server,
    keys: Sequence[PrincipalKey],
    work: Path,
    connections: int,
    duration: float,
    cap: float,
    prepared: tuple[Path, int, int] | None = None,
) -> dict[str, Any]:
    """One wrk run with fresh pre-signed requests; returns wrk's numbers and server CPU."""
    wrk_threads = 2 if connections >= 2 else 1
    path, count, created = prepared or prepare_wrk(keys, work, duration, cap)
    before = server.decisions()
    settle()
    (user0, sys0), sw0 = proc_cpu_split(server.pid), proc_switches(server.pid)
    cp0 = checkpoint_rows(server.data)
    kids0, self0, busy0, t0 = children_cpu_s(), cpu_s(), system_busy_s(), time.monotonic()
    cmd = [
        "wrk",
        f"-t{wrk_threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "60s",
        "-s",
        str(LUA),
        server.url,
        "--",
        str(path),
        str(wrk_threads),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    user1, sys1 = proc_cpu_split(server.pid)
    switches = proc_switches(server.pid) - sw0
    server_cpu = user1 + sys1 - user0 - sys0
    wrk_cpu = children_cpu_s() - kids0
    # Everything else that ran on the machine meanwhile (other users' work; py-spy).
    others = system_busy_s() - busy0 - server_cpu - wrk_cpu - (cpu_s() - self0)
    path.unlink()
    m = re.search(r"^WRK_JSON (.*)$", r.stdout, re.M)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    w = json.loads(m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    after = server.decisions()
    secs = w["duration_us"] / 1e6
    if time.time() - created > SIGNATURE_WINDOW_S - 10:
        raise RuntimeError("the run outlived the signature window; shorten it")
    return {
        "connections": connections,
        "wrk_threads": wrk_threads,
        "requests": w["requests"],
        "seconds": secs,
        "per_s": w["requests"] / secs,
        "latency_us": w["latency_us"],
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": w["errors"],
        "presigned": count,
        "presigned_sent": w["presigned_sent"],
        "exhausted_threads": w["threads_exhausted"],
        "server_allow": after["allow"] - before["allow"],
        "server_deny": after["deny"] - before["deny"],
        "server_cores": server_cpu / wall,
        "server_cpu_us": server_cpu / max(1, w["requests"]) * 1e6,
        "server_sys_share": (sys1 - sys0) / server_cpu if server_cpu else float("nan"),
        "switches_per_req": switches / max(1, w["requests"]),
        "per_commit": (after["allow"] + after["deny"] - before["allow"] - before["deny"])
        / max(1, checkpoint_rows(server.data) - cp0),
        "wrk_cpu_us": wrk_cpu / max(1, w["requests"]) * 1e6,
        "other_cores": max(0.0, others / wall),
        "stdout": r.stdout,
    }


def run_httpx(server: Server, keys: Sequence[PrincipalKey], threads: int, total: int) -> dict[str, Any]:
    """A plain Python client: ``threads`` threads, one httpx.Client each, pre-signed requests."""
    per = total // threads
    signed, _ = presign(keys, per * threads)
    lat: list[list[float]] = [[] for _ in range(threads)]
    bad: list[int] = []
    barrier = threading.Barrier(threads + 1)

    def worker(t: int) -> None:
        with httpx.Client(base_url=server.url, timeout=HTTPX_TIMEOUT) as c:
            mine = lat[t]
            barrier.wait()
            for i in range(t * per, (t + 1) * per):
                t0 = _now()
                r = c.post("/v1/authorize", content=ALLOW_BODY, headers=signed[i])
                mine.append((_now() - t0) / 1000)
                if r.status_code != 200 or not r.json()["allow"]:
                    bad.append(r.status_code)

    ths = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    settle()
    cpu0, scpu0 = cpu_s(), proc_cpu_s(server.pid)
    barrier.wait()
    t0 = time.monotonic()
    for th in ths:
        th.join()
    wall = time.monotonic() - t0
    done = per * threads
    flat = [x for xs in lat for x in xs]
    return {
        "threads": threads,
        "requests": done,
        "per_s": done / wall,
        "p50": pct(flat, 50),
        "p99": pct(flat, 99),
        "non_2xx": sum(1 for b in bad if b != 200),
        "not_allowed": len(bad),
        "client_cpu_us": (cpu_s() - cpu0) / done * 1e6,
        "server_cpu_us": (proc_cpu_s(server.pid) - scpu0) / done * 1e6,
    }


# -- py-spy: where the server's time goes --------------------------------------------------

# Rules, tried on each frame from the innermost outwards; the first that matches a frame
# names the sample's component.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("warrant mint (biscuit)", ("mint_warrant ",)),
    ("minting helper hand-off", ("MintHelper.", "_Process.", "WarrantIssuer.mint_later ")),
    ("warrant event build", ("WarrantIssuer.issued ", "WarrantIssuer.mint_here ")),
    ("nonce cache", ("NonceCache.",)),
    ("auth failure record", ("StateStore.auth_failure_writer",)),
    ("warrant row insert", ("StateStore.warrant_writer",)),
    ("rate/budget counters", ("RateCounters.", "_Window.")),
    ("principal key lookup", ("TrustView.public_key_for ",)),
    ("principal lookup", ("TrustView.principal ", "StateStore.principal ")),
    ("Cedar decision (engine.decide)", ("PolicyEngine.decide ", "cedarpy/")),
    ("waiting for the log commit", ("Append.wait ", "Append.wait_quietly ")),
    ("signature verification", ("verify_request ",)),
    (
        "log commit (writer: tree, SQLite, fsync, checkpoint sign)",
        (
            "GroupCommit._commit ",
            "SQLiteStore.append ",
            "SQLiteStore.put_checkpoint ",
            "GroupCommit._store_checkpoint ",
        ),
    ),
    ("log event validation (caller)", ("Log.submit ", "Log.append ", "coerce ", "Event.from_dict ")),
    ("decision event build", ("Authorizer.decision_event ",)),
    ("governor: other", ("Authorizer.", "Governor.")),
    ("request body parse", ("AuthorizeRequest.from_json ", "proctor/canonical.py")),
    ("response JSON", ("AuthorizeResult.to_json ", "Decision.to_json ", "starlette/responses.py")),
    ("prometheus metrics", ("prometheus_client/",)),
    ("FastAPI telemetry (OpenTelemetry)", ("opentelemetry/", "fastapi/telemetry/")),
    (
        "threadpool hand-off (anyio)",
        (
            "run_in_threadpool ",
            "run_sync_in_worker_thread ",
            "WorkerThread.",
            "anyio/to_thread.py",
            "anyio/_backends/",
        ),
    ),
    ("@app.middleware (BaseHTTPMiddleware)", ("starlette/middleware/base.py",)),
    ("FastAPI routing + dependencies", ("fastapi/",)),
    ("Starlette", ("starlette/",)),
    ("uvicorn + HTTP parsing", ("uvicorn/", "h11/", "httptools")),
    ("event loop", ("asyncio/", "uvloop")),
]
IDLE = "(idle: no request)"


def pyspy_path() -> str | None:
    """py-spy on PATH, or next to this Python (a venv's bin)."""
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


def classify(frames: list[str]) -> str:
    leaf = frames[-1]
    has_proctor = any("proctor/" in f for f in frames)
    # Threads with nothing to do: worker threads waiting for work, the event loop in
    # select/epoll, the log writer waiting on its queue.
    if not has_proctor and ("WorkerThread.run " in " ".join(frames) and "threading.py" in leaf):
        return IDLE
    if leaf.startswith(
        ("EpollSelector.select ", "select (", "BaseEventLoop.run_forever ", "Loop.run_forever ")
    ):
        return IDLE
    if leaf.startswith("GroupCommit._run "):
        return IDLE
    for f in reversed(frames):
        for name, needles in COMPONENTS:
            if any(n in f for n in needles):
                return name
    return "other"


def run_pyspy(
    server: Server,
    keys: Sequence[PrincipalKey],
    work: Path,
    connections: int,
    duration: float,
    cap: float,
    mode: str,
    rate: int,
) -> dict[str, Any]:
    """wrk load while py-spy samples the server (``mode`` "gil" or "idle")."""
    out = work / f"pyspy-{mode}-{server.port}.txt"
    spy_s = max(2, int(duration) - 2)
    result: dict[str, Any] = {}

    prepared = prepare_wrk(keys, work, duration, cap)

    def load() -> None:
        result.update(run_wrk(server, keys, work, connections, duration, cap, prepared))

    th = threading.Thread(target=load)
    th.start()
    time.sleep(1.0)  # let wrk connect and reach steady state
    flags = ["--gil"] if mode == "gil" else ["--idle"]
    spy = subprocess.run(
        [
            pyspy_path() or "py-spy",
            "record",
            "--pid",
            str(server.pid),
            "--duration",
            str(spy_s),
            "--rate",
            str(rate),
            "--nonblocking",
            "--format",
            "raw",
            "-o",
            str(out),
            *flags,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    th.join()
    if spy.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed: {spy.stderr[-2000:]}")
    by: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    writer_mint = 0
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        name = classify(frames)
        total += n
        by[name] += n
        if name == IDLE:
            continue
        joined = ";".join(frames)
        # --nonblocking can cut a stack short at the root; those are counted as event loop.
        role = (
            "log writer"
            if "GroupCommit._run " in joined
            else "anyio workers"
            if "WorkerThread." in joined
            else "event loop"
        )
        roles[role] += n
        if role == "log writer" and "mint_warrant " in joined:
            writer_mint += n
    return {
        "wrk": result,
        "spy_seconds": spy_s,
        "rate": rate,
        "samples": total,
        "by": dict(by),
        "roles": dict(roles),
        "writer_mint": writer_mint,
    }


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer samples and shorter HTTP runs")
    ap.add_argument("--profile", action="store_true", help="print a cProfile summary of the allow path")
    ap.add_argument("--sections", default="1,2,3,4", help="which sections to run (default 1,2,3,4)")
    ap.add_argument("--connections", default="8,32", help="wrk connections per run (default 8,32)")
    ap.add_argument("--duration", type=float, help="seconds per wrk run (default 10; 5 with --quick)")
    ap.add_argument("--sustained", type=int, help="consecutive wrk runs on one server (default 6; 3 quick)")
    ap.add_argument("--cap", type=float, default=4000.0, help="requests/s to pre-sign for (default 4000)")
    ap.add_argument(
        "--spy",
        choices=("auto", "yes", "no"),
        default="auto",
        help="py-spy the server (auto: if the target is missed)",
    )
    ap.add_argument(
        "--http-only",
        help="section 3: only these server variants (comma-separated, e.g. 'cli'), no sustained, "
        "httpx or py-spy runs",
    )
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    sections = {int(s) for s in args.sections.split(",") if s}
    quick = args.quick
    n_lat = 500 if quick else 2000
    warm = 100 if quick else 300
    n_threads_total = 2000 if quick else 8000
    duration = args.duration or (5.0 if quick else 10.0)
    sustained = args.sustained if args.sustained is not None else (3 if quick else 6)
    connections = [int(c) for c in args.connections.split(",") if c]

    root = Path(tempfile.mkdtemp(prefix="proctor-bench-gov-"))
    results: dict[str, Any] = {"quick": quick, "command": " ".join([Path(sys.executable).name, *sys.argv])}
    try:
        info = machine_info(root)
        results["machine"] = info
        print("Machine")
        for k, v in info.items():
            print(f"  {k:<40} {v}")
        print(f"  {'command':<40} {results['command']}")
        results["loadavg_start"] = loadavg()
        print(f"  {'load average at start':<40} {results['loadavg_start']}")
        print(f"  {'date':<40} {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        large_dir = large_policy_dir(root)

        g_basic: Governor | None = None
        g_large: Governor | None = None
        if sections & {1, 2, 4}:
            log_progress("setting up in-process governors (basic, basic + 500 policies)")
            data_basic, _ = new_data_dir(root, "inproc-basic", BASIC, 0)
            data_large, _ = new_data_dir(root, "inproc-large", large_dir, 0)
            g_basic, g_large = Governor(data_basic), Governor(data_large)

        # -- 1 --
        if 1 in sections and g_basic is not None and g_large is not None:
            rows = []
            lat: dict[str, Any] = {}
            for label, g, data in (
                ("basic", g_basic, data_basic),
                (f"basic + {GENERATED}", g_large, data_large),
            ):
                for kind, req in (("allow", ALLOW), ("deny", DENY)):
                    name = f"lat-{kind}-{'large' if g is g_large else 'basic'}"
                    log_progress(f"latency: {label}, {kind}, {n_lat} calls")
                    r = bench_latency(g, data, name, req, warm, n_lat)
                    lat[f"{label}/{kind}"] = r
                    rows.append(
                        [
                            f"{kind}, {label} bundle",
                            fmt_int(r["n"]),
                            fmt_us(r["p50"]),
                            fmt_us(r["p90"]),
                            fmt_us(r["p99"]),
                            fmt_us(r["mean"]),
                            fmt_us(r["cpu_us"]),
                            f"{r['entries_per_call']:.2f}",
                            f"{r['commits_per_call']:.2f}",
                            f"{r['other_cores']:.2f}",
                        ]
                    )
            results["latency"] = lat
            print_table(
                "1. In-process Governor.authorize, 1 thread (µs; decision + warrant + durable log commit; "
                f"principals rotate every {PER_PRINCIPAL} calls)",
                [
                    "case",
                    "calls",
                    "p50",
                    "p90",
                    "p99",
                    "mean",
                    "CPU µs/call",
                    "log entries/call",
                    "commits/call",
                    "other load (cores)",
                ],
                rows,
            )
            sizes = (0, 10_000) if quick else (0, 10_000, 50_000)
            name = "lat-growth"
            add_principal(g_basic, name)
            log_progress(f"latency growth with warrants issued in the last hour: {sizes}")
            growth = bench_growth(g_basic, name, sizes, 300 if quick else 500)
            results["growth"] = growth
            print_table(
                "1b. Allow latency vs. warrants the principal was issued in the last hour (basic bundle, µs)",
                ["warrants in the last hour", "authorize p50", "authorize p99", "count_warrants x3 p50"],
                [
                    [
                        fmt_int(x["warrants"]),
                        fmt_us(x["authorize"]["p50"]),
                        fmt_us(x["authorize"]["p99"]),
                        fmt_us(x["count_warrants_x3_p50"]),
                    ]
                    for x in growth
                ],
            )
            if args.profile:
                log_progress("cProfile of the allow path")
                prof_name = "lat-profile"
                add_principal(g_basic, prof_name)
                g_basic.close()
                text = profile_allow(data_basic, prof_name, 1000 if not quick else 500)
                g_basic = Governor(data_basic)
                results["profile"] = text
                print()
                print(text)

        # -- 2 --
        if 2 in sections and g_basic is not None:
            add_principal(g_basic, "thr-warm")
            for _ in range(100):
                g_basic.authorize("thr-warm", ALLOW)
            rows = []
            thr = []
            for t in (8, 32):
                log_progress(f"threads: {t} x {n_threads_total // t} authorizations")
                r = bench_threads(g_basic, data_basic, t, n_threads_total)
                thr.append(r)
                rows.append(
                    [
                        f"{t} threads",
                        fmt_int(r["authorizations"]),
                        f"{r['seconds']:.2f}",
                        fmt_int(r["per_s"]),
                        fmt_us(r["cpu_us"]),
                        f"{100 * r['sys_share']:.0f}",
                        f"{r['switches_per_authz']:.1f}",
                        f"{r['per_commit']:.1f}",
                        fmt_us(r["p50"]),
                        fmt_us(r["p99"]),
                        f"{r['other_cores']:.2f}",
                    ]
                )
            results["threads"] = thr
            print_table(
                f"2. In-process concurrent authorize (allow, basic bundle; each thread its own principals, "
                f"a fresh one every {PER_PRINCIPAL} calls)",
                [
                    "threads",
                    "authorizations",
                    "s",
                    "authz/s",
                    "CPU µs/authz",
                    "sys %",
                    "ctx sw/authz",
                    "authz/commit",
                    "call p50 µs",
                    "call p99 µs",
                    "other load (cores)",
                ],
                rows,
            )

        # -- 4 --
        if 4 in sections and g_basic is not None and g_large is not None:
            log_progress("per-component costs")
            comp = bench_components(g_basic, g_large, 300 if quick else 1000)
            results["components"] = [{"component": c, "p50_us": v, "note": note} for c, v, note in comp]
            print_table(
                "4. Components of one authorization, each alone, in process (p50 µs)",
                ["component", "p50 µs", "note"],
                [[c, fmt_us(v), note] for c, v, note in comp],
            )

        if g_basic is not None:
            g_basic.close()
        if g_large is not None:
            g_large.close()

        # -- 3 --
        if 3 in sections:
            if shutil.which("wrk") is None:
                print("\n3. HTTP: skipped, wrk is not installed (apt-get install -y wrk)")
            else:
                bench_http(root, args, results, connections, duration, sustained, quick)

        results["loadavg_end"] = loadavg()
        print(f"\nload average at the end: {results['loadavg_end']}")
        print_verdicts(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    finally:
        if args.keep:
            print(f"\nkept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def have_module(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def bench_http(
    root: Path,
    args: argparse.Namespace,
    results: dict[str, Any],
    connections: list[int],
    duration: float,
    sustained: int,
    quick: bool,
) -> None:
    extras = have_module("uvloop") and have_module("httptools")
    base = "uvloop+httptools" if extras else "asyncio+h11"
    # (variant, label, connection counts, kind)
    variants: list[tuple[str, str, list[int], str]] = [
        ("cli", "proctor serve", connections, "shipped"),
        ("asyncio+h11", "uvicorn asyncio+h11", connections, "shipped"),
    ]
    if extras:
        variants.append(("uvloop+httptools", "uvicorn uvloop+httptools", connections, "shipped"))
    top = [max(connections)]
    variants.append((f"{base}+nomint", "ablation: no warrant minting (invalid tokens)", top, "ablation"))
    variants.append(("cli+seeded", f"proctor serve, {SEEDED_NONCES:,} live nonces stored", top, "state"))
    only = set(args.http_only.split(",")) if args.http_only else None
    if only is not None:
        variants = [v for v in variants if v[0] in only]
    print()
    print(
        "proctor serve calls uvicorn.run() with loop and http left at 'auto': "
        + (
            "uvloop and httptools are installed here, so it runs uvloop + httptools."
            if extras
            else "uvloop/httptools are not installed, so it runs asyncio + h11."
        )
    )
    print(
        "the ablation row is a bench-only patch applied in the server subprocess (see SERVER_CODE), "
        "not the product."
    )
    http: list[dict[str, Any]] = []
    rows = []
    for variant, label, conns, kind in variants:
        for c in conns:
            data, keys = new_data_dir(root, f"http-{variant}-{c}", BASIC, 8)
            if variant.endswith("+seeded"):
                seed_nonces(data, SEEDED_NONCES)
            server = Server(data, variant.removesuffix("+seeded"), root / f"server-{variant}-{c}.log")
            try:
                # Warm-up: a short run so that imports, caches and the writer are live.
                run_wrk(server, keys, root, c, 1, args.cap)
                log_progress(f"HTTP: {label}, {c} connections, {duration:g} s")
                r = run_wrk(server, keys, root, c, duration, args.cap)
            finally:
                server.stop()
            r.pop("stdout")
            r["variant"] = variant
            r["label"] = label
            r["kind"] = kind
            http.append(r)
            rows.append(http_row(f"{label}, c={c}", r))
    results["http"] = http
    print_table(
        f"3. HTTP POST /v1/authorize on loopback; wrk -t2, pre-signed requests, each sent once (allow; "
        f"8 principals; fresh data dir per row; {duration:g} s after a 1 s warm-up)",
        HTTP_HEADER,
        rows,
    )
    if only is not None:
        return

    # Sustained: one server, consecutive runs; the nonce and warrant tables grow.
    c = max(connections)
    data, keys = new_data_dir(root, "http-sustained", BASIC, 8)
    server = Server(data, "cli", root / "server-sustained.log")
    sus = []
    rows = []
    try:
        for i in range(sustained):
            log_progress(f"HTTP sustained: run {i + 1}/{sustained}, {c} connections, {duration:g} s")
            r = run_wrk(server, keys, root, c, duration, args.cap)
            r.pop("stdout")
            r["nonces"] = table_rows(data, "nonces")
            r["warrants"] = table_rows(data, "warrants")
            sus.append(r)
            rows.append([*http_row(f"run {i + 1}", r), fmt_int(r["nonces"]), fmt_int(r["warrants"])])
    finally:
        server.stop()
    results["sustained"] = sus
    print_table(
        f"3b. Sustained: proctor serve, c={c}, {sustained} consecutive {duration:g} s wrk runs on one server "
        "(nonces and warrants accumulate)",
        [*HTTP_HEADER, "nonces stored", "warrants stored"],
        rows,
    )

    # Plain Python client for comparison.
    data, keys = new_data_dir(root, "http-httpx", BASIC, 8)
    server = Server(data, "cli", root / "server-httpx.log")
    hx = []
    try:
        for t in (8, 32):
            total = (600 if quick else 2000) if t == 8 else (1200 if quick else 3000)
            log_progress(f"HTTP httpx client: {t} threads, {total} requests")
            hx.append(run_httpx(server, keys, t, total))
    finally:
        server.stop()
    results["httpx"] = hx
    print_table(
        "3c. proctor serve with a plain httpx client instead of wrk: one httpx.Client per thread, "
        "pre-signed requests",
        [
            "client threads",
            "requests",
            "authz/s",
            "p50 ms",
            "p99 ms",
            "non-2xx",
            "client CPU µs/req",
            "server CPU µs/req",
        ],
        [
            [
                str(x["threads"]),
                fmt_int(x["requests"]),
                fmt_int(x["per_s"]),
                f"{x['p50'] / 1000:.1f}",
                f"{x['p99'] / 1000:.1f}",
                str(x["non_2xx"]),
                fmt_us(x["client_cpu_us"]),
                fmt_us(x["server_cpu_us"]),
            ]
            for x in hx
        ],
    )

    best = max((r["per_s"] for r in http if r["kind"] == "shipped"), default=0.0)
    want_spy = args.spy == "yes" or (args.spy == "auto" and best < TARGETS["http_authz_per_s"])
    if want_spy and pyspy_path() is None:
        print("\n3d. py-spy is not installed (pip install py-spy): no server profile")
    elif want_spy:
        profile_server(root, args, results, c, duration, extras)


HTTP_HEADER = [
    "server, connections",
    "requests",
    "authz/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "non-2xx",
    "server allows",
    "authz/commit",
    "server cores",
    "server CPU µs/req",
    "sys %",
    "ctx sw/req",
    "wrk CPU µs/req",
    "other load (cores)",
]


def http_row(label: str, r: dict[str, Any]) -> list[str]:
    lat = r["latency_us"]
    errs = sum(v for k, v in r["errors"].items() if k != "status")
    return [
        label + (" (pre-signed ran out!)" if r["exhausted_threads"] else ""),
        fmt_int(r["requests"]),
        fmt_int(r["per_s"]),
        f"{lat['p50'] / 1000:.1f}",
        f"{lat['p90'] / 1000:.1f}",
        f"{lat['p99'] / 1000:.1f}",
        f"{lat['max'] / 1000:.0f}",
        str(r["non_2xx"]) + (f" (+{errs} socket errors)" if errs else ""),
        fmt_int(r["server_allow"]),
        f"{r['per_commit']:.1f}",
        f"{r['server_cores']:.2f}",
        fmt_us(r["server_cpu_us"]),
        f"{100 * r['server_sys_share']:.0f}",
        f"{r['switches_per_req']:.0f}",
        fmt_us(r["wrk_cpu_us"]),
        f"{r['other_cores']:.2f}",
    ]


def profile_server(
    root: Path, args: argparse.Namespace, results: dict[str, Any], c: int, duration: float, extras: bool
) -> None:
    variant = "uvloop+httptools" if extras else "asyncio+h11"
    spy_duration = max(duration, 8.0)
    data, keys = new_data_dir(root, "http-pyspy", BASIC, 8)
    server = Server(data, variant, root / "server-pyspy.log")
    try:
        run_wrk(server, keys, root, c, 1, args.cap)
        log_progress(f"py-spy --gil: {variant}, c={c}, {spy_duration:g} s")
        gil = run_pyspy(server, keys, root, c, spy_duration, args.cap, "gil", 250)
        log_progress(f"py-spy --idle: {variant}, c={c}, {spy_duration:g} s")
        wall = run_pyspy(server, keys, root, c, spy_duration, args.cap, "idle", 50)
    finally:
        server.stop()
    for p in (gil, wall):
        p["wrk"].pop("stdout", None)
    results["pyspy"] = {"variant": variant, "connections": c, "gil": gil, "wall": wall}

    # GIL: each sample is 1/rate s of one thread holding the GIL.
    rps = gil["wrk"]["per_s"]
    reqs = rps * gil["spy_seconds"]
    ticks = gil["rate"] * gil["spy_seconds"]
    rows = []
    for name, n in sorted(gil["by"].items(), key=lambda kv: -kv[1]):
        rows.append(
            [name, fmt_int(n), f"{100 * n / gil['samples']:.1f}", fmt_us(n / gil["rate"] / reqs * 1e6)]
        )
    rows.append(
        [
            "total (GIL held)",
            fmt_int(gil["samples"]),
            "100.0",
            fmt_us(gil["samples"] / gil["rate"] / reqs * 1e6),
        ]
    )
    for role in ("event loop", "anyio workers", "log writer"):
        n = gil["roles"].get(role, 0)
        rows.append(
            [
                f"  of the total: {role} thread(s)",
                fmt_int(n),
                f"{100 * n / gil['samples']:.1f}",
                fmt_us(n / gil["rate"] / reqs * 1e6),
            ]
        )
    print_table(
        f"3d. Server GIL time per request by component (py-spy --gil --nonblocking, {gil['rate']} Hz, "
        f"{variant}, c={c}, {rps:,.0f} authz/s under sampling; "
        f"GIL held {100 * gil['samples'] / ticks:.0f}% of the time)",
        ["component", "samples", "% of GIL time", "µs per request"],
        rows,
    )
    # Wall: with --idle every thread is sampled; by Little's law, samples in a stage /
    # rate / requests = time each request spends in that stage (running, waiting for the
    # GIL or sleeping in SQLite's busy handler all count).
    rps = wall["wrk"]["per_s"]
    reqs = rps * wall["spy_seconds"]
    rows = []
    for name, n in sorted(wall["by"].items(), key=lambda kv: -kv[1]):
        if name == IDLE:
            continue
        rows.append([name, fmt_int(n), f"{n / wall['rate'] / reqs * 1e3:.2f}"])
    busy = sum(n for k, n in wall["by"].items() if k != IDLE)
    rows.append(["total in server threads", fmt_int(busy), f"{busy / wall['rate'] / reqs * 1e3:.2f}"])
    rows.append(["wrk mean latency (for comparison)", "", f"{wall['wrk']['latency_us']['mean'] / 1000:.2f}"])
    wticks = wall["rate"] * wall["spy_seconds"]
    writer = wall["roles"].get("log writer", 0)
    rows.append([f"log writer thread busy: {100 * writer / wticks:.0f}% of wall time", fmt_int(writer), ""])
    rows.append(
        [
            f"  of which in mint_warrant: {100 * wall['writer_mint'] / wticks:.0f}%",
            fmt_int(wall["writer_mint"]),
            "",
        ]
    )
    print_table(
        f"3e. Server wall time per request by stage (py-spy --idle --nonblocking, {wall['rate']} Hz, "
        f"all threads; {rps:,.0f} authz/s under sampling; writer-thread rows are per request too, "
        "shared by a commit's batch)",
        ["stage", "samples", "ms per request"],
        rows,
    )


def print_verdicts(results: dict[str, Any]) -> None:
    rows = []
    lat = results.get("latency")
    if lat:
        for key, r in lat.items():
            ok = r["p50"] <= TARGETS["inprocess_p50_us"]
            rows.append([f"in-process p50 ≤ 1 ms: {key}", f"{r['p50']:,.0f} µs", "met" if ok else "NOT met"])
    http = results.get("http")
    if http:
        shipped = [r for r in http if r["kind"] == "shipped"]
        best = max(shipped, key=lambda r: r["per_s"])
        ok = best["per_s"] >= TARGETS["http_authz_per_s"]
        rows.append(
            [
                "HTTP ≥ 2,000 authz/s (best shipped config)",
                f"{best['per_s']:,.0f}/s ({best['label']}, c={best['connections']})",
                "met" if ok else "NOT met",
            ]
        )
        bad = [r for r in http if r["non_2xx"] or r["exhausted_threads"]]
        rows.append(
            [
                "wrk runs with non-2xx or exhausted pre-signed requests",
                str(len(bad)),
                "ok" if not bad else "CHECK",
            ]
        )
    if rows:
        print_table("Targets", ["target", "measured", "verdict"], rows)


if __name__ == "__main__":
    sys.exit(main())
