"""Authorizations per second against worker processes, over HTTP on loopback.

Servers, each a real ``proctor serve`` on a fresh data directory (the test suite's
``tests/gov_server.py``; the basic bundle; the principal's request rates lifted): the
exclusive ``proctor serve`` (one process: the yardstick) and ``proctor serve --workers N``
(N shared governor processes behind one address, ADR 0016). They run side by side and are
loaded in turn, round by round, so that the machine's other load falls on all of them.

The load: pre-signed ``POST /v1/authorize`` requests (RFC 9421, a fresh nonce each,
signed before the clock starts) sent by this process on keep-alive connections, as
many in flight as connections; every answer must be an allow. The same connections
then send ``GET /healthz`` for as long: the HTTP floor of the same server. On two cores
the load generator takes its share of the CPU from the servers, as a client on the same
host would.

Also, one request at a time on the exclusive server: the signed authorize round trip
beside the ``GET /healthz`` round trip.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import orjson

from bench.lib import REPO, Context, Member, RawClient, Record
from proctor.authorization.keys import PrincipalKey

BASIC = REPO / "tests" / "integration" / "policies" / "basic"
LIFTED = (
    "[quotas.principals.alice]\nmax_requests_per_second = 100000\nmax_authorizations_per_second = 100000\n"
)
EXE = "sha256:" + "e" * 64
BODY = orjson.dumps({"action": "exec", "resource": "/usr/bin/pg_dump", "argv": ["pg_dump", "db1"],
                     "executable_digest": EXE})  # fmt: skip


def presign(key: PrincipalKey, count: int) -> list[bytes]:
    """``count`` signed authorize requests, each its own nonce, as the bytes to send."""
    from proctor.authorization.requests import sign_request  # noqa: PLC0415

    now = int(time.time())
    out = []
    for _ in range(count):
        headers = sign_request("POST", "/v1/authorize", BODY, key, now=now)
        head = ["POST /v1/authorize HTTP/1.1", "host: bench", "content-type: application/json",
                f"content-length: {len(BODY)}", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
        out.append(("\r\n".join(head) + "\r\n\r\n").encode() + BODY)
    return out


def machine_cpu() -> tuple[float, float] | None:
    """Seconds of CPU the whole machine spent busy and idle since boot (``/proc/stat``'s
    first line: user, nice, system, irq, softirq, steal are busy; idle and iowait are not);
    None where there is no ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, (idle + iowait) / tick


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return int(status.split()[1]), await reader.readexactly(length)


