"""bench/bench_policy.py still runs, and its bundles mean what the benchmark says they mean."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from proctor.policy import PolicyEngine

BENCH = Path(__file__).parents[3] / "bench" / "bench_policy.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_policy_under_test", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", [1, 5, 100, 500])
def test_bench_bundles_compile_and_decide_as_documented(bench: ModuleType, size: int) -> None:
    bundle = bench.make_bundle(size)
    assert sum(text.count(";") for text in bundle.files.values()) >= size
    requests = bench.make_requests()
    sliced = PolicyEngine.compile(bundle)
    unsliced = PolicyEngine.compile(bundle, sliced=False)
    assert len(sliced.policies) == size
    decisions = [sliced.decide(r, now=bench.NOW) for r in requests]
    assert decisions == [unsliced.decide(r, now=bench.NOW) for r in requests]
    expected = [True, False, False, False, False] if size == 1 else [True, False, True, True, False]
    assert [d.allow for d in decisions] == expected


def test_bench_runs_end_to_end(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--sizes", "5", "--samples", "20", "--agt-samples", "5", "--batches", "1"]) == 0
    out = capsys.readouterr().out
    for heading in ("Decision latency", "Throughput", "proctor sliced", "proctor unsliced"):
        assert heading in out
