"""Receipts: build from a real log, verify offline, and fail at the right step for every mutation."""

from __future__ import annotations

import base64
import copy
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proctor.authorization.keys import PrincipalKey
from proctor.authorization.warrants import WarrantClaims, args_digest, inspect_warrant, mint_warrant
from proctor.canonical import canonicalize
from proctor.datadir import DataDir
from proctor.errors import VerificationError
from proctor.lineage.dsse import sign_envelope
from proctor.lineage.log import Log
from proctor.note import NoteSigner, generate_signer
from proctor.policy import PolicyBundle, PolicyEngine, PolicyRequest
from proctor.receipts import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    STEP_NAMES,
    ReceiptReport,
    build_receipt,
    check_receipt,
    verify_receipt,
)

ORIGIN = "test.example/log"
WARRANT_KEY = PrincipalKey.from_private_bytes("warrant-root", bytes(range(32)))
ROGUE_KEY = PrincipalKey.from_private_bytes("warrant-root", bytes(range(1, 33)))
NOW = 1767225600  # 2026-01-01T00:00:00Z
EXE = "/bin/echo"
EXE_DIGEST = "sha256:" + "ab" * 32
ARGV = ("echo", "hello")
POLICY = """
@id("echo")
@max_duration_s("60")
permit (principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/bin/echo");
"""
DENY_POLICY = """
@id("no-echo")
forbid (principal, action, resource == Proctor::Executable::"/bin/echo");
@id("other")
permit (principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/bin/true");
"""


