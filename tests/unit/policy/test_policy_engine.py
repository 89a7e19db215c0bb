"""PolicyEngine: fail closed, argv binding, obligations, trust boundaries, determinism, replay."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import cedarpy
import orjson
import pytest

from proctor.errors import PolicyError, PolicyValidationError
from proctor.policy import (
    DEFAULT_SCHEMA,
    Decision,
    PolicyBundle,
    PolicyEngine,
    PolicyRequest,
    _cedar,
    deny_all,
)
from proctor.policy.context import build_context

NOW = 1767225600  # 2026-01-01T00:00:00Z, a Thursday

PG_DUMP = """
@id("dev-pg-dump")
@max_duration_s("60")
@lease_ttl_s("3")
permit (
    principal,
    action == Proctor::Action::"exec",
    resource == Proctor::Executable::"/usr/bin/pg_dump"
) when { principal.role == "dev" && context.args has a1 && context.args.a1 == "db1" };
"""


def engine(*texts: str, schema: str = DEFAULT_SCHEMA, sliced: bool = True) -> PolicyEngine:
    files = {f"p{i}.cedar": text for i, text in enumerate(texts)}
    return PolicyEngine.compile(PolicyBundle(files, schema), sliced=sliced)


def exec_request(*argv: str, resource: str = "/usr/bin/pg_dump", **kw: Any) -> PolicyRequest:
    attrs = kw.pop("principal_attrs", {"role": "dev", "zone": "prod"})
    return PolicyRequest("alice", attrs, "exec", resource, argv, **kw)


def tool_request(resource: str, arguments: dict[str, Any] | None, **kw: Any) -> PolicyRequest:
    attrs = kw.pop("principal_attrs", {"role": "dev", "zone": "prod"})
    return PolicyRequest("alice", attrs, kw.pop("action", "tool.call"), resource, arguments=arguments, **kw)


# -- fail closed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "error"),
    [
        (['permit(principal, action, resource) when { principal.nope == "x" };'], PolicyValidationError),
        (['permit(principal, action == Proctor::Action::"rm", resource);'], PolicyValidationError),
        (['permit(principal, action, resource) when { context.args.a1 == "x" };'], PolicyValidationError),
        (["permit(principal, action, resource)"], PolicyValidationError),
        (["permit(principal, action, resource) when { 1 + };"], PolicyValidationError),
        ([], PolicyError),
        (["// nothing but a comment\n"], PolicyError),
        (["", "  \n"], PolicyError),
    ],
    ids=[
        "schema-invalid-attribute",
        "schema-invalid-action",
        "optional-attribute-without-has",
        "syntax-missing-semicolon",
        "syntax-broken-expression",
        "empty-bundle-no-files",
        "empty-bundle-only-comments",
        "empty-bundle-blank-files",
    ],
)
def test_fail_closed_bundle_that_cannot_decide_does_not_compile(
    texts: list[str], error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        engine(*texts)
    if error is PolicyError:
        assert type(info.value) is PolicyError  # not a validation error: there is nothing to validate
        assert "empty" in str(info.value)
    else:
        assert isinstance(info.value, PolicyValidationError)
        assert info.value.diagnostics, "Cedar's diagnostics are carried"
        assert all(d.startswith(("p0.cedar", "Policy parse error")) for d in info.value.diagnostics)


def test_fail_closed_validation_diagnostics_name_the_file_and_policy() -> None:
    good = 'permit(principal, action, resource == Proctor::Executable::"/bin/true");'
    bad = '@id("broken") permit(principal, action, resource) when { principal.nope == "x" };'
    with pytest.raises(PolicyValidationError) as info:
        engine(good, bad)
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.startswith("p1.cedar: policy1 (@id 'broken'): ")
    assert "nope" in diagnostic


def test_fail_closed_syntax_error_names_its_file() -> None:
    with pytest.raises(PolicyValidationError) as info:
        engine('permit(principal, action, resource == Proctor::Executable::"/bin/true");', "permit(")
    assert info.value.diagnostics[0].startswith("p1.cedar:1:7: ")  # file:line:column


def test_fail_closed_templates_are_rejected() -> None:
    with pytest.raises(PolicyValidationError, match="do not parse") as info:
        engine("permit(principal == ?principal, action, resource);")
    assert "templates" in info.value.diagnostics[0]


def test_fail_closed_erroring_forbid_does_not_turn_into_allow() -> None:
    # Cedar skips a policy whose condition errors. With validated policies a missing
    # attribute cannot be read, but arithmetic overflow still errors at run time: the
    # forbid below errors for budget_used >= 2, Cedar then answers Allow (from the
    # permit) with the error in its diagnostics, and proctor must deny.
    permit = '@id("all") permit(principal, action, resource);'
    forbid = (
        '@id("budget") forbid(principal, action, resource) '
        "when { context.counters.budget_used * 4611686018427387904 > 0 };"
    )
    policies = cedarpy.PolicySet.from_str(permit + forbid)
    eng = engine(permit, forbid)
    request = exec_request("true", resource="/bin/true", counters={"budget_used": 5})
    raw = cedarpy.is_authorized(
        {
            "principal": {"type": "Proctor::Principal", "id": "alice"},
            "action": {"type": "Proctor::Action", "id": "exec"},
            "resource": {"type": "Proctor::Executable", "id": "/bin/true"},
            "context": build_context(request, NOW),
        },
        policies,
        [{"uid": {"type": "Proctor::Principal", "id": "alice"}, "attrs": {}, "parents": []}],
    )
    assert raw.decision == cedarpy.Decision.Allow
    assert raw.diagnostics.errors
    decision = eng.decide(request, now=NOW)
    assert not decision.allow
    assert decision.policies == ()
    assert len(decision.errors) == 1
    assert "overflow" in decision.errors[0]
    assert "budget" in decision.reason
    assert "evaluation error" in decision.reason
    assert not decision.obligations
    # Without the overflow, the same forbid is simply not satisfied and the permit allows.
    assert eng.decide(exec_request("true", resource="/bin/true"), now=NOW).allow


def test_fail_closed_forbid_reading_an_attribute_missing_for_this_request() -> None:
    # A bundle schema may give resources attributes; proctor's resources are not in
    # the entity store, so reading one errors at run time and the forbid is skipped.
    doc = json.loads(DEFAULT_SCHEMA)
    doc["Proctor"]["entityTypes"]["Executable"] = {
        "shape": {"type": "Record", "attributes": {"owner": {"type": "String"}}}
    }
    permit = "permit(principal, action, resource);"
    forbid = 'forbid(principal, action, resource is Proctor::Executable) when { resource.owner == "root" };'
    decision = engine(permit, forbid, schema=json.dumps(doc)).decide(
        exec_request("id", resource="/usr/bin/id"), now=NOW
    )
    assert not decision.allow
    assert decision.errors
    assert "policy1" in decision.errors[0]


def _answer(decision: str, reasons: list[str] | None, errors: list[str] | None) -> bytes:
    diagnostics: dict[str, Any] = {}
    if reasons is not None:
        diagnostics["reason"] = reasons
    if errors is not None:
        diagnostics["errors"] = errors
    return orjson.dumps({"decision": decision, "diagnostics": diagnostics})


def _raise(*_: Any, **__: Any) -> Any:
    raise RuntimeError("cedar exploded")


@pytest.mark.parametrize(
    ("fake", "expect_error"),
    [
        (_raise, "RuntimeError: cedar exploded"),
        (lambda *a, **k: _answer("NoDecision", [], []), None),
        (lambda *a, **k: _answer("NoDecision", None, ["failed to build request: x"]), "failed to build"),
        (lambda *a, **k: _answer("Allow", ["policy0"], ["error while evaluating policy `policy0`: x"]), "x"),
        (lambda *a, **k: _answer("Allow", ["policy99"], []), "KeyError"),
        (lambda *a, **k: _answer("Maybe", [], []), "expected a decision in"),
        (lambda *a, **k: _answer("Allow", ["policy0"], None), "expected diagnostics with errors"),
        (lambda *a, **k: _answer("Allow", None, []), "decision 'Allow' came without its reasons"),
        (lambda *a, **k: _answer("Allow", "policy0", []), "reasons as a list of strings"),  # type: ignore[arg-type]
        (lambda *a, **k: _answer("Allow", ["policy0"], [{"e": 1}]), "errors as a list of strings"),  # type: ignore[list-item]
        (lambda *a, **k: b'{"decision": "Allow"', "JSONDecodeError"),
        (lambda *a, **k: b'["Allow"]', "expected a JSON object"),
    ],
    ids=[
        "exception-in-cedar",
        "no-decision",
        "no-decision-with-errors",
        "allow-with-errors",
        "unknown-policy-id",
        "unknown-verdict",
        "allow-without-errors-list",
        "allow-without-reasons",
        "reasons-not-a-list",
        "errors-not-strings",
        "truncated-json",
        "not-an-object",
    ],
)
def test_fail_closed_anything_but_a_clean_allow_denies(
    monkeypatch: pytest.MonkeyPatch, fake: Callable[..., Any], expect_error: str | None
) -> None:
    eng = engine(PG_DUMP)
    request = exec_request("pg_dump", "db1")
    assert eng.decide(request, now=NOW).allow
    eng.cache.clear()  # the allow is kept for reuse; this checks what deciding afresh does
    monkeypatch.setattr(_cedar, "_ask_one", fake)
    decision = eng.decide(request, now=NOW)
    assert not decision.allow
    assert decision.request_digest == request.digest()
    assert decision.bundle_digest == eng.bundle_digest
    assert not decision.obligations
    if expect_error is None:
        assert decision.errors == ()
        assert "no decision" in decision.reason
    else:
        assert any(expect_error in e for e in decision.errors), decision.errors


class PanicException(BaseException):  # the name pyo3 gives a Rust panic
    pass


def test_fail_closed_rust_panic_denies_but_interrupts_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = engine(PG_DUMP)
    request = exec_request("pg_dump", "db1")

    def panic(*_: Any, **__: Any) -> Any:
        raise PanicException("index out of bounds")

    def interrupt(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(_cedar, "_ask_one", panic)
    decision = eng.decide(request, now=NOW)
    assert not decision.allow
    assert decision.errors == ("PanicException: index out of bounds",)
    monkeypatch.setattr(_cedar, "_ask_one", interrupt)
    with pytest.raises(KeyboardInterrupt):
        eng.decide(request, now=NOW)


def test_fail_closed_exception_in_batch_denies_every_request_of_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eng = engine(PG_DUMP)
    monkeypatch.setattr(_cedar, "_ask_many", _raise)
    decisions = eng.decide_batch([exec_request("pg_dump", "db1")] * 3, now=NOW)
    assert [d.allow for d in decisions] == [False] * 3
    assert all("cedar exploded" in d.errors[0] for d in decisions)


@pytest.mark.parametrize(
    ("request_", "now", "reason"),
    [
        (exec_request("pg_dump", "db1", resource="pg_dump"), NOW, "absolute path"),
        (exec_request(*(["pg_dump"] * 1025)), NOW, "1025 entries, more than the limit of 1024"),
        (exec_request(), NOW, "empty argv"),
        (exec_request("pg_dump", "db\x001"), NOW, "NUL"),
        (exec_request("pg_dump", "db1", counters={"rate_1d": 1}), NOW, "unknown counter"),
        (exec_request("pg_dump", "db1", counters={"rate_1m": -1}), NOW, "non-negative"),
        (exec_request("pg_dump", "db1", executable_digest="md5:00"), NOW, "sha256"),
        (exec_request("pg_dump", "db1", principal_attrs={"role": "dev"}), NOW, "'zone'"),
        (exec_request("pg_dump", "db1", principal_attrs={"role": "dev", "zone": 1}), NOW, "strings"),
        (PolicyRequest("alice", {"role": "", "zone": ""}, "delete", "/x"), NOW, "one of exec"),
        (PolicyRequest("", {"role": "", "zone": ""}, "exec", "/x", ("x",)), NOW, "principal"),
        (tool_request("fs/read", {"path": "/etc"}, argv=("x",)), NOW, "not argv"),
        (exec_request("pg_dump", "db1", arguments={"a": 1}), NOW, "not tool arguments"),
        (tool_request("fs/read", {"t": math.nan}), NOW, "canonical"),
        (exec_request("pg_dump", "db1"), 1.5, "integer unix seconds"),
        (exec_request("pg_dump", "db1"), -1, "integer unix seconds"),
        (exec_request("pg_dump", "db1"), True, "integer unix seconds"),
    ],
    ids=[
        "relative-executable",
        "argv-too-long",
        "exec-without-argv",
        "nul-in-argv",
        "unknown-counter",
        "negative-counter",
        "bad-executable-digest",
        "principal-without-zone",
        "non-string-attribute",
        "unknown-action",
        "empty-principal",
        "argv-on-tool-call",
        "arguments-on-exec",
        "nan-argument",
        "float-now",
        "negative-now",
        "bool-now",
    ],
)
def test_fail_closed_malformed_request_is_denied_with_a_reason(
    request_: PolicyRequest, now: Any, reason: str
) -> None:
    eng = engine(PG_DUMP, "permit(principal, action, resource);")
    decision = eng.decide(request_, now=now)
    assert not decision.allow
    assert reason in decision.reason, decision.reason
    assert eng.decide_batch([request_], now=now) == [decision]


def test_fail_closed_request_that_is_not_a_request() -> None:
    decision = engine(PG_DUMP).decide("alice runs pg_dump", now=NOW)  # type: ignore[arg-type]
    assert not decision.allow
    assert decision.errors
    assert decision.request_digest == ""


def test_fail_closed_principal_missing_a_required_schema_attribute() -> None:
    doc = json.loads(DEFAULT_SCHEMA)
    doc["Proctor"]["entityTypes"]["Principal"]["shape"]["attributes"]["tenant"] = {"type": "String"}
    eng = engine("permit(principal, action, resource);", schema=json.dumps(doc))
    assert not (decision := eng.decide(exec_request("id", resource="/usr/bin/id"), now=NOW)).allow
    assert "lacks attributes the schema requires: tenant" in decision.reason
    attrs = {"role": "dev", "zone": "prod", "tenant": "acme"}
    assert eng.decide(exec_request("id", resource="/usr/bin/id", principal_attrs=attrs), now=NOW).allow


def test_deny_all_records_the_request_and_reason() -> None:
    request = exec_request("pg_dump", "db1")
    decision = deny_all("no valid policy bundle", bundle_digest="sha256:00", request=request)
    assert decision == Decision(False, (), (), {}, "sha256:00", request.digest(), "no valid policy bundle")
    assert deny_all("x").request_digest == ""
    bad = tool_request("fs/read", {"t": math.nan})
    assert deny_all("x", request=bad).request_digest == ""


# -- argv binding ------------------------------------------------------------------------


def test_argv_binding_positions_decide() -> None:
    one, two = exec_request("pg_dump", "db1"), exec_request("pg_dump", "db2")
    assert build_context(one, NOW) != build_context(two, NOW)
    assert build_context(one, NOW)["args"] == {"a0": "pg_dump", "a1": "db1"}
    eng = engine(PG_DUMP)
    assert eng.decide(one, now=NOW).allow
    denied = eng.decide(two, now=NOW)
    assert not denied.allow
    assert "no permit policy matched" in denied.reason
    assert not eng.decide(exec_request("pg_dump"), now=NOW).allow  # a1 absent: `has` guards it


def test_argv_binding_whole_vector_and_command_line() -> None:
    eng = engine(
        '@id("dump") permit(principal, action == Proctor::Action::"exec", resource) '
        'when { context.command_line like "pg_dump *" && !context.argv.contains("--all") '
        "&& context.argc <= 3 };"
    )
    assert eng.decide(exec_request("pg_dump", "-s", "db1"), now=NOW).allow
    assert not eng.decide(exec_request("pg_dump", "--all", "db1"), now=NOW).allow
    assert not eng.decide(exec_request("pg_dump", "-s", "-v", "db1"), now=NOW).allow
    assert not eng.decide(exec_request("pg_restore", "db1"), now=NOW).allow


def test_argv_binding_beyond_32_positions_is_in_argv_only() -> None:
    argv = tuple(f"x{i}" for i in range(40))
    context = build_context(exec_request(*argv), NOW)
    assert sorted(context["args"]) == sorted(f"a{i}" for i in range(32))
    assert context["argc"] == 40
    assert list(context["argv"]) == list(argv)
    assert context["command_line"].endswith("x38 x39")
    eng = engine(
        "permit(principal, action, resource) "
        'when { context.argv.contains("x39") && !(context.args has a32) };'
    )
    assert eng.decide(exec_request(*argv, resource="/bin/x"), now=NOW).allow


# -- principal, time, counters, tool arguments --------------------------------------------


def test_principal_attributes_reach_cedar() -> None:
    eng = engine(
        'permit(principal, action, resource) when { principal.role == "dev" && principal has tenant '
        '&& principal.tenant == "acme" };'
    )
    attrs = {"role": "dev", "zone": "prod", "tenant": "acme", "team": "undeclared, so not given to Cedar"}
    assert eng.decide(exec_request("id", resource="/bin/id", principal_attrs=attrs), now=NOW).allow
    assert not eng.decide(exec_request("id", resource="/bin/id"), now=NOW).allow
    attrs["role"] = "ops"
    assert not eng.decide(exec_request("id", resource="/bin/id", principal_attrs=attrs), now=NOW).allow


def test_time_and_counters_reach_cedar() -> None:
    eng = engine(
        "permit(principal, action, resource) when { context.time.hour >= 9 && context.time.hour < 18 "
        '&& context.time.weekday < 5 && context.time.date like "2026-*" && context.counters.rate_1m < 10 };'
    )
    monday_10 = NOW + 4 * 86400 + 10 * 3600
    request = exec_request("id", resource="/bin/id", counters={"rate_1m": 3})
    assert eng.decide(request, now=monday_10).allow
    assert not eng.decide(request, now=monday_10 + 9 * 3600).allow  # 19:00
    assert not eng.decide(request, now=NOW + 2 * 86400 + 10 * 3600).allow  # Saturday
    busy = exec_request("id", resource="/bin/id", counters={"rate_1m": 10})
    assert not eng.decide(busy, now=monday_10).allow


def test_tool_arguments_reach_cedar() -> None:
    eng = engine(
        '@id("read") permit(principal, action == Proctor::Action::"mcp.call", '
        'resource == Proctor::Tool::"filesystem/read_file") when { context.arguments.contains("mode=r") '
        '&& context.arguments_json like "*\\"path\\":\\"/srv/*" };'
    )
    ok = tool_request("filesystem/read_file", {"path": "/srv/a", "mode": "r"}, action="mcp.call")
    assert eng.decide(ok, now=NOW).allow
    etc = tool_request("filesystem/read_file", {"path": "/etc/passwd", "mode": "r"}, action="mcp.call")
    assert not eng.decide(etc, now=NOW).allow
    write = tool_request("filesystem/read_file", {"path": "/srv/a", "mode": "w"}, action="mcp.call")
    assert not eng.decide(write, now=NOW).allow
    assert not eng.decide(tool_request("filesystem/read_file", None, action="mcp.call"), now=NOW).allow


# -- obligations ---------------------------------------------------------------------------

TWO_PERMITS = """
@id("a") @max_duration_s("60") @memory_limit_mb("512") @no_network("false") @on_violation("suspend")
permit(principal, action == Proctor::Action::"exec", resource);
@id("b") @max_duration_s("30") @max_pids("64") @no_network("true") @approval_required("false")
@on_violation("webhook:https://hooks.example/x")
permit(principal, action, resource == Proctor::Executable::"/usr/bin/make");
"""


def test_obligations_from_the_determining_permits_combine_most_restrictively() -> None:
    eng = engine(TWO_PERMITS)
    both = eng.decide(exec_request("make", resource="/usr/bin/make"), now=NOW)
    assert both.allow
    assert both.policies == ("a", "b")
    assert dict(both.obligations) == {
        "approval_required": False,
        "max_duration_s": 30,
        "max_pids": 64,
        "memory_limit_mb": 512,
        "no_network": True,
        "on_violation": "suspend,webhook:https://hooks.example/x",
    }
    only_a = eng.decide(exec_request("cc", resource="/usr/bin/cc"), now=NOW)
    assert only_a.policies == ("a",)
    assert dict(only_a.obligations) == {
        "max_duration_s": 60,
        "memory_limit_mb": 512,
        "no_network": False,
        "on_violation": "suspend",
    }


def test_obligations_default_on_violation_is_terminate_and_deny_has_none() -> None:
    eng = engine(PG_DUMP)
    allow = eng.decide(exec_request("pg_dump", "db1"), now=NOW)
    assert dict(allow.obligations) == {"lease_ttl_s": 3, "max_duration_s": 60, "on_violation": "terminate"}
    assert eng.decide(exec_request("pg_dump", "db2"), now=NOW).obligations == {}


@pytest.mark.parametrize(
    ("annotation", "fragment"),
    [
        ('@max_duration_s("soon")', "@max_duration_s"),
        ('@max_duration_s("0")', "@max_duration_s"),
        ('@no_network("yes")', "@no_network"),
        ('@on_violation("explode")', "@on_violation"),
        ('@max_duraton_s("60")', "unknown annotation"),
        ('@cross_zone("maybe")', "@cross_zone"),
        ("@id", "@id"),
    ],
    ids=[
        "not-a-number",
        "zero",
        "not-a-bool",
        "unknown-response",
        "misspelt",
        "cross-zone-value",
        "empty-id",
    ],
)
def test_obligations_malformed_annotation_is_a_compile_error(annotation: str, fragment: str) -> None:
    with pytest.raises(PolicyValidationError, match="annotations") as info:
        engine(f"{annotation} permit(principal, action, resource);")
    assert fragment in info.value.diagnostics[0]
    assert info.value.diagnostics[0].startswith("p0.cedar: policy0")


def test_obligations_on_a_forbid_and_duplicate_ids_are_compile_errors() -> None:
    with pytest.raises(PolicyValidationError) as info:
        engine('@max_duration_s("5") forbid(principal, action, resource);')
    assert "permit" in info.value.diagnostics[0]
    with pytest.raises(PolicyValidationError) as info:
        engine(
            '@id("x") permit(principal, action, resource);', '@id("x") forbid(principal, action, resource);'
        )
    assert "'x'" in info.value.diagnostics[0]


# -- trust boundaries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal_zone", "env_zone", "cross_zone_permit", "allow"),
    [
        ("prod", "prod", False, True),
        ("prod", "", False, True),
        ("prod", "dev", False, False),
        ("", "prod", False, False),
        ("prod", "dev", True, True),
    ],
    ids=["same-zone", "env-zone-unknown", "cross-zone", "principal-without-zone", "cross-zone-permitted"],
)
def test_cross_zone_denied_unless_a_determining_permit_allows_it(
    principal_zone: str, env_zone: str, cross_zone_permit: bool, allow: bool
) -> None:
    eng = engine(
        '@id("local") permit(principal, action, resource == Proctor::Executable::"/bin/ls");',
        '@id("remote") @cross_zone("true") permit(principal, action, resource) '
        'when { principal.role == "sre" };',
    )
    role = "sre" if cross_zone_permit else "dev"
    request = exec_request(
        "ls", resource="/bin/ls", zone=env_zone, principal_attrs={"role": role, "zone": principal_zone}
    )
    decision = eng.decide(request, now=NOW)
    assert decision.allow is allow, decision.reason
    if not allow:
        assert "cross-zone" in decision.reason
        assert decision.policies == ()


# -- determinism and replay ----------------------------------------------------------------

MIXED = [
    exec_request("pg_dump", "db1"),
    exec_request("pg_dump", "db2"),
    exec_request("make", resource="/usr/bin/make"),
    exec_request("make", resource="/usr/bin/make", zone="dev"),
    exec_request("rm", "-rf", "/", resource="/usr/bin/rm"),
    tool_request("fs/read", {"path": "/x"}, principal_attrs={"role": "ops", "zone": "prod"}),
    exec_request(*(["x"] * 2000)),
]


def test_determinism_same_inputs_give_identical_decisions() -> None:
    text = (
        PG_DUMP + TWO_PERMITS + 'forbid(principal, action, resource == Proctor::Executable::"/usr/bin/rm");'
    )
    first = [engine(text).decide(r, now=NOW) for r in MIXED]
    again = [engine(text).decide(r, now=NOW) for r in MIXED]
    assert first == again
    assert [orjson.dumps(d.to_json(), option=orjson.OPT_SORT_KEYS) for d in first] == [
        orjson.dumps(d.to_json(), option=orjson.OPT_SORT_KEYS) for d in again
    ]
    assert engine(text).decide_batch(MIXED, now=NOW) == first
    assert engine(text, sliced=False).decide_batch(MIXED, now=NOW) == first


def test_replay_of_a_logged_request_gives_the_logged_decision() -> None:
    eng = engine(PG_DUMP + TWO_PERMITS)
    for request in MIXED:
        logged = eng.decide(request, now=NOW)
        wire = orjson.loads(orjson.dumps({"request": request.to_json(), "decision": logged.to_json()}))
        replayed = engine(PG_DUMP + TWO_PERMITS).replay(wire["request"], now=NOW)
        assert replayed == logged == Decision.from_json(wire["decision"])


def test_replay_of_a_malformed_log_entry_denies() -> None:
    doc = exec_request("pg_dump", "db1").to_json()
    doc["v"] = 2
    decision = engine(PG_DUMP).replay(doc, now=NOW)
    assert not decision.allow
    assert "malformed" in decision.reason
    assert decision.errors


def test_decide_batch_groups_principals_and_slices_and_keeps_order() -> None:
    eng = engine(PG_DUMP, 'permit(principal, action, resource) when { principal.role == "ops" };')
    requests = [
        exec_request("pg_dump", "db1"),
        exec_request("pg_dump", "db1", principal_attrs={"role": "ops", "zone": "prod"}),
        exec_request("pg_dump", "db2"),
        tool_request("a/b", {}, principal_attrs={"role": "ops", "zone": "prod"}),
        exec_request(),
    ]
    batch = eng.decide_batch(requests, now=NOW)
    assert batch == [eng.decide(r, now=NOW) for r in requests]
    assert [d.allow for d in batch] == [True, True, False, True, False]
    assert eng.decide_batch([], now=NOW) == []
