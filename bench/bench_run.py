"""Benchmarks for governed execution (`proctor run`): start overhead, revoke → dead,
lease expiry → dead, and many concurrent leases on one governor.

    python bench/bench_run.py [--quick]

Everything runs on loopback against a real `proctor serve` in a child process, with
real contained child processes. Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
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
from proctor.authorization.requests import sign_request  # noqa: E402
from proctor.client import GovernorClient  # noqa: E402
from proctor.enforcement.containment import Containment  # noqa: E402
from proctor.enforcement.measure import measure, prepare  # noqa: E402

POLICY = ROOT / "tests" / "integration" / "policies" / "run"
_TRUE = measure(["true"])  # an exec request binds the measured executable
TRUE, TRUE_DIGEST = _TRUE.executable, _TRUE.executable_digest


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


def _run_sleeper(server: GovernorServer, marker: str) -> subprocess.Popen[str]:
    """``proctor run`` of a Python process that sleeps a minute, ``marker`` in its argv."""
    command = [sys.executable, "-m", "proctor", "run", "--server", server.url, "--key", str(server.key)]
    command += ["--", sys.executable, "-c", "import time; time.sleep(60)", marker]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


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
    call_ms: list[float] = []
    alice = GovernorClient(server.url, PrincipalKey.load(server.key))
    for i in range(n):
        t = time.perf_counter()
        alice.authorize(
            {"action": "exec", "resource": TRUE, "argv": ["true"], "executable_digest": TRUE_DIGEST}
        )
        auth_ms.append((time.perf_counter() - t) * 1000)
        marker = f"bench-{os.getpid()}-{i}"
        proc = _run_sleeper(server, marker)
        ex = _started(proc)
        time.sleep(0.3)
        pids = _pid_of(marker)
        t = time.perf_counter()
        admin.json("POST", "/v1/revocations", {"kind": "execution", "target": ex, "reason": "bench"})
        call_ms.append((time.perf_counter() - t) * 1000)
        while any(alive(p) for p in pids):
            time.sleep(0.0002)
        dead_ms.append((time.perf_counter() - t) * 1000)
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    print(row("authorize round trip over HTTP (signed)", auth_ms))
    print(row("revoke call → every process of the tree dead", dead_ms))
    print(row("  of which the revocation call (signed, until the answer)", call_ms))


def lease_expiry(root: Path, n: int) -> None:
    header("3. Governor frozen (SIGSTOP) → tree dead; lease TTL 2 s")
    late: list[float] = []
    for i in range(n):
        server = GovernorServer(root / f"lease{i}", policy=POLICY)
        marker = f"lease-{os.getpid()}-{i}"
        proc = _run_sleeper(server, marker)
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


class _RawClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: a signed renewal costs
    it about a signature and two socket calls, so that the load generator (on the same
    two cores) measures the governor rather than an HTTP client library."""

    def __init__(self, host: str, port: int, key: PrincipalKey) -> None:
        self.host, self.port, self.key = host, port, key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        headers = sign_request("POST", path, body, self.key, now=int(time.time()))
        head = [f"POST {path} HTTP/1.1", f"host: {self.host}:{self.port}", "content-type: application/json",
                f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)


