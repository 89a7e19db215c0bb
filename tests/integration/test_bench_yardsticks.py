"""The two yardsticks the MCP benchmark puts beside proctor's gateway measure what they
say: the pass-through relay copies every message unchanged (a relay that dropped or
altered one would make the floor look cheaper), and the governor row makes the whole
governed round trip (an answer refused early would look fast)."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from mcp.types import TextContent

from gov_server import GovernorServer, client_of
from mcp_support import agent, mcp_server

sys.path.insert(0, str(Path(__file__).parents[2]))
from bench.bench_mcp_peers import LIFTED, GovernorCalls, proctor_policy, relay_argv

pytestmark = pytest.mark.slow


def test_the_relay_copies_every_message_both_ways(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "notes.txt").write_text("through the relay\n")
    upstream = [*mcp_server("filesystem"), str(root)]

    async def through(argv: list[str]) -> tuple[list[tuple[str, str]], str, str]:
        async with agent(argv) as session:
            listed = await session.list_tools()
            read = await session.call_tool("read_text_file", {"path": str(root / "notes.txt")})
            missing = await session.call_tool("read_text_file", {"path": str(root / "absent.txt")})
        tools = sorted((t.name, t.model_dump_json()) for t in listed.tools)
        texts = ["".join(c.text for c in r.content if isinstance(c, TextContent)) for r in (read, missing)]
        assert missing.is_error
        return tools, texts[0], texts[1]

    direct = anyio.run(through, upstream)
    relayed = anyio.run(through, relay_argv(upstream))
    assert relayed == direct
    assert direct[1] == "through the relay\n"


def test_the_governor_row_makes_the_whole_governed_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "notes.txt").write_text("x\n")
    upstream = [*mcp_server("filesystem"), str(root)]
    policy = proctor_policy(tmp_path / "policy", root, upstream)
    governor = GovernorServer(tmp_path / "gov", policy=policy, config=LIFTED)
    try:
        calls = GovernorCalls(governor, policy / "fs.tools.json")
        try:

            async def three() -> list[float]:
                return [await calls.timed(str(root / "notes.txt")) for _ in range(3)]

            times = anyio.run(three)
            with pytest.raises(SystemExit, match="refused"):  # outside the allowed directory
                anyio.run(calls.timed, str(tmp_path / "elsewhere.txt"))
        finally:
            calls.close()
        assert all(t > 0 for t in times)
        with client_of(governor) as client:
            ended = client.json("GET", "/v1/executions?status=all")["executions"]
        assert sorted(e["status"] for e in ended) == ["completed"] * 3
    finally:
        governor.stop()
