"""Lease renewal latency against the number of concurrent leases (10 → 10,000).

A real ``proctor serve`` on loopback holds N executions of ``true`` (authorized and
started over HTTP, as ``proctor run`` does, with a 600 s lease so that none lapses
while N grows). Renewals (``POST /v1/executions/ID/renew``, RFC 9421-signed) are then
sent at a fixed rate, round-robin over the N leases, on a few keep-alive connections:
the rate stays the same at every N, so the curve shows what holding more leases costs a
renewal, not what more renewals per second cost (``workers`` measures throughput).

The yardstick, on the same connections in the same seconds: ``GET /healthz`` (one in
ten requests), the governor's HTTP floor. A renewal that answers anything but
``{"ok": true}`` stops the member.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from bench.lib import Context, Member, RawClient, Record

LIFTED = (
    "[quotas.principals.alice]\nmax_running = 100000\nmax_starts_per_minute = 100000\n"
    "max_requests_per_second = 100000\nmax_authorizations_per_second = 100000\n"
)


def policy(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "leases.cedar").write_text(
        '@id("bench-leases")\n@lease_ttl_s("600")\n'
        'permit (principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/usr/bin/true")\n'
        'when { principal.role == "dev" };\n'
    )
    return directory


def start_leases(url: str, key_path: Path, count: int, threads: int = 6) -> list[str]:
    """``count`` executions started (authorize, then start), from ``threads`` threads."""
    from proctor.authorization.keys import PrincipalKey  # noqa: PLC0415
    from proctor.client import GovernorClient  # noqa: PLC0415
    from proctor.enforcement.measure import measure  # noqa: PLC0415

    true = measure(["true"])
    key = PrincipalKey.load(key_path)
    started: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(numbers: range) -> None:
        try:
            client = GovernorClient(url, key, timeout=60)
            for n in numbers:
                argv = ["true", str(n)]
                answer = client.authorize({"action": "exec", "resource": true.executable, "argv": argv,
                                           "executable_digest": true.executable_digest})  # fmt: skip
                body = {"warrant": answer["warrant"]["token"], "action": "exec", "resource": true.executable,
                        "argv": argv, "measurement": true.to_json()}  # fmt: skip
                ex = str(client.json("POST", "/v1/executions", body)["execution"])
                with lock:
                    started.append(ex)
        except BaseException as e:
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(range(i, count, threads),)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return started


async def renew_at_rate(
    url: str, key: object, leases: list[str], rate: float, seconds: float, connections: int
) -> tuple[list[float], list[float], float]:
    """Renewals at ``rate``/s for ``seconds`` (every 10th request a ``GET /healthz``):
    (renew ms, healthz ms, the achieved request rate)."""
    renew: list[float] = []
    health: list[float] = []
    counter = [0]
    interval = connections / rate
    end = time.monotonic() + seconds
    body = b'{"integrity": "ok"}'

    async def connection(slot: int) -> None:
        client = RawClient(url, key)
        due = time.monotonic() + slot * interval / connections
        try:
            while due < end:
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                due += interval
                n = counter[0]
                counter[0] += 1
                t0 = time.perf_counter()
                if n % 10 == 9:
                    status, answer = await client.request("GET", "/healthz", signed=False)
                    health.append((time.perf_counter() - t0) * 1000)
                    if status != 200:
                        raise AssertionError(f"/healthz answered {status}")
                    continue
                lease = leases[n % len(leases)]
                status, answer = await client.request("POST", f"/v1/executions/{lease}/renew", body)
                renew.append((time.perf_counter() - t0) * 1000)
                if status != 200 or b'"ok":true' not in answer.replace(b" ", b""):
                    raise AssertionError(f"renewal of {lease} refused ({status}): {answer[:300]!r}")
        finally:
            await client.close()

    t0 = time.monotonic()
    await asyncio.gather(*(connection(i) for i in range(connections)))
    return renew, health, counter[0] / (time.monotonic() - t0)


def measure(ctx: Context) -> list[Record]:
    from gov_server import GovernorServer  # noqa: PLC0415 - tests/ is on the path
    from proctor.authorization.keys import PrincipalKey  # noqa: PLC0415

    counts: list[int] = ctx.config["leases"]
    rate, seconds = ctx.config["rate"], ctx.config["seconds"]
    ctx.status("starting a governor")
    server = GovernorServer(ctx.work / "gov", policy=policy(ctx.work / "policy"), config=LIFTED)
    out: list[Record] = []
    try:
        key = PrincipalKey.load(server.key)
        leases: list[str] = []
        for n in counts:
            ctx.status(f"starting leases: {len(leases):,} → {n:,}")
            t0 = time.monotonic()
            leases += start_leases(server.url, server.key, n - len(leases))
            ramp = time.monotonic() - t0
            ctx.status(f"{n:,} leases: renewals at {rate}/s for {seconds} s (started in {ramp:.0f} s)")
            renew, health, achieved = asyncio.run(renew_at_rate(server.url, key, leases, rate, seconds, 4))
            group = f"{n:,} leases held"
            curve = {"curve": "renew-vs-leases", "x": n}
            out.append(ctx.record(f"lease renewal, {n:,} leases (signed, {achieved:.0f} req/s)", renew, "ms",
                                  group=group, series="proctor lease renewal", **curve))  # fmt: skip
            out.append(ctx.record(f"GET /healthz, same connections, {n:,} leases", health, "ms", group=group,
                                  series="GET /healthz (yardstick)", baseline=True, **curve))  # fmt: skip
    finally:
        server.stop()
    return out


MEMBER = Member(
    name="leases",
    title="Lease renewal latency vs concurrent leases",
    quick={"leases": [10, 100, 500], "rate": 200, "seconds": 2.0},
    full={"leases": [10, 100, 1000, 10000], "rate": 300, "seconds": 15.0},
    run=measure,
    meaning=(
        "Every running execution renews its lease every third of its TTL; a governor that holds "
        "more leases must not renew each more slowly. The renewal re-verifies the warrant and "
        "records nothing in the log unless something changed."
    ),
)
