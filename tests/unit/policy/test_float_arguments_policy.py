"""Tool arguments with floats: what Cedar sees (``arguments_json``, the ``arguments``
set), the request digest and the warrant's args digest, all from the canonical text."""

from __future__ import annotations

import hashlib
from typing import Any

from proctor.authorization.claims import args_digest
from proctor.policy import DEFAULT_SCHEMA, PolicyBundle, PolicyEngine, PolicyRequest
from proctor.policy.commitment import ArgumentOpening
from proctor.policy.context import build_context

NOW = 1767225600

TEMPERATURE = """
@id("low-temperature")
permit (
    principal,
    action == Proctor::Action::"mcp.call",
    resource == Proctor::Tool::"llm/complete"
) when { context.arguments.contains("temperature=0.7") };
"""


def tool_request(arguments: dict[str, Any]) -> PolicyRequest:
    return PolicyRequest(
        "alice", {"role": "dev", "zone": ""}, "mcp.call", "llm/complete", arguments=arguments
    )


def test_float_arguments_are_in_the_cedar_context_as_their_canonical_text() -> None:
    arguments = {"temperature": 0.7, "n": 1.0, "big": 1e21, "small": 1e-7, "neg": -0.0, "k": 3}
    context = build_context(tool_request(arguments), NOW)
    assert context["arguments"] == ["big=1e+21", "k=3", "n=1", "neg=0", "small=1e-7", "temperature=0.7"]
    assert context["arguments_json"] == '{"big":1e+21,"k":3,"n":1,"neg":0,"small":1e-7,"temperature":0.7}'


def test_a_float_argument_and_the_equal_integer_are_one_request() -> None:
    # RFC 8785: 1.0 and 1 are one number. Policy, the logged request, the warrant's args
    # digest and the argument commitment all see the canonical text, so none can be
    # told one thing while another is bound to the other.
    as_float, as_int = tool_request({"t": 1.0}), tool_request({"t": 1})
    assert build_context(as_float, NOW) == build_context(as_int, NOW)
    assert as_float.digest() == as_int.digest()
    assert args_digest({"t": 1.0}) == args_digest({"t": 1})
    assert args_digest({"t": 1.0}) == "sha256:" + hashlib.sha256(b'{"t":1}').hexdigest()
    salt = bytes(16)
    assert (
        ArgumentOpening(salt, (), {"t": 1.0}).commitment() == ArgumentOpening(salt, (), {"t": 1}).commitment()
    )


def test_policy_decides_on_a_float_argument() -> None:
    engine = PolicyEngine.compile(PolicyBundle({"p.cedar": TEMPERATURE}, DEFAULT_SCHEMA))
    allowed = engine.decide(tool_request({"temperature": 0.7, "prompt": "hi"}), now=NOW)
    assert allowed.allow, allowed.reason
    assert allowed.policies == ("low-temperature",)
    denied = engine.decide(tool_request({"temperature": 0.75, "prompt": "hi"}), now=NOW)
    assert not denied.allow
    assert "no permit policy matched" in denied.reason
