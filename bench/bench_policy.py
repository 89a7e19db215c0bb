#!/usr/bin/env python3
"""Benchmark policy decisions: proctor's Cedar engine, sliced and unsliced, and AGT's.

Run from the repository root::

    python -m bench.bench_policy                  # 1, 5, 100, 500 policies; about a minute
    python -m bench.bench_policy --quick          # fewer samples
    python -m bench.bench_policy --sizes 1,100 --json out.json

What it measures (results and their reading are in docs/benchmarks-history.md):

1. ``PolicyEngine.decide`` latency, one request at a time, p50/p99/mean, for bundles of
   1, 5, 100 and 500 policies, sliced (the default) and unsliced. Bundles are a
   realistic mix: a few policies the requests are about, and filler that is mostly
   unrelated to them — ``exec`` grants pinned to an executable, ``tool.call`` and
   ``mcp.call`` grants pinned to a tool, with role, zone, argv, time, counter and
   argument conditions and obligations, plus about 5% unpinned guards (forbids and
   role grants over a whole action) that land in every slice of their action.
   The five requests cycle: pg_dump db1 (allow), pg_dump db2 (deny), a
   ``tool.call`` (allow), an ``mcp.call`` (allow) and a filler ``exec`` (deny).
2. ``decide_batch`` throughput (batches of 100) against a ``decide`` loop.
3. Side by side, in the same process, the ``PolicyEngine`` of Microsoft's
   agent-governance-toolkit (``agentmesh.governance.policy``, from the PyPI package
   ``agent-governance-toolkit[core]``) with the same number of rules expressing the
   same grants in its condition language, ``deny_overrides``, default deny, on the
   same five requests. Skipped, with a note, when it is not installed (its core pins
   ``cryptography<50``; ``python -m bench --only policy`` runs it in a virtualenv of its own,
   on rule sets of equal meaning).

Time is ``time.perf_counter_ns`` around each call; requests are built beforehand.
Percentiles are nearest-rank.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import platform
import random
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from proctor.policy import PolicyBundle, PolicyEngine, PolicyRequest

NOW = 1767261600  # 2026-01-01T10:00:00Z, a Thursday
TARGETS = {"p50_us": 100.0, "p99_us": 1000.0}

TARGET_POLICIES = [
    """@id("dev-pg-dump") @max_duration_s("60") @lease_ttl_s("3") @no_network("true")