def many_leases(server: GovernorServer, count: int, seconds: float) -> None:
    header(f"4. {count} concurrent leases, TTL 3 s (renew every 1 s), {seconds:.0f} s steady state")
    key = PrincipalKey.load(server.key)
    assert server.proc is not None

    def new_execution(c: GovernorClient, n: int) -> str:
        argv = ["true", str(n)]
        answer = c.authorize(
            {"action": "exec", "resource": TRUE, "argv": argv, "executable_digest": TRUE_DIGEST}
        )
        body = {
            "warrant": answer["warrant"]["token"],
            "action": "exec",
            "resource": TRUE,
            "argv": argv,
            "measurement": measure(["true"]).to_json(),
        }
        return str(c.json("POST", "/v1/executions", body)["execution"])

    # 8 threads start the executions while 16 connections renew each one every second
    # from 1 s after its start; only renewals after the ramp-up are measured. A renewal
    # that answers anything but {"ok": true} counts as refused.
    started: list[tuple[str, float]] = []
    lock = threading.Lock()

    def starter(numbers: list[int]) -> None:
        c = GovernorClient(server.url, key)
        for n in numbers:
            ex = new_execution(c, n)
            with lock:
                started.append((ex, time.monotonic()))

    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    late: list[float] = []
    refused = [0]
    renewals = [0]
    window: list[float] = [0.0, 0.0]  # measured from the end of the ramp-up, for `seconds`

    async def connection(slot: int) -> None:
        client = _RawClient(host, int(port), key)
        schedule: list[tuple[float, str]] = []
        taken = 0
        body = b'{"integrity": "ok"}'
        while True:
            with lock:
                mine = started[taken:]
                taken = len(started)
            for i, (ex, at) in enumerate(mine, start=taken - len(mine)):
                if i % 16 == slot:
                    heapq.heappush(schedule, (at + 1.0, ex))
            now = time.monotonic()
            if window[1] and now >= window[1]:
                return
            if not schedule or schedule[0][0] > now:
                await asyncio.sleep(min(0.005, schedule[0][0] - now) if schedule else 0.005)
                continue
            due, ex = heapq.heappop(schedule)
            measuring = window[0] and due >= window[0]
            if measuring:
                late.append((now - due) * 1000)
            t = time.perf_counter()
            status, answer = await client.post(f"/v1/executions/{ex}/renew", body)
            if measuring:
                latencies.append((time.perf_counter() - t) * 1000)
                renewals[0] += 1
                if status != 200 or b'"ok":true' not in answer.replace(b" ", b""):
                    refused[0] += 1
            heapq.heappush(schedule, (due + 1.0, ex))

    async def run() -> tuple[float, float]:
        ramp = time.monotonic()
        starters = [threading.Thread(target=starter, args=(list(range(i, count, 8)),)) for i in range(8)]
        for t in starters:
            t.start()
        conns = asyncio.gather(*(connection(i) for i in range(16)))
        while any(t.is_alive() for t in starters):
            await asyncio.sleep(0.05)
        window[0] = time.monotonic()
        window[1] = window[0] + seconds
        cpus[0], cpus[1] = _cpu(server.proc.pid), _own_cpu()  # type: ignore[union-attr]
        await conns
        return window[0] - ramp, time.monotonic() - window[0]

    cpus = [0.0, 0.0]
    ramp_s, elapsed = asyncio.run(run())
    cpu = _cpu(server.proc.pid) - cpus[0]
    me = _own_cpu() - cpus[1]
    print(row("renew latency (steady state)", latencies))
    print(row("renewal sent late by (load generator behind)", late or [0.0]))
    print(
        f"started {len(started)} of {count} leases in {ramp_s:.1f} s; renewals/s {renewals[0] / elapsed:,.0f} "
        f"(needed {count}/s); refused {refused[0]}; governor CPU {cpu / elapsed * 100:.0f}% of one core; "
        f"load generator CPU {me / elapsed * 100:.0f}% of one core"
    )


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().split(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--leases", type=int, help="leases for section 4 (default 1000; 100 quick)")
    parser.add_argument("--sections", default="1,2,3,4", help="which sections to run (default all)")
    parser.add_argument("--revokes", type=int, help="revocations for section 2 (default 30; 5 quick)")
    args = parser.parse_args()
    print(
        f"proctor run benchmarks — {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    sections = set(args.sections.split(","))
    if "1" in sections:
        start_overhead(50 if args.quick else 200)
    with tempfile.TemporaryDirectory() as tmp:
        if "2" in sections:
            server = GovernorServer(Path(tmp) / "main", policy=POLICY)
            try:
                revoke_to_dead(server, args.revokes or (5 if args.quick else 30))
            finally:
                server.stop()
        if "3" in sections:
            lease_expiry(Path(tmp), 2 if args.quick else 5)
        if "4" in sections:
            # One principal holds every lease here: lift its quotas (config.toml).
            lifted = (
                "[quotas.principals.alice]\nmax_running = 100000\nmax_starts_per_minute = 100000\n"
                "max_requests_per_second = 100000\nmax_authorizations_per_second = 100000\n"
            )
            big = GovernorServer(
                Path(tmp) / "leases", policy=ROOT / "bench" / "policies" / "leases", config=lifted
            )
            try:
                many_leases(big, args.leases or (100 if args.quick else 1000), 5 if args.quick else 20)
            finally:
                big.stop()


if __name__ == "__main__":
    main()
