"""What every benchmark shares: timing, percentiles, the machine, result records, the
terminal table with its progress bar, and writing ``results.json``.

A suite member (``bench/suite/*.py``) is a :class:`Member`: a name, a quick and a full
configuration, and a function that takes a :class:`Context` and returns
:class:`Record` s. Every figure is measured beside a yardstick or a peer in the same run
(its *group*); the table and the report show each figure's ratio to its group's
baseline, because the machine's speed varies about 3x from day to day while ratios
measured side by side hold.

The older stand-alone scripts (``bench/bench_*.py``) import their helpers from here too.

Why one module: the issue asked for one place for what every benchmark repeated (timing,
percentiles, the machine, tables, results); a member imports this one module and nothing
else of the suite's.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import json
import math
import os
import platform
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".bench"
"""Built-once inputs (large logs) and the peers' virtualenvs; gitignored."""
RESULTS = REPO / "bench" / "results.json"
TESTS = REPO / "tests"

__all__ = [
    "CACHE",
    "REPO",
    "RESULTS",
    "TESTS",
    "Context",
    "Member",
    "PeerUnavailable",
    "RawClient",
    "Record",
    "cpu_s",
    "decision_event",
    "ensure_peer",
    "fmt",
    "fmt_int",
    "fmt_ratio",
    "fmt_us",
    "log_progress",
    "machine",
    "pct",
    "print_records",
    "print_table",
    "ratio",
    "read_results",
    "settle",
    "summary",
    "time_calls",
    "tree_cpu_s",
    "version_of",
    "which",
    "write_results",
]


# -- timing ------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of unsorted values (NaN when empty)."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def cpu_s() -> float:
    """User + system CPU seconds of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def settle() -> None:
    """Flush dirty pages so earlier phases' writeback does not land in the next timing."""
    os.sync()
    gc.collect()


def time_calls(
    call: Callable[[int], object], *, samples: int, seconds: float, warmup: int = 0, unit: float = 1e-6
) -> list[float]:
    """Durations of ``call(i)`` for i = 0, 1, ... (``perf_counter_ns`` around each), after
    ``warmup`` untimed calls: at most ``samples`` of them, and no more once ``seconds`` of
    timed calls have passed (at least 3). In units of ``unit`` seconds (µs by default)."""
    for i in range(warmup):
        call(i)
    gc.collect()
    clock = time.perf_counter_ns
    out: list[float] = []
    budget = seconds * 1e9
    spent = 0
    scale = 1e-9 / unit
    for i in range(samples):
        t0 = clock()
        call(i)
        dt = clock() - t0
        out.append(dt * scale)
        spent += dt
        if spent > budget and len(out) >= 3:
            break
    return out


def summary(values: Sequence[float]) -> tuple[float, float, int]:
    """(median, nearest-rank p99, count)."""
    if not values:
        return float("nan"), float("nan"), 0
    return statistics.median(values), pct(values, 99), len(values)


def decision_event(n: int, principal: str = "alice") -> dict[str, Any]:
    """A ~580-byte ``decision`` event like the governor's (the log benchmarks' workload)."""
    return {
        "v": 1,
        "type": "decision",
        "time": "2026-12-03T13:00:00Z",
        "request": "sha256:" + "ab" * 32,
        "principal": principal,
        "action": "exec",
        "resource": "/usr/bin/pg_dump",
        "args": "sha256:" + "cd" * 32,
        "decision": "allow",
        "policies": ["policy0", "policy1"],
        "obligations": [],
        "bundle": "sha256:" + "ef" * 32,
        "eval_us": 123,
        "n": n,
        "pad": "x" * 180,
    }


# -- the machine ---------------------------------------------------------------------------


