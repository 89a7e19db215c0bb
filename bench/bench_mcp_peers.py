"""MCP gateways side by side: the latency each adds to a ``tools/call`` over a direct call
to the real ``@modelcontextprotocol/server-filesystem``.

    python -m bench.bench_mcp_peers [--calls N] [--quick] [--batch B]

(``python -m bench --only mcp`` runs the same rows as a suite member, :mod:`bench.suite.mcp`.)

Rows, each one agent session driven by the official ``mcp`` SDK client (``.venv``):

- stdio: direct (the server as a child), ``mcp-zero-trust-layer`` (``mcpzt wrap``), proctor
  (``proctor gateway mcp ... -- node mcp-server-filesystem DIR`` against a real
  ``proctor serve``: signed authorize round trip, Cedar with the server's tool catalog,
  the durable log commit, the execution start and finish per call).
- streamable HTTP: direct (the stdio server behind :func:`mcp_peers.run_bridge`; in both
  protocol eras), ``mcp-airlock`` (HTTP only), ``mcp-zero-trust-layer`` (``mcpzt run``) and
  proctor (``--listen ... --upstream-url``), all in front of that same bridge.

Every gateway is configured to allow ``read_text_file`` under the served directory and
nothing else. Each session is opened and warmed up first, then ``--calls`` calls per row are
timed in rounds of ``--batch``, the rows interleaved round by round (A B C D A B C D ...) so
that drift in the machine's other load falls on all of them. Then each row alone makes
``--calls`` more calls back to back, for the CPU its own processes spend per call (Linux
``/proc``; the client's is not counted, nor the HTTP bridge's). "added p50" is a row's p50
minus the p50 of the direct row on the same transport and protocol revision. Peers are
installed on first use into ``.bench/peers/`` (:mod:`bench.mcp_peers`); one that cannot be
is reported as a note. Prints a table; asserts nothing, but stops on any call that does
not succeed (a refusal would look fast).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

if __package__ in (
    None,
    "",
):  # run as a file (python bench/bench_mcp_peers.py): the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import mcp_peers as peers
from bench.lib import TESTS, PeerUnavailable, pct

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
from gov_server import GovernorServer, cli

LIFTED = (  # one agent session calls back to back: the default request rates (200 signed
    # requests, 100 authorizations a second per principal) would refuse it, not slow it
    "[quotas.principals.alice]\nmax_requests_per_second = 100000\n"
    "max_authorizations_per_second = 100000\nmax_starts_per_minute = 1000000\n"
)

RELAY = "pass-through relay"
"""The gateway's own stdio transport copying messages, nothing governed (bench.mcp_relay)."""
GOVERNOR_ALONE = "governor round trip"
"""The gateway's authorize-and-start round trip alone, without agent, pipes or upstream."""

CONTENT = "proctor bench " * 70 + "\n"  # ~1 KiB read per call


@dataclass
class Row:
    """One gateway on one transport: how to open an agent session to it."""

    name: str
    transport: str
    open: Callable[[], AbstractAsyncContextManager[Client]]
    roots: list[int] = field(default_factory=list)
    """The processes (with their descendants) whose CPU is this row's: a stdio row's are
    the children its session spawns; an HTTP row's, the gateway's (and its governor's)."""
    spawns: bool = False
    protocol: str = ""
    call: Callable[[Any, str], Awaitable[float]] | None = None
    """How one timed call is made on what ``open`` yields (None: ``tools/call`` on an MCP
    session); a yardstick that is not an MCP session brings its own."""
    ms: list[float] = field(default_factory=list)
    cpu_ms: float | None = None
    cpu_parts: list[float] = field(default_factory=list)  # per root, in ``roots`` order


def stdio_session(argv: list[str], errlog: Path) -> Callable[[], AbstractAsyncContextManager[Client]]:
    """An agent session over stdio with ``argv`` as its server (handshake era: the
    filesystem server speaks only that)."""

    @asynccontextmanager
    async def open_() -> AsyncIterator[Client]:
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
        with errlog.open("a") as err:
            async with Client(stdio_client(params, errlog=err), mode="legacy", cache=None) as client:
                yield client

    return open_


def http_session(
    url: str, mode: str = "auto", headers: dict[str, str] | None = None
) -> Callable[[], AbstractAsyncContextManager[Client]]:
    """An agent session over streamable HTTP (``mode``: the SDK's, ``auto`` probes)."""

    @asynccontextmanager
    async def open_() -> AsyncIterator[Client]:
        async with (
            httpx2.AsyncClient(headers=headers or {}, timeout=60) as http,
            Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client,
        ):
            yield client

    return open_