def stamp(offset: float) -> str:
    dt = datetime.fromtimestamp(NOW + offset, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Scenario:
    """A log holding one governed execution, and what a caller knows about it."""

    log: Log
    signer: NoteSigner
    key_index: int
    policy_index: int
    bundle: PolicyBundle
    execution: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    roles: dict[str, int] = field(default_factory=dict)

    def link(self, index: int) -> dict[str, Any]:
        return {"index": index, "leaf_hash": b64(self.log.leaf_hash(index))}

    def append(self, role: str, event: dict[str, Any], *, execution: bool = True) -> int:
        index = self.log.append({"v": 1, "node": "gov-1", **event})
        self.roles[role] = index
        if execution:
            self.execution.append(index)
        return index

    def receipt(self, **kw: Any) -> dict[str, Any]:
        args: dict[str, Any] = {
            "execution_indices": self.execution,
            "warrant_tokens": self.tokens,
            "key_index": self.key_index,
            "signer": self.signer,
        }
        return build_receipt(self.log, **(args | kw))

    @property
    def log_key(self) -> str:
        return self.log.verifier_key()


def make_log(path: Path, *, policy: str = POLICY, origin: str = ORIGIN) -> Scenario:
    log = Log.initialize(path, origin=origin)
    signer = DataDir.open(path).log_signer()
    key_index = log.append(
        {
            "v": 1,
            "type": "key.declared",
            "time": stamp(0),
            "node": "init",
            "purpose": "warrant",
            "algorithm": "ed25519",
            "public_key": WARRANT_KEY.public_key_b64,
        }
    )
    bundle = PolicyBundle({"exec.cedar": policy}, version=1)
    policy_index = log.append(
        {
            "v": 1,
            "type": "policy.activated",
            "time": stamp(1),
            "node": "gov-1",
            "bundle": bundle.digest,
            "version": 1,
            "signer": "admin",
            "previous": "",
        }
    )
    return Scenario(log, signer, key_index, policy_index, bundle)


def authorize(
    s: Scenario,
    *,
    at: int,
    parent: WarrantClaims | None = None,
    ttl: int = 900,
    logged_decision: str | None = None,
    key: PrincipalKey = WARRANT_KEY,
    resource: str = EXE,
) -> WarrantClaims:
    """What the governor does: decide with the real engine, log, mint, log the warrant."""
    parent_id = parent.warrant_id if parent is not None else ""
    request = PolicyRequest(
        principal="agent-1",
        principal_attrs={"role": "dev", "zone": "prod"},
        action="exec",
        resource=resource,
        argv=ARGV,
        zone="prod",
        executable_digest=EXE_DIGEST,
        parent_warrant=parent_id,
    )
    decision = PolicyEngine.compile(s.bundle).decide(request, now=NOW + at)
    event: dict[str, Any] = {
        "type": "decision",
        "time": stamp(at),
        "principal": "agent-1",
        "now": NOW + at,
        "decision": logged_decision or ("allow" if decision.allow else "deny"),
        "policies": list(decision.policies),
        "errors": list(decision.errors),
        "obligations": dict(decision.obligations),
        "bundle": decision.bundle_digest,
        "request_digest": decision.request_digest,
        "reason": decision.reason,
        "request": request.to_json(),
    }
    if parent_id:
        event["parent_warrant"] = parent_id
    d = s.append(f"decision:{at}", event)
    claims = WarrantClaims(
        warrant_id=f"wr_test{at:04d}",
        principal="agent-1",
        action="exec",
        resource=resource,
        args_digest=args_digest(list(ARGV)),
        zone="prod",
        executable_digest=EXE_DIGEST,
        obligations=dict(decision.obligations),
        not_before=NOW + at,
        expires=NOW + at + ttl,
        lease_ttl_ms=5000,
        decision_index=d,
        parent=parent_id,
    )
    token = mint_warrant(claims, root_private_key=key.private_bytes())
    s.tokens.append(token)
    s.append(
        f"warrant.issued:{at}",
        {
            "type": "warrant.issued",
            "time": stamp(at),
            "warrant": claims.warrant_id,
            "parent_warrant": parent_id,
            "principal": "agent-1",
            "decision_index": d,
            "expires": claims.expires,
            "lease_ttl_ms": 5000,
            "token_digest": "sha256:" + hashlib.sha256(token.encode()).hexdigest(),
            "parent": s.link(d),
        },
    )
    return claims


def noise(s: Scenario, at: int) -> None:
    s.append(
        f"noise:{at}",
        {
            "type": "revocation",
            "time": stamp(at),
            "target": {"kind": "warrant", "id": "wr_unrelated"},
            "reason": "test",
            "by": "admin",
        },
        execution=False,
    )


def execute(
    s: Scenario,
    claims: WarrantClaims,
    *,
    at: int,
    terminal: str = "completed",
    execution_id: str = "ex_test0001",
    digest: str = EXE_DIGEST,
    executable: str = EXE,
) -> None:
    started = s.append(
        "started",
        {
            "type": "execution.started",
            "time": stamp(at),
            "execution": execution_id,
            "warrant": claims.warrant_id,
            "principal": "agent-1",
            "measurement": {
                "executable": executable,
                "executable_digest": digest,
                "files": [{"path": executable, "digest": digest, "role": "executable"}],
            },
            "containment": ["rlimits"],
            "enforcer": "node-1",
            "zone": "prod",
            "parent": s.link(s.roles[f"warrant.issued:{claims.not_before - NOW}"]),
        },
    )
    s.append(
        "verified",
        {
            "type": "execution.verified",
            "time": stamp(at + 1),
            "execution": execution_id,
            "checked": ["policy", "measurement"],
            "result": "ok",
            "parent": s.link(started),
        },
    )
    noise(s, at + 2)
    if terminal == "completed":
        s.append(
            "terminal",
            {
                "type": "execution.completed",
                "time": stamp(at + 3),
                "execution": execution_id,
                "exit_status": 0,
                "duration_ms": 3000,
                "resource_usage": {"max_rss_kb": 2048, "cpu_ms": 12},
                "stdout_digest": "sha256:" + hashlib.sha256(b"hello\n").hexdigest(),
                "stderr_digest": "sha256:" + hashlib.sha256(b"").hexdigest(),
                "parent": s.link(started),
            },
        )
    else:
        s.append(
            "terminal",
            {
                "type": "execution.terminated",
                "time": stamp(at + 3),
                "execution": execution_id,
                "reason": "revoked",
                "signal": "SIGTERM",
                "processes_killed": 1,
                "stdout_digest": "sha256:" + hashlib.sha256(b"hel").hexdigest(),
                "stderr_digest": "",
                "parent": s.link(started),
            },
        )


def scenario(path: Path, *, terminal: str = "completed", delegated: bool = False) -> Scenario:
    s = make_log(path)
    noise(s, 2)
    claims = authorize(s, at=10)
    if delegated:
        noise(s, 15)
        claims = authorize(s, at=20, parent=claims)
    execute(s, claims, at=30, terminal=terminal)
    return s


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    s = scenario(tmp_path_factory.mktemp("completed") / "d")
    yield s
    s.log.close()


@pytest.fixture(scope="module")
def receipt(completed: Scenario) -> dict[str, Any]:
    return completed.receipt(policy_bundle=completed.bundle.to_json(), policy_index=completed.policy_index)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Scenario]:
    s = make_log(tmp_path / "d")
    yield s
    s.log.close()


def failed_at(report: ReceiptReport) -> int:
    assert not report.ok
    assert report.failed is not None
    assert report.steps[-1] == report.failed
    assert all(step.ok for step in report.steps[:-1])
    return report.failed.number


# -- receipts that verify --------------------------------------------------------------------


def test_completed_execution_receipt_verifies(completed: Scenario, receipt: dict[str, Any]) -> None:
    assert set(receipt) == {"v", "checkpoint", "log_key", "events", "warrant_chain", "statement", "policy"}
    indices = [e["leaf_index"] for e in receipt["events"]]
    assert indices == sorted([*completed.execution, completed.key_index, completed.policy_index])
    report = verify_receipt(receipt, log_key=completed.log_key, replay=True)
    assert report.ok
    assert report.execution == "ex_test0001"
    assert [(s.number, s.name, s.ok) for s in report.steps] == [(n, STEP_NAMES[n], True) for n in range(1, 9)]
    assert "replayed" in report.steps[-1].detail