def version_of(dist: str) -> str:
    """The installed version of ``dist``, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _first(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine() -> dict[str, Any]:
    """What a figure was measured on, now: the CPU, the load average (other work on the
    machine), versions, and the repository's commit."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    mem = _first("/proc/meminfo", "MemTotal")
    if mem != "unknown":
        mem = f"{int(mem.split()[0]) / 1024 / 1024:.1f} GiB"
    return {
        "cpu": _first("/proc/cpuinfo", "model name"),
        "nproc": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cedarpy": version_of("cedarpy"),
        "cryptography": version_of("cryptography"),
        "load": [round(x, 2) for x in os.getloadavg()],
        "commit": head + (" (src modified)" if dirty else ""),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# -- records ---------------------------------------------------------------------------------


@dataclass
class Record:
    """One figure: a median and p99 over ``samples`` measurements, in ``unit``.

    ``group`` names the side-by-side comparison it belongs to; one record of each group is
    its ``baseline`` (the yardstick or the peer) that the others' ratios are taken to.
    ``peer`` names the outside software a record measures ("agent-governance-toolkit
    4.1.0"); ``None`` for proctor's own figures and plain yardsticks. ``curve`` and ``x``
    place it on a scale plot. A figure that could not be measured has ``median`` None and
    says why in ``note`` ("n/a (why)" in the table): never silently dropped.
    """

    name: str
    unit: str
    median: float | None
    p99: float | None
    samples: int
    member: str = ""
    group: str = ""
    series: str = ""
    baseline: bool = False
    peer: str | None = None
    higher_is_better: bool = False
    curve: str | None = None
    x: float | None = None
    note: str | None = None
    mode: str = ""
    machine: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as ``results.json`` holds it (NaN as null)."""
        doc = asdict(self)
        for key in ("median", "p99"):
            if isinstance(doc[key], float) and not math.isfinite(doc[key]):
                doc[key] = None
        if doc["peer"] is None:
            del doc["peer"]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Record:
        """A record read back from ``results.json``."""
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})


def ratio(record: Record, records: Iterable[Record]) -> float | None:
    """``record``'s median over its group's baseline median (None if either is missing)."""
    if record.median is None:
        return None
    for other in records:
        if other.group == record.group and other.member == record.member and other.baseline:
            if other.median is None or other.median == 0:
                return None
            return record.median / other.median
    return None


class PeerUnavailable(Exception):  # noqa: N818 - a reason, reported as "n/a (why)"
    """A peer or yardstick could not be installed or started; the message says why."""


@dataclass
class Member:
    """One benchmark of the suite.

    ``run`` measures with ``quick`` or ``full`` (the context's ``config``) and returns its
    records; ``meaning`` is what its figures mean for a user (the report prints it).
    """

    name: str
    title: str
    quick: dict[str, Any]
    full: dict[str, Any]
    run: Callable[[Context], list[Record]]
    meaning: str


class Context:
    """What a member gets: its configuration, a scratch directory, the cache directory,
    a progress line, and a record factory stamping member, mode and machine."""

    def __init__(
        self, member: Member, mode: str, work: Path, status: Callable[[str], None] | None = None
    ) -> None:
        self.member = member
        self.mode = mode
        self.config: dict[str, Any] = dict(member.quick if mode == "quick" else member.full)
        self.work = work
        self.cache = CACHE
        self.machine = machine()
        self._status = status or (lambda msg: print(f"  .. {msg}", file=sys.stderr, flush=True))

    def status(self, message: str) -> None:
        """Show what is being measured now."""
        self._status(f"{self.member.name}: {message}")

    def record(
        self, name: str, values: Sequence[float] | None, unit: str, *, group: str, **kw: Any
    ) -> Record:
        """A record of ``values`` (median, p99, count), or of ``kw['median']`` if given."""
        if values is not None:
            median, p99, n = summary(values)
            kw.setdefault("median", median)
            kw.setdefault("p99", p99)
            kw.setdefault("samples", n)
        kw.setdefault("p99", None)
        kw.setdefault("samples", 1)
        kw.setdefault("series", name)
        return Record(
            name=name,
            unit=unit,
            group=group,
            member=self.member.name,
            mode=self.mode,
            machine=self.machine,
            **kw,
        )

    def unavailable(self, name: str, unit: str, why: str, *, group: str, **kw: Any) -> Record:
        """The record of a figure that could not be measured, and why."""
        kw.setdefault("series", name)
        return Record(
            name=name,
            unit=unit,
            median=None,
            p99=None,
            samples=0,
            group=group,
            member=self.member.name,
            mode=self.mode,
            machine=self.machine,
            note=f"n/a ({why})",
            **kw,
        )


# -- peers installed on demand -----------------------------------------------------------------

PEERS: dict[str, str] = {
    "agent-governance-toolkit": "agent-governance-toolkit[core]==4.1.0",
    "mcp-airlock": "mcp-airlock==0.4.1",
    "mcp-zero-trust-layer": "mcp-zero-trust-layer==0.6.0",
}
"""Peers whose dependencies cannot share proctor's pinned ``.venv``, each installed on
first use into a virtualenv of its own under ``.bench/peers/``, pinned. The
agent-governance-toolkit's core pins ``cryptography<50`` (proctor pins 50.0.2); the MCP
gateways need other Starlette/FastAPI ranges."""


def ensure_peer(name: str) -> Path:
    """The ``bin`` directory of ``name``'s own virtualenv, created and filled on first use.

    Raises:
        PeerUnavailable: ``name`` is unknown, or its installation failed (the message
            has pip's last lines).
    """
    if name not in PEERS:
        raise PeerUnavailable(f"expected one of {sorted(PEERS)}, found {name!r}")
    venv = CACHE / "peers" / name
    stamp = venv / "installed.txt"
    wanted = PEERS[name]
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return venv / "bin"
    print(f"installing {wanted} into {venv} (bench-only) ...", file=sys.stderr)
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--clear", str(venv)], check=False, capture_output=True, text=True
    )
    if made.returncode != 0:
        raise PeerUnavailable(f"python -m venv failed: {made.stderr.strip()[-300:]}")
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", wanted],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if "WARNING" not in line][-3:]
        raise PeerUnavailable(f"pip install {wanted} failed: {' '.join(tail)[-300:]}")
    stamp.write_text(wanted + "\n")
    return venv / "bin"


def which(tool: str) -> str:
    """The path of ``tool`` on PATH.

    Raises:
        PeerUnavailable: it is not installed.
    """
    path = shutil.which(tool)
    if path is None:
        raise PeerUnavailable(f"{tool} is not installed")
    return path


# -- a lean HTTP client for load ----------------------------------------------------------------


def request_bytes(host: str, key: Any, method: str, path: str, body: bytes, *, signed: bool) -> bytes:
    """One HTTP/1.1 request as the bytes to send, RFC 9421-signed with ``key`` when
    ``signed`` (what :class:`RawClient` and :class:`SocketClient` write)."""
    from proctor.authorization.requests import sign_request  # noqa: PLC0415

    head = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    if body or method == "POST":
        head += ["content-type: application/json", f"content-length: {len(body)}"]
    if signed:
        headers = sign_request(method, path, body, key, now=int(time.time()))
        head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: a signed request costs it
    about a signature and two socket calls, so that a load generator on the same two cores
    measures the governor rather than an HTTP client library."""

    def __init__(self, url: str, key: Any = None) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.key = host, int(port), key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", *, signed: bool = True
    ) -> tuple[int, bytes]:
        """Send one request (RFC 9421-signed with ``key`` when ``signed``); (status, body)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        if self.reader is None:
            raise ConnectionError("not connected")
        self.writer.write(
            request_bytes(f"{self.host}:{self.port}", self.key, method, path, body, signed=signed)
        )
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    async def close(self) -> None:
        """Close the connection."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


_IDLE_S = 2.0
"""A kept connection idle longer than this is closed before the next request (the
governor's server lets one go after 5 s idle; proctor's own client after 3 s)."""


class SocketClient:
    """:class:`RawClient`'s requests from blocking code: one keep-alive socket, a signed
    request written in one ``send`` (``TCP_NODELAY``), the answer read by its
    ``content-length``. What a request costs proctor's side, without an HTTP library's."""

    def __init__(self, url: str, key: Any = None) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.key = host, int(port), key
        self._sock: socket.socket | None = None
        self._buf = b""
        self._used = 0.0

    def request(self, method: str, path: str, body: bytes = b"", *, signed: bool = True) -> tuple[int, bytes]:
        """Send one request (RFC 9421-signed with ``key`` when ``signed``); (status, body)."""
        if self._sock is not None and time.monotonic() - self._used > _IDLE_S:
            self.close()  # the server may be closing it: never send on a connection that old
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=30)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buf = b""
        self._sock.sendall(
            request_bytes(f"{self.host}:{self.port}", self.key, method, path, body, signed=signed)
        )
        while b"\r\n\r\n" not in self._buf:
            self._read()
        raw_head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(self._buf) < length:
            self._read()
        answer, self._buf = self._buf[:length], self._buf[length:]
        self._used = time.monotonic()
        return int(lines[0].split()[1]), answer

    def _read(self) -> None:
        if self._sock is None:
            raise ConnectionError("not connected")
        chunk = self._sock.recv(65536)
        if not chunk:
            self.close()
            raise ConnectionError("the server closed the connection")
        self._buf += chunk

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its live descendants (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            total += stats[current][1]
        todo += [child for child, (parent, _) in stats.items() if parent == current]
    return total


# -- output ------------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    """A figure with 3 significant digits, thousands separated; "-" for none."""
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"


def fmt_ratio(r: float) -> str:
    """A ratio to a baseline: "1,390x", "8.34x", "0.0008x"."""
    if r >= 100:
        return f"{r:,.0f}x"
    return f"{r:.3g}x" if r >= 0.01 else f"{r:.2g}x"


def fmt_us(v: float | None) -> str:
    """Microseconds for the stand-alone scripts' text tables: no decimals from 100 up."""
    if v is None or v != v:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def fmt_int(v: float | None) -> str:
    """An integer with thousands separators ("-" for none)."""
    return "-" if v is None or v != v else f"{v:,.0f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A plain text table (the stand-alone scripts' output): first column left, others right."""
    widths = [
        max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
        for i in range(len(header))
    ]
    print()
    print(title)
    line = "  ".join(
        h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for r in rows:
        print(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        )
    sys.stdout.flush()


def log_progress(msg: str) -> None:
    """A progress line on stderr (the stand-alone scripts)."""
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def _ratio_text(record: Record, records: Sequence[Record]) -> str:
    if record.baseline:
        return "= 1"
    r = ratio(record, records)
    return "-" if r is None else fmt_ratio(r)


def print_records(records: Sequence[Record], console: Any = None) -> None:
    """The results table on the terminal (rich), one section per member."""
    from rich.console import Console  # noqa: PLC0415 - the table only
    from rich.table import Table  # noqa: PLC0415

    console = console or Console()
    members: dict[str, list[Record]] = {}
    for r in records:
        members.setdefault(r.member, []).append(r)
    for member, rows in members.items():
        table = Table(title=f"{member} ({rows[0].mode})", title_justify="left", show_lines=False)
        for column, justify in (("group", "left"), ("figure", "left"), ("median", "right"),
                                ("p99", "right"), ("unit", "left"), ("n", "right"), ("ratio", "right")):  # fmt: skip
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        order: dict[str, int] = {}
        for r in rows:
            order.setdefault(r.group, len(order))
        last = None
        for r in sorted(rows, key=lambda r: order[r.group]):
            group = r.group if r.group != last else ""
            last = r.group
            if r.median is None:
                table.add_row(group, r.name, r.note or "n/a", "", r.unit, "0", "")
                continue
            table.add_row(
                group, r.name, fmt(r.median), fmt(r.p99), r.unit, str(r.samples), _ratio_text(r, rows)
            )
        console.print(table)


def write_results(path: Path, records: Sequence[Record], order: Sequence[str]) -> list[Record]:
    """Merge ``records`` into ``path``: the members they come from replace their earlier
    records; other members' records stay (a ``--only`` run updates its members only).
    Returns every record now in the file, in the suite's member order."""
    kept: list[Record] = []
    if path.exists():
        doc = json.loads(path.read_text())
        ran = {r.member for r in records}
        kept = [Record.from_json(d) for d in doc.get("records", []) if d.get("member") not in ran]
    merged = kept + list(records)
    rank = {name: i for i, name in enumerate(order)}
    merged.sort(key=lambda r: rank.get(r.member, len(rank)))
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "about": "python -m bench: figures measured side by side; see docs/benchmarks.md",
        "records": [r.to_json() for r in merged],
    }
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return merged


def read_results(path: Path) -> list[Record]:
    """The records of ``path``."""
    return [Record.from_json(d) for d in json.loads(path.read_text())["records"]]
