"""Every parser of untrusted input — receipts, signed notes, checkpoints, proofs,
warrants and their attenuation, signed requests, MCP messages, canonical JSON — is
fuzzed (``tests/fuzz``): in-process over the kept inputs (the seed corpus and every
input that once crashed a harness), then under atheris, coverage-guided, for a bounded
time. A harness fails on any exception but the parser's own refusals, on a hang, and on
an accepted input that does not round-trip or that verifies without having been signed
by the test key.

CI cost: the atheris runs take ``PROCTOR_FUZZ_SECONDS`` (default 3) seconds of fuzzing
per harness, two at a time, plus each process's start; ``scripts/fuzz.py`` runs them
longer on demand.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from figures import record
from fuzz.fuzz_support import CORPUS, HARNESSES, REGRESSIONS, inputs

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("PROCTOR_FUZZ_SECONDS", "3"))


def _harness(name: str) -> ModuleType:
    return importlib.import_module(f"fuzz.fuzz_{name}")


def _replay(name: str) -> tuple[int, int]:
    """Every kept input of one harness through it, in-process: (seeds, regressions)."""
    one_input = _harness(name).one_input
    counts = [0, 0]
    for path in inputs(name):
        try:
            one_input(path.read_bytes())
        except Exception as e:
            raise AssertionError(
                f"{path.relative_to(ROOT)} fails harness {name}: {type(e).__name__}: {e}"
            ) from e
        counts[path.is_relative_to(REGRESSIONS)] += 1
    return counts[0], counts[1]


def test_every_kept_fuzz_input_is_refused_or_accepted_and_checked() -> None:
    """Every seed and every input that once crashed a harness, replayed through it, is
    refused with the parser's own error or accepted and passes the harness's checks."""
    rows = []
    for name in HARNESSES:
        seeds, regressions = _replay(name)
        assert seeds > 0, f"harness {name} has no seed corpus in {CORPUS / name}"
        rows.append((name, seeds, regressions))
    assert {r[0] for r in rows} == {p.name for p in CORPUS.iterdir() if p.is_dir()}, (
        "a corpus without harness"
    )
    record(
        "fuzzing-replay",
        section="Fuzzing",
        summary=[
            f"{sum(r[1] for r in rows)} seed inputs (valid objects made by proctor's own code, and near misses) "
            f"and {sum(r[2] for r in rows)} regression inputs (each once crashed a harness) replayed in-process "
            f"through {len(rows)} harnesses: every one refused or accepted and checked"
        ],
        columns=["harness", "seed inputs", "regression inputs replayed"],
        rows=rows,
    )


def _fuzz_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_script", ROOT / "scripts" / "fuzz.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_coverage_guided_fuzzing_finds_no_crash_in_any_parser(tmp_path: Path) -> None:
    """Each parser, fuzzed by atheris from its seeds for a bounded time, raises nothing but
    its refusals, never hangs, and accepts nothing that fails to verify or round-trip."""
    if importlib.util.find_spec("atheris") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("atheris is not installed, and CI must fuzz (pyproject dev dependencies, Linux)")
        pytest.skip("atheris is not installed (it is built for Linux only)")
    script = _fuzz_script()
    assert list(script.HARNESSES) == list(HARNESSES), "scripts/fuzz.py and tests/fuzz list other harnesses"
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "fuzz.py"),
            "--json",
            f"--seconds={SECONDS}",
            "--jobs=2",
            f"--crashes={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20 * (SECONDS + 30),
        check=False,
    )
    wall = time.monotonic() - started
    results: list[dict[str, Any]] = json.loads(proc.stdout) if proc.stdout.startswith("[") else []
    assert [r["name"] for r in results] == list(HARNESSES), proc.stdout[-2000:] + proc.stderr[-2000:]
    for r in results:
        saved = sorted(p.name for p in (tmp_path / r["name"]).iterdir())
        assert not r["crashes"], (
            f"harness {r['name']} crashed; inputs {saved} (keep them in tests/fuzz/regressions/{r['name']}/, "
            f"fix, replay):\n{r['tail']}"
        )
        assert r["returncode"] == 0, f"harness {r['name']} did not finish:\n{r['tail']}"
        assert r["executions"] > 1, f"harness {r['name']} ran no input beyond its seeds"
    assert proc.returncode == 0, proc.stderr[-2000:]
    regressions = {name: sum(1 for p in inputs(name) if p.is_relative_to(REGRESSIONS)) for name in HARNESSES}
    record(
        "fuzzing-atheris",
        section="Fuzzing",
        summary=[
            f"{sum(r['executions'] for r in results)} inputs run by atheris (libFuzzer, coverage-guided) "
            f"through {len(results)} harnesses, {SECONDS} s of fuzzing each, in {wall:.0f} s: no crash, "
            "no hang, no accepted input that failed its checks",
            "longer on demand: python scripts/fuzz.py --seconds N; crash inputs go to tests/fuzz/regressions/",
        ],
        columns=["harness", "executions", "seconds", "crashes", "regression inputs replayed"],
        rows=[
            (r["name"], r["executions"], r["seconds"], len(r["crashes"]), regressions[r["name"]])
            for r in results
        ],
    )
