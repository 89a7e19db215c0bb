"""examples/agent_loop.py end to end against a real governor serving
examples/agent-policy: allowed tool calls run and their receipts verify; a denied call
is an observation the agent reads, and its effect does not happen. Part 1 with the SDK's
governed functions; Part 2 (``--gateway``) with file tools of the real
``@modelcontextprotocol/server-filesystem`` reached through ``proctor gateway mcp``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gov_server import GovernorServer, client_of
from mcp_support import mcp_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def run_example(server: GovernorServer, notes: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "agent_loop.py"),
            "--server",
            server.url,
            "--key",
            str(server.key),
            "--notes",
            str(notes),
            "--log-key",
            (server.data / "keys" / "log.pub").read_text().strip(),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_agent_loop_example_runs_governed_tools(tmp_path: Path) -> None:
    server = GovernorServer(tmp_path / "gov", policy=ROOT / "examples" / "agent-policy")
    notes = tmp_path / "notes"
    try:
        done = run_example(server, notes)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    steps = json.loads(done.stdout)
    assert [(s["tool"], s["outcome"]) for s in steps] == [
        ("search", "ok"),
        ("read_note", "ok"),
        ("write_note", "ok"),
        ("write_note", "denied"),
        ("delete_notes", "denied"),
    ]
    assert steps[0]["result"] == ["ideas.txt"]
    assert all(s["receipt_verified"] is True for s in steps if s["outcome"] == "ok")
    assert steps[4]["policies"] == ["no-delete"]
    assert (notes / "summary.txt").read_text().startswith("summary: renew the lease")
    assert (notes / "ideas.txt").read_text() == "renew the lease at a third of its TTL\n"  # not overwritten


def test_agent_loop_example_through_the_mcp_gateway(tmp_path: Path) -> None:
    filesystem = " ".join(mcp_server("filesystem"))
    server = GovernorServer(tmp_path / "gov", policy=ROOT / "examples" / "agent-policy")
    notes = tmp_path / "notes"
    try:
        done = run_example(server, notes, "--gateway", filesystem)
        with client_of(server) as client:
            ran = client.json("GET", "/v1/executions?status=all")["executions"]
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    steps = json.loads(done.stdout)
    assert [(s["tool"], s["via"], s["outcome"]) for s in steps] == [
        ("search", "sdk", "ok"),
        ("fs/read_text_file", "mcp gateway", "ok"),
        ("fs/write_file", "mcp gateway", "ok"),
        ("fs/write_file", "mcp gateway", "denied"),
        ("delete_notes", "sdk", "denied"),
    ]
    # tools/list showed the agent only what the policy could ever allow it.
    assert "the gateway shows the agent: fs/list_directory, fs/read_text_file, fs/write_file\n" in done.stderr
    assert steps[1]["result"] == "renew the lease at a third of its TTL\n"
    # Every call that ran has an execution the agent learnt of and a receipt that verified.
    done_ids = [s["execution"] for s in steps if s["outcome"] == "ok"]
    assert all(s["receipt_verified"] is True for s in steps if s["outcome"] == "ok")
    assert sorted(done_ids) == sorted(e["id"] for e in ran)
    assert {e["status"] for e in ran} == {"completed"}
    assert {e["resource"] for e in ran} == {"search", "fs/read_text_file", "fs/write_file"}
    # The denied write was never forwarded: the note is as it was.
    assert "fs/write_file" in steps[3]["denial"]
    assert (notes / "summary.txt").read_text().startswith("summary: renew the lease")
    assert (notes / "ideas.txt").read_text() == "renew the lease at a third of its TTL\n"