async def load(url: str, requests: list[bytes] | None, seconds: float, connections: int) -> float:
    """Requests per second: the pre-signed ``requests`` (each sent once; every answer an
    allow), or ``GET /healthz`` when None; closed loop, ``connections`` in flight."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    done = [0]
    queue = iter(requests) if requests is not None else None
    health = f"GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
    end = time.monotonic() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.monotonic() < end:
                payload = health if queue is None else next(queue, None)
                if payload is None:
                    return
                writer.write(payload)
                status, answer = await _answer(reader)
                if status != 200 or (queue is not None and b'"allow":true' not in answer.replace(b" ", b"")):
                    raise AssertionError(f"expected an allow, got {status}: {answer[:300]!r}")
                done[0] += 1
        finally:
            writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return done[0] / (time.monotonic() - t0)


async def round_trips(url: str, key: PrincipalKey, count: int) -> tuple[list[float], list[float]]:
    """``count`` signed authorize round trips and ``count`` ``GET /healthz``, alternating (ms)."""
    client = RawClient(url, key)
    authz: list[float] = []
    health: list[float] = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            status, answer = await client.request("POST", "/v1/authorize", BODY)
            authz.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise AssertionError(f"authorize answered {status}: {answer[:300]!r}")
            t0 = time.perf_counter()
            status, _ = await client.request("GET", "/healthz", signed=False)
            health.append((time.perf_counter() - t0) * 1000)
    finally:
        await client.close()
    return authz, health


def measure(ctx: Context) -> list[Record]:
    from gov_server import GovernorServer  # noqa: PLC0415 - tests/ is on the path
    from proctor.authorization.keys import PrincipalKey  # noqa: PLC0415

    cfg = ctx.config
    variants: dict[str, tuple[str, ...]] = {"proctor serve (exclusive)": ()}
    for n in cfg["workers"]:
        variants[f"proctor serve --workers {n}"] = ("--workers", str(n))
    servers: dict[str, GovernorServer] = {}
    authz: dict[str, list[float]] = {name: [] for name in variants}
    health: dict[str, list[float]] = {name: [] for name in variants}
    cpu_per: dict[str, list[float]] = {name: [] for name in variants}
    idle_cores: dict[str, list[float]] = {name: [] for name in variants}
    out: list[Record] = []
    try:
        for name, args in variants.items():
            ctx.status(f"starting {name}")
            servers[name] = GovernorServer(ctx.work / name.replace(" ", "_"), policy=BASIC, config=LIFTED,
                                           serve_args=args)  # fmt: skip
        time.sleep(1.0)  # every worker up, not only the first that answered
        key = PrincipalKey.load(next(iter(servers.values())).key)
        keys = {name: PrincipalKey.load(s.key) for name, s in servers.items()}
        ctx.status("one request at a time")
        single, floor = asyncio.run(round_trips(servers["proctor serve (exclusive)"].url, key, cfg["single"]))
        out.append(ctx.record("signed authorize round trip (one at a time)", single, "ms",
                              group="one request at a time"))  # fmt: skip
        out.append(
            ctx.record("GET /healthz round trip", floor, "ms", group="one request at a time", baseline=True)
        )
        for r in range(cfg["rounds"]):
            for name, server in servers.items():
                ctx.status(f"round {r + 1}/{cfg['rounds']}: {name}")
                signed = presign(keys[name], int(cfg["cap"] * cfg["seconds"]))
                before, t0 = machine_cpu(), time.monotonic()
                rate = asyncio.run(load(server.url, signed, cfg["seconds"], cfg["connections"]))
                after, wall = machine_cpu(), time.monotonic() - t0
                authz[name].append(rate)
                if before is not None and after is not None:
                    busy, idle = after[0] - before[0], after[1] - before[1]
                    cpu_per[name].append(busy / wall / rate * 1000)  # ms of CPU per authorization
                    idle_cores[name].append(idle / wall)
                health[name].append(
                    asyncio.run(load(server.url, None, cfg["seconds"] / 2, cfg["connections"]))
                )
    finally:
        for server in servers.values():
            server.stop()
    for name, args in variants.items():
        n = int(args[1]) if args else None
        curve = {"curve": "authz-vs-workers", "x": n} if n is not None else {}
        base = not args
        out.append(ctx.record(f"authorizations/s, {name}", None, "/s", group="authorizations/s (signed, all allowed)",
                              median=statistics.median(authz[name]), samples=len(authz[name]), baseline=base,
                              higher_is_better=True, series="authorizations/s", **curve))  # fmt: skip
        if cpu_per[name]:  # what the throughput cost the whole machine, the load generator included
            out.append(ctx.record(f"machine CPU per authorization, {name}", None, "ms CPU",
                                  group="machine CPU per authorization (every process, the client's included)",
                                  median=statistics.median(cpu_per[name]), samples=len(cpu_per[name]),
                                  baseline=base))  # fmt: skip
            out.append(ctx.record(f"cores idle under the load, {name}", None, "cores",
                                  group=f"cores idle under the load (of {os.cpu_count()})",
                                  median=statistics.median(idle_cores[name]), samples=len(idle_cores[name]),
                                  baseline=base))  # fmt: skip
        out.append(ctx.record(f"GET /healthz/s, {name}", None, "/s", group="GET /healthz/s (HTTP floor)",
                              median=statistics.median(health[name]), samples=len(health[name]), baseline=base,
                              higher_is_better=True, series="GET /healthz/s (yardstick)", **curve))  # fmt: skip
    return out


MEMBER = Member(
    name="workers",
    title="Authorizations/s vs worker processes",
    quick={"workers": [2], "rounds": 1, "seconds": 1.5, "connections": 16, "cap": 4000, "single": 50},
    full={
        "workers": [1, 2, 3, 4],
        "rounds": 3,
        "seconds": 8.0,
        "connections": 32,
        "cap": 2000,
        "single": 1000,
    },
    run=measure,
    meaning=(
        "How many governed calls one host can authorize each second. Each authorization verifies a "
        "signed request, decides, mints a warrant and commits the decision to the durable log; "
        "`--workers N` runs N governor processes on one store, so the CPU-bound part can spread over "
        "cores while the log's commits take turns. Here the load generator, and other work, share the "
        "same two cores: a ratio below 1 says more processes did not help on this machine at that load "
        '(docs/benchmarks-history.md, "Orchestration", has `--workers` on an idle one, with `wrk`). '
        "The machine's CPU per authorization (every process, the load generator's included) and the "
        "cores left idle while the load ran say which limit a variant met: the cores divided by the CPU "
        "per authorization is the most this machine could do at that cost; idle cores mean the "
        "processes were waiting (for the log's turn, for a commit), not computing."
    ),
)
