"""The agent-governance-toolkit side of ``bench/suite/policy.py``, run by the peer's own
Python (``.bench/peers/agent-governance-toolkit``): its ``PolicyEngine`` pins
``cryptography<50``, which proctor's ``.venv`` cannot hold.

Reads one JSON job from stdin and writes the timings to stdout. Standard library and
``agentmesh`` only (proctor is not installed there). For each rule set: the rules in one
``Policy`` (``agents: ["*"]``, default deny) under ``deny_overrides``; then
``PolicyEngine.evaluate`` on a copy of each context (AGT adds fields to the context it
is given), and ``govern(fn)`` with its in-memory audit log (the default) called with the
same context's parts as keyword arguments. Time is ``perf_counter_ns`` around each call,
as on proctor's side; answers are returned so the caller can check both sides agree.
"""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import json
import sys
import time
import warnings
from typing import Any


def timed(call: Any, samples: int, seconds: float, warmup: int) -> list[float]:
    """µs per ``call(i)``: at most ``samples`` calls, stopping once ``seconds`` are spent."""
    for i in range(warmup):
        call(i)
    gc.collect()
    out: list[float] = []
    spent = 0
    clock = time.perf_counter_ns
    for i in range(samples):
        t0 = clock()
        call(i)
        dt = clock() - t0
        out.append(dt / 1000)
        spent += dt
        if spent > seconds * 1e9 and len(out) >= 3:
            break
    return out


def main() -> None:
    job = json.load(sys.stdin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # agentmesh warns that its old package name is deprecated
        policy_mod = importlib.import_module("agentmesh.governance.policy")
        govern_mod = importlib.import_module("agentmesh.governance.govern")
    contexts: list[dict[str, Any]] = job["contexts"]
    results = []
    for rules_doc in job["rule_sets"]:
        rules = [policy_mod.PolicyRule(name=n, condition=c, action=a) for n, c, a in rules_doc]
        policy = policy_mod.Policy(name="bench", agents=["*"], rules=rules, default_action="deny")
        engine = policy_mod.PolicyEngine(conflict_strategy="deny_overrides")
        engine.load_policy(policy)
        allows = [engine.evaluate("did:alice", dict(c)).allowed for c in contexts]
        evaluate_us = timed(
            lambda i: engine.evaluate("did:alice", dict(contexts[i % len(contexts)])),
            job["samples"],
            job["seconds"],
            job["warmup"],
        )
        governed = govern_mod.govern(
            lambda **_: True, policy=policy, agent_id="did:alice", audit=True, on_deny=lambda _d: False
        )
        govern_allows = [governed(**c) for c in contexts]
        govern_us = timed(
            lambda i: governed(**contexts[i % len(contexts)]), job["samples"], job["seconds"], job["warmup"]
        )
        audit = governed.audit_log
        results.append(
            {
                "allows": allows,
                "evaluate_us": evaluate_us,
                "govern_allows": govern_allows,
                "govern_us": govern_us,
                "audit_entries": len(audit.query())
                if audit is not None and hasattr(audit, "query")
                else None,
            }
        )
    version = importlib.metadata.version("agent-governance-toolkit-core")
    json.dump({"version": version, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
