"""Several writers on one log: durable appends/s with 1, 2 and 3 writer processes that
take turns with the shared sequencer lock (ADR 0015), beside one exclusive writer.

Run from the repository root::

    python bench/bench_writers.py              # SQLite, 1-3 writers, ~30 s
    python bench/bench_writers.py --events 4000 --threads 8

Each writer process opens the data directory's log (``Log.open(shared=True)``, or
exclusive for the yardstick row) and runs ``--threads`` threads that each append single
events in a loop until the process has appended its share. Events are ~580-byte
``decision`` events as in ``bench_log.py``. The log stays durable (SQLite WAL,
``synchronous=FULL``, one signed checkpoint per commit). After the run the whole log is
verified (``Log.verify_all``) and checked for gaps and duplicates.

Columns: appends/s over the wall time from the start signal to the last process's end;
p50/p99 of one ``append`` call (µs, all threads of all processes); lock turns (how many
times a writer took the sequencer lock, from the count of commits that followed a
reload) are not counted here; "vs 1 writer" is the ratio to the 1-writer shared row of
the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.lib import decision_event, pct
from proctor.lineage.log import Log


def _writer(data: str, writer: int, count: int, threads: int, shared: bool, start: Any, out: Any) -> None:
    log = Log.open(data, shared=shared)
    if not shared:
        log.start_writing()
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = count // threads

    def work(t: int) -> None:
        mine = []
        for i in range(per_thread):
            t0 = time.perf_counter()
            log.append(decision_event(t * per_thread + i, f"writer-{writer}"))
            mine.append((time.perf_counter() - t0) * 1e6)
        with lock:
            latencies.extend(mine)

    start.wait()
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    log.close()
    out.put((writer, time.time(), latencies))


def run(writers: int, events: int, threads: int, shared: bool) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-writers-") as tmp:
        data = Path(tmp) / "d"
        Log.initialize(data, origin="bench.example/writers").close()
        start, out = ctx.Event(), ctx.Queue()
        share = events // writers
        procs = [
            ctx.Process(target=_writer, args=(str(data), w, share, threads, shared, start, out))
            for w in range(writers)
        ]
        for p in procs:
            p.start()
        time.sleep(1.5)  # let every process import and open the log
        t0 = time.time()
        start.set()
        results = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(60)
        elapsed = max(r[1] for r in results) - t0
        latencies = [x for r in results for x in r[2]]
        with Log.open(data) as log:
            report = log.verify_all()
            size = log.size
        total = (share // threads) * threads * writers
        if size != total or not report.ok:
            raise SystemExit(f"expected {total} entries in one verified tree, found {size}")
        return {
            "appends": total,
            "seconds": elapsed,
            "per_s": total / elapsed,
            "p50": pct(latencies, 50),
            "p99": pct(latencies, 99),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6000, help="appends per row (all writers)")
    parser.add_argument("--threads", type=int, default=8, help="appending threads per writer process")
    parser.add_argument("--writers", default="1,2,3", help="writer process counts (shared rows)")
    args = parser.parse_args()
    print(f"command: python bench/bench_writers.py --events {args.events} --threads {args.threads}")
    rows = [("exclusive, 1 writer (yardstick)", run(1, args.events, args.threads, shared=False))]
    base = None
    for n in (int(x) for x in args.writers.split(",")):
        row = run(n, args.events, args.threads, shared=True)
        base = base or row["per_s"]
        rows.append((f"shared, {n} writer{'s' if n > 1 else ''}", row))
    header = (
        f"{'writers':34} {'appends':>8} {'appends/s':>10} {'p50 µs':>8} {'p99 µs':>9} {'vs 1 shared':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, r in rows:
        ratio = r["per_s"] / base if base and name.startswith("shared") else float("nan")
        print(
            f"{name:34} {r['appends']:>8,} {r['per_s']:>10,.0f} {r['p50']:>8,.0f} {r['p99']:>9,.0f} "
            f"{ratio:>12.2f}"
        )


if __name__ == "__main__":
    main()
