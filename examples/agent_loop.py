"""An agent loop whose tools are governed by proctor (no model needed: a scripted planner).

Part 1, Python tools governed in-process with the SDK (``@governed``): each step the
planner picks runs only if the governor allows that exact call; a denial is an
observation the agent reads (as a model would), not a crash. Every call that ran has a
receipt, verified offline with the log key.

Part 2, ``--gateway CMD``: the agent also reaches the notes as MCP tools of a real MCP
server (``CMD NOTES``, e.g. ``@modelcontextprotocol/server-filesystem``) through
``proctor gateway mcp --name fs``, with the official ``mcp`` client SDK over stdio. The
planner mixes both: it searches with the SDK tool, reads and writes through the gateway
(``fs/read_text_file``, ``fs/write_file``; one write the policy refuses, so the gateway
never forwards it), and tries the SDK tool the policy forbids. The gateway governs each
``tools/call`` exactly as the SDK governs a function (a warrant for the exact arguments
and the tool's definition, a lease, a receipt); it tells the agent the execution of
each call in the result's ``_meta`` (``proctor/execution``), so the agent fetches and
verifies those receipts with the SDK as well.

Run it against a governor serving ``examples/agent-policy``::

    proctor init --data ./gov && proctor principal add alice --attr role=dev --out alice.key --data ./gov
    proctor policy push examples/agent-policy --data ./gov && proctor serve --data ./gov &
    python examples/agent_loop.py --server http://127.0.0.1:8700 --key alice.key \\
        --notes ./notes --log-key "$(proctor log key --data ./gov)"
    # Part 2: the same, with the file tools reached through the gateway
    python examples/agent_loop.py --server http://127.0.0.1:8700 --key alice.key \\
        --notes ./notes --log-key "$(proctor log key --data ./gov)" \\
        --gateway "npx -y @modelcontextprotocol/server-filesystem"

It prints the transcript as JSON: one entry per step (tool, how it was reached, arguments,
outcome, result or denial, execution id, whether its receipt verified); the tools the
gateway showed the agent go to stderr. It exits 0 when every receipt of a call that ran
verified.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp.client.session import ClientSession  # the official MCP SDK (Part 2)
from mcp.client.stdio import StdioServerParameters, stdio_client

import proctor
from proctor.client import GovernorError
from proctor.integrations.sdk import Client

Tool = Callable[..., Any]


@dataclass
class Step:
    """One action the planner chose, and what came of it."""

    tool: str
    arguments: dict[str, Any]
    via: str = ""  # "sdk" or "mcp gateway"
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


def gateway_planner(observations: list[Step]) -> Iterator[Step]:
    """Part 2's "model": the same task, reading and writing through the MCP gateway.

    Paths are relative: the filesystem server resolves them in its one directory (the
    notes), and the policy can name them exactly (``path=summary.txt``).
    """
    yield Step("search", {"query": "lease"})
    hits = observations[-1].result or []
    yield Step("fs/read_text_file", {"path": hits[0] if hits else "ideas.txt"})
    text = observations[-1].result or ""
    yield Step("fs/write_file", {"path": "summary.txt", "content": f"summary: {text[:40]}"})
    yield Step("fs/write_file", {"path": "ideas.txt", "content": "overwritten"})  # the policy says no
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


@dataclass(frozen=True)
class GatewayCall:
    """What the agent knows of a call the gateway governed: its execution."""

    execution: str


class GatewayTool:
    """One MCP tool reached through ``proctor gateway mcp``, called like a governed function.

    A result the gateway wrote (``isError``, text ``proctor: denied: …`` or ``proctor:
    refused: …``, no execution in ``_meta``) is a :class:`proctor.DeniedError`: the call
    was never forwarded. Any other ``isError`` result is the tool's own failure.
    """

    def __init__(self, portal: BlockingPortal, session: ClientSession, name: str) -> None:
        """Args: portal: runs the session's coroutines; session: the MCP client session;
        name: the tool's name on the server."""
        self.portal, self.session, self.name = portal, session, name

    def __call__(self, **arguments: Any) -> Any:
        """Call the tool; its text result."""
        return self.run(**arguments)[0]

    def run(self, **arguments: Any) -> tuple[Any, GatewayCall]:
        """Call the tool; its text result and the execution the gateway started for it."""
        result = self.portal.call(self.session.call_tool, self.name, arguments)
        text = "\n".join(getattr(c, "text", "") for c in result.content)
        execution = str((result.meta or {}).get("proctor/execution", ""))
        if result.is_error:
            # Only the gateway answers without an execution: the upstream cannot pose as it.
            if not execution and text.startswith(("proctor: denied", "proctor: refused")):
                raise proctor.DeniedError(text, reason=text.removeprefix("proctor: "), tool=self.name)
            raise RuntimeError(f"the tool failed: {text}")
        return text, GatewayCall(execution)


