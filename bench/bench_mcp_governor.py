"""The governor's side of a governed MCP tool call, alone: what ``proctor gateway mcp``
waits for before it forwards a ``tools/call``.

    python bench/bench_mcp_governor.py [--calls N] [--serve-arg ARG ...]

One client calls ``POST /v1/authorize/start`` (``ToolGovernance.authorize_start``: the
signed request, the decision against the real server-filesystem's tool catalog, the
warrant and the start in the durable log, the warrant and the signed start verified
locally) back to back, and finishes each call from another thread while the next one is
authorized, as the gateway does after it has answered the agent. No upstream and no
agent: only the governor round trip that is on the call's path, so that a change on the
governor's side can be compared without the MCP stack's noise. Run it with another
revision's ``src`` on ``PYTHONPATH`` for a paired before/after (the server inherits it).

Prints the p50 and p90 of ``authorize_start``, and the p50 of each block of 200 calls
(a trend there would mean something grows with the log).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from bench.bench_mcp import LIFTED  # noqa: E402
from gov_server import GovernorServer, cli  # noqa: E402
from mcp_support import mcp_server  # noqa: E402
from proctor.authorization.keys import PrincipalKey  # noqa: E402
from proctor.integrations.mcp.governance import Refusal, ToolGovernance, finish_body  # noqa: E402

POLICY = (
    '@id("bench-read")\npermit(principal, action == Proctor::Action::"mcp.call", '
    'resource == Proctor::Tool::"fs/read_text_file");\n'
)


def catalog_digest(catalog: str, tool: str) -> str:
    """The definition digest the catalog binds for ``tool`` (the gateway's would match)."""
    for entry in json.loads(catalog)["tools"]:
        if entry["name"] == tool:
            return str(entry["definition_digest"])
    raise SystemExit(f"no {tool} in the catalog")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed calls (after 30 untimed)")
    parser.add_argument("--serve-arg", action="append", default=[], help="one more `proctor serve` argument")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mcp-gov-"))
    data = work / "root"
    data.mkdir()
    (data / "notes.txt").write_text("benchmark file\n")
    policy = work / "policy"
    policy.mkdir()
    catalog = cli(
        "gateway", "mcp", "schema", "--name", "fs", "--", *mcp_server("filesystem"), str(data)
    ).stdout
    (policy / "fs.tools.json").write_text(catalog)
    (policy / "bench.cedar").write_text(POLICY)
    digest = catalog_digest(catalog, "read_text_file")
    governor = GovernorServer(work / "gov", policy=policy, config=LIFTED, serve_args=tuple(args.serve_arg))
    times: list[float] = []
    try:
        key = PrincipalKey.load(governor.key)
        calls, finishes = ToolGovernance(governor.url, key), ToolGovernance(governor.url, key)
        arguments = {"path": str(data / "notes.txt")}
        finishing: threading.Thread | None = None
        for _ in range(30 + args.calls):
            began = time.perf_counter()
            running = calls.authorize_start("fs/read_text_file", arguments, digest)
            times.append((time.perf_counter() - began) * 1000)
            if isinstance(running, Refusal):
                raise SystemExit(f"the call was refused: {running.reason}")
            time.sleep(0.0008)  # the upstream's answer (server-filesystem: about 0.8 ms)
            if finishing is not None:
                finishing.join()
            body = finish_body({"content": [], "isError": False}, running)
            finishing = threading.Thread(target=finishes.finish, args=(running, body))
            finishing.start()
        if finishing is not None:
            finishing.join()
        calls.close()
        finishes.close()
    finally:
        governor.stop()
    timed = times[30:]
    blocks = " ".join(f"{statistics.median(timed[i : i + 200]):.2f}" for i in range(0, len(timed), 200))
    print(f"serve args: {args.serve_arg or 'none'}; {len(timed)} calls")
    print(
        f"authorize_start p50 {statistics.median(timed):.2f} ms, "
        f"p90 {sorted(timed)[int(len(timed) * 0.9)]:.2f} ms; p50 per 200 calls: {blocks}"
    )


if __name__ == "__main__":
    main()
