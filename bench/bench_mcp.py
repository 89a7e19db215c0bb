"""The latency ``proctor gateway mcp`` adds to a ``tools/call`` over a direct call to the
same upstream, on stdio and on streamable HTTP.

    python bench/bench_mcp.py [--calls N] [--batch B] [--quick] [--baseline-src DIR]

Rows, each one agent session driven by the official ``mcp`` SDK client:

- stdio: ``read_text_file`` of the real ``@modelcontextprotocol/server-filesystem``,
  direct (the server as a child) and through the gateway (``proctor gateway mcp ... --
  node mcp-server-filesystem DIR``);
- streamable HTTP: ``echo`` of the real ``@modelcontextprotocol/server-everything``
  (``streamableHttp``), direct and through the gateway (``--listen --upstream-url``);
- the upstream's ``tools/list`` on stdio, direct: the re-list the gateway makes before
  each call to check the definition is still the one authorized.

Through the gateway each call is: the tools/list re-check and the signed authorize round
trip (Cedar with the server's tool catalog, the decision and the warrant in the durable
log) at once, the warrant verified locally, the execution started (a durable log
commit), the call forwarded; the finish (a third commit) follows the answer. The
governor is a real ``proctor serve`` on this machine. Rows are interleaved batch by
batch so that drift in the machine's load falls on all of them; "added p50" is a row's
p50 minus the direct row's on the same transport. Prints a table; stops on any call that
does not succeed (a refusal would look fast).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gov_server import GovernorServer, cli, free_port  # noqa: E402
from mcp_support import gateway_argv, mcp_server, wait_port  # noqa: E402

POLICY = (
    '@id("bench-read")\npermit(principal, action == Proctor::Action::"mcp.call", '
    'resource == Proctor::Tool::"fs/read_text_file");\n'
    '@id("bench-echo")\npermit(principal, action == Proctor::Action::"mcp.call", '
    'resource == Proctor::Tool::"ev/echo");\n'
)


LIFTED = (  # one agent session calls back to back: the default request rates (200 signed
    # requests, 100 authorizations a second per principal) would refuse it, not slow it
    "[quotas.principals.alice]\nmax_requests_per_second = 100000\n"
    "max_authorizations_per_second = 100000\nmax_starts_per_minute = 1000000\n"
)


@asynccontextmanager
async def stdio_session(argv: list[str], env: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ) | (env or {}))
    with open(os.devnull, "w") as err:
        async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


@asynccontextmanager
async def http_session(url: str) -> AsyncIterator[ClientSession]:
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(args: argparse.Namespace, work: Path) -> None:
    data = work / "root"
    data.mkdir()
    (data / "notes.txt").write_text("benchmark file\n")
    fs = [*mcp_server("filesystem"), str(data)]
    ev = mcp_server("everything")
    policy = work / "policy"
    policy.mkdir()
    (policy / "fs.tools.json").write_text(cli("gateway", "mcp", "schema", "--name", "fs", "--", *fs).stdout)
    (policy / "ev.tools.json").write_text(cli("gateway", "mcp", "schema", "--name", "ev", "--", *ev).stdout)
    (policy / "bench.cedar").write_text(POLICY)
    governor = GovernorServer(work / "gov", policy=policy, config=LIFTED)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_port, gw_port = free_port(), free_port()
        devnull = open(os.devnull, "w")  # noqa: SIM115 - closed with the processes
        procs.append(
            subprocess.Popen(
                [*ev, "streamableHttp"],
                env=os.environ | {"PORT": str(up_port)},
                stdout=devnull,
                stderr=devnull,
            )
        )
        gateway = [
            sys.executable, "-m", "proctor", "gateway", "mcp", "--server", governor.url,
            "--key", str(governor.key), "--name", "ev", "--listen", f"127.0.0.1:{gw_port}",
            "--upstream-url", f"http://127.0.0.1:{up_port}/mcp",
        ]  # fmt: skip
        procs.append(subprocess.Popen(gateway, stderr=devnull))
        wait_port(up_port)
        wait_port(gw_port)
        path = str(data / "notes.txt")
        async with AsyncExitStack() as stack:
            sessions = {
                "stdio direct": await stack.enter_async_context(stdio_session(fs)),
                "stdio gateway": await stack.enter_async_context(
                    stdio_session(gateway_argv(governor.url, governor.key, "fs", fs))
                ),
                **(
                    {
                        "stdio gateway (baseline)": await stack.enter_async_context(
                            stdio_session(
                                gateway_argv(governor.url, governor.key, "fs", fs),
                                {"PYTHONPATH": str(Path(args.baseline_src).resolve())},
                            )
                        )
                    }
                    if args.baseline_src
                    else {}
                ),
                "http direct": await stack.enter_async_context(
                    http_session(f"http://127.0.0.1:{up_port}/mcp")
                ),
                "http gateway": await stack.enter_async_context(
                    http_session(f"http://127.0.0.1:{gw_port}/mcp")
                ),
            }

            def call(row: str) -> Callable[[], Awaitable[object]]:
                session = sessions[row]
                if row.startswith("stdio"):
                    return lambda: session.call_tool("read_text_file", {"path": path})
                return lambda: session.call_tool("echo", {"message": "bench"})

            rows: dict[str, Callable[[], Awaitable[object]]] = {row: call(row) for row in sessions}
            rows["stdio tools/list (re-check)"] = sessions["stdio direct"].list_tools
            times: dict[str, list[float]] = {row: [] for row in rows}
            for fn in rows.values():  # warm up
                for _ in range(args.warmup):
                    await fn()
            done = 0
            while done < args.calls:
                for row, fn in rows.items():
                    for _ in range(args.batch):
                        began = time.perf_counter()
                        result = await fn()
                        times[row].append((time.perf_counter() - began) * 1000)
                        if getattr(result, "is_error", False):
                            raise SystemExit(f"{row}: the call did not succeed: {result}")
                done += args.batch
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
        governor.stop()
    base = {
        "stdio": statistics.median(times["stdio direct"]),
        "http": statistics.median(times["http direct"]),
    }
    print(
        f"\n## MCP gateway: added latency per tools/call ({args.calls} calls per row, batches of {args.batch})"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}\n"
    )
    print("| row | p50 ms | p90 ms | p99 ms | added p50 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row, values in times.items():
        transport = row.split()[0]
        added = (
            "" if "direct" in row or "list" in row else f"{statistics.median(values) - base[transport]:.2f}"
        )
        print(
            f"| {row} | {statistics.median(values):.2f} | {quantile(values, 0.9):.2f} | "
            f"{quantile(values, 0.99):.2f} | {added} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per row")
    parser.add_argument("--batch", type=int, default=50, help="calls per row before the next row's")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls per row first")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 40 calls per row")
    parser.add_argument(
        "--baseline-src",
        default="",
        help="another revision's src/ (git archive REV src | tar -x -C DIR): one more stdio row, "
        "its gateway, against the same governor, interleaved with the others",
    )
    args = parser.parse_args()
    if args.quick:
        args.calls, args.batch, args.warmup = 40, 10, 5
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as tmp:
        anyio.run(bench, args, Path(tmp))


if __name__ == "__main__":
    main()
