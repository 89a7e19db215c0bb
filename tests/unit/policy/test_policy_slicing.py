"""Slicing changes no answer: sliced evaluation, which also hands Cedar only the context
attributes a slice reads, and the unsliced reference give identical decisions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proctor.policy import DEFAULT_SCHEMA, PolicyBundle, PolicyEngine, PolicyRequest, _cedar
from proctor.policy.slices import context_reads, scope_actions, scope_resource

EXECUTABLES = ("/bin/a", "/bin/b", "/bin/c")
TOOLS = ("s/a", "s/b", "s/c")
CONDITIONS = (
    "",
    'when { principal.role == "dev" }',
    'when { context.args has a1 && context.args.a1 == "x" }',
    "unless { context.time.hour < 12 }",
    "when { context.counters.budget_used * 4611686018427387904 > 0 }",  # errors for budget_used >= 2
    'when { context.arguments.contains("m=r") }',
    "when { principal.zone == context.zone }",
    'when { context.command_line like "* x*" }',
    'when { context has zone && context["zone"] == "prod" }',
    "when { context.args has a2 }",
    "when { context.argc * 4611686018427387904 > 0 }",  # an error when argv has two entries or more
    'unless { context.time == {"epoch": 0, "hour": 0, "minute": 0, "weekday": 3, "date": "1970-01-01"} }',
    "when { context has parent_warrant }",  # read by has alone
    'when { {"c": context}.c.zone == "prod" }',  # the context used whole: its slices take all of it
    "when { context.time.weekday < 5 && context.time.minute >= 0 }",  # two fields of the time
    'when { context["time"]["date"] like "2026-*" }',
    "when { context.time has minute }",  # the time record tested with has: all of it
)


def _action(name: str) -> str:
    return f'Proctor::Action::"{name}"'


@st.composite
def scopes(draw: st.DrawFn) -> str:
    # Only combinations the validator accepts: the resource type must fit the actions.
    kind = draw(st.sampled_from(["any", "Executable", "Tool"]))
    if kind == "any":
        action = draw(
            st.sampled_from(
                [
                    "action",
                    f"action == {_action('exec')}",
                    f"action == {_action('tool.call')}",
                    f"action in [{_action('exec')}, {_action('mcp.call')}]",
                ]
            )
        )
        return f"principal, {action}, resource"
    ids = EXECUTABLES if kind == "Executable" else TOOLS
    actions = ["exec"] if kind == "Executable" else ["mcp.call", "tool.call"]
    action = draw(
        st.sampled_from(
            ["action"]
            + [f"action == {_action(a)}" for a in actions]
            + [f"action in [{', '.join(_action(a) for a in actions)}]"]
        )
    )
    rid = draw(st.sampled_from(ids))
    resource = draw(
        st.sampled_from(
            [
                f'resource == Proctor::{kind}::"{rid}"',
                f'resource in Proctor::{kind}::"{rid}"',
                f"resource is Proctor::{kind}",
                f'resource is Proctor::{kind} in Proctor::{kind}::"{rid}"',
            ]
        )
    )
    return f"principal, {action}, {resource}"


@st.composite
def policies(draw: st.DrawFn) -> str:
    effect = draw(st.sampled_from(["permit", "permit", "forbid"]))
    annotations = ""
    if effect == "permit":
        if draw(st.booleans()):
            annotations += f'@max_duration_s("{draw(st.integers(1, 99))}") '
        if draw(st.booleans()):
            annotations += '@cross_zone("true") '
    return f"{annotations}{effect}({draw(scopes())}) {draw(st.sampled_from(CONDITIONS))};"


@st.composite
def requests(draw: st.DrawFn) -> PolicyRequest:
    action = draw(st.sampled_from(["exec", "mcp.call", "tool.call"]))
    attrs = {"role": draw(st.sampled_from(["dev", "ops"])), "zone": draw(st.sampled_from(["prod", "dev"]))}
    common: dict[str, Any] = {
        "zone": draw(st.sampled_from(["", "prod", "dev"])),
        "counters": {"budget_used": draw(st.sampled_from([0, 5]))},
    }
    if action == "exec":
        argv = tuple(draw(st.lists(st.sampled_from(["x", "y", "-v"]), min_size=1, max_size=3)))
        return PolicyRequest("alice", attrs, action, draw(st.sampled_from(EXECUTABLES)), argv, **common)
    arguments = draw(st.one_of(st.none(), st.fixed_dictionaries({"m": st.sampled_from(["r", "w"])})))
    return PolicyRequest("alice", attrs, action, draw(st.sampled_from(TOOLS)), arguments=arguments, **common)


def _grouped_schema() -> str:
    doc = json.loads(DEFAULT_SCHEMA)
    doc["Proctor"]["actions"]["call"] = {}
    for name in ("mcp.call", "tool.call"):
        doc["Proctor"]["actions"][name]["memberOf"] = [{"id": "call"}]
    return json.dumps(doc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(policies(), min_size=1, max_size=12),
    st.lists(requests(), min_size=1, max_size=12),
    st.sampled_from([0, 10 * 3600, 15 * 3600, 1767261600, 1767520800 + 42 * 60]),
    st.booleans(),
)
def test_sliced_and_unsliced_evaluation_decide_identically(
    texts: list[str], reqs: list[PolicyRequest], now: int, grouped: bool
) -> None:
    schema = _grouped_schema() if grouped else DEFAULT_SCHEMA
    if grouped:
        texts = [
            *texts,
            'permit(principal, action in Proctor::Action::"call", resource) when { context.argc > 0 };',
        ]
    bundle = PolicyBundle({"a.cedar": "\n".join(texts[::2]), "b.cedar": "\n".join(texts[1::2])}, schema)
    sliced = PolicyEngine.compile(bundle)
    unsliced = PolicyEngine.compile(bundle, sliced=False)
    assert unsliced.slice_count == 1
    for request in reqs:
        assert sliced.decide(request, now=now) == unsliced.decide(request, now=now)
    assert sliced.decide_batch(reqs, now=now) == unsliced.decide_batch(reqs, now=now)


def test_sliced_evaluation_keeps_slices_small() -> None:
    lines = [
        f'permit(principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/bin/t{i}");'
        for i in range(50)
    ]
    lines.append('forbid(principal, action, resource) when { context.command_line like "*--all*" };')
    eng = PolicyEngine.compile(PolicyBundle({"a.cedar": "\n".join(lines)}))
    assert eng.slice_count == 3 + 50
    request = PolicyRequest("a", {"role": "", "zone": ""}, "exec", "/bin/t7", ("t7",))
    assert eng.decide(request, now=0).policies == ("policy7",)
    assert eng.decide(
        PolicyRequest("a", {"role": "", "zone": ""}, "exec", "/bin/t7", ("t7", "--all")), now=0
    ).policies == ("policy50",)


def test_deferred_slices_give_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    from proctor.policy.slices import PolicySlices

    lines = [
        f'permit(principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/bin/t{i}");'
        for i in range(10)
    ]
    bundle = PolicyBundle({"a.cedar": "\n".join(lines)})
    eager = PolicyEngine.compile(bundle)
    monkeypatch.setattr(PolicySlices, "EAGER_BUDGET", 0)
    lazy = PolicyEngine.compile(bundle)
    for i in range(12):
        request = PolicyRequest("a", {"role": "", "zone": ""}, "exec", f"/bin/t{i}", ("t",))
        assert lazy.decide(request, now=0) == eager.decide(request, now=0)


@pytest.mark.parametrize(
    ("scope", "groups", "expected"),
    [
        ({"op": "All"}, False, {"exec", "mcp.call", "tool.call"}),
        ({"op": "==", "entity": {"type": "Proctor::Action", "id": "exec"}}, False, {"exec"}),
        ({"op": "==", "entity": {"type": "Other::Action", "id": "exec"}}, False, set()),
        (
            {
                "op": "in",
                "entities": [
                    {"type": "Proctor::Action", "id": "exec"},
                    {"type": "Proctor::Action", "id": "x"},
                ],
            },
            False,
            {"exec"},
        ),
        ({"op": "in", "entity": {"type": "Proctor::Action", "id": "tool.call"}}, False, {"tool.call"}),
        (
            {"op": "in", "entity": {"type": "Proctor::Action", "id": "group"}},
            True,
            {"exec", "mcp.call", "tool.call"},
        ),
        ({"op": "??"}, False, {"exec", "mcp.call", "tool.call"}),
    ],
    ids=["all", "equal", "other-namespace", "in-list", "in-one", "in-with-groups", "unknown-op"],
)
def test_scope_actions(scope: dict[str, Any], groups: bool, expected: set[str]) -> None:
    assert scope_actions(scope, action_groups=groups) == expected


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"op": "All"}, "*"),
        ({"op": "==", "entity": {"type": "Proctor::Tool", "id": "s/a"}}, "s/a"),
        ({"op": "in", "entity": {"type": "Proctor::Tool", "id": "s/a"}}, "s/a"),
        ({"op": "==", "entity": {"type": "Proctor::Executable", "id": "/x"}}, None),
        ({"op": "is", "entity_type": "Proctor::Tool"}, "*"),
        ({"op": "is", "entity_type": "Proctor::Executable"}, None),
        (
            {
                "op": "is",
                "entity_type": "Proctor::Tool",
                "in": {"entity": {"type": "Proctor::Tool", "id": "s"}},
            },
            "s",
        ),
        ({"op": "==", "slot": "?resource"}, "*"),
    ],
    ids=["all", "equal", "in", "other-type", "is", "is-other-type", "is-in", "slot"],
)
def test_scope_resource(scope: dict[str, Any], expected: str | None) -> None:
    assert scope_resource(scope, "Proctor::Tool") == expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("true", set()),
        ('context.args has a1 && context.args.a1 == "x"', {"args"}),
        ('context["zone"] == "prod" && context.time.hour > 8', {"zone", "time"}),
        ("context has parent_warrant", {"parent_warrant"}),
        ('if context has zone then context.zone == "" else context.argc > 0', {"zone", "argc"}),
        ("context == context", None),
        ('{"c": context}.c.zone == "prod"', None),
        # Record literals whose keys spell the operators' JSON are still record literals.
        ('{".": {"left": context, "attr": "zone"}} == {".": {"left": context, "attr": "zone"}}', None),
        ('{"Var": "context"} has Var', set()),
    ],
)
def test_context_reads(condition: str, expected: set[str] | None) -> None:
    import cedarpy

    text = f"permit(principal, action, resource) when {{ {condition} }};"
    doc = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]["policy0"]
    reads = context_reads([doc])
    assert reads == (None if expected is None else frozenset(expected))
    # One policy that uses the context whole makes the set take all of it.
    whole = json.loads(
        cedarpy.policies_to_json_str("permit(principal, action, resource) when { context == context };")
    )
    assert context_reads([doc, whole["staticPolicies"]["policy0"]]) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("__expr", "hi"), ("__extn", {"fn": "ip", "arg": "bogus"}), ("plain", "hi")],
)
def test_a_catalogued_call_s_own_keys_are_parsed_whatever_the_policies_read(key: str, value: Any) -> None:
    # Cedar reads some record keys as escapes while parsing the context; the call's
    # arguments are in context.tool, which this policy never reads. Such an object is
    # kept as JSON text (proctor.policy.tool_types), and sliced or not the answer is the same.
    import orjson

    from proctor.integrations.mcp.schema import catalog_fragment, definition_digest

    kind = "string" if isinstance(value, str) else "object"
    tool = {"name": "echo", "description": "x",
            "inputSchema": {"type": "object", "properties": {key: {"type": kind}}, "required": [key]}}  # fmt: skip
    bundle = PolicyBundle(
        files={
            "p.cedar": 'permit(principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"srv/echo");'
        },
        tools={"srv.tools.json": orjson.dumps(catalog_fragment("srv", [tool])).decode()},
        version=2,
    )
    request = PolicyRequest(
        "alice", {"role": "dev", "zone": ""}, "mcp.call", "srv/echo",
        arguments={key: value}, executable_digest=definition_digest(tool),
    )  # fmt: skip
    sliced = PolicyEngine.compile(bundle).decide(request, now=0)
    unsliced = PolicyEngine.compile(bundle, sliced=False).decide(request, now=0)
    assert sliced == unsliced
    assert sliced.allow, sliced.reason


def test_a_request_no_policy_can_match_is_denied_without_cedar(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty slice: Cedar's answer (no permit, no error) is known, and Cedar is not asked;
    the decision is the one the unsliced reference gets from Cedar."""

    bundle = PolicyBundle(
        {
            "a.cedar": 'permit(principal, action == Proctor::Action::"exec", resource == Proctor::Executable::"/bin/a");'
        }
    )
    sliced, unsliced = (
        PolicyEngine.compile(bundle, decision_cache=0),
        PolicyEngine.compile(bundle, sliced=False),
    )
    request = PolicyRequest("a", {"role": "", "zone": ""}, "exec", "/bin/b", ("b",))
    want = unsliced.decide(request, now=0)
    asked: list[object] = []
    real = _cedar._ask_one

    def counted(*a: Any, **k: Any) -> Any:
        asked.append(a)
        return real(*a, **k)

    monkeypatch.setattr(_cedar, "_ask_one", counted)
    got = sliced.decide(request, now=0)
    assert got == want
    assert not got.allow
    assert got.reason == "denied: no permit policy matched (default deny)"
    assert asked == []  # Cedar was not asked
    assert sliced.decide(PolicyRequest("a", {"role": "", "zone": ""}, "exec", "/bin/a", ("a",)), now=0).allow
    assert len(asked) == 1  # a request a policy can match still goes to Cedar