def test_statement_is_a_signed_in_toto_statement_of_the_execution(
    completed: Scenario, receipt: dict[str, Any]
) -> None:
    env = receipt["statement"]
    assert env["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    payload = base64.b64decode(env["payload"])
    statement = orjson.loads(payload)
    assert canonicalize(statement) == payload
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [
        {"name": EXE, "digest": {"sha256": "ab" * 32}},
        {"name": "stdout", "digest": {"sha256": hashlib.sha256(b"hello\n").hexdigest()}},
        {"name": "stderr", "digest": {"sha256": hashlib.sha256(b"").hexdigest()}},
    ]
    assert statement["predicate"] == {
        "execution": "ex_test0001",
        "warrant": "wr_test0010",
        "principal": "agent-1",
        "outcome": "completed",
        "exit_status": 0,
        "log": {
            "origin": ORIGIN,
            "checkpoint_size": completed.log.checkpoint_size(),
            "indices": [e["leaf_index"] for e in receipt["events"]],
        },
    }
    assert env["signatures"][0]["keyid"] == "+".join(completed.log_key.split("+")[:2])


def test_receipt_verifies_as_json_text_and_as_bytes(completed: Scenario, receipt: dict[str, Any]) -> None:
    text = orjson.dumps(receipt)
    assert check_receipt(text, log_key=completed.log_key, replay=True).ok
    assert check_receipt(text.decode(), log_key=completed.log_key).ok


def test_receipt_without_policy_verifies_without_step_8(completed: Scenario) -> None:
    doc = completed.receipt()
    assert "policy" not in doc
    report = verify_receipt(doc, log_key=completed.log_key)
    assert [s.number for s in report.steps] == list(range(1, 8))


def test_receipt_with_policy_checks_its_digest_even_without_replay(
    completed: Scenario, receipt: dict[str, Any]
) -> None:
    report = verify_receipt(receipt, log_key=completed.log_key)
    assert report.steps[-1].number == 8
    assert "not replayed" in report.steps[-1].detail


def test_terminated_execution_receipt_verifies(tmp_path: Path) -> None:
    s = scenario(tmp_path / "d", terminal="terminated")
    with s.log:
        doc = s.receipt()
        report = verify_receipt(doc, log_key=s.log_key)
    statement = orjson.loads(base64.b64decode(doc["statement"]["payload"]))
    # Output captured before the kill is a subject; an empty digest (nothing captured) is not.
    assert statement["subject"] == [
        {"name": EXE, "digest": {"sha256": "ab" * 32}},
        {"name": "stdout", "digest": {"sha256": hashlib.sha256(b"hel").hexdigest()}},
    ]
    assert statement["predicate"]["outcome"] == "terminated"
    assert statement["predicate"]["reason"] == "revoked"
    assert "exit_status" not in statement["predicate"]
    assert report.ok


def test_delegated_warrant_chain_receipt_verifies(tmp_path: Path) -> None:
    s = scenario(tmp_path / "d", delegated=True)
    with s.log:
        doc = s.receipt(policy_bundle=s.bundle.to_json(), policy_index=s.policy_index)
        report = verify_receipt(doc, log_key=s.log_key, replay=True)
        assert report.ok
        assert "2 warrant(s)" in report.steps[5].detail
        # Root first is the only order; a chain reversed or cut fails at step 6.
        for tokens in (s.tokens[::-1], s.tokens[1:], [s.tokens[0], s.tokens[0]]):
            bad = dict(doc, warrant_chain=tokens)
            assert failed_at(check_receipt(bad, log_key=s.log_key)) == 6


def test_old_receipt_still_verifies_long_after_the_warrant_expired(
    completed: Scenario, receipt: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Warrants are checked at the times the log records, never at the verifier's clock.
    monkeypatch.setattr(time, "time", lambda: float(NOW + 10 * 365 * 86400))
    assert verify_receipt(receipt, log_key=completed.log_key, replay=True).ok


def test_report_to_json(completed: Scenario, receipt: dict[str, Any]) -> None:
    good = check_receipt(receipt, log_key=completed.log_key).to_json()
    assert good["ok"] is True
    assert good["failed"] is None
    assert good["execution"] == "ex_test0001"
    assert good["steps"][0] == {
        "number": 1,
        "name": "shape",
        "ok": True,
        "detail": good["steps"][0]["detail"],
    }
    bad = check_receipt(dict(receipt, v=2), log_key=completed.log_key).to_json()
    assert bad["ok"] is False
    assert bad["failed"] == 1
    assert bad["execution"] is None
    orjson.dumps(bad)


def test_verify_receipt_raises_naming_the_step(completed: Scenario, receipt: dict[str, Any]) -> None:
    with pytest.raises(VerificationError, match=r"step 4 \(inclusion\)"):
        verify_receipt(dict(receipt, events=receipt["events"][::-1]), log_key=completed.log_key)


# -- mutations: one character anywhere ----------------------------------------------------------

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def string_fields(doc: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Every string value a mutation should reach: (path, value, expected failing step)."""
    fields = [("checkpoint", doc["checkpoint"], 3), ("log_key", doc["log_key"], 2)]
    for i, ev in enumerate(doc["events"]):
        fields.append((f"events[{i}].leaf", ev["leaf"], 4))
        fields += [(f"events[{i}].hashes[{j}]", h, 4) for j, h in enumerate(ev["hashes"])]
    fields += [(f"warrant_chain[{i}]", t, 6) for i, t in enumerate(doc["warrant_chain"])]
    env = doc["statement"]
    fields += [
        ("statement.payload", env["payload"], 7),
        ("statement.payloadType", env["payloadType"], 7),
        ("statement.signatures[0].keyid", env["signatures"][0]["keyid"], 7),
        ("statement.signatures[0].sig", env["signatures"][0]["sig"], 7),
    ]
    if "policy" in doc:
        fields += [(f"policy.bundle.files[{n}]", t, 8) for n, t in doc["policy"]["bundle"]["files"].items()]
        fields.append(("policy.bundle.schema", doc["policy"]["bundle"]["schema"], 8))
    return fields


def flips(text: str, value: str, samples: int = 48) -> Iterator[str]:
    """``text`` with one character of the JSON string ``value`` changed, at spread-out positions."""
    encoded = orjson.dumps(value).decode()
    start = text.find(encoded)
    assert start >= 0
    # Only letters and digits not part of an escape, so that the JSON still parses and the
    # change reaches the verifier of the field rather than the JSON parser.
    positions = [
        start + k for k in range(1, len(encoded) - 1) if encoded[k] in ALNUM and encoded[k - 1] != "\\"
    ]
    step = max(1, len(positions) // samples)
    chosen = sorted({*positions[::step], positions[0], positions[-1]})
    for p in chosen:
        c = text[p]
        yield text[:p] + ALNUM[(ALNUM.index(c) + 1) % len(ALNUM)] + text[p + 1 :]


def test_changing_any_character_of_any_field_fails_at_that_fields_step(
    completed: Scenario, receipt: dict[str, Any]
) -> None:
    text = orjson.dumps(receipt).decode()
    seen: dict[int, int] = {}
    for path, value, expected in string_fields(receipt):
        for mutated in flips(text, value):
            report = check_receipt(orjson.loads(mutated), log_key=completed.log_key)
            got = failed_at(report)
            assert got == expected, f"{path}: failed at step {got} ({report.failed}), expected {expected}"
            seen[expected] = seen.get(expected, 0) + 1
    assert set(seen) == {2, 3, 4, 6, 7, 8}
    assert sum(seen.values()) > 1000


@pytest.mark.slow
def test_flipping_any_bit_of_any_byte_of_the_receipt_fails(
    completed: Scenario, receipt: dict[str, Any]
) -> None:
    # Exhaustive: every byte of the serialized receipt, lowest bit flipped. JSON that no
    # longer parses fails at step 1; everything else at the step that owns the byte
    # (policy.activated_index, a number, at step 5).
    data = orjson.dumps(receipt)
    steps: dict[int, int] = {}
    for i in range(len(data)):
        mutated = data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]
        report = check_receipt(mutated, log_key=completed.log_key)
        assert not report.ok, f"byte {i} ({data[max(0, i - 20) : i + 20]!r}) flipped and still verifies"
        assert report.failed is not None
        steps[report.failed.number] = steps.get(report.failed.number, 0) + 1
    assert set(steps) == {1, 2, 3, 4, 5, 6, 7, 8}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_byte_changes_never_verify(
    completed: Scenario, receipt: dict[str, Any], data: st.DataObject
) -> None:
    raw = bytearray(orjson.dumps(receipt))
    for i in data.draw(st.sets(st.integers(0, len(raw) - 1), min_size=1, max_size=3)):
        raw[i] ^= data.draw(st.integers(1, 255))  # a non-zero XOR: the byte always changes
    assert not check_receipt(bytes(raw), log_key=completed.log_key).ok


def test_a_foreign_cosignature_on_the_statement_is_ignored(
    completed: Scenario, receipt: dict[str, Any]
) -> None:
    doc = copy.deepcopy(receipt)
    payload = base64.b64decode(doc["statement"]["payload"])
    foreign = sign_envelope(payload, payload_type=PAYLOAD_TYPE, signer=generate_signer("witness"))
    doc["statement"]["signatures"].append(foreign["signatures"][0])
    assert verify_receipt(doc, log_key=completed.log_key).ok


# -- mutations: structure ---------------------------------------------------------------------

Mutation = Callable[[dict[str, Any], Scenario], Any]


def position(doc: dict[str, Any], s: Scenario, role: str) -> int:
    index = s.roles[role] if role in s.roles else {"key": s.key_index, "policy": s.policy_index}[role]
    return [e["leaf_index"] for e in doc["events"]].index(index)


def drop(role: str) -> Mutation:
    def mutate(doc: dict[str, Any], s: Scenario) -> None:
        del doc["events"][position(doc, s, role)]

    return mutate


def setter(*path: Any, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any], s: Scenario) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value(target[path[-1]]) if callable(value) else value

    return mutate


def swap_events(doc: dict[str, Any], s: Scenario) -> None:
    ev = doc["events"]
    ev[0], ev[1] = ev[1], ev[0]


def swap_leaves(doc: dict[str, Any], s: Scenario) -> None:
    ev = doc["events"]
    ev[2]["leaf"], ev[3]["leaf"] = ev[3]["leaf"], ev[2]["leaf"]


def duplicate_event(doc: dict[str, Any], s: Scenario) -> None:
    doc["events"].insert(1, copy.deepcopy(doc["events"][1]))


def leaf_not_canonical(doc: dict[str, Any], s: Scenario) -> None:
    ev = doc["events"][0]
    ev["leaf"] = b64(orjson.dumps(orjson.loads(base64.b64decode(ev["leaf"])), option=orjson.OPT_INDENT_2))


def add_unrelated_event(doc: dict[str, Any], s: Scenario) -> None:
    index = s.roles["noise:32"]
    proof = s.log.inclusion_proof(index, int(doc["checkpoint"].split("\n")[1]))
    doc["events"].append({"leaf_index": index, "leaf": b64(s.log.leaf(index)), "hashes": proof["hashes"]})
    doc["events"].sort(key=lambda e: e["leaf_index"])


def other_genuine_token(doc: dict[str, Any], s: Scenario) -> None:
    claims = WarrantClaims(
        warrant_id="wr_test0010",
        principal="agent-1",
        action="exec",
        resource=EXE,
        args_digest=args_digest(list(ARGV)),
        zone="prod",
        executable_digest=EXE_DIGEST,
        obligations={},
        not_before=NOW + 10,
        expires=NOW + 10 + 900,
        lease_ttl_ms=5000,
        decision_index=s.roles["decision:10"],
    )
    doc["warrant_chain"] = [mint_warrant(claims, root_private_key=WARRANT_KEY.private_bytes())]


def rogue_token(doc: dict[str, Any], s: Scenario) -> None:
    token = doc["warrant_chain"][0]
    claims = WarrantClaims.from_json(inspect_warrant(token, root_public_key=WARRANT_KEY.public_key)["claims"])
    doc["warrant_chain"] = [mint_warrant(claims, root_private_key=ROGUE_KEY.private_bytes())]


def resign(
    change: Callable[[dict[str, Any]], Any], *, raw: bool = False, signer: NoteSigner | None = None
) -> Mutation:
    """Re-sign a changed statement with the log key (or another): only step 7's content checks stop it."""

    def mutate(doc: dict[str, Any], s: Scenario) -> None:
        statement = orjson.loads(base64.b64decode(doc["statement"]["payload"]))
        change(statement)
        payload = orjson.dumps(statement, option=orjson.OPT_INDENT_2) if raw else canonicalize(statement)
        doc["statement"] = sign_envelope(payload, payload_type=PAYLOAD_TYPE, signer=signer or s.signer)

    return mutate


def other_bundle(doc: dict[str, Any], s: Scenario) -> None:
    doc["policy"]["bundle"] = PolicyBundle({"exec.cedar": DENY_POLICY}, version=1).to_json()


STRUCTURAL: list[tuple[str, Mutation, int]] = [
    *[(f"missing-{k}", setter(k, value=KeyError), 1) for k in ("v", "checkpoint", "log_key", "events")],
    *[(f"missing-{k}", setter(k, value=KeyError), 1) for k in ("warrant_chain", "statement")],
    ("unknown-key", setter("extra", value=1), 1),
    ("unknown-key-in-event", setter("events", 0, "tree_size", value=9), 1),
    ("unknown-key-in-policy", setter("policy", "signature", value="x"), 1),
    ("version-2", setter("v", value=2), 1),
    ("version-string", setter("v", value="1"), 1),
    ("version-true", setter("v", value=True), 1),
    ("events-empty", setter("events", value=[]), 1),
    ("events-not-a-list", setter("events", value={}), 1),
    ("too-many-events", setter("events", value=lambda ev: ev * 100), 1),
    ("warrant-chain-empty", setter("warrant_chain", value=[]), 1),
    ("warrant-chain-too-long", setter("warrant_chain", value=lambda c: c * 33), 1),
    ("token-not-a-string", setter("warrant_chain", 0, value=7), 1),
    ("leaf-index-negative", setter("events", 0, "leaf_index", value=-1), 1),
    ("leaf-index-bool", setter("events", 0, "leaf_index", value=False), 1),
    ("leaf-index-float", setter("events", 0, "leaf_index", value=0.0), 1),
    ("hashes-not-a-list", setter("events", 1, "hashes", value="AAAA"), 1),
    ("hash-too-long", setter("events", 1, "hashes", 0, value=lambda h: h + "AAAA"), 1),
    ("statement-not-an-object", setter("statement", value="x"), 1),
    ("checkpoint-empty", setter("checkpoint", value=""), 1),
    ("policy-bundle-not-an-object", setter("policy", "bundle", value=[]), 1),
    ("reorder-events", swap_events, 4),
    ("duplicate-event", duplicate_event, 4),
    ("swap-leaves", swap_leaves, 4),
    ("truncate-proof", setter("events", 1, "hashes", value=lambda h: h[:-1]), 4),
    ("extend-proof", setter("events", 1, "hashes", value=lambda h: [*h, h[0]]), 4),
    ("empty-proof", setter("events", 1, "hashes", value=[]), 4),
    ("leaf-index-shifted", setter("events", 1, "leaf_index", value=lambda i: i + 1), 4),
    ("leaf-index-beyond-checkpoint", setter("events", -1, "leaf_index", value=10**6), 4),
    ("leaf-not-canonical", leaf_not_canonical, 4),
    ("leaf-not-base64", setter("events", 0, "leaf", value="!!"), 4),
    ("drop-key-declared", drop("key"), 5),
    ("drop-policy-activated", drop("policy"), 5),
    ("drop-decision", drop("decision:10"), 5),
    ("drop-warrant-issued", drop("warrant.issued:10"), 5),
    ("drop-started", drop("started"), 5),
    ("drop-terminal", drop("terminal"), 5),
    ("drop-verified", drop("verified"), 7),  # nothing links to it; the signed statement lists it
    ("add-unrelated-event", add_unrelated_event, 5),
    ("drop-policy-keep-its-event", setter("policy", value=KeyError), 5),
    ("policy-activated-index-wrong", setter("policy", "activated_index", value=0), 5),
    ("extra-token", setter("warrant_chain", value=lambda c: c * 2), 6),
    ("other-genuine-token", other_genuine_token, 6),
    ("token-by-another-key", rogue_token, 6),
    ("statement-unknown-key", setter("statement", "x", value=1), 7),
    ("statement-signed-by-another-key", resign(lambda st: None, signer=generate_signer(ORIGIN)), 7),
    ("statement-other-execution", resign(lambda st: st["predicate"].update(execution="ex_other")), 7),
    ("statement-other-exit-status", resign(lambda st: st["predicate"].update(exit_status=1)), 7),
    ("statement-other-indices", resign(lambda st: st["predicate"]["log"]["indices"].pop()), 7),
    ("statement-other-subject", resign(lambda st: st["subject"][1]["digest"].update(sha256="00" * 32)), 7),
    ("statement-subject-missing", resign(lambda st: st["subject"].pop()), 7),
    ("statement-extra-field", resign(lambda st: st.update(extra=1)), 7),
    ("statement-other-type", resign(lambda st: st.update(_type="https://in-toto.io/Statement/v0.1")), 7),
    ("statement-not-canonical", resign(lambda st: None, raw=True), 7),
    ("policy-other-bundle", other_bundle, 8),
]


@pytest.mark.parametrize(("mutate", "expected"), [m[1:] for m in STRUCTURAL], ids=[m[0] for m in STRUCTURAL])
def test_structural_mutation_fails_at_its_step(
    completed: Scenario, receipt: dict[str, Any], mutate: Mutation, expected: int
) -> None:
    doc = copy.deepcopy(receipt)
    mutate(doc, completed)
    report = check_receipt(doc, log_key=completed.log_key)
    assert failed_at(report) == expected, report.failed
    with pytest.raises(VerificationError, match=rf"step {expected} \({STEP_NAMES[expected]}\)"):
        verify_receipt(doc, log_key=completed.log_key)


@pytest.mark.parametrize(
    "doc",
    [None, 1, 1.5, "x", b"\xff\xfe", "[]", [], {}, {"v": 1}, "[" * 5000 + "]" * 5000, " " * (17 << 20)],
    ids=["none", "int", "float", "text", "bad-utf8", "json-list", "list", "empty", "v-only", "deep", "huge"],
)
def test_check_receipt_never_raises_for_garbage(completed: Scenario, doc: Any) -> None:
    assert failed_at(check_receipt(doc, log_key=completed.log_key)) == 1


# -- the trusted key ---------------------------------------------------------------------------


def test_wrong_trusted_key_fails_at_step_2(completed: Scenario, receipt: dict[str, Any]) -> None:
    other = generate_signer(ORIGIN).verifier.to_string()
    assert failed_at(check_receipt(receipt, log_key=other)) == 2
    assert failed_at(check_receipt(receipt, log_key="not a key")) == 2
    assert failed_at(check_receipt(receipt, log_key="")) == 2


def test_receipt_claiming_another_key_is_checked_against_the_trusted_one(
    completed: Scenario, receipt: dict[str, Any]
) -> None:
    other = generate_signer(ORIGIN).verifier.to_string()
    doc = dict(receipt, log_key=other)
    # The receipt's own copy never replaces the trusted key...
    assert failed_at(check_receipt(doc, log_key=completed.log_key)) == 2
    # ...and a verifier that trusts the other key finds the checkpoint not signed by it.
    assert failed_at(check_receipt(doc, log_key=other)) == 3


def test_receipt_from_another_log_fails_at_step_2(tmp_path: Path, completed: Scenario) -> None:
    forged = scenario(tmp_path / "forged")
    with forged.log:
        doc = forged.receipt()
    assert forged.log.origin == completed.log.origin
    assert failed_at(check_receipt(doc, log_key=completed.log_key)) == 2
    # Swapping in the trusted key's name does not help: the checkpoint signature is the other key's.
    assert failed_at(check_receipt(dict(doc, log_key=completed.log_key), log_key=completed.log_key)) == 3


def test_later_checkpoint_without_new_proofs_fails_at_step_4(tmp_path: Path) -> None:
    s = scenario(tmp_path / "d")
    with s.log:
        doc = s.receipt()
        noise(s, 100)
        noise(s, 101)
        assert failed_at(check_receipt(dict(doc, checkpoint=s.log.checkpoint()), log_key=s.log_key)) == 4
        # A fresh receipt proves the same events under the new checkpoint.
        assert verify_receipt(s.receipt(), log_key=s.log_key).ok


# -- logs that tell an inconsistent story: build_receipt refuses, naming the step -----------------


def test_decision_that_denied_fails_linkage(fresh: Scenario) -> None:
    claims = authorize(fresh, at=10, logged_decision="deny")
    execute(fresh, claims, at=30)
    with pytest.raises(VerificationError, match=r"step 5 \(linkage\).*expected allow"):
        fresh.receipt()


def test_start_that_follows_a_decision_instead_of_a_warrant_fails_linkage(fresh: Scenario) -> None:
    claims = authorize(fresh, at=10)
    fresh.roles["warrant.issued:10"] = fresh.roles["decision:10"]  # link the start to the decision
    execute(fresh, claims, at=30)
    with pytest.raises(
        VerificationError, match=r"step 5 \(linkage\).*expected its parent to be warrant.issued"
    ):
        fresh.receipt()


def test_events_of_two_executions_fail_linkage(fresh: Scenario) -> None:
    claims = authorize(fresh, at=10)
    execute(fresh, claims, at=30)
    started = fresh.roles["started"]
    fresh.append(
        "terminal2",
        {
            "type": "execution.completed",
            "time": stamp(40),
            "execution": "ex_other",
            "exit_status": 0,
            "stdout_digest": EXE_DIGEST,
            "stderr_digest": EXE_DIGEST,
            "parent": fresh.link(started),
        },
    )
    with pytest.raises(VerificationError, match=r"step 5 \(linkage\).*exactly one execution.terminated"):
        fresh.receipt()
    fresh.execution.remove(fresh.roles["terminal"])
    with pytest.raises(VerificationError, match=r"step 5 \(linkage\).*another execution"):
        fresh.receipt()


def test_token_that_is_not_the_logged_one_fails_the_chain(fresh: Scenario) -> None:
    claims = authorize(fresh, at=10)
    execute(fresh, claims, at=30)
    other = mint_warrant(claims, root_private_key=WARRANT_KEY.private_bytes())  # same claims, new signature
    assert other != fresh.tokens[0]
    with pytest.raises(VerificationError, match=r"step 6 \(warrant-chain\).*token_digest"):
        fresh.receipt(warrant_tokens=[other])


def test_warrant_signed_by_an_undeclared_key_fails_the_chain(fresh: Scenario) -> None:
    claims = authorize(fresh, at=10, key=ROGUE_KEY)
    execute(fresh, claims, at=30)
    with pytest.raises(VerificationError, match=r"step 6 \(warrant-chain\).*forged"):
        fresh.receipt()


def test_start_after_the_warrant_expired_fails_the_chain(fresh: Scenario) -> None:
    claims = authorize(fresh, at=10, ttl=5)
    execute(fresh, claims, at=30)
    with pytest.raises(VerificationError, match=r"step 6 \(warrant-chain\).*expired"):
        fresh.receipt()


def test_start_of_another_executable_than_warranted_fails_the_chain(fresh: Scenario) -> None:
    claims = authorize(fresh, at=10)
    execute(fresh, claims, at=30, digest="sha256:" + "cd" * 32)
    with pytest.raises(VerificationError, match=r"step 6 \(warrant-chain\).*executable digest"):
        fresh.receipt()


def test_delegation_that_widens_fails_the_chain(fresh: Scenario) -> None:
    # The child's decision (logged as allow) names another executable than the parent covers.
    parent = authorize(fresh, at=10)
    child = authorize(fresh, at=20, parent=parent, resource="/bin/true", logged_decision="allow")
    execute(fresh, child, at=30, executable="/bin/true")
    with pytest.raises(VerificationError, match=r"step 6 \(warrant-chain\).*scope"):
        fresh.receipt()


def test_custom_statement_with_its_own_predicate_type_verifies(
    completed: Scenario, receipt: dict[str, Any]
) -> None:
    statement = orjson.loads(base64.b64decode(receipt["statement"]["payload"]))
    statement["predicateType"] = "https://example.com/custom/v1"
    statement["predicate"] = {"note": "anything"}
    report = verify_receipt(completed.receipt(statement=statement), log_key=completed.log_key)
    assert "not read" in report.steps[6].detail
    statement["subject"] = statement["subject"][:1]
    with pytest.raises(VerificationError, match=r"step 7 \(statement\).*subjects"):
        completed.receipt(statement=statement)


# -- replay --------------------------------------------------------------------------------------


def test_replay_needs_the_bundle(completed: Scenario) -> None:
    report = check_receipt(completed.receipt(), log_key=completed.log_key, replay=True)
    assert failed_at(report) == 8
    assert report.failed is not None
    assert "carries none" in report.failed.detail


def test_replay_fails_with_a_bundle_that_decides_differently(tmp_path: Path) -> None:
    # The log says allow, under a bundle that forbids: only replaying the decision shows it.
    s = make_log(tmp_path / "d", policy=DENY_POLICY)
    with s.log:
        claims = authorize(s, at=10, logged_decision="allow")
        execute(s, claims, at=30)
        assert verify_receipt(s.receipt(), log_key=s.log_key).ok
        with pytest.raises(
            VerificationError, match=r"step 8 \(replay\).*another decision: denied by forbid policy no-echo"
        ):
            s.receipt(policy_bundle=s.bundle.to_json(), policy_index=s.policy_index)


def test_replay_fails_with_a_bundle_other_than_the_logged_one(
    completed: Scenario, receipt: dict[str, Any]
) -> None:
    doc = copy.deepcopy(receipt)
    doc["policy"]["bundle"] = PolicyBundle({"exec.cedar": POLICY + "\n"}, version=1).to_json()
    report = check_receipt(doc, log_key=completed.log_key, replay=True)
    assert failed_at(report) == 8
    assert report.failed is not None
    assert "the decision names" in report.failed.detail


def test_signed_bundle_is_accepted_and_its_signature_dropped(completed: Scenario) -> None:
    admin = generate_signer("admin")
    signed = {"bundle": completed.bundle.to_json(), "signer": "admin", "signature": b64(admin.sign(b"x"))}
    doc = completed.receipt(policy_bundle=signed, policy_index=completed.policy_index)
    assert doc["policy"]["bundle"] == completed.bundle.to_json()


# -- build_receipt's own checks -----------------------------------------------------------------


def test_build_receipt_refuses_bad_arguments(completed: Scenario) -> None:
    with pytest.raises(ValueError, match="log's signer"):
        completed.receipt(signer=generate_signer(ORIGIN))
    with pytest.raises(ValueError, match="distinct"):
        completed.receipt(execution_indices=[*completed.execution, completed.execution[0]])
    with pytest.raises(TypeError, match="one string"):
        completed.receipt(warrant_tokens=completed.tokens[0])
    with pytest.raises(ValueError, match="together"):
        completed.receipt(policy_index=completed.policy_index)


def test_build_receipt_refuses_an_index_beyond_the_log(completed: Scenario) -> None:
    from proctor.errors import ProofRequestError

    with pytest.raises(ProofRequestError):
        completed.receipt(execution_indices=[*completed.execution, 10**6])


def test_warrant_key_declared_after_the_warrant_fails_linkage(fresh: Scenario) -> None:
    claims = authorize(fresh, at=10)
    execute(fresh, claims, at=30)
    late = fresh.log.append(dict(orjson.loads(fresh.log.leaf(fresh.key_index)), time=stamp(40)))
    with pytest.raises(VerificationError, match=r"step 5 \(linkage\).*declared at"):
        fresh.receipt(key_index=late)


def test_key_declared_for_another_purpose_fails_linkage(fresh: Scenario) -> None:
    claims = authorize(fresh, at=10)
    execute(fresh, claims, at=30)
    other = fresh.log.append(dict(orjson.loads(fresh.log.leaf(fresh.key_index)), purpose="policy"))
    with pytest.raises(VerificationError, match=r"step 5 \(linkage\).*purpose 'warrant'"):
        fresh.receipt(key_index=other)


def test_output_digest_that_is_not_a_digest_fails_linkage(fresh: Scenario) -> None:
    claims = authorize(fresh, at=10)
    execute(fresh, claims, at=30, terminal="terminated")
    started = fresh.roles["started"]
    fresh.execution.remove(fresh.roles["terminal"])
    fresh.append(
        "terminal",
        {
            "type": "execution.completed",
            "time": stamp(40),
            "execution": "ex_test0001",
            "exit_status": 0,
            "stdout_digest": "md5:00",
            "parent": fresh.link(started),
        },
    )
    with pytest.raises(VerificationError, match=r"step 5 \(linkage\).*stdout_digest: expected sha256"):
        fresh.receipt()
