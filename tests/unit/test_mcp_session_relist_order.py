"""The gateway lists the upstream again for each ``tools/call`` while the governor
authorizes it, from when the authorization request is on its way: the upstream's work
on the list does not delay the request (``GatewaySession._govern``, rule 2). Nothing is
forwarded before the re-list answered with the warrant's definition.

The channels are in-memory ends of the :class:`~proctor.integrations.mcp.wire.Channel`
interface and the governance is a stand-in with :class:`ToolGovernance`'s methods; the
real transports and a real governor are in tests/integration/test_mcp_gateway_*.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

import anyio

from channel_support import pair
from proctor.integrations.mcp.governance import Grant, Refusal, Running, ToolGovernance
from proctor.integrations.mcp.session import GatewaySession

TOOL = {"name": "read", "inputSchema": {"type": "object"}}


class Governance:
    """Authorizes after ``delay`` seconds, saying when its request was sent; records
    what happened, in order, with the session's own records."""

    principal = "alice"

    def __init__(self, events: list[str], *, send: bool = True, delay: float = 0.2) -> None:
        self.events, self.send, self.delay = events, send, delay

    def authorize_start(
        self,
        resource: str,
        arguments: dict[str, Any],
        digest: str,
        *,
        go: Callable[[], bool],
        on_sent: Callable[[], object] | None = None,
    ) -> Running | Refusal:
        if not self.send:
            self.events.append("refused before sending")
            return Refusal("refused: no governor")
        time.sleep(0.01)  # building and signing the request (within the head start)
        self.events.append("authorization sent")
        if on_sent is not None:
            on_sent()
        time.sleep(self.delay)
        self.events.append("authorization answered")
        grant = Grant("token", cast(Any, None), 0, arguments, digest)
        return Running("ex_1", grant, 1, 30.0, time.monotonic() + 30, time.monotonic() + 10)

    def finish(self, running: Any, body: dict[str, Any]) -> str:
        self.events.append(f"finished {body['outcome']}")
        return ""

    def follow(self, since: int, on_message: Any, stop: threading.Event) -> None:
        stop.wait()

    def renew(self, running: Any) -> str | None:
        return None


async def _call(governance: Governance, events: list[str]) -> dict[str, Any]:
    """One tools/call through a session whose upstream lists ``TOOL``; the agent's answer."""
    agent_side, session_agent = pair()
    session_up, upstream_side = pair()
    session = GatewaySession(
        session_agent, session_up, cast(ToolGovernance, governance), name="fs", on_note=lambda _: None
    )

    async def upstream() -> None:
        while True:
            message = await upstream_side.receive()
            if message.get("method") == "tools/list":
                events.append("upstream listed")
                await upstream_side.send({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": [TOOL]}})
            elif message.get("method") == "tools/call":
                events.append("upstream called")
                result = {"content": [{"type": "text", "text": "hi"}]}
                await upstream_side.send({"jsonrpc": "2.0", "id": message["id"], "result": result})

    answer: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.run)
        tg.start_soon(upstream)
        call = {"name": "read", "arguments": {"path": "/a"}}
        await agent_side.send({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": call})
        with anyio.fail_after(10):
            answer = await agent_side.receive()
        tg.cancel_scope.cancel()
    for end in (agent_side, session_agent, session_up, upstream_side):
        end.close()
    return answer


def test_the_relist_waits_for_the_authorization_to_be_sent_and_the_call_for_both() -> None:
    events: list[str] = []
    answer = anyio.run(_call, Governance(events), events)
    assert answer["result"]["content"][0]["text"] == "hi", answer
    # the first list (what the agent was shown), then the request, then the re-list
    assert events[:4] == [
        "upstream listed",
        "authorization sent",
        "upstream listed",
        "authorization answered",
    ]
    assert events.index("upstream called") > events.index("authorization answered")


def test_an_authorization_refused_before_it_was_sent_does_not_wait_for_the_head_start() -> None:
    events: list[str] = []
    began = time.monotonic()
    answer = anyio.run(_call, Governance(events, send=False), events)
    assert answer["result"]["isError"] is True, answer
    assert answer["result"]["content"][0]["text"] == "proctor: refused: no governor", answer
    assert "upstream called" not in events
    assert time.monotonic() - began < 5
