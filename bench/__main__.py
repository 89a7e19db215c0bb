"""``python -m bench``: the benchmark suite, every figure beside a yardstick or a peer.

    python -m bench                       # --quick: every member, small ranges (CI smoke size)
    python -m bench --full                # the full ranges (tens of minutes; 10M-entry log cached)
    python -m bench --only policy,log     # some members (their records replace theirs in results.json)
    python -m bench --out /tmp/r.json     # write elsewhere (the docs and plots are left alone)
    python -m bench --report              # only regenerate docs/benchmarks.md and the plots
    python -m bench --list                # the members

Prints one table, writes ``bench/results.json`` and, when that is where it wrote,
regenerates ``docs/benchmarks.md`` and ``docs/images/bench-*.png`` from it.
Exits 1 if a member failed (its failure is in the table as "n/a (failed: ...)").
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.lib import RESULTS, TESTS, Context, Record, print_records, read_results, write_results

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # the test suite's governor server (tests/gov_server.py)

from bench.suite import MEMBERS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="small ranges (default)"
    )
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="the full ranges")
    ap.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="these members (comma-separated)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    ap.add_argument("--report", action="store_true", help="only regenerate the docs and plots from --out")
    ap.add_argument("--no-report", action="store_true", help="do not regenerate the docs and plots")
    ap.add_argument("--list", action="store_true", help="list the members and exit")
    args = ap.parse_args(argv)
    names = [m.name for m in MEMBERS]
    if args.list:
        for m in MEMBERS:
            print(f"{m.name:<10} {m.title}")
        return 0
    if args.report:
        from bench import report  # noqa: PLC0415 - matplotlib only when reporting

        report.render(read_results(args.out))
        return 0
    wanted = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        ap.error(f"unknown member(s) {unknown}; expected some of {names}")
    selected = [m for m in MEMBERS if m.name in wanted]
    records, failed = run(selected, args.mode or "quick")
    merged = write_results(args.out, records, names)
    print_records(records)
    print(f"wrote {args.out} ({len(merged)} records)", file=sys.stderr)
    if args.out.resolve() == RESULTS.resolve() and not args.no_report:
        from bench import report  # noqa: PLC0415

        report.render(merged)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def run(members: list, mode: str) -> tuple[list[Record], list[str]]:  # type: ignore[type-arg]
    """Run ``members`` under one progress bar; a member that raises becomes one failed record."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    records: list[Record] = []
    failed: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("bench", total=len(members))
        for member in members:
            work = Path(tempfile.mkdtemp(prefix=f"proctor-bench-{member.name}-"))

            def status(message: str) -> None:
                progress.update(task, description=message[:90])

            ctx = Context(member, mode, work, status)
            started = time.monotonic()
            try:
                records += member.run(ctx)
            except Exception as e:
                progress.console.print(traceback.format_exc())
                failed.append(member.name)
                records.append(ctx.unavailable(member.title, "", f"failed: {type(e).__name__}: {e}"[:300],
                                               group="failed"))  # fmt: skip
            finally:
                shutil.rmtree(work, ignore_errors=True)
            progress.console.print(f"{member.name}: {time.monotonic() - started:.0f} s")
            progress.advance(task)
    return records, failed


if __name__ == "__main__":
    sys.exit(main())