def proctor_policy(directory: Path, allowed: Path, upstream: list[str]) -> Path:
    """The bundle: ``read_text_file`` under ``allowed`` permitted, with the server's live
    tool catalog (``proctor gateway mcp schema``) so a policy naming an unknown tool or
    argument would be refused at push."""
    directory.mkdir(parents=True)
    (directory / "fs.tools.json").write_text(
        cli("gateway", "mcp", "schema", "--name", "filesystem", "--", *upstream).stdout
    )
    (directory / "fs.cedar").write_text(
        '@id("fs-read")\n'
        'permit(principal, action == Proctor::Action::"mcp.call", '
        'resource == Proctor::Tool::"filesystem/read_text_file")\n'
        "when { context.tool has read_text_file && "
        f'context.tool.read_text_file.path like "{allowed}/*" }};\n'
    )
    return directory


def gateway_argv(governor: GovernorServer, *tail: str) -> list[str]:
    """``proctor gateway mcp`` as the governor's principal alice, naming the server ``filesystem``."""
    return [sys.executable, "-m", "proctor", "gateway", "mcp", "--server", governor.url, "--key", str(governor.key),
            "--name", "filesystem", *tail]  # fmt: skip


class GovernorCalls:
    """The governor's half of a stdio gateway's call, made as the gateway makes it: one
    ``authorize_start`` on a worker thread (the signed round trip that decides, mints the
    warrant and records the start durably; the warrant and the signed start verified
    here), and the finish on another thread once the "upstream" has answered, while the
    next call goes on. No agent, no upstream, no pipes: what every governed call waits
    for whatever the transport."""

    def __init__(self, governor: GovernorServer, catalog: Path) -> None:
        from proctor.authorization.keys import PrincipalKey  # noqa: PLC0415 - bench only
        from proctor.integrations.mcp.governance import ToolGovernance  # noqa: PLC0415

        key = PrincipalKey.load(governor.key)
        self.calls = ToolGovernance(governor.url, key, enforcer="proctor-gateway/filesystem")
        self.finishes = ToolGovernance(governor.url, key, enforcer="proctor-gateway/filesystem")
        tools = {t["name"]: t for t in json.loads(catalog.read_text())["tools"]}
        self.digest = str(tools["read_text_file"]["definition_digest"])
        self.finishing: threading.Thread | None = None

    async def timed(self, path: str) -> float:
        from proctor.integrations.mcp.governance import Refusal, finish_body  # noqa: PLC0415

        started = time.perf_counter()
        running = await anyio.to_thread.run_sync(
            self.calls.authorize_start, "filesystem/read_text_file", {"path": path}, self.digest
        )
        elapsed = (time.perf_counter() - started) * 1000
        if isinstance(running, Refusal):
            raise SystemExit(f"governor round trip: the call was refused: {running.reason}")
        self.settle()
        body = finish_body({"result": {"content": [], "isError": False}}, running)
        self.finishing = threading.Thread(target=self.finishes.finish, args=(running, body))
        self.finishing.start()
        return elapsed

    def settle(self) -> None:
        if self.finishing is not None:
            self.finishing.join()
            self.finishing = None

    def close(self) -> None:
        self.settle()
        self.calls.close()
        self.finishes.close()


def governor_session(
    governor: GovernorServer, catalog: Path
) -> Callable[[], AbstractAsyncContextManager[Any]]:
    @asynccontextmanager
    async def open_() -> AsyncIterator[GovernorCalls]:
        calls = GovernorCalls(governor, catalog)
        try:
            yield calls
        finally:
            calls.close()

    return open_


async def governor_call(calls: GovernorCalls, path: str) -> float:
    return await calls.timed(path)


def relay_argv(upstream: list[str]) -> list[str]:
    """The gateway's stdio transport with the governance taken out (:mod:`bench.mcp_relay`)."""
    return [sys.executable, "-m", "bench.mcp_relay", "--", *upstream]


def pid_of(server: GovernorServer) -> int:
    """The governor's process id."""
    if server.proc is None:
        raise SystemExit("the governor is not running")
    return server.proc.pid


def proctor_http_available() -> str | None:
    """Why the gateway cannot serve streamable HTTP yet (None: it can)."""
    try:
        import proctor.integrations.mcp.http  # noqa: F401, PLC0415
    except ImportError as e:
        return f"proctor gateway mcp --listen is not built yet ({e})"
    return None


async def call_once(row: Row, client: Any, path: str) -> float:
    if row.call is not None:
        return await row.call(client, path)
    started = time.perf_counter()
    result = await client.call_tool("read_text_file", {"path": path})
    elapsed = (time.perf_counter() - started) * 1000
    text = "".join(c.text for c in result.content if isinstance(c, TextContent))
    if result.is_error or text != CONTENT:
        raise SystemExit(f"{row.name} ({row.transport}): the call did not succeed: {text[:300]!r}")
    return elapsed


