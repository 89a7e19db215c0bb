"""The gateway session forgets a forwarded request the agent cancelled (MCP: no answer
is due to it), and drops a late answer to it; an audit found each cancelled request
kept for the session's life (``_up``), 10,000 of them after 20,000 requests.

The channels here are in-memory ends of the :class:`~proctor.integrations.mcp.wire.Channel`
interface; the real transports carry the same dicts (tests/integration/test_mcp_gateway_*).
"""

from __future__ import annotations

from typing import Any, cast

import anyio

from channel_support import pair
from proctor.integrations.mcp.governance import ToolGovernance
from proctor.integrations.mcp.session import GatewaySession

ROUNDS = 200


def test_a_cancelled_request_is_forgotten_and_its_late_answer_dropped() -> None:
    agent_side, session_agent = pair()
    session_up, upstream_side = pair()
    session = GatewaySession(
        session_agent, session_up, cast(ToolGovernance, None), name="t", on_note=lambda _: None
    )
    seen_up: list[dict[str, Any]] = []
    to_agent: list[dict[str, Any]] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.run)
            for i in range(ROUNDS):
                await agent_side.send({"jsonrpc": "2.0", "id": i, "method": "ping"})
                request = await upstream_side.receive()
                cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": i}}
                await agent_side.send(cancel)
                cancelled = await upstream_side.receive()
                seen_up.extend([request, cancelled])
                assert cancelled["params"]["requestId"] == request["id"]  # renumbered for the upstream
                if i == 0:  # an upstream that answers anyway: the answer goes nowhere
                    await upstream_side.send({"jsonrpc": "2.0", "id": request["id"], "result": {}})
            await agent_side.send({"jsonrpc": "2.0", "id": "last", "method": "ping"})
            last = await upstream_side.receive()
            await upstream_side.send({"jsonrpc": "2.0", "id": last["id"], "result": {}})
            to_agent.append(await agent_side.receive())
            agent_side.close()

    anyio.run(main)
    for end in (upstream_side, session_agent, session_up):
        end.close()
    assert to_agent == [{"jsonrpc": "2.0", "id": "last", "result": {}}]  # the late answer was dropped
    assert session._up == {}, f"{len(session._up)} requests kept after their cancellation"
    assert len(seen_up) == 2 * ROUNDS
