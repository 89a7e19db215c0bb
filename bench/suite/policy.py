"""Policy decisions beside Microsoft's agent-governance-toolkit (AGT), at 1 to 5,000 rules.

Both sides get rule sets of equal meaning, written from one list of abstract rules
(:class:`Rule`) into Cedar and into AGT's condition language, and the same five requests
(pg_dump db1: allow; pg_dump db2: deny; a ``tool.call``: allow; an ``mcp.call``: allow; an
exec of a filler tool by the wrong role: deny). Before timing, the answers of every side
are compared: a side that answers differently stops the member (a wrong answer could be
fast).

Two comparisons per rule count:

- the decision alone: proctor's ``PolicyEngine.decide`` (sliced, the decision cache off,
  so that every call evaluates Cedar) vs AGT's ``PolicyEngine.evaluate``; beside them,
  proctor's decision answered from its decision cache (a repeated request, ADR 0020);
- a governed call with its audit record: proctor's ``Governor.authorize`` in process (the
  decision, a signed Biscuit warrant, and the decision committed to the durable, signed
  Merkle log) vs AGT's ``govern(fn)`` wrapper (the decision and an in-memory audit entry).

AGT runs in its own virtualenv (``bench/agt_worker.py``, :data:`bench.lib.PEERS`), timed
in its process the same way as proctor in this one. The decisions alone are taken in
rounds, in turns (AGT at every size, then proctor at every size; four rounds in
``--full``), each side's samples pooled: the machine's speed drifts by a third within
minutes here, and one side measured only while it was slow would decide the comparison.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lib import Context, Member, PeerUnavailable, Record, ensure_peer, time_calls
from proctor.authorization.keys import PrincipalKey
from proctor.config import MAX_QUOTA, QuotaLimits
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor, initialize
from proctor.policy import PolicyBundle, PolicyEngine, PolicyRequest

NOW = 1767261600  # 2026-01-01T10:00:00Z
EXE = "sha256:" + "e" * 64
PER_PRINCIPAL = 200  # authorize calls per principal: its rate counters scan its recent warrants


@dataclass(frozen=True)
class Rule:
    """One rule, rendered with the same meaning into Cedar and into AGT's language."""

    id: str
    effect: str  # "permit" or "forbid"
    action: str
    resource: str
    role: str | None = None
    arg: tuple[str, str] | None = None  # exec: ("a1", value) = argv[1]; tools: an argument
    hour_from: int | None = None

    def cedar(self) -> str:
        kind = "Executable" if self.action == "exec" else "Tool"
        scope = (
            f'principal, action == Proctor::Action::"{self.action}", '
            f'resource == Proctor::{kind}::"{self.resource}"'
        )
        when = []
        if self.role is not None:
            when.append(f'principal.role == "{self.role}"')
        if self.arg is not None:
            name, value = self.arg
            if self.action == "exec":
                when.append(f'context.args has {name} && context.args.{name} == "{value}"')
            else:
                when.append(f'context.arguments.contains("{name}={value}")')
        if self.hour_from is not None:
            when.append(f"context.time.hour >= {self.hour_from}")
        body = f" when {{ {' && '.join(when)} }}" if when else ""
        return f'@id("{self.id}")\n{self.effect} ({scope}){body};'

    def agt(self) -> tuple[str, str, str]:
        parts = [f"action.type == '{self.action}'", f"resource.id == '{self.resource}'"]
        if self.role is not None:
            parts.append(f"principal.role == '{self.role}'")
        if self.arg is not None:
            name, value = self.arg
            parts.append(f"{'args' if self.action == 'exec' else 'arguments'}.{name} == '{value}'")
        if self.hour_from is not None:
            parts.append(f"time.hour >= {self.hour_from}")
        return self.id, " and ".join(parts), "allow" if self.effect == "permit" else "deny"


