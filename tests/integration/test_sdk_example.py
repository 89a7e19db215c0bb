"""examples/agent_loop.py end to end against a real governor serving
examples/agent-policy: allowed tool calls run and their receipts verify; a denied call
is an observation the agent reads, and its effect does not happen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gov_server import GovernorServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_agent_loop_example_runs_governed_tools(tmp_path: Path) -> None:
    server = GovernorServer(tmp_path / "gov", policy=ROOT / "examples" / "agent-policy")
    notes = tmp_path / "notes"
    try:
        done = subprocess.run(
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
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
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
