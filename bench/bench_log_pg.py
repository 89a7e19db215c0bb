"""Durable log appends on PostgreSQL beside SQLite, in one run.

Run from the repository root (PostgreSQL's server binaries must be installed:
``scripts/setup`` does it; as root the server runs as the ``postgres`` user)::

    python bench/bench_log_pg.py                 # about a minute
    python bench/bench_log_pg.py --events 65536 --threads 1,8,32

It starts a throwaway PostgreSQL cluster (``initdb`` in a temporary directory, loopback,
``fsync = on``, ``synchronous_commit = on``: the tests' cluster, ``tests/pg_support.py``),
then for each backend:

- ``append_many(256)``: batches of 256 events, one transaction and one signed checkpoint
  per batch (the log's own group of one caller);
- ``N threads x append``: N threads each appending single events in a loop; the log's
  writer takes every waiting append into one commit (group commit, ADR 0003).

Events are the ~580-byte ``decision`` events of ``bench_log.py``. Every row ends with
``Log.verify_all()`` on the result, and the commit count is the new rows of the
checkpoints table (one per commit). The issue's target for PostgreSQL with group commit:
at least 20,000 durable appends a second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from bench.lib import cpu_s, decision_event, pct  # noqa: E402
from pg_support import PgCluster  # noqa: E402
from proctor.lineage.log import Log  # noqa: E402
from proctor.note import generate_signer  # noqa: E402
from proctor.store.base import LogStore  # noqa: E402
from proctor.store.postgres import PostgresLogStore  # noqa: E402
from proctor.store.sqlite import SQLiteStore  # noqa: E402


def _batches(log: Log, events: int) -> None:
    for start in range(0, events, 256):
        log.append_many([decision_event(i) for i in range(start, min(events, start + 256))])


def _threads(n: int) -> Callable[[Log, int], list[float]]:
    def run(log: Log, events: int) -> list[float]:
        per = events // n
        lat: list[float] = []
        lock = threading.Lock()

        def work(t: int) -> None:
            mine = []
            for i in range(per):
                t0 = time.perf_counter()
                log.append(decision_event(t * per + i))
                mine.append((time.perf_counter() - t0) * 1e6)
            with lock:
                lat.extend(mine)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return lat

    return run


def measure(
    make: Callable[[], LogStore], workload: Callable[[Log, int], Any], events: int
) -> dict[str, float]:
    store = make()
    log = Log(store, generate_signer("bench.example/pg"))
    try:
        log.start_writing()
        before = sum(1 for _ in store.checkpoints())
        c0, t0 = cpu_s(), time.perf_counter()
        result = workload(log, events)
        elapsed, cpu = time.perf_counter() - t0, cpu_s() - c0
        size = log.size
        commits = sum(1 for _ in store.checkpoints()) - before
        log.verify_all()
    finally:
        log.close()
    lat = result if isinstance(result, list) else []
    return {
        "events": size,
        "per_s": size / elapsed,
        "cpu_us": cpu / size * 1e6,
        "commits": commits,
        "batch": size / max(1, commits),
        "p50": pct(lat, 50) if lat else float("nan"),
        "p99": pct(lat, 99) if lat else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=32768)
    parser.add_argument("--threads", default="1,8,32")
    args = parser.parse_args()
    print(f"command: python bench/bench_log_pg.py --events {args.events} --threads {args.threads}")
    cluster = PgCluster()
    cluster.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-log-pg-"))
    try:
        counter = iter(range(1_000_000))

        def sqlite() -> LogStore:
            return SQLiteStore(tmp / f"log{next(counter)}.db", create=True)

        def postgres() -> LogStore:
            return PostgresLogStore(cluster.dsn(cluster.create_database()), create=True, pool_size=4)

        workloads: list[tuple[str, Callable[[Log, int], Any]]] = [("append_many(256)", _batches)]
        workloads += [(f"{n} threads x append", _threads(n)) for n in map(int, args.threads.split(","))]
        header = (
            f"{'backend':10} {'workload':22} {'events':>8} {'appends/s':>10} {'CPU µs/ev':>10} "
            f"{'commits':>8} {'avg batch':>9} {'p50 µs':>8} {'p99 µs':>8}"
        )
        print(header)
        print("-" * len(header))
        for name, workload in workloads:
            for backend, make in (("sqlite", sqlite), ("postgresql", postgres)):
                events = args.events if "threads" not in name or "32" in name or "8" in name else 2000
                r = measure(make, workload, events)
                print(
                    f"{backend:10} {name:22} {r['events']:>8,} {r['per_s']:>10,.0f} {r['cpu_us']:>10.1f} "
                    f"{r['commits']:>8,} {r['batch']:>9.1f} {r['p50']:>8,.0f} {r['p99']:>8,.0f}"
                )
    finally:
        cluster.stop()
        cluster.remove()


if __name__ == "__main__":
    main()