TARGETS = [
    Rule("dev-pg-dump", "permit", "exec", "/usr/bin/pg_dump", role="dev", arg=("a1", "db1")),
    Rule("send-email", "permit", "tool.call", "mail/send_email", role="dev", arg=("to", "ops@example.com")),
    Rule("read-srv", "permit", "mcp.call", "filesystem/read_file", arg=("path", "/srv/data/report.csv")),
    Rule("no-rm", "forbid", "exec", "/usr/bin/rm"),
    Rule("no-dump-all", "forbid", "exec", "/usr/bin/pg_dump", arg=("a1", "--all")),
]


def filler(i: int) -> Rule:
    """A rule about another resource: a grant (one in 20 a forbid) to a role after 8:00."""
    action = ("exec", "tool.call", "mcp.call")[i % 3]
    resource = (f"/opt/bin/tool{i}", f"svc{i}/op", f"mcp{i % 40}/tool{i}")[i % 3]
    effect = "forbid" if i % 20 == 19 else "permit"
    return Rule(f"r{i}", effect, action, resource, role=f"role{i % 7}", hour_from=8)


def rules(n: int) -> list[Rule]:
    """``n`` rules: the request-related ones first, then filler."""
    head = TARGETS[: min(n, len(TARGETS))]
    return head + [filler(i) for i in range(n - len(head))]


REQUESTS: list[dict[str, Any]] = [
    {"action": "exec", "resource": "/usr/bin/pg_dump", "argv": ["pg_dump", "db1"]},
    {"action": "exec", "resource": "/usr/bin/pg_dump", "argv": ["pg_dump", "db2"]},
    {"action": "tool.call", "resource": "mail/send_email",
     "arguments": {"to": "ops@example.com", "subject": "nightly dump done"}},
    {"action": "mcp.call", "resource": "filesystem/read_file",
     "arguments": {"path": "/srv/data/report.csv", "mode": "read"}},
    {"action": "exec", "resource": "/opt/bin/tool3", "argv": ["/opt/bin/tool3", "--safe"]},
]  # fmt: skip


def expected(n: int) -> list[bool]:
    """The answers ``rules(n)`` give: the tool grants are rules 2 and 3."""
    return [True, False, n >= 2, n >= 3, False]


def policy_requests() -> list[PolicyRequest]:
    dev = {"role": "dev", "zone": "prod"}
    counters = {"rate_1m": 3, "rate_1h": 40, "concurrency": 1, "budget_used": 0}
    return [
        PolicyRequest("alice", dev, r["action"], r["resource"], tuple(r.get("argv", ())),
                      arguments=r.get("arguments"), zone="prod", counters=counters)
        for r in REQUESTS
    ]  # fmt: skip


def authorize_requests() -> list[AuthorizeRequest]:
    return [
        AuthorizeRequest(action=r["action"], resource=r["resource"], argv=tuple(r.get("argv", ())),
                         arguments=r.get("arguments"), executable_digest=EXE if r["action"] == "exec" else "")
        for r in REQUESTS
    ]  # fmt: skip


def agt_contexts(hour: int) -> list[dict[str, Any]]:
    """The requests as AGT contexts (``args.a0``, ``args.a1`` as Cedar's ``context.args``)."""
    out = []
    for r in REQUESTS:
        c: dict[str, Any] = {
            "action": {"type": r["action"]},
            "resource": {"id": r["resource"]},
            "principal": {"role": "dev", "zone": "prod"},
            "time": {"hour": hour},
        }
        if "argv" in r:
            c["args"] = {f"a{i}": a for i, a in enumerate(r["argv"])}
        else:
            c["arguments"] = dict(r["arguments"])
        out.append(c)
    return out


def bundle(n: int) -> PolicyBundle:
    return PolicyBundle({"bench.cedar": "\n\n".join(r.cedar() for r in rules(n))}, version=n)


