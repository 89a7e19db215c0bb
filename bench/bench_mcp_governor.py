"""The governor's side of a governed MCP tool call, alone: what ``proctor gateway mcp``
waits for before it forwards a ``tools/call``.

    python bench/bench_mcp_governor.py [--calls N] [--serve-arg ARG ...] [--baseline-src DIR]

One client calls ``POST /v1/authorize/start`` (``ToolGovernance.authorize_start``: the
signed request, the decision against the real server-filesystem's tool catalog, the
warrant and the start in the durable log, the warrant and the signed start verified
locally) back to back, and finishes each call from another thread while the next one is
authorized, as the gateway does after it has answered the agent. No upstream and no
agent: only the governor round trip that is on the call's path, so that a change on the
governor's side can be compared without the MCP stack's noise. ``--baseline-src DIR``
runs a second governor on another revision's ``src`` and calls the two in turns (batches
of 20), so that the machine's drift falls on both rows alike.

Prints the p50 and p90 of ``authorize_start``, and the p50 of each block of 200 calls
(a trend there would mean something grows with the log).
"""

from __future__ import annotations

import argparse
import json
import os
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


class Caller:
    """One governor's calls, as a gateway session makes them: authorize and start, the
    upstream's answer, and the finish from another thread while the next call goes on."""

    def __init__(self, governor: GovernorServer, digest: str, path: str) -> None:
        key = PrincipalKey.load(governor.key)
        self.calls, self.finishes = ToolGovernance(governor.url, key), ToolGovernance(governor.url, key)
        self.digest, self.arguments = digest, {"path": path}
        self.finishing: threading.Thread | None = None
        self.times: list[float] = []

    def call(self) -> None:
        began = time.perf_counter()
        running = self.calls.authorize_start("fs/read_text_file", self.arguments, self.digest)
        self.times.append((time.perf_counter() - began) * 1000)
        if isinstance(running, Refusal):
            raise SystemExit(f"the call was refused: {running.reason}")
        time.sleep(0.0008)  # the upstream's answer (server-filesystem: about 0.8 ms)
        self.settle()
        body = finish_body({"content": [], "isError": False}, running)
        self.finishing = threading.Thread(target=self.finishes.finish, args=(running, body))
        self.finishing.start()

    def settle(self) -> None:
        if self.finishing is not None:
            self.finishing.join()
            self.finishing = None

    def close(self) -> None:
        self.settle()
        self.calls.close()
        self.finishes.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per row (after 30 untimed)")
    parser.add_argument("--batch", type=int, default=20, help="calls per row before the other row's")
    parser.add_argument("--serve-arg", action="append", default=[], help="one more `proctor serve` argument")
    parser.add_argument(
        "--baseline-src",
        help="another revision's src/ (git archive REV src | tar -x -C DIR): a second governor "
        "running it, called in turns with this one",
    )
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
    serve = tuple(args.serve_arg)
    governors = {"this tree": GovernorServer(work / "gov", policy=policy, config=LIFTED, serve_args=serve)}
    try:
        if args.baseline_src:
            before = os.environ.get("PYTHONPATH")
            os.environ["PYTHONPATH"] = str(Path(args.baseline_src).resolve())
            try:
                governors["baseline"] = GovernorServer(
                    work / "base", policy=policy, config=LIFTED, serve_args=serve
                )
            finally:
                os.environ.pop("PYTHONPATH") if before is None else os.environ.update(PYTHONPATH=before)
        callers = {row: Caller(g, digest, str(data / "notes.txt")) for row, g in governors.items()}
        for caller in callers.values():  # warm up
            for _ in range(30):
                caller.call()
            caller.settle()
            caller.times.clear()
        while min(len(c.times) for c in callers.values()) < args.calls:
            for caller in callers.values():  # in turns: drift in the machine's speed falls on both
                for _ in range(args.batch):
                    caller.call()
                caller.settle()
        for caller in callers.values():
            caller.close()
    finally:
        for governor in governors.values():
            governor.stop()
    print(f"serve args: {args.serve_arg or 'none'}; {args.calls} calls per row, batches of {args.batch}")
    for row, caller in callers.items():
        timed = caller.times[: args.calls]
        blocks = " ".join(f"{statistics.median(timed[i : i + 200]):.2f}" for i in range(0, len(timed), 200))
        print(
            f"{row}: authorize_start p50 {statistics.median(timed):.2f} ms, "
            f"p90 {sorted(timed)[int(len(timed) * 0.9)]:.2f} ms; p50 per 200 calls: {blocks}"
        )


if __name__ == "__main__":
    main()
