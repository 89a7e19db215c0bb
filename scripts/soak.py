#!/usr/bin/env python
"""The soak of tests/conformance/test_soak.py, on demand and for as long as asked.

    python scripts/soak.py                  # 60 s on one SQLite governor
    python scripts/soak.py --long           # 10 minutes
    python scripts/soak.py --seconds 300 --postgres   # three nodes over one PostgreSQL
    python scripts/soak.py --seed 1234      # repeat a run's randomness

Real ``proctor serve`` processes, real ``proctor run`` executions, concurrent
authorizations, revocations (executions, warrants, principals) and direct appends
(``tests/soak_support.py``); then the governors are stopped and the log is held to its
invariants (``tests/log_invariants.py``), to ``proctor log verify`` and to every answer a
client acknowledged. Prints a table of what ran and what held; exits 1 if anything broke
(each problem is printed), 0 otherwise. ``--postgres`` starts a throwaway PostgreSQL
cluster as the tests do (``tests/pg_support.py``: Debian's initdb and pg_ctl).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from soak_support import FIGURE_COLUMNS, Soaked, pg_soak_nodes, soak, soak_seed, sqlite_soak_node  # noqa: E402

LONG_SECONDS = 600.0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=60.0, help="seconds of load (default 60)")
    length.add_argument("--long", action="store_true", help=f"{LONG_SECONDS:.0f} seconds of load")
    parser.add_argument("--postgres", action="store_true", help="three governor nodes over one PostgreSQL")
    parser.add_argument(
        "--seed", type=int, default=None, help="the random seed (default: PROCTOR_SOAK_SEED, else new)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the data directories (their path is printed)"
    )
    return parser.parse_args(argv)


def _table(soaked: Soaked) -> str:
    cells = [[str(c) for c in FIGURE_COLUMNS], [str(c) for c in soaked.figures()]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(FIGURE_COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _problems(soaked: Soaked) -> list[str]:
    found = [f"answer: {f}" for f in soaked.result.failures]
    found += [f"log: {v}" for v in soaked.report.violations]
    found += [f"still running: {e}" for e in soaked.report.open_executions]
    found += [f"ledger: {p}" for p in soaked.ledger_problems]
    if soaked.verify_status != 0:
        found.append(
            f"proctor log verify exited {soaked.verify_status}: {soaked.verify_out}{soaked.verify_err}"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    """Run one soak; print its table and any problem; 0 if everything held."""
    args = _arguments(argv)
    seconds = LONG_SECONDS if args.long else args.seconds
    seed = args.seed if args.seed is not None else soak_seed()
    root = Path(tempfile.mkdtemp(prefix="proctor-soak-"))
    cluster = None
    where = "PostgreSQL, 3 nodes" if args.postgres else "SQLite"
    print(f"soak: {seconds:.0f} s on {where}, seed {seed}, in {root}")
    try:
        if args.postgres:
            from pg_support import PgCluster  # noqa: PLC0415 - only with --postgres

            cluster = PgCluster()
            cluster.start()
            servers = pg_soak_nodes(root, cluster.dsn(cluster.create_database()), 3)
            soaked = soak(servers, "postgresql", root, seconds=seconds, seed=seed)
        else:
            soaked = soak(sqlite_soak_node(root), "sqlite", root, seconds=seconds, seed=seed)
    finally:
        if cluster is not None:
            cluster.remove()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(_table(soaked))
    for line in soaked.summary():
        print(f"  {line}")
    problems = _problems(soaked)
    for problem in problems:
        print(f"PROBLEM {problem}")
    print("everything held" if not problems else f"{len(problems)} problem(s); {soaked.context()}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
