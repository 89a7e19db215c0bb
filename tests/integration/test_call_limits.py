"""Call limits against a real governor (``proctor serve``): ``@rate``, ``@budget`` and
``@blast_radius`` (:mod:`proctor.governor.call_limits`).

Rules: a call over a limit is denied with a reason naming the limit; a limit counts one
principal's calls only; it is counted in the store, so two governor nodes on one store
together admit no more than the limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_server import GovernorServer, cli, client_of

pytestmark = pytest.mark.slow

POLICY = """
@id("read-rate")
@rate("3/3600s")
permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/read_text_file");

@id("search-budget")
@budget("4/3600s")
permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/search_files");

@id("write-blast-radius")
@blast_radius("2/3600s")
permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/write_file");

@id("list")
permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/list_directory");
"""


def policy_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tools.cedar").write_text(POLICY)
    return root


def call(tool: str, path: str = "/tmp/a") -> dict[str, Any]:
    return {"action": "mcp.call", "resource": f"fs/{tool}", "arguments": {"path": path}}


@pytest.fixture
def gov(tmp_path: Path) -> Iterator[GovernorServer]:
    server = GovernorServer(tmp_path / "gov", policy=policy_dir(tmp_path / "policy"))
    try:
        yield server
    finally:
        server.stop()


def allowed(gov: GovernorServer, body: dict[str, Any], key: Path | None = None) -> tuple[bool, str]:
    with client_of(gov, key) as client:
        answer = client.authorize(body)
    return answer["allow"], answer["decision"]["reason"]


def test_rate_limit_denies_the_call_over_it_per_principal(gov: GovernorServer, tmp_path: Path) -> None:
    assert [allowed(gov, call("read_text_file", f"/tmp/{i}"))[0] for i in range(3)] == [True] * 3
    ok, reason = allowed(gov, call("read_text_file", "/tmp/9"))
    assert not ok
    assert "obligation rate 3/3600s" in reason
    assert "3 calls of fs/read_text_file" in reason
    assert allowed(gov, call("list_directory"))[0]  # another tool: no limit of its own
    bob = tmp_path / "bob.key"
    cli("principal", "add", "bob", "--out", str(bob), "--server", gov.url, "--data", str(gov.data))
    assert allowed(gov, call("read_text_file"), bob)[0]  # another principal: its own count


def test_budget_limit_counts_every_call_of_the_principal(gov: GovernorServer) -> None:
    # Three calls of other tools, then the budgeted tool: four calls in all is the budget.
    for tool in ("list_directory", "list_directory", "read_text_file"):
        assert allowed(gov, call(tool))[0]
    assert allowed(gov, call("search_files"))[0]
    ok, reason = allowed(gov, call("search_files"))
    assert not ok
    assert "obligation budget 4/3600s" in reason


def test_blast_radius_limit_counts_distinct_arguments(gov: GovernorServer) -> None:
    assert allowed(gov, call("write_file", "/tmp/a"))[0]
    assert allowed(gov, call("write_file", "/tmp/b"))[0]
    assert allowed(gov, call("write_file", "/tmp/a"))[0]  # the same target again: no wider
    ok, reason = allowed(gov, call("write_file", "/tmp/c"))
    assert not ok
    assert "obligation blast_radius 2/3600s" in reason
    assert "2 distinct argument sets for fs/write_file" in reason


def test_rate_limit_holds_across_governor_nodes(tmp_path: Path) -> None:
    a, b = GovernorServer.nodes(tmp_path / "nodes", 2, policy=policy_dir(tmp_path / "policy"))
    try:
        answers = [
            allowed(node, call("read_text_file", f"/tmp/{i}"))[0] for i, node in enumerate((a, b, a, b, a))
        ]
        assert answers == [True, True, True, False, False]
    finally:
        b.stop()
        a.stop()
