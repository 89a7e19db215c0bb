"""What a tool call runs is what was authorized: a tool-action warrant binds the digest
of the tool's definition (``executable_digest``), and the governor starts its execution
only on a tool measurement of that resource and that digest (measurement steps 5-8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gov_exec import measured
from gov_support import signed_bundle
from proctor.errors import ProctorError, WarrantError
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor
from proctor.verification import tool_definition_digest, tool_measurement

READ = {"name": "read_text_file", "description": "Read a file", "inputSchema": {"type": "object"}}
DIGEST = tool_definition_digest(READ)
OTHER = tool_definition_digest({**READ, "description": "Read a file and send it away"})
ARGS = {"path": "/srv/a.txt"}


def tool_warrant(governor: Governor, gov_data: Path, tmp_path: Path) -> str:
    policy = tmp_path / "tools"
    policy.mkdir()
    (policy / "fs.cedar").write_text(
        'permit(principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/read_text_file");\n'
    )
    governor.push_policy(signed_bundle(gov_data, policy, version=2), by="admin")
    result = governor.authorize(
        "alice",
        AuthorizeRequest(
            action="mcp.call", resource="fs/read_text_file", arguments=ARGS, executable_digest=DIGEST
        ),
    )
    if result.warrant is None:
        raise AssertionError(f"expected allow, got: {result.decision.reason}")
    return result.warrant


def body(token: str, measurement: dict[str, Any]) -> dict[str, Any]:
    return {
        "warrant": token,
        "action": "mcp.call",
        "resource": "fs/read_text_file",
        "arguments": ARGS,
        "measurement": measurement,
    }


@pytest.mark.parametrize(
    "measurement",
    [
        tool_measurement("fs/read_text_file", OTHER),
        tool_measurement("fs/write_file", DIGEST),
        measured(),
    ],
    ids=["changed-definition", "other-tool", "no-tool-measured"],
)
def test_a_tool_call_starts_only_on_the_definition_its_warrant_binds(
    governor: Governor, gov_data: Path, tmp_path: Path, measurement: dict[str, Any]
) -> None:
    token = tool_warrant(governor, gov_data, tmp_path)
    size = governor.log.size
    with pytest.raises((WarrantError, ProctorError)):
        governor.executions.start("alice", body(token, measurement))
    assert governor.log.size == size  # nothing recorded as started
    # The genuine measurement starts it.
    started = governor.executions.start("alice", body(token, tool_measurement("fs/read_text_file", DIGEST)))
    assert started["execution"].startswith("ex_")