def _stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (field 3 on), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def children_of(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (Linux ``/proc``; empty elsewhere)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None and int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def tree_cpu_s(roots: list[int]) -> float:
    """User + system CPU seconds of ``roots`` and all their descendants now."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or (fields := _stat(pid)) is None:
            continue
        seen.add(pid)
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
        todo.extend(children_of(pid))
    return total


async def drive(rows: list[Row], path: str, calls: int, batch: int, warmup: int) -> None:
    async with AsyncExitStack() as stack:
        clients: list[Any] = []
        for row in rows:
            before = children_of(os.getpid())
            client = await stack.enter_async_context(row.open())
            if row.spawns:
                row.roots += sorted(children_of(os.getpid()) - before)
            row.protocol = getattr(client, "protocol_version", "")
            for _ in range(warmup):
                await call_once(row, client, path)
            clients.append(client)
        done = 0
        while done < calls:
            step = min(batch, calls - done)
            for row, client in zip(rows, clients, strict=True):
                for _ in range(step):
                    row.ms.append(await call_once(row, client, path))
            done += step
        # CPU: each row alone, its calls back to back, so that the idle processes' own
        # ticking (a governor, a gateway: about 4 ms/s each here) adds little per call
        for row, client in zip(rows, clients, strict=True):
            if not row.roots:
                continue
            await anyio.sleep(0.3)  # the previous row's trailing work (proctor's finishes) done
            start = [tree_cpu_s([pid]) for pid in row.roots]
            for _ in range(calls):
                await call_once(row, client, path)
            await anyio.sleep(0.3)
            row.cpu_parts = [
                (tree_cpu_s([pid]) - s) * 1000 / calls for pid, s in zip(row.roots, start, strict=True)
            ]
            row.cpu_ms = sum(row.cpu_parts)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(rows: list[Row], notes: list[str], load: tuple[float, ...], pid_names: dict[int, str]) -> None:
    """The table: latency per call, the p50 added over direct, and the CPU the row's own
    processes spent per call (``cpu ms``; the client's is not counted, nor the HTTP
    bridge's, which every HTTP row shares; "added cpu" over the direct stdio server's)."""
    base = {(r.transport, r.protocol): statistics.median(r.ms) for r in rows if r.name == "direct"}
    stdio_cpu = next((r.cpu_ms for r in rows if r.name == "direct" and r.transport == "stdio"), None)
    print(f"\nMCP tools/call read_text_file (~{len(CONTENT)} B), ms per call; n={len(rows[0].ms)} per row")
    print(f"{'gateway':<22} {'transport':<9} {'protocol':<10} {'p50':>7} {'p90':>7} {'p99':>7} "
          f"{'added p50':>9} {'cpu ms':>7} {'added cpu':>9}")  # fmt: skip
    print("-" * 96)
    for r in rows:
        p50 = statistics.median(r.ms)
        yard = base.get((r.transport, r.protocol))
        added = "" if r.name == "direct" or yard is None else f"{p50 - yard:+.2f}"
        if r.name == GOVERNOR_ALONE:  # no call of its own to subtract: all of it is added
            added = f"{p50:+.2f}"
        cpu = "" if r.cpu_ms is None else f"{r.cpu_ms:.2f}"
        extra = r.cpu_ms if r.transport == "http" else None
        if r.transport == "stdio" and r.name != "direct" and r.cpu_ms is not None and stdio_cpu is not None:
            extra = r.cpu_ms - stdio_cpu
        added_cpu = "" if extra is None else f"{extra:+.2f}"
        print(f"{r.name:<22} {r.transport:<9} {r.protocol:<10} {p50:>7.2f} {pct(r.ms, 90):>7.2f} "
              f"{pct(r.ms, 99):>7.2f} {added:>9} {cpu:>7} {added_cpu:>9}")  # fmt: skip
    for r in rows:
        if len(r.cpu_parts) > 1:
            parts = ", ".join(
                f"{pid_names.get(pid, str(pid))} {ms:.2f}"
                for pid, ms in zip(r.roots, r.cpu_parts, strict=True)
            )
            print(f"cpu ms of {r.name} ({r.transport}): {parts}")
    for note in notes:
        print(f"note: {note}")
    print(f"machine: {os.cpu_count()} cpus, {cpu_model()}; load average {load[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")  # fmt: skip


def measure(
    tmp: Path, calls: int, batch: int, warmup: int
) -> tuple[list[Row], list[str], dict[int, str], list[tuple[str, str, str]]]:
    """Start every row's gateway in ``tmp`` and drive them; (rows, notes, process names,
    the (gateway, transport, why) of each row that could not be set up)."""
    allowed = tmp / "root"
    allowed.mkdir()
    (allowed / "notes.txt").write_text(CONTENT)
    upstream = peers.filesystem_argv(allowed)
    errlog = tmp / "agents.err"
    notes: list[str] = []
    missing: list[tuple[str, str, str]] = []
    children: list[peers.Child] = []
    governors: list[GovernorServer] = []
    try:
        policy = proctor_policy(tmp / "policy", allowed, upstream)
        # one each: CPU apart
        governors.append(GovernorServer(tmp / "gov-stdio", policy=policy, config=LIFTED))
        governors.append(GovernorServer(tmp / "gov-http", policy=policy, config=LIFTED))
        governor, governor_http = governors
        rows = [Row("direct", "stdio", stdio_session(upstream, errlog), spawns=True)]
        try:
            zt_argv = peers.zt_stdio_argv(upstream, allowed, tmp / "zt")
            rows.append(Row("mcp-zero-trust-layer", "stdio", stdio_session(zt_argv, errlog), spawns=True))
        except PeerUnavailable as e:
            missing.append(("mcp-zero-trust-layer", "stdio", str(e)))
        rows.append(Row("proctor gateway", "stdio", stdio_session(gateway_argv(governor, "--", *upstream), errlog),
                        [pid_of(governor)], spawns=True))  # fmt: skip
        # Two yardsticks for what any governed stdio call must add (issue 13's floor):
        # being in the path, and the governor's round trip.
        rows.append(Row(RELAY, "stdio", stdio_session(relay_argv(upstream), errlog), spawns=True))
        rows.append(Row(GOVERNOR_ALONE, "stdio", governor_session(governor, policy / "fs.tools.json"),
                        call=governor_call))  # fmt: skip
        notes.append("mcp-airlock has no stdio transport (streamable HTTP only)")
        bridge = peers.start_bridge(upstream, tmp / "bridge")
        children.append(bridge)
        rows += [
            Row("direct", "http", http_session(bridge.url)),
            Row("direct", "http", http_session(bridge.url, mode="legacy")),
        ]
        try:
            airlock = peers.start_airlock(bridge.url, tmp / "airlock")
            children.append(airlock)
            rows.append(Row("mcp-airlock", "http", http_session(airlock.url, headers={"X-Airlock-Principal": "bench"}),
                            [airlock.proc.pid]))  # fmt: skip
        except PeerUnavailable as e:
            missing.append(("mcp-airlock", "http", str(e)))
        try:
            zt = peers.start_zt_http(bridge.url, allowed, tmp / "zt")
            children.append(zt)
            rows.append(Row("mcp-zero-trust-layer", "http", http_session(zt.url), [zt.proc.pid]))
        except PeerUnavailable as e:
            missing.append(("mcp-zero-trust-layer", "http", str(e)))
        why = proctor_http_available()
        if why is None:
            port = peers.free_port()
            listen = f"127.0.0.1:{port}"
            argv = gateway_argv(governor_http, "--listen", listen, "--upstream-url", bridge.url)
            gw = peers.spawn("proctor-http", argv, tmp / "proctor-http")
            children.append(gw)
            peers.wait_port(gw, port)
            url = f"http://{listen}/mcp"
            rows.append(
                Row("proctor gateway", "http", http_session(url), [gw.proc.pid, pid_of(governor_http)])
            )
        else:
            notes.append(f"proctor gateway over streamable HTTP skipped: {why}")
            missing.append(("proctor gateway", "http", why))
        print(f"{len(rows)} rows, {calls} calls each in rounds of {batch}; work dir {tmp}", file=sys.stderr)
        anyio.run(drive, rows, str(allowed / "notes.txt"), calls, batch, warmup)
        names = {pid: "gateway (and its upstream)" for r in rows if r.spawns for pid in r.roots}
        names.update({c.proc.pid: "gateway" for c in children})
        names.update({pid_of(g): "governor" for g in governors})
        return rows, notes, names, missing
    finally:
        for child in reversed(children):
            child.stop()
        for server in governors:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="timed calls per row (default 200)")
    parser.add_argument("--batch", type=int, default=10, help="calls per row per round (default 10)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls per row first (default 20)")
    parser.add_argument("--quick", action="store_true", help="50 calls per row, 5 warm-up")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.warmup = 50, 5
    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mcp-peers-"))
    try:
        rows, notes, names, missing = measure(tmp, args.calls, args.batch, args.warmup)
        notes += [f"{name} ({transport}): n/a ({why})" for name, transport, why in missing]
        report(rows, notes, load, names)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
