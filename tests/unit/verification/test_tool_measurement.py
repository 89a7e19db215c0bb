"""Tool measurements (proctor.verification.measurement, steps 5-8): a tool-action warrant
binding a definition digest starts only on a tool measurement of the same resource and
digest; the exec rules are unchanged."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import rfc8785

from proctor.errors import IntegrityError
from proctor.verification import (
    check_measurement,
    measured_resource,
    tool_definition_digest,
    tool_measurement,
)

READ: dict[str, Any] = {
    "name": "read_text_file",
    "description": "Read a file",
    "inputSchema": {"type": "object"},
}
DIGEST = tool_definition_digest(READ)
OTHER = "sha256:" + "0" * 64
EXEC: dict[str, Any] = {
    "executable": "/usr/bin/true",
    "executable_digest": "sha256:" + "1" * 64,
    "files": [{"path": "/usr/bin/true", "digest": "sha256:" + "1" * 64, "role": "executable"}],
    "script_index": None,
}


def test_definition_digest_is_sha256_of_rfc8785_canonical_json() -> None:
    expected = "sha256:" + hashlib.sha256(rfc8785.dumps(READ)).hexdigest()
    assert expected == DIGEST


def test_definition_digest_absent_description_is_empty_string() -> None:
    bare = {"name": "t", "inputSchema": {"type": "object"}}
    assert tool_definition_digest(bare) == tool_definition_digest({**bare, "description": ""})


@pytest.mark.parametrize(
    "field",
    [
        {"description": "Read a file and mail it away"},
        {"inputSchema": {"type": "object", "properties": {"x": {"type": "string"}}}},
        {"title": "Reader"},
        {"annotations": {"readOnlyHint": False}},
    ],
    ids=["description", "schema", "title", "annotations"],
)
def test_definition_digest_covers_every_field(field: dict[str, Any]) -> None:
    assert tool_definition_digest({**READ, **field}) != DIGEST


def test_definition_without_name_or_schema_is_refused() -> None:
    with pytest.raises(IntegrityError, match="name and an inputSchema"):
        tool_definition_digest({"name": "x"})


def test_tool_measurement_matching_warrant_is_accepted() -> None:
    found = check_measurement(
        tool_measurement("fs/read_text_file", DIGEST),
        action="mcp.call",
        resource="fs/read_text_file",
        executable_digest=DIGEST,
    )
    assert found.tool
    assert found.path == "fs/read_text_file"
    assert found.digest == DIGEST


def test_tool_warrant_with_digest_and_measurement_without_one_is_refused() -> None:
    with pytest.raises(IntegrityError, match="measures no tool definition"):
        check_measurement(EXEC, action="mcp.call", resource="fs/read_text_file", executable_digest=DIGEST)


def test_tool_measurement_of_another_resource_is_refused() -> None:
    with pytest.raises(IntegrityError, match="the warrant is for tool"):
        check_measurement(
            tool_measurement("fs/write_file", DIGEST),
            action="mcp.call",
            resource="fs/read_text_file",
            executable_digest=DIGEST,
        )


def test_tool_measurement_of_another_definition_is_refused() -> None:
    with pytest.raises(IntegrityError, match="binds tool definition digest"):
        check_measurement(
            tool_measurement("fs/read_text_file", OTHER),
            action="tool.call",
            resource="fs/read_text_file",
            executable_digest=DIGEST,
        )


def test_tool_measurement_cannot_start_an_exec() -> None:
    with pytest.raises(IntegrityError, match="cannot start an 'exec'"):
        check_measurement(
            tool_measurement("/usr/bin/true", EXEC["executable_digest"]),
            action="exec",
            resource="/usr/bin/true",
            executable_digest=EXEC["executable_digest"],
        )


@pytest.mark.parametrize(
    "measurement",
    [
        {"tool": {"resource": "fs/x"}},
        {"tool": {"resource": "fs/x", "definition_digest": "md5:abc"}},
        {"tool": {"resource": "", "definition_digest": DIGEST}},
        {"tool": {"resource": "fs/x", "definition_digest": DIGEST}, "files": EXEC["files"]},
        {"tool": ["fs/x", DIGEST]},
    ],
    ids=["no-digest", "bad-digest", "empty-resource", "tool-and-files", "not-object"],
)
def test_malformed_tool_measurement_is_refused(measurement: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError, match="measurement"):
        measured_resource(measurement)


def test_exec_rules_unchanged() -> None:
    found = check_measurement(
        EXEC, action="exec", resource="/usr/bin/true", executable_digest=EXEC["executable_digest"]
    )
    assert not found.tool
    assert found.path == "/usr/bin/true"
    with pytest.raises(IntegrityError, match="binds no executable digest"):
        check_measurement(EXEC, action="exec", resource="/usr/bin/true", executable_digest="")