@pytest.mark.parametrize(
    ("condition", "fields"),
    [
        ("context.time.hour >= 8", ["hour"]),
        ('context.time.weekday < 5 && context["time"]["date"] like "2026-*"', ["date", "weekday"]),
        ("context.time has minute", ["date", "epoch", "hour", "minute", "weekday"]),
        ("context.time.epoch > 0", ["date", "epoch", "hour", "minute", "weekday"]),
    ],
)
def test_cedar_is_handed_only_the_time_fields_the_slice_reads(
    monkeypatch: pytest.MonkeyPatch, condition: str, fields: list[str]
) -> None:
    text = f'permit(principal, action == Proctor::Action::"exec", resource) when {{ {condition} }};'
    eng = PolicyEngine.compile(PolicyBundle({"a.cedar": text}), decision_cache=0)
    asked: list[dict[str, Any]] = []
    real = _cedar._ask_one

    def seen(request: dict[str, Any], *rest: Any) -> Any:
        asked.append(json.loads(request["context"]))
        return real(request, *rest)

    monkeypatch.setattr(_cedar, "_ask_one", seen)
    request = PolicyRequest("a", {"role": "", "zone": ""}, "exec", "/bin/a", ("a",))
    decision = eng.decide(request, now=1767261600)  # 2026-01-01T10:00:00Z, a Thursday
    assert sorted(asked[0]["time"]) == fields
    assert decision == PolicyEngine.compile(PolicyBundle({"a.cedar": text}), sliced=False).decide(
        request, now=1767261600
    )
    assert decision.allow
