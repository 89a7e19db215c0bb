"""The decision's fast path gives the answers of the plain one (ADR 0025).

- Cedar's compiled function called directly (:mod:`proctor.policy._cedar`) and
  cedarpy's public wrapper give the same decisions, errors and batches included; a
  binding whose answer does not read as expected is not called directly.
- The context holds exactly the fields asked for, each as the full context has it.
- :meth:`PolicyRequest.wellformed_digest` is :meth:`PolicyRequest.digest`,
  and refuses what it refuses (floats, depth, keys, lone surrogates).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.canonical import MAX_DEPTH
from proctor.errors import CanonicalizationError
from proctor.policy import DEFAULT_SCHEMA, PolicyBundle, PolicyEngine, PolicyRequest, _cedar
from proctor.policy.context import CONTEXT_FIELDS, build_context, request_problem

NOW = 1767261600  # 2026-01-01T10:00:00Z

POLICIES = """
@id("dump") @max_duration_s("60") @lease_ttl_s("3")
permit (principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/usr/bin/pg_dump")
when { principal.role == "dev" && context.args has a1 && context.args.a1 == "db1" };

@id("dump-ops") @max_duration_s("30") @cross_zone("true")
permit (principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/usr/bin/pg_dump")
when { principal.role == "ops" };

@id("no-all")
forbid (principal, action == Proctor::Action::"exec", resource) when { context.argv.contains("--all") };

@id("overflow")
forbid (principal, action, resource) when { context.counters.budget_used * 4611686018427387904 > 0 };

@id("mail")
permit (principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"mail/send")
when { context.arguments.contains("to=ops@example.com") && context.time.hour >= 8 };
"""


def attrs(role: str, zone: str = "prod") -> dict[str, str]:
    return {"role": role, "zone": zone}


REQUESTS = [
    PolicyRequest("alice", attrs("dev"), "exec", "/usr/bin/pg_dump", ("pg_dump", "db1")),  # allow
    PolicyRequest("alice", attrs("dev"), "exec", "/usr/bin/pg_dump", ("pg_dump", "db2")),  # default deny
    PolicyRequest("alice", attrs("dev"), "exec", "/usr/bin/pg_dump", ("pg_dump", "db1", "--all")),  # forbid
    PolicyRequest("bob", attrs("ops"), "exec", "/usr/bin/pg_dump", ("pg_dump", "x")),  # two permits
    PolicyRequest("bob", attrs("ops"), "exec", "/usr/bin/pg_dump", ("pg_dump",), zone="eu"),  # cross-zone
    PolicyRequest("alice", attrs("dev"), "exec", "/usr/bin/pg_dump", ("pg_dump", "db1"), zone="eu"),
    PolicyRequest(
        "alice", attrs("dev"), "exec", "/usr/bin/pg_dump", ("pg_dump", "db1"), counters={"budget_used": 3}
    ),  # evaluation error
    PolicyRequest(
        "alice", attrs("dev"), "tool.call", "mail/send", arguments={"to": "ops@example.com", "t": 0.5}
    ),
    PolicyRequest("alice", attrs("dev"), "tool.call", "mail/send", arguments={"to": "x@example.com"}),
    PolicyRequest("alice", attrs("dev"), "mcp.call", "fs/read", arguments={"path": "/srv"}),  # empty slice
]


def engine() -> PolicyEngine:
    return PolicyEngine.compile(PolicyBundle({"p.cedar": POLICIES}, schema=DEFAULT_SCHEMA), decision_cache=0)


def test_this_cedarpy_is_called_directly() -> None:
    # Not a requirement of correctness (the public functions give the same answers,
    # below), but the figures in docs/benchmarks.md are of the direct call: a cedarpy
    # that no longer offers it should be noticed here, not in a slower benchmark.
    assert _cedar.DIRECT, f"cedarpy {cedarpy.__name__}: the compiled function is not called directly"


def test_the_direct_call_and_the_public_wrapper_decide_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    direct = [engine().decide(r, now=NOW) for r in REQUESTS]
    direct_batch = engine().decide_batch(REQUESTS, now=NOW)
    monkeypatch.setattr(_cedar, "_ask_one", _cedar._public_one)
    monkeypatch.setattr(_cedar, "_ask_many", _cedar._public_many)
    public = [engine().decide(r, now=NOW) for r in REQUESTS]
    public_batch = engine().decide_batch(REQUESTS, now=NOW)
    assert direct == public == direct_batch == public_batch
    # The corpus covers what the answer can say.
    assert [d.allow for d in direct] == [True, False, False, True, True, False, False, True, False, False]
    assert direct[2].policies == ("no-all",)
    assert direct[3].policies == ("dump-ops",)
    assert direct[3].obligations["max_duration_s"] == 30
    assert "cross-zone" in direct[5].reason
    assert direct[6].errors
    assert "overflow" in direct[6].reason


def test_a_binding_whose_answer_reads_otherwise_is_not_called_directly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    internal: Any = cedarpy._internal
    assert _cedar._direct_available()
    monkeypatch.setattr(internal, "is_authorized", lambda *a: '{"decision": "Allow"}')
    assert not _cedar._direct_available()
    monkeypatch.setattr(internal, "is_authorized", lambda *a: {"decision": "Deny"})  # not JSON text
    assert not _cedar._direct_available()
    monkeypatch.delattr(internal, "is_authorized")
    assert not _cedar._direct_available()


def test_the_batch_refuses_a_wrong_number_of_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cedar, "_ask_many", lambda requests, *a: [])
    decisions = engine().decide_batch(REQUESTS[:2], now=NOW)
    assert [d.allow for d in decisions] == [False, False]
    assert all("expected 2 answers from Cedar, found 0" in d.errors[0] for d in decisions)


def test_the_context_holds_exactly_the_fields_asked_for() -> None:
    for request in REQUESTS:
        full = build_context(request, NOW)
        assert tuple(full) == CONTEXT_FIELDS
        for n in (0, 1, 2, 3):
            for fields in itertools.combinations(CONTEXT_FIELDS, n):
                assert build_context(request, NOW, frozenset(fields)) == {k: full[k] for k in fields}


def test_a_field_not_asked_for_is_not_computed() -> None:
    # Arguments outside the canonical subset raise only when arguments_json is built.
    request = PolicyRequest("a", attrs("dev"), "tool.call", "x/y", arguments={"n": float("nan")})
    assert build_context(request, NOW, frozenset({"zone", "time"}))["zone"] == ""
    with pytest.raises(CanonicalizationError):
        build_context(request, NOW, frozenset({"arguments_json"}))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    action=st.sampled_from(["exec", "tool.call", "mcp.call"]),
    attr_names=st.lists(st.text(max_size=5), max_size=3),
    argv=st.lists(st.text(max_size=6), min_size=1, max_size=4),
    arguments=st.dictionaries(st.text(max_size=6), _json, max_size=4),
    zone=st.text(max_size=4),
)
def test_the_wellformed_digest_is_the_digest(
    action: str, attr_names: list[str], argv: list[str], arguments: dict[str, Any], zone: str
) -> None:
    principal_attrs = {"role": "r", "zone": "z", **dict.fromkeys(attr_names, "v")}
    is_exec = action == "exec"
    request = PolicyRequest(
        "p",
        principal_attrs,
        action,
        "/bin/x" if is_exec else "s/t",
        tuple(argv) if is_exec else (),
        arguments=None if is_exec else arguments,
        zone=zone,
    )
    if request_problem(request, NOW) is not None:
        return
    try:
        want: str | type[CanonicalizationError] = request.digest()
    except CanonicalizationError:
        want = CanonicalizationError
    if want is CanonicalizationError:
        with pytest.raises(CanonicalizationError):
            request.wellformed_digest()
    else:
        assert request.wellformed_digest() == want


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("arguments", "accepted"),
    [
        ({"deep": _nested(MAX_DEPTH - 2)}, True),  # the deepest a request holds
        ({"deep": _nested(MAX_DEPTH - 1)}, False),  # one level more
        ({"t": 1e21, "u": -0.0, "v": 5e-324}, True),
        ({"big": 2**53}, False),
        ({"é": 1}, False),
        ({"s": "\ud800"}, False),
    ],
    ids=["deepest", "too-deep", "floats", "unsafe-integer", "non-ascii-key", "lone-surrogate"],
)
def test_the_wellformed_digest_refuses_what_the_digest_refuses(
    arguments: dict[str, Any], accepted: bool
) -> None:
    request = PolicyRequest("p", attrs("r"), "tool.call", "s/t", arguments=arguments)
    assert request_problem(request, NOW) is None
    try:
        want = request.digest()
    except CanonicalizationError as e:
        want = f"refused: {e}"
    try:
        got = request.wellformed_digest()
    except CanonicalizationError as e:
        got = f"refused: {e}"  # the precise error, from the full path
    assert got == want
    assert want.startswith("sha256:") is accepted, want


def test_a_non_ascii_attribute_name_takes_the_full_path() -> None:
    request = PolicyRequest("p", {"role": "r", "zone": "", "rôle": "x"}, "exec", "/bin/x", ("x",))
    assert request_problem(request, NOW) is None
    with pytest.raises(CanonicalizationError, match="ASCII"):
        request.digest()
    with pytest.raises(CanonicalizationError, match="ASCII"):
        request.wellformed_digest()


def test_the_wellformed_digest_covers_every_field() -> None:
    # Each field set away from its default, one at a time: a field the fast document
    # left out, or wrote otherwise than to_json(), changes one digest and not the other.
    base = PolicyRequest("p", attrs("r"), "exec", "/bin/x", ("x", "y"))
    variants = [
        base,
        dataclasses.replace(base, principal="q"),
        dataclasses.replace(base, principal_attrs={**attrs("r"), "team": "t"}),
        dataclasses.replace(base, resource="/bin/y"),
        dataclasses.replace(base, argv=("x",)),
        dataclasses.replace(base, zone="eu"),
        dataclasses.replace(base, executable_digest="sha256:" + "ab" * 32),
        dataclasses.replace(base, parent_warrant="w"),
        dataclasses.replace(base, counters={"rate_1m": 3}),
        PolicyRequest("p", attrs("r"), "mcp.call", "s/t", arguments={"k": [1, 2.5, None]}),
    ]
    digests = []
    for request in variants:
        assert request_problem(request, NOW) is None
        assert request.wellformed_digest() == request.digest()
        digests.append(request.digest())
    assert len(set(digests)) == len(variants)


def test_an_engine_without_a_cache_asks_it_nothing() -> None:
    eng = engine()
    assert not eng.cache.enabled
    for request in REQUESTS:
        eng.decide(request, now=NOW)
    assert (eng.cache.hits, eng.cache.misses, len(eng.cache)) == (0, 0, 0)
    cached = PolicyEngine.compile(PolicyBundle({"p.cedar": POLICIES}, schema=DEFAULT_SCHEMA))
    assert cached.cache.enabled
    for request in REQUESTS + REQUESTS:
        cached.decide(request, now=NOW)
    assert (cached.cache.hits, cached.cache.misses) == (len(REQUESTS), len(REQUESTS))


class _Sly(str):
    """A str subclass: equal to a known name, yet not the built-in type the canonical
    encoding accepts."""


@pytest.mark.parametrize(
    "request_",
    [
        PolicyRequest("p", attrs("r"), _Sly("exec"), "/bin/x", ("x",)),
        PolicyRequest("p", attrs("r"), "exec", "/bin/x", ("x",), counters={_Sly("rate_1m"): 1}),
    ],
    ids=["action", "counter-name"],
)
def test_a_str_subclass_where_a_name_is_expected_is_malformed(request_: PolicyRequest) -> None:
    # The checks compared these names by value; the digest refuses any type but str. Both
    # now refuse them, so the fast digest never sees what the full one would refuse.
    assert request_problem(request_, NOW) is not None
    with pytest.raises(CanonicalizationError):
        request_.digest()
    decision = engine().decide(request_, now=NOW)
    assert not decision.allow
    assert "canonical" in decision.reason
