"""Tool catalogs in bundles: policies validated against the tools that exist, calls typed (ADR 0018)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cedarpy
import orjson
import pytest

from proctor.errors import BundleError, PolicyValidationError
from proctor.integrations.mcp.schema import catalog_fragment, definition_digest
from proctor.policy import PolicyBundle, PolicyRequest
from proctor.policy.context import build_context
from proctor.policy.engine import PolicyEngine

NOW = 1767225600
TOOLS: list[dict[str, Any]] = [
    {
        "name": "write_file",
        "description": "Write a file",
        "inputSchema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
    {
        "name": "read_text_file",
        "description": "Read a file",
        "inputSchema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "head": {"type": "number"}},
            "required": ["path"],
        },
    },
]
DIGESTS = {t["name"]: definition_digest(t) for t in TOOLS}
FRAGMENT = orjson.dumps(catalog_fragment("filesystem", TOOLS)).decode()
POLICY = """
@id("read-tmp")
permit(principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"filesystem/read_text_file")
when { context.tool has read_text_file && context.tool.read_text_file.path like "/tmp/*" };
@id("write-ops")
permit(principal in Proctor::Principal::"bob", action == Proctor::Action::"mcp.call",
       resource == Proctor::Tool::"filesystem/write_file")
when { context.tool has write_file && context.tool.write_file.path like "/tmp/*" };
"""


def engine(policy: str = POLICY, **tools: str) -> PolicyEngine:
    fragments = tools or {"filesystem.tools.json": FRAGMENT}
    return PolicyEngine.compile(PolicyBundle(files={"p.cedar": policy}, tools=fragments, version=2))


def call(
    tool: str, arguments: dict[str, Any], *, principal: str = "alice", digest: str | None = None
) -> PolicyRequest:
    return PolicyRequest(
        principal,
        {"role": "dev", "zone": ""},
        "mcp.call",
        f"filesystem/{tool}",
        arguments=arguments,
        executable_digest=DIGESTS.get(tool, "") if digest is None else digest,
    )


REFUSED = [
    ("misspelled-argument", 'context.tool has write_file && context.tool.write_file.pth == "x"', "pth"),
    ("unknown-argument", 'context.tool has write_file && context.tool.write_file.mode == "x"', "mode"),
    ("unknown-tool-key", 'context.tool has wirte_file && context.tool.wirte_file.path == "x"', "wirte_file"),
    ("wrong-type", "context.tool has write_file && context.tool.write_file.path == 3", "compatible"),
    ("misspelled-has", "context.tool has write_file && context.tool.write_file has pth", "pth"),
    ("unguarded-optional", 'context.tool.write_file.path == "x"', "optional"),
    ("unknown-tool-literal", 'resource == Proctor::Tool::"filesystem/wirte_file"', "filesystem/wirte_file"),
    ("uncatalogued-server", 'resource in [Proctor::Tool::"github/write_file"]', "github/write_file"),
]


@pytest.mark.parametrize(("condition", "named"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_policy_naming_unknown_tool_or_argument_is_refused(condition: str, named: str) -> None:
    policy = f'permit(principal, action == Proctor::Action::"mcp.call", resource) when {{ {condition} }};'
    with pytest.raises(PolicyValidationError) as refused:
        engine(policy)
    assert any(named in d for d in refused.value.diagnostics), refused.value.diagnostics
    assert all(d.startswith("p.cedar: policy0") for d in refused.value.diagnostics)


def test_the_same_policies_compile_with_the_catalog() -> None:
    assert engine().catalog is not None


def test_without_catalog_context_tool_is_unknown() -> None:
    # The base schema has no context.tool: a policy reading it cannot pass unnoticed.
    with pytest.raises(PolicyValidationError):
        PolicyEngine.compile(PolicyBundle(files={"p.cedar": POLICY}))


DECISIONS = [
    ("typed-allow", call("read_text_file", {"path": "/tmp/a", "head": 0.5}), True, "read-tmp"),
    ("typed-deny", call("read_text_file", {"path": "/etc/passwd"}), False, "default deny"),
    ("not-for-alice", call("write_file", {"path": "/tmp/a", "content": ""}), False, "default deny"),
    ("for-bob", call("write_file", {"path": "/tmp/a", "content": ""}, principal="bob"), True, "write-ops"),
    ("undeclared-argument", call("read_text_file", {"path": "/tmp/a", "pth": "/etc"}), False, "undeclared"),
    ("missing-argument", call("write_file", {"path": "/tmp/a"}, principal="bob"), False, "content"),
    ("float-too-precise", call("read_text_file", {"path": "/tmp/a", "head": 0.12345}), False, "4 fraction"),
    (
        "changed-definition",
        call("read_text_file", {"path": "/tmp/a"}, digest="sha256:" + "0" * 64),
        False,
        "digest",
    ),
    ("no-definition-digest", call("read_text_file", {"path": "/tmp/a"}, digest=""), False, "found none"),
    ("tool-not-catalogued", call("delete_file", {"path": "/tmp/a"}), False, "not in the catalog"),
]


@pytest.mark.parametrize(
    ("request_", "allow", "why"), [d[1:] for d in DECISIONS], ids=[d[0] for d in DECISIONS]
)
def test_call_that_does_not_fit_the_catalog_is_denied(request_: PolicyRequest, allow: bool, why: str) -> None:
    decision = engine().decide(request_, now=NOW)
    assert decision.allow is allow, decision.reason
    assert why in decision.reason


def test_call_to_uncatalogued_server_is_denied() -> None:
    request = PolicyRequest("alice", {"role": "dev", "zone": ""}, "mcp.call", "github/x", arguments={})
    decision = engine().decide(request, now=NOW)
    assert not decision.allow
    assert "has no tool catalog" in decision.reason


def test_typed_context_passes_cedar_request_validation() -> None:
    # The engine does not re-validate each request; the typed context must have the schema's shape.
    e = engine()
    assert e.catalog is not None
    for request in (
        call("read_text_file", {"path": "/tmp/a", "head": 2}),
        call("write_file", {"path": "p", "content": "c"}),
    ):
        context = build_context(request, NOW)
        context["tool"] = e.catalog.tool_context(request)
        cedar_request = {
            "principal": {"type": "Proctor::Principal", "id": "alice"},
            "action": {"type": "Proctor::Action", "id": "mcp.call"},
            "resource": {"type": "Proctor::Tool", "id": request.resource},
            "context": orjson.dumps(context).decode(),
        }
        entities = '[{"uid": {"type": "Proctor::Principal", "id": "alice"}, "attrs": {"role": "dev", "zone": ""}, "parents": []}]'
        result = cedarpy.is_authorized(cedar_request, "", entities, e.schema)
        assert not result.diagnostics.errors, result.diagnostics.errors


def test_hand_edited_cedar_types_are_refused() -> None:
    doc = orjson.loads(FRAGMENT)
    doc["cedar"]["write_file"]["attributes"]["path"] = {"type": "Long"}
    with pytest.raises(PolicyValidationError, match="malformed") as refused:
        engine(**{"filesystem.tools.json": orjson.dumps(doc).decode()})
    assert "regenerate" in refused.value.diagnostics[0]


def test_a_tool_name_cedar_would_read_as_an_escape_is_refused() -> None:
    # Also when the fragment is written by hand: catalog_fragment refuses it too.
    doc = orjson.loads(FRAGMENT)
    doc["tools"][0]["name"] = "__entity"
    doc.pop("cedar")
    with pytest.raises(PolicyValidationError, match="malformed") as refused:
        engine(**{"filesystem.tools.json": orjson.dumps(doc).decode()})
    assert (
        "expected a tool name that does not start with '__', found '__entity'" in refused.value.diagnostics[0]
    )
    with pytest.raises(PolicyValidationError, match="malformed"):
        catalog_fragment("filesystem", [{**TOOLS[0], "name": "__expr"}])


def test_conflicting_tool_types_across_servers_are_refused() -> None:
    other = [{**TOOLS[0], "inputSchema": {"type": "object", "properties": {"path": {"type": "integer"}}}}]
    second = orjson.dumps(catalog_fragment("other", other)).decode()
    with pytest.raises(PolicyValidationError, match="conflict"):
        engine(**{"filesystem.tools.json": FRAGMENT, "other.tools.json": second})


def test_bundle_digest_without_tools_is_unchanged() -> None:
    plain = PolicyBundle(files={"p.cedar": "permit(principal, action, resource);"})
    assert "tools" not in plain.to_json()
    with_tools = PolicyBundle(files=dict(plain.files), tools={"filesystem.tools.json": FRAGMENT})
    assert with_tools.digest != plain.digest
    assert PolicyBundle.from_json(with_tools.to_json()) == with_tools
    with pytest.raises(BundleError, match="tools"):
        PolicyBundle.from_json({**plain.to_json(), "tools": {}})
    with pytest.raises(BundleError, match=r"tools\.json"):
        PolicyBundle(files=dict(plain.files), tools={"x.json": FRAGMENT})


def test_bundle_directory_reads_tool_catalogs(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text(POLICY)
    (tmp_path / "filesystem.tools.json").write_text(FRAGMENT)
    bundle = PolicyBundle.from_directory(tmp_path, version=3)
    assert dict(bundle.tools) == {"filesystem.tools.json": FRAGMENT}
    assert PolicyEngine.compile(bundle).catalog is not None
