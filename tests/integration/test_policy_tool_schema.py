"""Fail closed on meaning, against a real governor and the real @modelcontextprotocol/server-filesystem.

The tool catalog is generated from the server's live ``tools/list``; a policy naming a
tool or argument the catalog does not have is refused at push and the last good
bundle keeps governing (also after a restart); calls are typed by the catalog; and the
visibility route hides the tools a principal can never call (ADR 0018).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_server import GovernorServer, cli, client_of
from proctor.errors import GovernorError
from proctor.integrations.mcp.schema import schema_command, visible_tools

BIN = Path(__file__).parent.parent / "mcp_servers" / "node_modules" / ".bin"

GOOD = """
@id("read-in-dir")
permit(principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"filesystem/read_text_file")
when { context.tool has read_text_file && context.tool.read_text_file.path like "DIR/*" };
@id("no-dev-writes")
forbid(principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"filesystem/write_file")
when { principal.role == "dev" };
@id("ops-writes")
permit(principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"filesystem/write_file")
when { context.tool has write_file && context.tool.write_file.path like "DIR/*" };
"""


def filesystem_server(root: Path) -> list[str]:
    node = shutil.which("node")
    script = BIN / "mcp-server-filesystem"
    if node is None or not script.exists():
        why = f"@modelcontextprotocol/server-filesystem is not installed ({script}); run scripts/setup"
        if os.environ.get("PROCTOR_REQUIRE_MCP") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return [node, str(script), str(root)]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    served = tmp_path_factory.mktemp("served")
    # The public command: proctor gateway mcp schema --name NAME -- UPSTREAM_CMD…
    listed = cli("gateway", "mcp", "schema", "--name", "filesystem", "--", *filesystem_server(served))
    found: dict[str, Any] = json.loads(listed.stdout)
    return found


@pytest.fixture
def world(tmp_path: Path, catalog: dict[str, Any]) -> Iterator[tuple[GovernorServer, Path, dict[str, Any]]]:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("hello\n")
    server = GovernorServer(tmp_path / "gov")
    try:
        server.admin("principal", "add", "bob", "--attr", "role=ops", "--out", str(server.data / "bob.key"))
        yield server, files, catalog
    finally:
        server.stop()


def bundle(root: Path, name: str, policy: str, catalog: dict[str, Any], files: Path) -> Path:
    source = root / name
    source.mkdir()
    (source / "tools.cedar").write_text(policy.replace("DIR", str(files)))
    (source / "filesystem.tools.json").write_text(json.dumps(catalog))
    return source


def digest_of(catalog: dict[str, Any], tool: str) -> str:
    return next(str(t["definition_digest"]) for t in catalog["tools"] if t["name"] == tool)


def authorize(
    server: GovernorServer, tool: str, arguments: dict[str, Any], digest: str, key: Path | None = None
) -> dict[str, Any]:
    with client_of(server, key) as client:
        return client.authorize(
            {
                "action": "mcp.call",
                "resource": f"filesystem/{tool}",
                "arguments": arguments,
                "executable_digest": digest,
            }
        )


def test_catalog_is_generated_from_the_live_tool_list(
    world: tuple[GovernorServer, Path, dict[str, Any]],
) -> None:
    _, _, catalog = world
    names = {t["name"] for t in catalog["tools"]}
    assert {"read_text_file", "write_file", "edit_file", "list_directory"} <= names
    assert catalog["cedar"]["write_file"] == {
        "type": "Record",
        "attributes": {"content": {"type": "String"}, "path": {"type": "String"}},
    }
    head = catalog["cedar"]["read_text_file"]["attributes"]["head"]
    assert head == {"type": "Extension", "name": "decimal", "required": False}


@pytest.mark.parametrize(
    ("mistake", "named"),
    [
        ('resource == Proctor::Tool::"filesystem/wirte_file"', "filesystem/wirte_file"),
        ('context.tool has write_file && context.tool.write_file.pth like "/*"', "pth"),
        ('context.tool has wirte_file && context.tool.wirte_file.path like "/*"', "wirte_file"),
    ],
    ids=["unknown-tool", "misspelled-argument", "misspelled-tool-key"],
)
def test_policy_naming_unknown_tool_or_argument_is_refused_at_push_and_last_good_bundle_kept(
    world: tuple[GovernorServer, Path, dict[str, Any]], tmp_path: Path, mistake: str, named: str
) -> None:
    server, files, catalog = world
    good = bundle(tmp_path, "good", GOOD, catalog, files)
    server.admin("policy", "push", str(good))
    before = json.loads(server.admin("policy", "show", "--json").stdout)
    bad_policy = (
        GOOD
        + f'\n@id("typo")\nforbid(principal, action == Proctor::Action::"mcp.call", resource) when {{ {mistake} }};\n'
    )
    bad = bundle(tmp_path, "bad", bad_policy, catalog, files)
    refused = server.admin("policy", "push", str(bad), "--json", check=False)
    assert refused.returncode != 0
    assert named in refused.stdout + refused.stderr
    assert json.loads(server.admin("policy", "show", "--json").stdout) == before
    # The last good bundle still governs, typed by the catalog, also after a restart.
    for restart in (False, True):
        if restart:  # a reload: the governor reads its active bundle from the store
            server.kill()
            server.start()
        read = authorize(
            server, "read_text_file", {"path": str(files / "a.txt")}, digest_of(catalog, "read_text_file")
        )
        assert read["allow"] is True, read
        assert read["decision"]["policies"] == ["read-in-dir"]


def test_call_that_does_not_fit_the_catalog_is_denied(
    world: tuple[GovernorServer, Path, dict[str, Any]], tmp_path: Path
) -> None:
    server, files, catalog = world
    server.admin("policy", "push", str(bundle(tmp_path, "good", GOOD, catalog, files)))
    read = digest_of(catalog, "read_text_file")
    inside = str(files / "a.txt")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"path": inside, "pth": "/etc/passwd"}, read, "undeclared"),
        ({"path": inside, "head": 0.00001}, read, "4 fraction digits"),
        ({"path": 7}, read, "expected a string"),
        ({"path": inside}, "sha256:" + "0" * 64, "not the catalogued one"),
        ({"path": "/etc/passwd"}, read, "default deny"),
    ]
    for arguments, digest, why in cases:
        answer = authorize(server, "read_text_file", arguments, digest)
        assert answer["allow"] is False, (arguments, answer)
        assert "warrant" not in answer
        assert why in answer["decision"]["reason"], answer
    assert authorize(server, "read_text_file", {"path": inside, "head": 2.5}, read)["allow"] is True


def test_tools_list_hides_tools_the_principal_can_never_call(
    world: tuple[GovernorServer, Path, dict[str, Any]], tmp_path: Path
) -> None:
    server, files, catalog = world
    server.admin("policy", "push", str(bundle(tmp_path, "good", GOOD, catalog, files)))
    names = [t["name"] for t in catalog["tools"]]
    with client_of(server) as alice:
        shown = visible_tools(alice, "filesystem", names)
        answer = alice.json("POST", "/v1/authorize/visible", {"resources": ["filesystem/write_file"]})
    assert shown == {"read_text_file"}  # write_file: forbidden to dev; the rest: no permit
    assert "no-dev-writes" in answer["hidden"][0]["reason"]
    with client_of(server, server.data / "bob.key") as bob:
        assert visible_tools(bob, "filesystem", names) == {"read_text_file", "write_file"}
    # The route is signed: no answer to an unsigned request.
    with client_of(server) as alice, pytest.raises(GovernorError) as refused:
        alice.json("POST", "/v1/authorize/visible", {"resources": ["filesystem/write_file"]}, signed=False)
    assert refused.value.status == 401


def test_schema_command_fails_closed_on_an_unusable_upstream(tmp_path: Path) -> None:
    err = io.StringIO()
    missing = schema_command(
        name="filesystem", command=[str(tmp_path / "no-such-server")], out=io.StringIO(), err=err
    )
    assert missing == 3
    assert "cannot list the tools" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    bad_name = schema_command(name="file/system", command=filesystem_server(tmp_path), out=out, err=err)
    assert bad_name == 2
    assert out.getvalue() == ""
    assert "no '/'" in err.getvalue()
