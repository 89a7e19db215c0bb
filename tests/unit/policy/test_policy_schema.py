"""The default schema, bundle schemas, the request context, requests' JSON form, obligations."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import cedarpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proctor.errors import PolicyError, PolicyValidationError
from proctor.policy import ACTIONS, DEFAULT_SCHEMA, PolicyBundle, PolicyEngine, PolicyRequest
from proctor.policy.context import MAX_NOW, build_context, time_record
from proctor.policy.obligations import PolicyAnnotations, combine_obligations, read_annotations
from proctor.policy.schema import read_schema

PERMIT = "permit(principal, action, resource);"


def schema_with(change: Any) -> str:
    doc = json.loads(DEFAULT_SCHEMA)
    change(doc["Proctor"])
    return json.dumps(doc)


# -- schema ----------------------------------------------------------------------------


def test_default_schema_is_cedar_json_in_the_proctor_namespace() -> None:
    cedarpy.Schema.from_json_str(DEFAULT_SCHEMA)
    info = read_schema(DEFAULT_SCHEMA)
    assert info.principal_attrs == {"role", "zone", "tenant"}
    assert info.required_attrs == {"role", "zone"}
    assert not info.action_groups
    doc = json.loads(DEFAULT_SCHEMA)["Proctor"]
    assert tuple(doc["actions"]) == ACTIONS
    context = doc["commonTypes"]["Context"]["attributes"]
    assert set(context) == set(build_context(PolicyRequest("a", {}, "exec", "/x", ("x",)), 0))
    assert len(context["args"]["attributes"]) == 32


def test_schema_extension_with_optional_principal_attributes_compiles() -> None:
    def add_team(ns: dict[str, Any]) -> None:
        ns["entityTypes"]["Principal"]["shape"]["attributes"]["team"] = {"type": "String", "required": False}

    text = 'permit(principal, action, resource) when { principal has team && principal.team == "db" };'
    eng = PolicyEngine.compile(PolicyBundle({"a.cedar": text}, schema_with(add_team)))
    attrs = {"role": "", "zone": "", "team": "db"}
    assert eng.decide(PolicyRequest("bob", attrs, "exec", "/bin/x", ("x",)), now=0).allow
    assert not eng.decide(
        PolicyRequest("bob", {"role": "", "zone": ""}, "exec", "/bin/x", ("x",)), now=0
    ).allow


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ("not json", "invalid JSON"),
        ("[]", "namespace"),
        ('{"Other": {"entityTypes": {}, "actions": {}}}', "namespace"),
        (schema_with(lambda ns: ns["entityTypes"].pop("Principal")), "Principal"),
        (schema_with(lambda ns: ns["entityTypes"]["Principal"]["shape"]["attributes"].pop("zone")), "zone"),
        (
            schema_with(
                lambda ns: ns["entityTypes"]["Principal"]["shape"]["attributes"].update(
                    level={"type": "Long"}
                )
            ),
            "'level'",
        ),
        (schema_with(lambda ns: ns["actions"].pop("mcp.call")), "mcp.call"),
        (
            schema_with(lambda ns: ns["commonTypes"]["Context"]["attributes"].pop("command_line")),
            "exec",
        ),
        (
            schema_with(lambda ns: ns["commonTypes"]["Context"]["attributes"]["argc"].update(type="String")),
            "exec",
        ),
        (
            schema_with(lambda ns: ns["entityTypes"].update(Principal={"shape": {"type": "Nope"}})),
            "Principal",
        ),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "other-namespace",
        "no-principal",
        "no-zone-attribute",
        "non-string-attribute",
        "missing-action",
        "context-field-removed",
        "context-field-retyped",
        "bad-shape",
    ],
)
def test_schema_that_does_not_fit_proctor_fails_to_compile(schema: str, fragment: str) -> None:
    with pytest.raises(PolicyValidationError) as info:
        PolicyEngine.compile(PolicyBundle({"a.cedar": PERMIT}, schema))
    assert any(fragment in d for d in info.value.diagnostics) or fragment in str(info.value), info.value


def test_schema_action_groups_are_detected() -> None:
    def group(ns: dict[str, Any]) -> None:
        ns["actions"]["run"] = {}
        ns["actions"]["exec"]["memberOf"] = [{"id": "run"}]

    info = read_schema(schema_with(group))
    assert info.action_groups
    eng = PolicyEngine.compile(
        PolicyBundle(
            {"a.cedar": 'permit(principal, action in Proctor::Action::"run", resource);'}, schema_with(group)
        )
    )
    assert eng.decide(PolicyRequest("a", {"role": "", "zone": ""}, "exec", "/bin/x", ("x",)), now=0).allow
    assert not eng.decide(PolicyRequest("a", {"role": "", "zone": ""}, "tool.call", "t"), now=0).allow


def test_engine_compile_rejects_what_is_not_a_bundle() -> None:
    with pytest.raises(PolicyError):
        PolicyEngine.compile({"a.cedar": PERMIT})  # type: ignore[arg-type]


# -- context ---------------------------------------------------------------------------


@given(st.integers(0, MAX_NOW))
def test_time_record_matches_datetime_utc(now: int) -> None:
    moment = datetime.fromtimestamp(now, UTC)
    assert time_record(now) == {
        "epoch": now,
        "hour": moment.hour,
        "minute": moment.minute,
        "weekday": moment.weekday(),
        "date": moment.date().isoformat(),
    }


def test_context_for_a_tool_call() -> None:
    request = PolicyRequest(
        "a",
        {"role": "", "zone": ""},
        "mcp.call",
        "fs/write",
        arguments={"path": "/tmp/x", "n": 3, "force": False, "opts": {"x": 1}, "none": None, "k=v": "x"},
        zone="dev",
        executable_digest="sha256:" + "0" * 64,
        parent_warrant="wr_1",
        counters={"rate_1h": 7},
    )
    context = build_context(request, 90061)  # 1970-01-02T01:01:01Z, a Friday
    assert context == {
        "argc": 0,
        "args": {},
        "argv": (),
        "command_line": "",
        "zone": "dev",
        "time": {"epoch": 90061, "hour": 1, "minute": 1, "weekday": 4, "date": "1970-01-02"},
        "executable_digest": "sha256:" + "0" * 64,
        "parent_warrant": "wr_1",
        "counters": {"rate_1m": 0, "rate_1h": 7, "concurrency": 0, "budget_used": 0, "starts_1m": 0},
        "arguments_json": '{"force":false,"k=v":"x","n":3,"none":null,"opts":{"x":1},"path":"/tmp/x"}',
        "arguments": ["force=false", "n=3", "path=/tmp/x"],
    }


# -- requests --------------------------------------------------------------------------

json_scalars = st.one_of(st.text(max_size=5), st.integers(-(2**53) + 1, 2**53 - 1), st.booleans(), st.none())
requests = st.builds(
    PolicyRequest,
    principal=st.text(min_size=1, max_size=8),
    principal_attrs=st.dictionaries(st.sampled_from(["role", "zone", "tenant"]), st.text(max_size=5)),
    action=st.sampled_from(ACTIONS),
    resource=st.text(max_size=12),
    argv=st.lists(st.text(max_size=6), max_size=5).map(tuple),
    arguments=st.one_of(st.none(), st.dictionaries(st.text(st.characters(max_codepoint=127)), json_scalars)),
    zone=st.text(max_size=4),
    executable_digest=st.text(max_size=4),
    parent_warrant=st.text(max_size=4),
    counters=st.dictionaries(st.sampled_from(["rate_1m", "rate_1h"]), st.integers(0, 100)),
)


@given(requests)
def test_request_json_round_trip_and_digest_are_exact(request: PolicyRequest) -> None:
    try:
        digest = request.digest()
    except Exception:  # lone surrogates from st.text() are outside the canonical subset
        return
    again = PolicyRequest.from_json(json.loads(json.dumps(request.to_json())))
    assert again == request
    assert again.digest() == digest
    assert digest.startswith("sha256:")
    assert len(digest) == 71


def test_request_copies_its_inputs() -> None:
    attrs = {"role": "dev", "zone": "prod"}
    argv = ["pg_dump", "db1"]
    request = PolicyRequest("a", attrs, "exec", "/usr/bin/pg_dump", argv)  # type: ignore[arg-type]
    before = request.digest()
    attrs["role"] = "admin"
    argv.append("--all")
    assert request.argv == ("pg_dump", "db1")
    assert request.principal_attrs["role"] == "dev"
    assert request.digest() == before


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"v": 2}, "request.v"),
        ({"extra": 1}, "unknown"),
        ({"argv": "pg_dump db1"}, "request.argv"),
        ({"argv": [1]}, "request.argv"),
        ({"principal_attrs": {"role": 1}}, "principal_attrs"),
        ({"counters": {"rate_1m": "3"}}, "counters"),
        ({"arguments": [1]}, "arguments"),
        ({"zone": None}, "request.zone"),
    ],
    ids=[
        "version",
        "unknown-field",
        "argv-string",
        "argv-int",
        "attr-int",
        "counter-string",
        "args-list",
        "zone",
    ],
)
def test_request_from_json_rejects_malformed_documents(patch: dict[str, Any], message: str) -> None:
    doc = {**PolicyRequest("a", {"role": "", "zone": ""}, "exec", "/x", ("x",)).to_json(), **patch}
    with pytest.raises(PolicyError, match=message):
        PolicyRequest.from_json(doc)
    with pytest.raises(PolicyError, match="JSON object"):
        PolicyRequest.from_json([])  # type: ignore[arg-type]


# -- obligations -----------------------------------------------------------------------


def test_obligations_parse_to_typed_values() -> None:
    parsed, problems = read_annotations(
        {
            "id": "x",
            "description": "anything",
            "max_duration_s": "60",
            "memory_limit_mb": "512",
            "max_pids": "64",
            "max_output_bytes": "0",
            "lease_ttl_s": "3",
            "no_network": "true",
            "approval_required": "false",
            "on_violation": " webhook:https://h.example/a , suspend,terminate",
            "cross_zone": "true",
        },
        effect="permit",
    )
    assert problems == ()
    assert dict(parsed.obligations) == {
        "max_duration_s": 60,
        "memory_limit_mb": 512,
        "max_pids": 64,
        "max_output_bytes": 0,
        "lease_ttl_s": 3,
        "no_network": True,
        "approval_required": False,
    }
    assert parsed.responses == ("suspend", "terminate", "webhook:https://h.example/a")
    assert parsed.cross_zone


@pytest.mark.parametrize(
    "annotations",
    [
        {"max_pids": "064"},
        {"max_pids": "+64"},
        {"max_pids": "-1"},
        {"max_pids": str(2**53)},
        {"lease_ttl_s": ""},
        {"no_network": "True"},
        {"on_violation": "webhook:ftp://x"},
        {"on_violation": "suspend,"},
        {"owner": "me"},
    ],
    ids=[
        "leading-zero",
        "sign",
        "negative",
        "too-big",
        "empty",
        "capitalised-bool",
        "ftp",
        "trailing-comma",
        "unknown",
    ],
)
def test_obligations_malformed_values_are_problems(annotations: dict[str, str]) -> None:
    _, problems = read_annotations(annotations, effect="permit")
    assert len(problems) == 1


def test_obligations_combine_most_restrictively() -> None:
    a, _ = read_annotations(
        {"max_duration_s": "60", "no_network": "false", "on_violation": "suspend"}, effect="permit"
    )
    b, _ = read_annotations({"max_duration_s": "30", "max_pids": "8", "no_network": "true"}, effect="permit")
    assert combine_obligations([a, b]) == {
        "max_duration_s": 30,
        "max_pids": 8,
        "no_network": True,
        "on_violation": "suspend,terminate",
    }
    assert combine_obligations([a]) == {"max_duration_s": 60, "no_network": False, "on_violation": "suspend"}
    assert combine_obligations([]) == {"on_violation": "terminate"}
    assert combine_obligations([PolicyAnnotations()]) == {"on_violation": "terminate"}
