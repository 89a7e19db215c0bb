"""Benchmarks for governed execution (`proctor run`): start overhead, revoke → dead,
lease expiry → dead, and many concurrent leases on one governor.

    python bench/bench_run.py [--quick]

Everything runs on loopback against a real `proctor serve` in a child process, with
real contained child processes. Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from gov_server import GovernorServer  # noqa: E402
from proc_support import alive, marked  # noqa: E402
from proctor.authorization.keys import PrincipalKey  # noqa: E402
from proctor.enforcement.containment import Containment  # noqa: E402
from proctor.enforcement.measure import measure, prepare  # noqa: E402
from proctor.governor.client import GovernorClient  # noqa: E402

POLICY = ROOT / "tests" / "integration" / "policies" / "run"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def row(name: str, values: list[float], unit: str = "ms") -> str:
    return (
        f"{name:<52} {statistics.median(values):>9.2f} {pct(values, 99):>9.2f} "
        f"{min(values):>9.2f} {len(values):>6} {unit}"
    )


def header(title: str) -> None:
    print(f"\n{title}\n{'metric':<52} {'p50':>9} {'p99':>9} {'min':>9} {'n':>6}")
    print("-" * 92)


def start_overhead(n: int) -> None:
    header("1. Start overhead for `true` (no authorize round trip)")
    plain: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["true"], check=True)
        plain.append((time.perf_counter() - t) * 1000)
    print(row("subprocess.run(['true'])", plain))
    for backends in (None, ["session", "subreaper", "pdeathsig"]):
        contained_ms: list[float] = []
        prepared_ms: list[float] = []
        containment = Containment(backends=backends)
        for _ in range(n):
            t = time.perf_counter()
            m = measure(["true"])
            prepared = prepare(m)
            t1 = time.perf_counter()
            c = containment.spawn(prepared.argv, exec_path=prepared.exec_path, pass_fds=prepared.pass_fds)
            prepared.close()
            c.wait()
            c.close()
            t2 = time.perf_counter()
            prepared_ms.append((t1 - t) * 1000)
            contained_ms.append((t2 - t1) * 1000)
        label = ",".join(containment.planned_backends()) if backends is None else ",".join(backends)
        print(row(f"measure+prepare ({label[:30]})", prepared_ms))
        print(row(f"contained spawn+wait ({label[:30]})", contained_ms))
        overhead = [a + b - statistics.median(plain) for a, b in zip(prepared_ms, contained_ms, strict=True)]
        print(row("  overhead over subprocess.run", overhead))


def _started(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if "started" not in line:
        raise SystemExit(f"proctor run did not start: {line}")
    return line.split("execution ", 1)[1].split()[0]


def _pid_of(marker: str) -> list[int]:
    """The governed processes carrying ``marker`` (not the supervisor, whose argv has it too)."""
    return marked(marker, exclude=b"proctor")


def revoke_to_dead(server: GovernorServer, n: int) -> None:
    header("2. Revoke → whole tree dead (same host; from the revocation call)")
    admin = GovernorClient(server.url, PrincipalKey.load(server.data / "keys" / "admin.key"))
    auth_ms: list[float] = []
    dead_ms: list[float] = []
    alice = GovernorClient(server.url, PrincipalKey.load(server.key))
    for i in range(n):
        t = time.perf_counter()
        alice.authorize({"action": "exec", "resource": "/usr/bin/true", "argv": ["true"]})
        auth_ms.append((time.perf_counter() - t) * 1000)
        marker = f"bench-{os.getpid()}-{i}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proctor",
                "run",
                "--server",
                server.url,
                "--key",
                str(server.key),
                "--",
                sys.executable,
                "-c",
                "import time; time.sleep(60)",
                marker,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ex = _started(proc)
        time.sleep(0.3)
        pids = _pid_of(marker)
        t = time.perf_counter()
        admin.json("POST", "/v1/revocations", {"kind": "execution", "target": ex, "reason": "bench"})
        while any(alive(p) for p in pids):
            time.sleep(0.0002)
        dead_ms.append((time.perf_counter() - t) * 1000)
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    print(row("authorize round trip over HTTP (signed)", auth_ms))
    print(row("revoke call → every process of the tree dead", dead_ms))


def lease_expiry(root: Path, n: int) -> None:
    header("3. Governor frozen (SIGSTOP) → tree dead; lease TTL 2 s")
    late: list[float] = []
    for i in range(n):
        server = GovernorServer(root / f"lease{i}", policy=POLICY)
        marker = f"lease-{os.getpid()}-{i}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proctor",
                "run",
                "--server",
                server.url,
                "--key",
                str(server.key),
                "--",
                sys.executable,
                "-c",
                "import time; time.sleep(60)",
                marker,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _started(proc)
        time.sleep(0.3)
        pids = _pid_of(marker)
        assert server.proc is not None
        # Find when the lease was last renewed: poll the executions table.
        db = sqlite3.connect(server.data / "proctor.db")
        os.kill(server.proc.pid, signal.SIGSTOP)
        frozen = time.time()
        (expires_ms,) = db.execute("SELECT max(lease_expires_ms) FROM executions").fetchone()
        while any(alive(p) for p in pids):
            time.sleep(0.0005)
        dead = time.time()
        late.append((dead - expires_ms / 1000) * 1000)
        del frozen
        os.kill(server.proc.pid, signal.SIGCONT)
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
        db.close()
        server.stop()
    print(row("dead after the lease's expiry (target ≤ 50 ms)", late))


def many_leases(server: GovernorServer, count: int, seconds: float) -> None:
    header(f"4. {count} concurrent leases, TTL 3 s (renew every 1 s), {seconds:.0f} s steady state")
    key = PrincipalKey.load(server.key)
    latencies: list[float] = []
    failures = [0]
    started_count = [0]
    lock = threading.Lock()
    ramp_done = threading.Event()
    assert server.proc is not None

    def new_execution(c: GovernorClient, n: int) -> str:
        argv = ["true", str(n)]
        answer = c.authorize({"action": "exec", "resource": "/usr/bin/true", "argv": argv})
        body = {
            "warrant": answer["warrant"]["token"],
            "action": "exec",
            "resource": "/usr/bin/true",
            "argv": argv,
            "measurement": {"executable": "/usr/bin/true", "executable_digest": "", "files": []},
        }
        return str(c.json("POST", "/v1/executions", body)["execution"])

    def worker(numbers: list[int], stop_at: list[float]) -> None:
        # Each lease is renewed every second from the moment it starts; new leases are
        # started only when no renewal is due, so none lapses during the ramp-up.
        c = GovernorClient(server.url, key)
        due: list[tuple[float, str]] = []
        pending = list(numbers)
        while True:
            now = time.monotonic()
            if stop_at[0] and now >= stop_at[0]:
                return
            if ramp_done.is_set():
                pending.clear()
            if due and due[0][0] <= now:
                when, ex = due.pop(0)
                t = time.perf_counter()
                try:
                    ok = c.json("POST", f"/v1/executions/{ex}/renew", {"integrity": "ok"}).get("ok")
                except Exception:
                    ok = False
                if ramp_done.is_set():
                    with lock:
                        latencies.append((time.perf_counter() - t) * 1000)
                        failures[0] += 0 if ok else 1
                due.append((when + 1.0, ex))
                due.sort()
            elif pending:
                ex = new_execution(c, pending.pop())
                due.append((time.monotonic() + 1.0, ex))
                due.sort()
                with lock:
                    started_count[0] += 1
            else:
                time.sleep(min(0.01, max(0.0, due[0][0] - now)) if due else 0.01)

    stop_at = [0.0]
    threads = [threading.Thread(target=worker, args=(list(range(i, count, 16)), stop_at)) for i in range(16)]
    for t in threads:
        t.start()
    ramp = time.monotonic()
    # Bounded ramp-up: if renewals leave no room to start more leases, that is the
    # governor's (and this load generator's) capacity, and it is reported as such.
    while started_count[0] < count and time.monotonic() - ramp < 60:
        time.sleep(0.1)
    ramp_s = time.monotonic() - ramp
    ramp_done.set()
    cpu0 = _cpu(server.proc.pid)
    t0 = time.monotonic()
    stop_at[0] = t0 + seconds
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    cpu = _cpu(server.proc.pid) - cpu0
    print(row("renew latency (steady state)", latencies))
    print(
        f"started {started_count[0]} of {count} leases in {ramp_s:.1f} s; renewals/s {len(latencies) / elapsed:,.0f} "
        f"(needed {count}/s); refused {failures[0]}; governor CPU {cpu / elapsed * 100:.0f}% of one core"
    )


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().split(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(
        f"proctor run benchmarks — {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    start_overhead(50 if args.quick else 200)
    with tempfile.TemporaryDirectory() as tmp:
        server = GovernorServer(Path(tmp) / "main", policy=POLICY)
        try:
            revoke_to_dead(server, 5 if args.quick else 30)
        finally:
            server.stop()
        lease_expiry(Path(tmp), 2 if args.quick else 5)
        big = GovernorServer(Path(tmp) / "leases", policy=ROOT / "bench" / "policies" / "leases")
        try:
            many_leases(big, 100 if args.quick else 1000, 5 if args.quick else 20)
        finally:
            big.stop()


if __name__ == "__main__":
    main()
