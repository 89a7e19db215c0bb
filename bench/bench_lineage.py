"""The lineage explorer on a 1,000,000-event log: first-page server time.

Builds (once; cached under ``.bench/lineage-<N>``) a data directory whose log holds N
events appended straight through the log's batch API (``Log.append_many``, not HTTP):
executions of 1000 principals, each a ``decision``, ``execution.started``,
``execution.completed`` (linked by ``parent``) and a denied ``decision``, 10 ms
apart. Then it fills the explorer's index (timed: the rebuild cost after a deletion),
starts ``proctor serve`` on it and measures, over keep-alive HTTP, p50/p95 of:

- ``GET /healthz`` (the yardstick: the same server's cheapest answer);
- ``GET /lineage`` (the first page, read from the log, no index);
- ``GET /lineage?principal=...`` (a search through the index, every row re-read and
  re-checked against the log) and ``?type=...&before=...`` (a deep filtered page);
- ``GET /lineage?from=..&to=..`` (a time range in the middle of the log);
- ``GET /lineage/executions/{id}`` (an execution's timeline and ancestry).

The first request after start (the index opened and checked against the log) is
reported on its own. Run from the repository root::

    .venv/bin/python bench/bench_lineage.py              # 1,000,000 events
    .venv/bin/python bench/bench_lineage.py --events 100000 --samples 50
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

if __package__ in (
    None,
    "",
):  # run as a file (python bench/bench_lineage.py): the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.lib import pct
from proctor.console.lineage_index import INDEX_FILE, LineageIndex
from proctor.governor.service import initialize
from proctor.lineage.events import Event
from proctor.lineage.log import Log
from proctor.lineage.merkle import leaf_hash

ROOT = Path(__file__).resolve().parent.parent
START = 0.0
"""Unix time of the first synthetic event: just after ``proctor init``'s own events (the
log's clock never goes back, so the synthetic times must follow those)."""
BATCH = 4000


def stamp(i: int) -> str:
    """The time of event ``i``: 10 ms apart."""
    when = datetime.fromtimestamp(START + i / 100, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def unit(n: int, first: int) -> list[Event]:
    """Execution ``n``'s four events, the first at log index ``first``."""
    who = f"agent-{n % 1000:03d}"
    decision = Event.from_dict(
        {"v": 1, "type": "decision", "time": stamp(first), "principal": who, "decision": "allow",
         "request": {"action": "exec", "resource": "/usr/bin/pg_dump"}, "reason": "allowed by dev-exec",
         "bundle": "sha256:" + "ef" * 32, "policies": ["dev-exec"]}
    )  # fmt: skip
    started = Event.from_dict(
        {"v": 1, "type": "execution.started", "time": stamp(first + 1), "principal": who,
         "execution": f"ex_{n:07d}", "warrant": f"wr_{n:07d}", "zone": "default",
         "parent": {"index": first, "leaf_hash": base64.b64encode(leaf_hash(decision.raw)).decode()}}
    )  # fmt: skip
    completed = Event.from_dict(
        {"v": 1, "type": "execution.completed", "time": stamp(first + 2), "execution": f"ex_{n:07d}",
         "exit_status": 0, "duration_ms": 12,
         "parent": {"index": first + 1, "leaf_hash": base64.b64encode(leaf_hash(started.raw)).decode()}}
    )  # fmt: skip
    denied = Event.from_dict(
        {"v": 1, "type": "decision", "time": stamp(first + 3), "principal": who, "decision": "deny",
         "request": {"action": "exec", "resource": "/usr/bin/touch"}, "reason": "by forbid policy no-touch"}
    )  # fmt: skip
    return [decision, started, completed, denied]


def build(data: Path, events: int) -> dict[str, float]:
    """The cached data directory: the log of ``events`` events and its index."""
    marker = data / "bench-lineage.json"
    if marker.exists():
        return dict(json.loads(marker.read_text()))
    if data.exists():
        shutil.rmtree(data)
    data.parent.mkdir(parents=True, exist_ok=True)
    initialize(data, origin="bench.example/lineage")
    global START  # noqa: PLW0603 - set once, before any event is made
    START = float(int(time.time()) + 2)
    took: dict[str, float] = {"start": START}
    with Log.open(data, batch_size=BATCH) as log:
        base = log.size
        t0 = time.perf_counter()
        n = 0
        while log.size < base + events:
            batch: list[Event] = []
            while len(batch) < BATCH and log.size + len(batch) < base + events:
                batch += unit(n, log.size + len(batch))
                n += 1
            log.append_many(batch)
            if log.size // 100_000 != (log.size - len(batch)) // 100_000:
                print(f"  appended {log.size:,}", file=sys.stderr)
        took["append_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = LineageIndex(data / INDEX_FILE, log)
        index.catch_up()
        index.close()
        took["index_s"] = time.perf_counter() - t0
        took["size"] = log.size
    marker.write_text(json.dumps(took))
    return took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proctor", "serve", "--data", str(data), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("proctor serve did not start")


def measure(client: httpx.Client, path: str, samples: int) -> dict[str, Any]:
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{path} answered {answer.status_code}: {answer.text[:300]}")
    return {"path": path, "p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    data = ROOT / ".bench" / f"lineage-{args.events}"
    print(f"building or reusing {data} ...", file=sys.stderr)
    built = build(data, args.events)
    global START  # noqa: PLW0603 - the cached log's
    START = built["start"]
    size = int(built["size"])
    units = size // 4
    mid = units // 2
    paths = [
        ("yardstick", "/healthz"),
        ("first page", "/lineage"),
        ("principal search", "/lineage?principal=agent-042"),
        ("type, deep page", f"/lineage?type=execution.completed&before={size // 3}"),
        ("time range (mid-log)", f"/lineage?from={stamp(size // 2)[:19]}&to={stamp(size // 2 + 5000)[:19]}"),
        ("execution search", f"/lineage?execution=ex_{mid:07d}"),
        ("execution page", f"/lineage/executions/ex_{mid:07d}"),
        ("old page (no index)", "/lineage?before=1000"),
    ]
    proc, url = serve(data)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            client.get("/healthz")
            t0 = time.perf_counter()
            first = client.get("/lineage?principal=agent-007")
            cold = (time.perf_counter() - t0) * 1000
            if first.status_code != 200:
                raise SystemExit(f"first search answered {first.status_code}")
            results = [{"what": what, **measure(client, path, args.samples)} for what, path in paths]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    out = {"events": size, "built": built, "cold_first_search_ms": cold, "results": results,
           "cpus": os.cpu_count(), "load": os.getloadavg()}  # fmt: skip
    print(f"log: {size:,} events; appended in {built['append_s']:.0f} s, indexed in {built['index_s']:.0f} s "
          f"({size / built['index_s']:,.0f} leaves/s)")  # fmt: skip
    load = os.getloadavg()[0]
    print(f"first search after start (index opened and checked): {cold:.1f} ms; load {load:.1f}")
    print(f"{'what':24} {'p50 ms':>8} {'p95 ms':>8}  path")
    for r in results:
        print(f"{r['what']:24} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f}  {r['path']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