@asynccontextmanager
async def _mcp_session(argv: list[str]) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@contextmanager
def gateway_toolbox(server: str, key: str, upstream: list[str]) -> Iterator[dict[str, Tool]]:
    """Part 2: the tools ``proctor gateway mcp`` shows the agent, named ``fs/TOOL``.

    The agent runs the gateway as an MCP client runs any stdio server (the gateway runs
    ``upstream`` behind it); ``tools/list`` shows only the tools this principal could
    ever call.
    """
    gateway = [sys.executable, "-m", "proctor", "gateway", "mcp", "--server", server, "--key", key]
    argv = [*gateway, "--name", "fs", "--", *upstream]
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(_mcp_session(argv)) as session:
        listed = portal.call(session.list_tools)
        tools: dict[str, Tool] = {f"fs/{t.name}": GatewayTool(portal, session, t.name) for t in listed.tools}
        sys.stderr.write(f"the gateway shows the agent: {', '.join(sorted(tools)) or 'nothing'}\n")
        yield tools


def receipt_of(client: Client, execution: str, *, wait: float = 30.0) -> dict[str, Any]:
    """The execution's receipt, once its end is recorded (the gateway records it just
    after the agent has the answer; the SDK before it returns)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return client.receipt(execution)
        except GovernorError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def run_agent(
    client: Client,
    tools: dict[str, Tool],
    *,
    log_key: str | None,
    planner: Callable[[list[Step]], Iterator[Step]] = scripted_planner,
) -> list[Step]:
    """The loop: ask the planner, call the tool, record what happened, repeat."""
    transcript: list[Step] = []
    for step in planner(transcript):
        tool = tools.get(step.tool)
        step.via = "mcp gateway" if isinstance(tool, GatewayTool) else "sdk"
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
            step.receipt_verified = client.verify(receipt_of(client, step.execution), log_key=log_key).ok
        transcript.append(step)
    return transcript


def main(argv: list[str] | None = None) -> int:
    """Run the scripted agent once; exit 0 when every receipt of a call that ran verified."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="the governor's URL")
    parser.add_argument("--key", required=True, help="the agent principal's key file")
    parser.add_argument("--notes", required=True, type=Path, help="a directory of *.txt notes")
    parser.add_argument("--log-key", help="the log verifier key (verify each call's receipt)")
    parser.add_argument(
        "--gateway",
        metavar="CMD",
        help="Part 2: an MCP filesystem server's command (the notes directory is appended), "
        "reached through proctor gateway mcp",
    )
    args = parser.parse_args(argv)
    args.notes.mkdir(parents=True, exist_ok=True)
    if not any(args.notes.glob("*.txt")):
        (args.notes / "ideas.txt").write_text("renew the lease at a third of its TTL\n")
    with proctor.Client(args.server, args.key) as client:
        tools = sdk_toolbox(client, args.notes)
        if args.gateway is None:
            transcript = run_agent(client, tools, log_key=args.log_key)
        else:
            upstream = [*shlex.split(args.gateway), str(args.notes.resolve())]
            with gateway_toolbox(args.server, args.key, upstream) as mcp_tools:
                transcript = run_agent(
                    client, tools | mcp_tools, log_key=args.log_key, planner=gateway_planner
                )
    json.dump([asdict(s) for s in transcript], sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if all(s.receipt_verified is not False for s in transcript) else 1


if __name__ == "__main__":
    sys.exit(main())