def governor(root: Path, n: int) -> Governor:
    """A governor on a fresh data directory holding ``n`` rules, request rates lifted."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    data = root / f"gov-{n}"
    initialize(data, origin="bench.local/policy")
    config = data / "config.toml"
    text = config.read_text()
    for quota in ("max_requests_per_second", "max_authorizations_per_second"):
        text = text.replace(f"{quota} = {getattr(QuotaLimits, quota)}\n", f"{quota} = {MAX_QUOTA}\n")
    config.write_text(text)
    g = Governor(data)
    admin = PrincipalKey.load(data / "keys" / "admin.key")
    signed = bundle(n).signed(Ed25519PrivateKey.from_private_bytes(admin.private_bytes()), "admin")
    g.push_policy(signed.to_json(), by="admin")
    return g


def run_agt(sizes: list[int], samples: int, seconds: float, warmup: int) -> dict[str, Any]:
    """AGT's timings for each size, from its own virtualenv.

    Raises:
        PeerUnavailable: it cannot be installed or its worker failed.
    """
    python = ensure_peer("agent-governance-toolkit") / "python"
    job = {
        "contexts": agt_contexts(time.gmtime(NOW).tm_hour),
        "rule_sets": [[r.agt() for r in rules(n)] for n in sizes],
        "samples": samples,
        "seconds": seconds,
        "warmup": warmup,
    }
    worker = Path(__file__).resolve().parents[1] / "agt_worker.py"
    done = subprocess.run(
        [str(python), str(worker)], input=json.dumps(job), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise PeerUnavailable(f"its worker failed: {done.stderr.strip()[-300:]}")
    return dict(json.loads(done.stdout))


def _rounds(
    ctx: Context, sizes: list[int], engines: dict[int, PolicyEngine], requests: list[PolicyRequest]
) -> tuple[dict[int, list[float]], dict[str, Any] | None, str]:
    """The decision alone, proctor's and AGT's, in rounds taken in turns (AGT's worker for
    every size, then proctor for every size), so that the machine's drift falls on both:
    proctor's µs per size, AGT's results with each round's samples pooled (or ``None``),
    and why AGT is missing."""
    cfg = ctx.config
    rounds: int = cfg["rounds"]
    samples, seconds, warmup = cfg["samples"] // rounds, cfg["seconds"] / rounds, cfg["warmup"]
    ours: dict[int, list[float]] = {n: [] for n in sizes}
    agt: dict[str, Any] | None = None
    why = ""
    for r in range(rounds):
        if r == 0 or agt is not None:
            ctx.status(f"round {r + 1}/{rounds}: agent-governance-toolkit (installed on first use)")
            try:
                got = run_agt(sizes, samples, seconds, warmup)
            except PeerUnavailable as e:
                agt, why = None, str(e)
            else:
                if agt is None:
                    agt = got
                else:
                    for pooled, more in zip(agt["results"], got["results"], strict=True):
                        for field in ("evaluate_us", "govern_us"):
                            pooled[field] = pooled[field] + more[field]
        for n in sizes:
            ctx.status(f"round {r + 1}/{rounds}: {n} rules, proctor PolicyEngine.decide")
            engine = engines[n]
            ours[n] += time_calls(
                lambda i: engine.decide(requests[i % 5], now=NOW),
                samples=samples,
                seconds=seconds,
                warmup=warmup,
            )
    return ours, agt, why


def measure(ctx: Context) -> list[Record]:
    cfg = ctx.config
    sizes: list[int] = cfg["sizes"]
    samples, seconds, warmup = cfg["samples"], cfg["seconds"], cfg["warmup"]
    out: list[Record] = []
    requests = policy_requests()
    auth_requests = authorize_requests()
    engines = {n: PolicyEngine.compile(bundle(n), decision_cache=0) for n in sizes}
    for n, engine in engines.items():
        allows = [engine.decide(r, now=NOW).allow for r in requests]
        if allows != expected(n):
            raise AssertionError(f"proctor at {n} rules answered {allows}, expected {expected(n)}")
    decided, agt, why = _rounds(ctx, sizes, engines, requests)
    peer = f"agent-governance-toolkit {agt['version']}" if agt else "agent-governance-toolkit"
    for k, n in enumerate(sizes):
        want = expected(n)
        group = f"decision, {n} rules"
        curve = {"curve": "decision-vs-policies", "x": n}
        out.append(ctx.record(f"proctor PolicyEngine.decide, {n} rules", decided[n], "µs", group=group,
                              series="proctor PolicyEngine.decide", **curve))  # fmt: skip
        # The same five requests with the decision cache on (the governor's default): after
        # the first round every call is a hit, the figure a repeated request costs.
        ctx.status(f"{n} rules: proctor PolicyEngine.decide, cache hits")
        cached = PolicyEngine.compile(bundle(n))
        if [cached.decide(r, now=NOW).allow for r in requests] != want:
            raise AssertionError(f"proctor with its decision cache at {n} rules answered otherwise")
        hit = time_calls(
            lambda i: cached.decide(requests[i % 5], now=NOW), samples=samples, seconds=seconds, warmup=warmup
        )
        if cached.cache is None or cached.cache.misses != 5:
            raise AssertionError(f"expected 5 decision-cache misses (one per request), found {cached.cache}")
        out.append(ctx.record(f"proctor PolicyEngine.decide, cache hit, {n} rules", hit, "µs", group=group,
                              series="proctor PolicyEngine.decide (cache hit)", **curve))  # fmt: skip
        ctx.status(f"{n} rules: proctor Governor.authorize")
        g = governor(ctx.work, n)
        try:
            # Principals made beforehand, not while timing: each serves PER_PRINCIPAL calls.
            names: list[str] = []
            for j in range(min(120, (5 + warmup + samples) // PER_PRINCIPAL + 1)):
                key = PrincipalKey.generate(f"agent{j}")
                g.add_principal(key.name, key.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
                names.append(key.name)

            def authorize(i: int, g: Governor = g, names: list[str] = names) -> bool:
                return g.authorize(names[i // PER_PRINCIPAL % len(names)], auth_requests[i % 5]).allowed

            allowed = [authorize(i) for i in range(5 + warmup)][:5]
            if allowed != want:
                raise AssertionError(f"Governor.authorize at {n} rules answered {allowed}")
            authz = time_calls(lambda i: authorize(5 + warmup + i), samples=samples, seconds=seconds)
        finally:
            g.close()
        ggroup = f"governed call + audit, {n} rules"
        out.append(ctx.record(f"proctor Governor.authorize (warrant, durable log), {n} rules", authz, "µs",
                              group=ggroup, series="proctor Governor.authorize", **curve))  # fmt: skip
        if agt is None:
            out.append(ctx.unavailable(f"AGT PolicyEngine.evaluate, {n} rules", "µs", why, group=group,
                                       baseline=True, peer=peer))  # fmt: skip
            out.append(ctx.unavailable(f"AGT govern() with audit, {n} rules", "µs", why, group=ggroup,
                                       baseline=True, peer=peer))  # fmt: skip
            continue
        res = agt["results"][k]
        for field in ("allows", "govern_allows"):
            if res[field] != want:
                raise AssertionError(f"AGT ({field}) at {n} rules answered {res[field]}, expected {want}")
        out.append(ctx.record(f"AGT PolicyEngine.evaluate, {n} rules", res["evaluate_us"], "µs", group=group,
                              series="AGT PolicyEngine.evaluate", baseline=True, peer=peer, **curve))  # fmt: skip
        out.append(ctx.record(f"AGT govern() with audit, {n} rules", res["govern_us"], "µs", group=ggroup,
                              series="AGT govern() with audit", baseline=True, peer=peer, **curve))  # fmt: skip
    return out


MEMBER = Member(
    name="policy",
    title="Policy decisions and governed calls vs agent-governance-toolkit",
    quick={"sizes": [1, 100, 1000], "samples": 2000, "seconds": 0.3, "warmup": 5, "rounds": 1},
    full={"sizes": [1, 5, 100, 500, 5000], "samples": 20000, "seconds": 8.0, "warmup": 500, "rounds": 4},
    run=measure,
    meaning=(
        "What deciding costs an agent's call, in process, as the policy grows. proctor slices "
        "its Cedar policies by action and resource, so a decision reads only the rules that can "
        "apply and hands Cedar only the context fields those rules read; AGT evaluates every "
        "rule of the policy. A decision-cache hit is an identical request decided again. `Governor.authorize` is what a governed "
        "call costs in full before the call runs (decision, signed warrant, durable signed log "
        "entry); `govern()` keeps its audit in memory and signs nothing."
    ),
)
