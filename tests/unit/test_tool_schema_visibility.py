"""Tool visibility: a tool is hidden only when no arguments or context could allow it (ADR 0018)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import orjson
import pytest

from proctor.integrations.mcp.schema import catalog_fragment, definition_digest
from proctor.policy import PolicyBundle, PolicyRequest
from proctor.policy.engine import PolicyEngine
from proctor.policy.visibility import cedar_uid

TOOLS: list[dict[str, Any]] = [
    {
        "name": name,
        "inputSchema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["path"],
        },
    }
    for name in ("read", "write", "delete")
]
FRAGMENT = orjson.dumps(catalog_fragment("fs", TOOLS)).decode()
DIGESTS = {t["name"]: definition_digest(t) for t in TOOLS}
ACTION = 'action == Proctor::Action::"mcp.call"'


def engine(policy: str) -> PolicyEngine:
    bundle = PolicyBundle(files={"p.cedar": policy}, tools={"fs.tools.json": FRAGMENT}, version=2)
    return PolicyEngine.compile(bundle)


def hidden(e: PolicyEngine, tool: str, role: str = "dev") -> str | None:
    return e.never_allowed("alice", {"role": role, "zone": ""}, "mcp.call", f"fs/{tool}")


CASES = [
    ("no-permit", f'permit(principal, {ACTION}, resource == Proctor::Tool::"fs/read");', "write", True),
    (
        "permit-on-arguments",
        f"permit(principal, {ACTION}, resource) when {{ context.counters.rate_1m < 3 }};",
        "write",
        False,
    ),
    (
        "forbid-for-role",
        f'permit(principal, {ACTION}, resource); forbid(principal, action, resource == Proctor::Tool::"fs/write") when {{ principal.role == "dev" }};',
        "write",
        True,
    ),
    (
        "forbid-on-arguments",
        f'permit(principal, {ACTION}, resource); forbid(principal, {ACTION}, resource) when {{ context.tool has write && context.tool.write.path like "/etc/*" }};',
        "write",
        False,
    ),
    (
        "permit-for-other-role",
        f'permit(principal, {ACTION}, resource) when {{ principal.role == "ops" }};',
        "read",
        True,
    ),
    ("not-in-catalog", f"permit(principal, {ACTION}, resource);", "format_disk", True),
]


@pytest.mark.parametrize(("policy", "tool", "is_hidden"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_tool_is_hidden_only_when_never_allowed(policy: str, tool: str, is_hidden: bool) -> None:
    why = hidden(engine(policy), tool)
    assert (why is not None) is is_hidden, why


def test_hidden_reason_names_the_forbid() -> None:
    e = engine(
        '@id("ok") permit(principal, action, resource);\n'
        '@id("no-writes") forbid(principal, action, resource == Proctor::Tool::"fs/write");'
    )
    assert "no-writes" in str(hidden(e, "write"))
    assert "ok" not in str(hidden(e, "write")).replace("no-writes", "")


CONDITIONS = [
    "true",
    'principal.role == "dev"',
    'principal.role == "ops"',
    'context.tool has write && context.tool.write.path like "/tmp/*"',
    "context.tool has read && context.tool.read has n && context.tool.read.n > 2",
    "context.counters.rate_1m > 0",
    'context.arguments.contains("path=/a")',
]
RESOURCES = ["resource", 'resource == Proctor::Tool::"fs/read"', 'resource == Proctor::Tool::"fs/write"']
ARGUMENTS = [{"path": p, "n": n} for p, n in itertools.product(("/a", "/tmp/x", "/etc/y"), (0, 5))]


def test_visibility_is_sound_against_full_decisions() -> None:
    # Random policy sets: whenever some arguments and counters get an allow, the tool is shown.
    rng = random.Random(13)
    for _ in range(60):
        lines = []
        for i in range(rng.randint(1, 4)):
            effect = rng.choice(("permit", "permit", "forbid"))
            condition = " && ".join(rng.sample(CONDITIONS, rng.randint(1, 2)))
            lines.append(
                f'@id("p{i}") {effect}(principal, {ACTION}, {rng.choice(RESOURCES)}) when {{ {condition} }};'
            )
        e = engine("\n".join(lines))
        for role, tool in itertools.product(("dev", "ops"), ("read", "write")):
            shown = hidden(e, tool, role) is None
            allowed = any(
                e.decide(
                    PolicyRequest(
                        "alice",
                        {"role": role, "zone": ""},
                        "mcp.call",
                        f"fs/{tool}",
                        arguments=arguments,
                        executable_digest=DIGESTS[tool],
                        counters={"rate_1m": rate},
                    ),
                    now=1767225600,
                ).allow
                for arguments in ARGUMENTS
                for rate in (0, 1)
            )
            assert shown or not allowed, ("\n".join(lines), role, tool)


@pytest.mark.parametrize(
    ("entity_id", "text"),
    [
        ("fs/read", 'Proctor::Tool::"fs/read"'),
        ('a"b\\c', 'Proctor::Tool::"a\\"b\\\\c"'),
        ("a\nb\tc'", 'Proctor::Tool::"a\\nb\\tc\\\'"'),
        ("é\x01", 'Proctor::Tool::"é\\u{1}"'),
    ],
    ids=["plain", "quote-backslash", "controls", "unicode"],
)
def test_cedar_uid_is_in_cedar_normal_form(entity_id: str, text: str) -> None:
    assert cedar_uid("Proctor::Tool", entity_id) == text


def test_odd_ids_are_judged_not_failed() -> None:
    e = engine("permit(principal, action, resource);")
    attrs = {"role": "dev", "zone": ""}
    assert e.never_allowed('al"i\nce', attrs, "mcp.call", "fs/read") is None
    assert e.never_allowed("alice", attrs, "exec", "/bin/sh") is not None  # tool actions only
