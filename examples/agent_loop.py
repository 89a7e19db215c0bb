"""An agent loop whose tools are governed by proctor (no model needed: a scripted planner).

Part 1 (this file): Python tools governed in-process with the SDK (``@governed``). Each
step the planner picks runs only if the governor allows that exact call; a denial is an
observation the agent reads (as a model would), not a crash. Every call that ran has a
receipt, verified offline at the end with the log key.

Part 2 (to come): the same loop calling an MCP server's tools through
``proctor gateway mcp``; add a toolbox next to :func:`sdk_toolbox` and a ``--toolbox``
choice (the planner and the loop do not change).

Run it against a governor serving ``examples/agent-policy``::

    proctor init --data ./gov && proctor principal add alice --attr role=dev --out alice.key --data ./gov
    proctor policy push examples/agent-policy --data ./gov && proctor serve --data ./gov &
    python examples/agent_loop.py --server http://127.0.0.1:8700 --key alice.key \\
        --notes ./notes --log-key "$(cat ./gov/keys/log.pub)"

It prints the transcript as JSON: one entry per step (tool, arguments, outcome, result or
denial, execution id, whether its receipt verified).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import proctor
from proctor.integrations.sdk import Client

Tool = Callable[..., Any]


@dataclass
class Step:
    """One action the planner chose, and what came of it."""

    tool: str
    arguments: dict[str, Any]
    outcome: str = ""  # "ok", "denied", "error"
    result: Any = None
    denial: str = ""
    execution: str = ""
    receipt_verified: bool | None = None
    policies: list[str] = field(default_factory=list)


def scripted_planner(observations: list[Step]) -> Iterator[Step]:
    """The "model": a fixed plan, each step built from what the previous ones returned."""
    yield Step("search", {"query": "lease"})
    hits = observations[-1].result or []
    yield Step("read_note", {"name": hits[0] if hits else "ideas.txt"})
    text = observations[-1].result or ""
    yield Step("write_note", {"name": "summary.txt", "text": f"summary: {text[:40]}"})
    yield Step("write_note", {"name": "ideas.txt", "text": "overwritten"})  # the policy says no
    yield Step("delete_notes", {})  # forbidden outright


def sdk_toolbox(client: Client, notes: Path) -> dict[str, Tool]:
    """Part 1: the tools as Python functions, each governed by the SDK."""

    @proctor.governed(client, tool="search")
    def search(query: str) -> list[str]:
        """Names of the notes that mention ``query``."""
        return sorted(p.name for p in notes.glob("*.txt") if query in p.read_text())

    @proctor.governed(client, tool="read_note")
    def read_note(name: str) -> str:
        """The text of one note."""
        return (notes / Path(name).name).read_text()

    @proctor.governed(client, tool="write_note")
    def write_note(name: str, text: str) -> int:
        """Write one note; the number of characters written."""
        return (notes / Path(name).name).write_text(text)

    @proctor.governed(client, tool="delete_notes")
    def delete_notes() -> int:
        """Delete every note."""
        gone = list(notes.glob("*.txt"))
        for p in gone:
            p.unlink()
        return len(gone)

    return {"search": search, "read_note": read_note, "write_note": write_note, "delete_notes": delete_notes}


def run_agent(client: Client, tools: dict[str, Tool], *, log_key: str | None) -> list[Step]:
    """The loop: ask the planner, call the tool, record what happened, repeat."""
    transcript: list[Step] = []
    for step in scripted_planner(transcript):
        tool = tools.get(step.tool)
        try:
            if tool is None:
                raise LookupError(f"no tool {step.tool!r}")
            step.result, call = tool.run(**step.arguments)  # type: ignore[attr-defined]
            step.outcome, step.execution = "ok", call.execution
        except proctor.DeniedError as e:
            step.outcome, step.denial, step.policies = "denied", e.reason, list(e.policies)
        except Exception as e:  # noqa: BLE001 - the agent reads a tool's failure as an observation
            step.outcome, step.denial = "error", f"{type(e).__name__}: {e}"
        if step.execution and log_key is not None:
            step.receipt_verified = client.verify(client.receipt(step.execution), log_key=log_key).ok
        transcript.append(step)
    return transcript


def main(argv: list[str] | None = None) -> int:
    """Run the scripted agent once; exit 0 when every receipt of a call that ran verified."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="the governor's URL")
    parser.add_argument("--key", required=True, help="the agent principal's key file")
    parser.add_argument("--notes", required=True, type=Path, help="a directory of *.txt notes")
    parser.add_argument("--log-key", help="the log verifier key (verify each call's receipt)")
    args = parser.parse_args(argv)
    args.notes.mkdir(parents=True, exist_ok=True)
    if not any(args.notes.glob("*.txt")):
        (args.notes / "ideas.txt").write_text("renew the lease at a third of its TTL\n")
    with proctor.Client(args.server, args.key) as client:
        transcript = run_agent(client, sdk_toolbox(client, args.notes), log_key=args.log_key)
    json.dump([asdict(s) for s in transcript], sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if all(s.receipt_verified is not False for s in transcript) else 1


if __name__ == "__main__":
    sys.exit(main())
