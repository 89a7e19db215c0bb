"""Run the fuzz harnesses (tests/fuzz) under atheris, longer than CI does.

    python scripts/fuzz.py [--seconds N] [--only NAME] [--jobs J] [--json] [--crashes DIR]

Each harness runs in its own process (``tests/fuzz/run_harness.py``) for ``--seconds``
(libFuzzer's ``-max_total_time``), ``--jobs`` at a time, starting from its seed corpus
and its regression inputs; what it learns goes to a temporary directory, never into the
corpus. A crash, a failed oracle check or a hang (``-timeout``) is saved under
``tests/fuzz/regressions/<name>/`` (or ``--crashes``) — keep it in git: from then on
``tests/conformance/test_fuzzed_parsers.py`` replays it on every run. Prints one row per
harness: executions (libFuzzer's ``stat::number_of_executed_units``), seconds, crashes;
exits 1 if any harness crashed or did not report its statistics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "tests" / "fuzz"
RUNNER = FUZZ / "run_harness.py"
HARNESSES = (
    "canonical",
    "note",
    "checkpoint",
    "proofs",
    "receipt",
    "warrant",
    "attenuation",
    "signed_request",
    "mcp",
)
"""As ``tests/fuzz/fuzz_support.HARNESSES`` (read without importing proctor)."""
MAX_LEN = {"receipt": 1 << 16, "signed_request": 1 << 14}
"""Longest input libFuzzer makes, per harness (default 8 KiB): the receipt seeds are ~16 KB."""
EXECUTED = re.compile(r"^stat::number_of_executed_units:\s*(\d+)\s*$", re.MULTILINE)
ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass(frozen=True)
class Result:
    """One harness's run."""

    name: str
    executions: int | None
    seconds: float
    crashes: list[str]
    returncode: int
    tail: str

    @property
    def ok(self) -> bool:
        """No crash, exited cleanly, and reported how many inputs it ran."""
        return not self.crashes and self.returncode == 0 and self.executions is not None


def run(name: str, *, seconds: int, crashes: Path, timeout: int = 10, rss_mb: int = 2048) -> Result:
    """Fuzz one harness for ``seconds``; crash inputs go to ``crashes/<name>/``.

    Args:
        name: the harness (``tests/fuzz/fuzz_<name>.py``).
        seconds: libFuzzer's ``-max_total_time``.
        crashes: where crash inputs are saved, one directory per harness.
        timeout: seconds one input may take before it counts as a hang.
        rss_mb: libFuzzer's memory limit.
    """
    out = crashes / name
    out.mkdir(parents=True, exist_ok=True)
    seeds = [d for d in (FUZZ / "corpus" / name, FUZZ / "regressions" / name) if d.is_dir()]
    env = dict(os.environ, PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as learned:
        argv = [
            sys.executable,
            str(RUNNER),
            name,
            f"-max_total_time={seconds}",
            f"-timeout={timeout}",
            f"-rss_limit_mb={rss_mb}",
            f"-max_len={MAX_LEN.get(name, 1 << 13)}",
            "-print_final_stats=1",
            f"-artifact_prefix={out}/",
            learned,  # libFuzzer writes new inputs into the first directory only
            *map(str, seeds),
        ]
        started = time.monotonic()
        try:
            proc = subprocess.run(  # noqa: PLW1510 -- the exit status is judged below
                argv,
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=seconds + 120,
            )
            output, returncode = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:  # libFuzzer itself hung: killed, reported
            partial = (e.stdout or b"") + (e.stderr or b"")
            text = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
            output = f"{text}\nkilled: still running {seconds + 120} s after start"
            returncode = -9
        elapsed = time.monotonic() - started
    found = EXECUTED.search(output)
    written = [Path(p).name for p in ARTIFACT.findall(output)]
    return Result(
        name=name,
        executions=int(found.group(1)) if found else None,
        seconds=round(elapsed, 1),
        crashes=written,
        returncode=returncode,
        tail="\n".join(output.splitlines()[-40:]),
    )


SLOW_START = ("signed_request", "canonical", "mcp", "receipt")
"""Harnesses whose process takes longest to start (they import the governor or the MCP
SDK): started first, so that the quick ones fill in beside them."""


def run_all(names: list[str], *, seconds: int, jobs: int, crashes: Path) -> list[Result]:
    """Run ``names``, ``jobs`` at a time (the slow starters first); results in the order given."""
    order = sorted(names, key=lambda n: SLOW_START.index(n) if n in SLOW_START else len(SLOW_START))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = pool.map(lambda n: run(n, seconds=seconds, crashes=crashes), order)
        done = dict(zip(order, results, strict=True))
    return [done[n] for n in names]


def table(results: list[Result]) -> str:
    """The results as a text table: harness, executions, seconds, crashes."""
    rows = [("harness", "executions", "seconds", "crashes")]
    rows += [
        (r.name, "?" if r.executions is None else str(r.executions), f"{r.seconds:.1f}", str(len(r.crashes)))
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def main() -> int:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long each harness runs (default 60)")
    parser.add_argument(
        "--only", action="append", choices=HARNESSES, help="run only this harness (repeatable)"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="harnesses run at once")
    parser.add_argument("--crashes", type=Path, default=FUZZ / "regressions", help="where crash inputs go")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    results = run_all(
        list(args.only or HARNESSES), seconds=args.seconds, jobs=args.jobs, crashes=args.crashes
    )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    else:
        print(table(results))
        for r in results:
            if not r.ok:
                print(
                    f"\n== {r.name}: exit {r.returncode}, crash inputs {r.crashes} in {args.crashes / r.name}"
                )
                print(r.tail)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
