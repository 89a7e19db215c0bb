"""A yardstick for the MCP member: proctor's stdio gateway with the governance taken out.

    python -m bench.mcp_relay -- UPSTREAM_CMD ...

It runs the upstream as a child and copies every message between its own stdin/stdout and
the child's pipes, in both directions, unchanged, through the gateway's own transport
(``StreamChannel``: the same framing, size limit, parsing and writes). What it adds to a
direct call is what sitting between the agent and the server costs before any decision:
the two extra pipe hops and the gateway process's reading and writing. A gateway that
also asks a governor per call adds at least this plus that round trip. Bench only: it
forwards what it is given, governs nothing, and is never part of the product.
"""

from __future__ import annotations

import subprocess
import sys

import anyio

from proctor.integrations.mcp.wire import DEFAULT_MAX_MESSAGE_BYTES, Malformed, StreamChannel


async def _copy(source: StreamChannel, sink: StreamChannel) -> None:
    while True:
        try:
            message = await source.receive()
        except anyio.EndOfStream:
            return
        if isinstance(message, Malformed):
            raise SystemExit(f"mcp_relay: a malformed message: {message}")
        await sink.send(message)


async def relay(upstream: list[str]) -> None:
    """Copy messages between this process's stdio and ``upstream``'s until either ends."""
    async with await anyio.open_process(
        upstream, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None
    ) as child:
        if child.stdout is None or child.stdin is None:  # pragma: no cover - PIPE given
            raise RuntimeError("the upstream's pipes were not opened")
        agent = StreamChannel(max_bytes=DEFAULT_MAX_MESSAGE_BYTES, fds=(0, 1))
        server = StreamChannel(max_bytes=DEFAULT_MAX_MESSAGE_BYTES, receive=child.stdout, send=child.stdin)
        async with anyio.create_task_group() as tasks:

            async def both(source: StreamChannel, sink: StreamChannel) -> None:
                await _copy(source, sink)
                tasks.cancel_scope.cancel()  # one side ended: so does the relay

            tasks.start_soon(both, agent, server)
            tasks.start_soon(both, server, agent)
        await child.stdin.aclose()
        with anyio.move_on_after(2):
            await child.wait()
        if child.returncode is None:
            child.kill()


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise SystemExit("usage: python -m bench.mcp_relay -- UPSTREAM_CMD ...")
    anyio.run(relay, args)


if __name__ == "__main__":
    main()