permit (principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/usr/bin/pg_dump")
when { principal.role == "dev" && context.args has a1 && context.args.a1 == "db1" };""",
    """@id("send-email") @approval_required("false")
permit (principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"mail/send_email")
when { principal.role == "dev" && context.arguments.contains("to=ops@example.com") };""",
    """@id("read-srv") @max_output_bytes("1048576")
permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"filesystem/read_file")
when { context.arguments_json like "*\\"path\\":\\"/srv/*" && context.time.hour >= 8 };""",
    """@id("no-rm")
forbid (principal, action, resource == Proctor::Executable::"/usr/bin/rm");""",
    """@id("no-dump-all")
forbid (principal, action == Proctor::Action::"exec", resource) when { context.argv.contains("--all") };""",
]

AGT_TARGET_RULES = [
    ("dev-pg-dump", "action.type == 'exec' and resource.id == '/usr/bin/pg_dump' and principal.role == 'dev' "
     "and args.a1 == 'db1'", "allow"),
    ("send-email", "action.type == 'tool.call' and resource.id == 'mail/send_email' "
     "and principal.role == 'dev' "
     "and arguments.to == 'ops@example.com'", "allow"),
    ("read-srv", "action.type == 'mcp.call' and resource.id == 'filesystem/read_file' "
     "and time.hour >= 8", "allow"),
    ("no-rm", "resource.id == '/usr/bin/rm'", "deny"),
    ("no-dump-all", "action.type == 'exec' and args.all == 'true'", "deny"),
]  # fmt: skip


def filler_policy(i: int, rng: random.Random) -> str:
    """One policy unrelated to the benchmark requests (see the module docstring for the mix)."""
    kind = rng.random()
    obligation = rng.choice(["", '@max_duration_s("300") ', '@memory_limit_mb("256") @max_pids("32") '])
    if kind < 0.45:
        condition = rng.choice(
            [
                f'principal.role == "role{i % 7}" && context.time.hour >= 8 && context.time.hour < 20',
                f'principal.zone == "zone{i % 3}" && context.args has a1 && context.args.a1 like "--db=*"',
                f'context.command_line like "/opt/bin/tool{i} --safe*" && context.counters.rate_1m < 30',
                'principal.role == "ops" && context.time.weekday < 5',
            ]
        )
        return (
            f'{obligation}permit (principal, action == Proctor::Action::"exec", '
            f'resource == Proctor::Executable::"/opt/bin/tool{i}") when {{ {condition} }};'
        )
    if kind < 0.70:
        condition = rng.choice(
            [
                f'principal.role == "role{i % 5}" && principal.zone == context.zone',
                f'context.arguments.contains("team=t{i % 9}") && context.counters.rate_1h < 500',
            ]
        )
        return (
            f'{obligation}permit (principal, action == Proctor::Action::"tool.call", '
            f'resource == Proctor::Tool::"svc{i}/op") when {{ {condition} }};'
        )
    if kind < 0.95:
        condition = rng.choice(
            [
                f'context.arguments_json like "*\\"repo\\":\\"r{i}\\"*"',
                'principal.role == "agent" && context.arguments.contains("mode=read") '
                f"&& context.time.hour < {i % 24}",
            ]
        )
        return (
            f'{obligation}permit (principal, action == Proctor::Action::"mcp.call", '
            f'resource == Proctor::Tool::"mcp{i % 40}/tool{i}") when {{ {condition} }};'
        )
    return rng.choice(
        [
            f'forbid (principal, action == Proctor::Action::"exec", resource) '
            f'when {{ context.argv.contains("--force{i}") }};',
            f"forbid (principal, action, resource) when {{ context.counters.rate_1m > {100 + i} }};",
            f'forbid (principal, action == Proctor::Action::"mcp.call", resource) '
            f'when {{ context.arguments_json like "*secret{i}*" }};',
            f'permit (principal, action == Proctor::Action::"tool.call", resource) '
            f'when {{ principal.role == "admin{i}" && context.zone == principal.zone }};',
        ]
    )


def agt_filler_rule(i: int) -> tuple[str, str, str]:
    """The AGT counterpart of a filler policy: a pinned grant with a role and time condition."""
    action = ("exec", "tool.call", "mcp.call")[i % 3]
    resource = ("/opt/bin/tool", "svc", "mcp")[i % 3] + str(i)
    return (
        f"r{i}",
        f"action.type == '{action}' and resource.id == '{resource}' and principal.role == 'role{i % 7}' "
        "and time.hour >= 8",
        "deny" if i % 20 == 19 else "allow",
    )


def make_bundle(n: int, seed: int = 7) -> PolicyBundle:
    """A bundle of ``n`` policies: the request-related ones first, then filler."""
    rng = random.Random(seed)
    targets = TARGET_POLICIES[: min(n, len(TARGET_POLICIES))]
    filler = [filler_policy(i, rng) for i in range(n - len(targets))]
    files = {"00-targets.cedar": "\n\n".join(targets)}
    if filler:
        files["10-filler.cedar"] = "\n".join(filler)
    return PolicyBundle(files, version=n)


def make_requests() -> list[PolicyRequest]:
    """The five benchmark requests."""
    dev = {"role": "dev", "zone": "prod", "tenant": "acme"}
    counters = {"rate_1m": 3, "rate_1h": 40, "concurrency": 1, "budget_used": 0}
    common: dict[str, Any] = {"zone": "prod", "counters": counters}
    return [
        PolicyRequest("alice", dev, "exec", "/usr/bin/pg_dump", ("pg_dump", "db1"), **common),
        PolicyRequest("alice", dev, "exec", "/usr/bin/pg_dump", ("pg_dump", "db2"), **common),
        PolicyRequest(
            "alice",
            dev,
            "tool.call",
            "mail/send_email",
            arguments={"to": "ops@example.com", "subject": "nightly dump done"},
            **common,
        ),
        PolicyRequest(
            "alice",
            dev,
            "mcp.call",
            "filesystem/read_file",
            arguments={"path": "/srv/data/report.csv", "mode": "read"},
            **common,
        ),
        PolicyRequest("alice", dev, "exec", "/opt/bin/tool3", ("/opt/bin/tool3", "--safe"), **common),
    ]


def agt_contexts() -> list[dict[str, Any]]:
    """The five requests as AGT evaluation contexts."""
    base = {"principal": {"role": "dev", "zone": "prod"}, "time": {"hour": 10}}
    return [
        {**base, "action": {"type": "exec"}, "resource": {"id": "/usr/bin/pg_dump"},
         "args": {"a0": "pg_dump", "a1": "db1"}},
        {**base, "action": {"type": "exec"}, "resource": {"id": "/usr/bin/pg_dump"},
         "args": {"a0": "pg_dump", "a1": "db2"}},
        {**base, "action": {"type": "tool.call"}, "resource": {"id": "mail/send_email"},
         "arguments": {"to": "ops@example.com", "subject": "nightly dump done"}},
        {**base, "action": {"type": "mcp.call"}, "resource": {"id": "filesystem/read_file"},
         "arguments": {"path": "/srv/data/report.csv", "mode": "read"}},
        {**base, "action": {"type": "exec"}, "resource": {"id": "/opt/bin/tool3"},
         "args": {"a0": "/opt/bin/tool3", "a1": "--safe"}},
    ]  # fmt: skip


def load_agt() -> tuple[Any, str] | tuple[None, str]:
    """AGT's policy module and version, or None and why it is unavailable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # agentmesh warns that its old package name is deprecated
            module = importlib.import_module("agentmesh.governance.policy")
        version = importlib.metadata.version("agent-governance-toolkit-core")
    except ImportError as e:
        return None, (
            f"not installed here ({e}); its core pins cryptography<50, which .venv cannot hold: "
            "python -m bench --only policy measures it from a virtualenv of its own"
        )
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return module, version


def make_agt_engine(module: Any, n: int) -> Any:
    """An AGT PolicyEngine holding ``n`` rules in one policy that applies to every agent."""
    rules = [module.PolicyRule(name=a, condition=b, action=c) for a, b, c in AGT_TARGET_RULES[:n]]
    rules += [
        module.PolicyRule(name=a, condition=b, action=c)
        for a, b, c in map(agt_filler_rule, range(n - len(rules)))
    ]
    engine = module.PolicyEngine(conflict_strategy="deny_overrides")
    engine.load_policy(module.Policy(name="bench", agents=["*"], rules=rules, default_action="deny"))
    return engine


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in microseconds."""
    index = max(0, min(len(sorted_ns) - 1, round(q * len(sorted_ns) + 0.5) - 1))
    return sorted_ns[index] / 1000


def time_calls(call: Callable[[int], object], samples: int, warmup: int) -> dict[str, float]:
    """Time ``call(i)`` for i in range(samples) after a warm-up; p50/p99/mean in µs."""
    for i in range(warmup):
        call(i)
    gc.collect()
    ns: list[int] = []
    clock = time.perf_counter_ns
    for i in range(samples):
        start = clock()
        call(i)
        ns.append(clock() - start)
    ns.sort()
    return {
        "p50_us": percentile(ns, 0.50),
        "p99_us": percentile(ns, 0.99),
        "mean_us": sum(ns) / len(ns) / 1000,
    }


def proctor_call(engine: PolicyEngine, requests: list[PolicyRequest]) -> Callable[[int], object]:
    """A call deciding the i-th request (cycling)."""
    return lambda i: engine.decide(requests[i % len(requests)], now=NOW)


def agt_call(engine: Any, contexts: list[dict[str, Any]]) -> Callable[[int], object]:
    """A call evaluating the i-th context with AGT (a copy: AGT adds fields to the context it is given)."""
    return lambda i: engine.evaluate("did:alice", dict(contexts[i % len(contexts)]))


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = "unknown"
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        pass
    return {
        "cpu": cpu,
        "loadavg_at_start": load,
        "python": platform.python_version(),
        "cedarpy": importlib.metadata.version("cedarpy"),
        "platform": platform.platform(),
    }


def run(sizes: list[int], samples: int, agt_samples: int, batches: int) -> dict[str, Any]:
    """Run every measurement and return the results."""
    requests = make_requests()
    contexts = agt_contexts()
    agt, agt_version = load_agt()
    results: dict[str, Any] = {"machine": machine(), "agt": agt_version, "latency": [], "batch": []}
    for n in sizes:
        bundle = make_bundle(n)
        for sliced in (True, False):
            start = time.perf_counter()
            engine = PolicyEngine.compile(bundle, sliced=sliced)
            compile_ms = (time.perf_counter() - start) * 1000
            expected = [engine.decide(r, now=NOW).allow for r in requests]
            # Private access, for the table only: the size of the slice each request meets.
            slice_sizes = [len(engine._slices.for_request(r.action, r.resource).policies) for r in requests]
            stats = time_calls(proctor_call(engine, requests), samples, min(2000, samples))
            results["latency"].append(
                {
                    "policies": n,
                    "engine": "proctor " + ("sliced" if sliced else "unsliced"),
                    "evaluated": sum(slice_sizes) / len(slice_sizes),
                    "compile_ms": compile_ms,
                    "allows": expected,
                    **stats,
                }
            )
            print(f"  {n} policies, {'sliced' if sliced else 'unsliced'}: {stats}", file=sys.stderr)
            batch = [requests[i % 5] for i in range(100)]
            start = time.perf_counter()
            for _ in range(batches):
                engine.decide_batch(batch, now=NOW)
            batch_s = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(batches):
                for r in batch:
                    engine.decide(r, now=NOW)
            loop_s = time.perf_counter() - start
            results["batch"].append(
                {
                    "policies": n,
                    "engine": "proctor " + ("sliced" if sliced else "unsliced"),
                    "decide_per_s": batches * 100 / loop_s,
                    "batch_per_s": batches * 100 / batch_s,
                }
            )
        if agt is not None:
            agt_engine = make_agt_engine(agt, n)
            allows = [agt_engine.evaluate("did:alice", dict(c)).allowed for c in contexts]
            count = agt_samples if n >= 100 else samples
            stats = time_calls(agt_call(agt_engine, contexts), count, min(500, count))
            results["latency"].append(
                {"policies": n, "engine": "AGT PolicyEngine", "evaluated": float(n), "compile_ms": 0.0,
                 "allows": allows, **stats}
            )  # fmt: skip
            print(f"  {n} rules, AGT: {stats}", file=sys.stderr)
    return results


def print_tables(results: dict[str, Any]) -> None:
    """Print the results as Markdown tables."""
    m = results["machine"]
    print(f"Machine: {m['cpu']}, Python {m['python']}, cedarpy {m['cedarpy']}, {m['platform']}")
    print(f"Load average when the run started: {m['loadavg_at_start']}")
    print(f"agent-governance-toolkit: {results['agt']}\n")
    print("### Decision latency (µs), one request at a time\n")
    print("| policies | engine | evaluated per request | p50 µs | p99 µs | mean µs | compile ms | allows |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for row in results["latency"]:
        allows = "".join("A" if a else "d" for a in row["allows"])
        print(
            f"| {row['policies']} | {row['engine']} | {row['evaluated']:.1f} | {row['p50_us']:.1f} | "
            f"{row['p99_us']:.1f} | {row['mean_us']:.1f} | {row['compile_ms']:.0f} | {allows} |"
        )
    print("\n### Throughput (decisions/s)\n")
    print("| policies | engine | decide() loop | decide_batch(100) |")
    print("|---:|---|---:|---:|")
    for row in results["batch"]:
        print(
            f"| {row['policies']} | {row['engine']} | {row['decide_per_s']:,.0f} "
            f"| {row['batch_per_s']:,.0f} |"
        )
    print("\n### Targets (decision only, 500 policies)\n")
    for row in results["latency"]:
        if row["policies"] == 500 and row["engine"] == "proctor sliced":
            verdict = all(row[k] <= v for k, v in TARGETS.items())
            print(
                f"p50 {row['p50_us']:.1f} µs (target ≤ {TARGETS['p50_us']:.0f}), "
                f"p99 {row['p99_us']:.1f} µs (target ≤ {TARGETS['p99_us']:.0f}): "
                f"{'met' if verdict else 'NOT met'}"
            )
    agt_rows = {r["policies"]: r for r in results["latency"] if r["engine"] == "AGT PolicyEngine"}
    ours = {r["policies"]: r for r in results["latency"] if r["engine"] == "proctor sliced"}
    for n, row in sorted(agt_rows.items()):
        print(f"{n} rules: AGT p50 / proctor p50 = {row['p50_us'] / ours[n]['p50_us']:.1f}x")
    if not agt_rows:
        print(f"AGT column skipped: {results['agt']}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1,5,100,500", help="comma-separated policy counts")
    parser.add_argument("--samples", type=int, default=20000, help="timed decisions per configuration")
    parser.add_argument("--agt-samples", type=int, default=2000, help="timed AGT decisions at 100+ rules")
    parser.add_argument("--batches", type=int, default=100, help="batches of 100 for the throughput table")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    samples, agt_samples, batches = args.samples, args.agt_samples, args.batches
    if args.quick:
        samples, agt_samples, batches = 2000, 200, 10
    results = run(sizes, samples, agt_samples, batches)
    print_tables(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
