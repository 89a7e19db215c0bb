"""An MCP ``tools/call`` direct, through proctor's gateway, and through PyPI MCP governance
proxies (``mcp-zero-trust-layer``, ``mcp-airlock``), side by side.

The rows and how they are driven are :mod:`bench.bench_mcp_peers`'s: one agent session
per row (the official ``mcp`` SDK client) calling ``read_text_file`` on the real
``@modelcontextprotocol/server-filesystem``, rows interleaved round by round, every
gateway allowing that call and nothing else. proctor's gateway makes one signed round
trip to a real governor per call (authorize and start in one request: the decision, the
warrant, the durable log) and reports the finish. The direct call on the same transport
is each group's baseline; a peer that cannot be installed is "n/a (why)".
"""

from __future__ import annotations

from bench import bench_mcp_peers
from bench.lib import PEERS, Context, Member, PeerUnavailable, Record


def measure(ctx: Context) -> list[Record]:
    cfg = ctx.config
    ctx.status("starting the gateways (peers installed on first use)")
    try:
        rows, notes, _, missing = bench_mcp_peers.measure(ctx.work, cfg["calls"], cfg["batch"], cfg["warmup"])
    except PeerUnavailable as e:
        return [ctx.unavailable("MCP tools/call (every row)", "ms", str(e), group="tools/call")]
    out: list[Record] = []
    groups: dict[tuple[str, str], str] = {}
    for row in rows:
        protocol = row.protocol if row.transport == "http" else ""
        group = groups.setdefault((row.transport, protocol), f"tools/call over {row.transport}" +
                                  (f" (protocol {protocol})" if protocol else ""))  # fmt: skip
        peer = f"{row.name} {PEERS[row.name].split('==')[-1]}" if row.name in PEERS else None
        name = f"{row.name} ({row.transport}{', ' + protocol if protocol else ''})"
        out.append(ctx.record(name, row.ms, "ms", group=group, series=row.name, baseline=row.name == "direct",
                              peer=peer))  # fmt: skip
        if row.cpu_ms is not None and row.transport == "stdio":  # HTTP: the shared bridge's CPU is no one's
            out.append(ctx.record(f"{name}: CPU of its processes per call", None, "ms CPU",
                                  group=f"CPU per call, {row.transport}", median=row.cpu_ms, samples=cfg["calls"],
                                  series=row.name, baseline=row.name == "direct", peer=peer))  # fmt: skip
    for name, transport, why in missing:
        group = next((g for (t, _), g in groups.items() if t == transport), f"tools/call over {transport}")
        out.append(ctx.unavailable(f"{name} ({transport})", "ms", why, group=group, series=name,
                                   peer=name if name.startswith("mcp-") else None))  # fmt: skip
    for note in notes:
        ctx.status(note)
    return out


MEMBER = Member(
    name="mcp",
    title="MCP tool call: direct vs proctor's gateway vs MCP governance proxies",
    quick={"calls": 20, "batch": 10, "warmup": 3},
    full={"calls": 300, "batch": 10, "warmup": 20},
    run=measure,
    meaning=(
        "What governing an agent's tool call adds to it, end to end, as the agent sees it: the "
        "gateway's median minus the direct call's on the same transport. proctor's gateway asks the "
        "governor for every call (a signed HTTP round trip that decides, mints a warrant and commits "
        "the decision to the durable log) and reports the call's outcome; the proxies decide locally. "
        "Two yardsticks on stdio show the floor of any gateway that asks a governor per call: the "
        "pass-through relay (the gateway's own transport copying every message, nothing governed: "
        "what being in the path costs) and the governor round trip alone (the gateway's authorize-and-"
        "start request made the same way, without agent, pipes or upstream; its figure is all added)."
    ),
)
