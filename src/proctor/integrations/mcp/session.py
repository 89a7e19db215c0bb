"""One gateway session: an agent's MCP session forwarded to one upstream session, every
``tools/call`` governed on the way.

The rules, numbered as the code cites them:

1. Every message is forwarded both ways (requests, responses, notifications,
   cancellation, server-to-client requests) except ``tools/call``, which is forwarded
   only once it is authorized and started (:mod:`~proctor.integrations.mcp.governance`).
   The agent's request ids are renumbered on the way up, so that no agent message can
   answer, or pose as, a request of the gateway's own. An agent's cancellation goes up
   renumbered; one of a ``tools/call`` not yet forwarded stops it there (an execution
   already started is finished ``cancelled``); one naming nothing in flight is dropped.
2. ``tools/list`` shows the agent only the tools its principal could ever call (the
   governor says which: ``POST /v1/authorize/visible``; none when it cannot say). The
   definition a call is authorized for is the one the agent was shown: the tool as
   the last ``tools/list`` answer forwarded to the agent described it (listed by the
   gateway itself if the agent never listed). Before *each* call is forwarded the
   gateway lists the upstream's tools again, while the governor authorizes and starts
   the call, from when that request is on its way (at most 50 ms after it was asked
   for: the upstream's work on the list then does not delay the request; listed again
   if that waited for an approval); a definition whose digest
   differs from the warrant's is refused and never forwarded (it changed after it was
   shown), its execution finished ``failed``, reason ``not-forwarded``.
3. A denial, an unreachable governor, an unknown tool, malformed arguments, or a
   malformed or oversized answer from the upstream: the agent gets a tool result with
   ``isError: true`` saying why, nothing unauthorized is forwarded, the session goes on.
4. A started call holds a lease, renewed at a third of its TTL while it runs; a
   revocation pushed on the event stream, a refused renewal or a lease that lapses
   ends it: ``notifications/cancelled`` upstream, an error result to the agent, the
   execution finished ``terminated`` with the reason. The upstream's late answer is
   dropped.
5. A call that ends is finished with its outcome (``completed``, or ``failed`` for an
   ``isError`` result) and the RFC 8785 digest of its result, after the agent has its
   answer (``_meta`` ``proctor/execution`` added: whose receipt to fetch); the session
   waits for every finish before it ends.

Why one module: the five rules are one sequence over one state — the ids renumbered
both ways, the calls held before they are forwarded, the calls in flight with their
leases, the finishes still owed — and a cancellation, a revocation or the upstream's
end can arrive at any step of it; the order of those steps is the guarantee, and it is
audited here, in the order it runs, while the wire format, the governor's side and the
transports live in their own modules.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup

from proctor.integrations.mcp.governance import (
    Refusal,
    Running,
    ToolGovernance,
    definition_digests,
    ended_body,
    finish_body,
    not_forwarded_body,
    unforwardable,
)
from proctor.integrations.mcp.wire import Channel, Malformed, error_result, notification, quietly, rpc_error

__all__ = ["GatewaySession", "error_result"]

_MAX_PAGES = 64
_LIST_TIMEOUT_S = 30.0
_TICK_S = 0.05
_CANCELLED = "cancelled by the agent"
_RELIST_HEAD_START_S = 0.05
"""At most how long the re-list waits for the authorization to be on its way first."""
_RELIST_FRESH_S = 1.0  # a re-list older when the call is to be forwarded (an approval was awaited): again


@dataclass
class _Call:
    """A governed call in flight."""

    agent_id: Any
    running: Running | None = None
    answer: dict[str, Any] | None = None
    ended: str = ""
    done: anyio.Event = field(default_factory=anyio.Event)

    def end(self, why: str) -> None:
        if not self.done.is_set():
            self.ended = why
            self.done.set()


@dataclass
class _Relist:
    """The upstream's live tool definitions (rule 2), or why they could not be read."""

    live: dict[str, str] | LookupError = field(default_factory=lambda: LookupError("not listed"))
    at: float = 0.0


class GatewaySession:
    """Forward one agent session to one upstream session, governing tool calls.

    Args:
        agent: the agent's side.
        upstream: the upstream server's side.
        governance: the governor calls of this session.
        name: the server part of every resource (``NAME/TOOL``).
        on_note: told, in words, what the gateway refused and why (stderr).
    """

    def __init__(
        self,
        agent: Channel,
        upstream: Channel,
        governance: ToolGovernance,
        *,
        name: str,
        on_note: Callable[[str], None] = lambda _: None,
    ) -> None:
        """Set up; nothing runs before :meth:`run`."""
        self.agent, self.upstream, self.governance = agent, upstream, governance
        self.name = name
        self.note = on_note
        self._ids = itertools.count(1)
        self._up: dict[int, tuple[Any, str]] = {}  # upstream id -> (agent id, method)
        self._own: dict[int, tuple[anyio.Event, list[Any]]] = {}
        self._calls: dict[int, _Call] = {}  # upstream id -> governed call
        self._held: dict[Any, bool] = {}  # agent id of a call not yet forwarded -> cancelled
        self._shown: dict[str, str] = {}  # tool -> digest of the definition shown (rule 2)
        self._finishing = 0
        self._stop = threading.Event()
        self._following = False
        self._token: Any = None
        self._tg: TaskGroup | None = None

    # -- the session -------------------------------------------------------------------

    async def run(self) -> None:
        """Forward until the agent or the upstream closes; then finish every call."""
        self._token = anyio.lowlevel.current_token()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._from_upstream)
                tg.start_soon(self._leases)
                await self._from_agent()
                tg.cancel_scope.cancel()
        finally:
            self._stop.set()
            for call in list(self._calls.values()):
                call.end("the session ended")
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                while self._finishing:
                    await anyio.sleep(_TICK_S)

    async def _from_agent(self) -> None:
        while True:
            try:
                message = await self.agent.receive()
            except anyio.EndOfStream:
                return
            if isinstance(message, Malformed):
                self.note(f"refused a message from the agent: {message.reason}")
                if message.id_hint is not None:
                    await self.agent.send(rpc_error(message.id_hint, -32600, message.reason))
                continue
            method = message.get("method")
            if "id" in message and isinstance(method, str):
                if method == "tools/call":
                    self._held[message["id"]] = False
                    self._spawn(self._governed, message)
                else:
                    await self._forward_request(message, method)
            elif isinstance(method, str):
                if (up_message := self._notification_up(message)) is not None:
                    await self.upstream.send(up_message)
            else:  # an answer to a server-to-client request: its id is the upstream's
                await self.upstream.send(message)

    async def _forward_request(self, message: dict[str, Any], method: str) -> int:
        up = next(self._ids)
        self._up[up] = (message["id"], method)
        await self.upstream.send({**message, "id": up})
        return up

    def _notification_up(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """For the upstream (rule 1); ``None``: a cancellation of nothing forwarded."""
        params = message.get("params")
        if message.get("method") != "notifications/cancelled" or not isinstance(params, dict):
            return message
        wanted = params.get("requestId")
        for up, (agent_id, _) in self._up.items():
            if agent_id == wanted:
                call = self._calls.get(up)
                if call is not None:
                    call.end(_CANCELLED)
                else:  # no answer is due to a cancelled request (MCP): a late one is dropped
                    del self._up[up]
                return {**message, "params": {**params, "requestId": up}}
        if type(wanted) in (str, int) and wanted in self._held:
            self._held[wanted] = True  # stopped before it is forwarded (rule 1)
        return None  # else it names no request in flight: dropped

    async def _from_upstream(self) -> None:
        while True:
            try:
                message = await self.upstream.receive()
            except anyio.EndOfStream:
                self.note("the upstream server closed its side; ending the session")
                for call in list(self._calls.values()):
                    call.end("the upstream server closed")
                self._stop.set()
                if self._tg is not None:
                    self._tg.cancel_scope.cancel()
                return
            if isinstance(message, Malformed):
                await self._malformed(message)
                continue
            method = message.get("method")
            if isinstance(method, str):  # a server-to-client request or notification
                await self.agent.send(message)
                continue
            up = message.get("id")
            if type(up) is not int:
                self.note(f"dropped an answer to no request of this session (id {up!r:.40})")
                continue
            if up in self._own:
                event, box = self._own.pop(up)
                box.append(message)
                event.set()
                continue
            if up in self._calls:
                call = self._calls[up]
                call.answer = message
                call.end("")
                continue
            if up not in self._up:
                self.note(f"dropped an answer to no request of this session (id {up})")
                continue
            agent_id, method = self._up.pop(up)
            if method == "tools/list" and isinstance(message.get("result"), dict):
                self._spawn(self._list_answer, message, agent_id)
                continue
            await self.agent.send({**message, "id": agent_id})

    async def _malformed(self, message: Malformed) -> None:
        self.note(f"refused a message from the upstream server: {message.reason}")
        up = message.id_hint
        if type(up) is not int:
            # It may have been the answer to any call in flight: none of them can be
            # trusted to get its own, so each is refused (rule 3); the session goes on.
            for call in list(self._calls.values()):
                call.end(f"refused: the upstream server sent {message.reason} while the call was in flight")
            for event, box in list(self._own.values()):
                box.append({"error": {"code": -32600, "message": message.reason}})
                event.set()
            self._own.clear()
            return
        if up in self._own:
            event, box = self._own.pop(up)
            box.append({"error": {"code": -32600, "message": message.reason}})
            event.set()
        elif up in self._calls:
            self._calls[up].end(f"refused: the upstream server answered with {message.reason}")
        elif up in self._up:
            agent_id, _ = self._up.pop(up)
            await self.agent.send(rpc_error(agent_id, -32603, f"upstream sent {message.reason}"))

    def _spawn(self, func: Callable[..., Any], *args: Any) -> None:
        if self._tg is not None:
            self._tg.start_soon(func, *args)

    # -- rule 2: the definitions shown and the live ones -------------------------------

    async def _list_answer(self, answer: dict[str, Any], agent_id: Any) -> None:
        """A ``tools/list`` answer for the agent: only the tools its principal could ever
        call, whose definitions are then the ones shown (rule 2)."""
        result = dict(answer["result"])
        tools = result.get("tools")
        if isinstance(tools, list):
            names = [t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
            visible = await anyio.to_thread.run_sync(self.governance.visible, self.name, names)
            result["tools"] = [t for t in tools if isinstance(t, dict) and t.get("name") in visible]
            self._shown.update(definition_digests(result["tools"]))
        await self.agent.send({**answer, "result": result, "id": agent_id})

    async def _request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        up = next(self._ids)
        event, box = anyio.Event(), list[Any]()
        self._own[up] = (event, box)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": up, "method": method}
        if params is not None:
            message["params"] = params
        await self.upstream.send(message)
        with anyio.move_on_after(_LIST_TIMEOUT_S):
            await event.wait()
        self._own.pop(up, None)
        if not box:
            raise LookupError(f"the upstream server did not answer {method} in {_LIST_TIMEOUT_S:g} s")
        answer: dict[str, Any] = box[0]
        if "result" not in answer or not isinstance(answer["result"], dict):
            raise LookupError(f"the upstream server refused {method}: {answer.get('error')!r:.200}")
        return answer

    async def live_tools(self) -> dict[str, str]:
        """Every tool the upstream lists now, with its definition digest (rule 2).

        Raises:
            LookupError: no well-formed answer.
        """
        found: dict[str, str] = {}
        cursor: Any = None
        for _ in range(_MAX_PAGES):
            answer = await self._request("tools/list", {"cursor": cursor} if cursor else None)
            result = answer["result"]
            tools = result.get("tools")
            if not isinstance(tools, list):
                raise LookupError("the upstream's tools/list answer has no tools array")  # noqa: TRY004
            found.update(definition_digests(tools))
            cursor = result.get("nextCursor")
            if not cursor:
                return found
        raise LookupError(f"the upstream's tools/list has more than {_MAX_PAGES} pages")

    async def _relist(self, into: _Relist) -> None:
        try:
            into.live = await self.live_tools()
        except LookupError as e:
            into.live = e
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as e:
            into.live = LookupError(f"the upstream server cannot be written to ({e})")
        into.at = time.monotonic()

    async def _relist_once_sent(self, into: _Relist, sent: anyio.Event) -> None:
        with anyio.move_on_after(_RELIST_HEAD_START_S):
            await sent.wait()
        await self._relist(into)

    def _from_worker(self, func: Callable[[], object]) -> None:
        """Run ``func`` on the event loop, from a worker thread (nothing if the loop ended)."""
        with contextlib.suppress(RuntimeError):
            anyio.from_thread.run_sync(func, token=self._token)

    # -- rules 1-5: one governed call --------------------------------------------------

    async def _governed(self, message: dict[str, Any]) -> None:
        try:
            await self._govern(message)
        finally:
            self._held.pop(message["id"], None)

    async def _govern(self, message: dict[str, Any]) -> None:
        agent_id = message["id"]
        params = message.get("params")
        tool = params.get("name") if isinstance(params, dict) else None
        arguments = params.get("arguments", {}) if isinstance(params, dict) else None
        if arguments is None:
            arguments = {}
        if type(tool) is not str or not tool or not isinstance(arguments, dict):
            await self._refuse(agent_id, "refused: tools/call needs a tool name and an arguments object")
            return
        resource = f"{self.name}/{tool}"
        try:
            if tool not in self._shown:
                self._shown.update(await self.live_tools())
        except LookupError as e:
            await self._refuse(agent_id, f"refused: cannot read the upstream's live tool definitions: {e}")
            return
        shown = self._shown.get(tool)
        if shown is None:
            await self._refuse(agent_id, f"refused: the upstream server has no tool {tool!r}")
            return
        # Rule 2: the upstream is listed again while the governor authorizes and starts
        # (one wait instead of two, ADR 0019 as amended), from when the request is on
        # its way (the upstream's work then does not delay it); nothing is forwarded
        # before the live definition is found to be the warrant's.
        relisted, sent = _Relist(), anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._relist_once_sent, relisted, sent)
            try:
                running = await anyio.to_thread.run_sync(  # one request authorizes and starts (ADR 0019)
                    functools.partial(
                        self.governance.authorize_start,
                        resource,
                        arguments,
                        shown,
                        go=lambda: not self._held.get(agent_id),
                        on_sent=functools.partial(self._from_worker, sent.set),
                    )
                )
            finally:
                sent.set()  # answered (or refused before it was sent): the re-list waits no more
        if isinstance(running, Refusal):
            if running.reason:  # none: cancelled by the agent before it started (rule 1)
                await self._refuse(agent_id, running.reason)
            return
        if time.monotonic() - relisted.at > _RELIST_FRESH_S:  # an approval was awaited meanwhile
            await self._relist(relisted)
        if why := unforwardable(relisted.live, tool, resource, shown):
            self._finishing += 1  # started, never forwarded: finished as such
            self._spawn(self._finish, running, not_forwarded_body(why))
            await self._refuse(agent_id, why)
            return
        if not self._held.get(agent_id):
            await self._forward_call(message, running)
            return
        self._finishing += 1  # cancelled while it was being started: never forwarded
        self._spawn(self._finish, running, _ended(f"{_CANCELLED} before it was forwarded", running))

    async def _forward_call(self, message: dict[str, Any], running: Running) -> None:
        agent_id = message["id"]
        self._held.pop(agent_id, None)  # from here a cancellation names its upstream id
        self._follow(running.log_index)
        up = next(self._ids)
        call = _Call(agent_id, running)
        self._calls[up] = call
        self._up[up] = (agent_id, "tools/call")
        self._finishing += 1
        try:
            try:
                await self.upstream.send({**message, "id": up})
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as e:
                call.end(f"refused: the upstream server cannot be written to ({e})")
            await call.done.wait()
        except anyio.get_cancelled_exc_class():  # the session ends: record how the call did
            with anyio.CancelScope(shield=True):
                await self._finish(running, ended_body("the session ended during the call", running))
            raise
        finally:
            self._calls.pop(up, None)
            self._up.pop(up, None)
        if call.answer is not None:
            answer, result = {**call.answer, "id": agent_id}, call.answer.get("result")
            if isinstance(result, dict):  # rule 5: the id of the receipt, in the result's _meta
                meta: dict[str, Any] = m if isinstance(m := result.get("_meta"), dict) else {}
                answer["result"] = {**result, "_meta": {**meta, "proctor/execution": running.execution}}
            await self.agent.send(answer)
            body = finish_body(call.answer, running)
        else:  # rule 4 (or rule 3: a malformed answer; or the agent cancelled)
            if not call.ended.startswith(_CANCELLED):
                cancel = {"requestId": up, "reason": f"proctor: {call.ended}"}
                await quietly(self.upstream.send, notification("notifications/cancelled", cancel))
                await quietly(self.agent.send, error_result(agent_id, call.ended))
            body = _ended(call.ended, running)
        self._spawn(self._finish, running, body)

    async def _finish(self, running: Running, body: dict[str, Any]) -> None:
        try:
            with anyio.CancelScope(shield=True):
                problem = await anyio.to_thread.run_sync(self.governance.finish, running, body)
            if problem:
                self.note(problem)
        finally:
            self._finishing -= 1

    async def _refuse(self, agent_id: Any, reason: str) -> None:
        self.note(reason)
        if not self._held.get(agent_id):  # a cancelled request gets no answer
            await self.agent.send(error_result(agent_id, reason))

    # -- rule 4: leases and the event stream -------------------------------------------

    async def _leases(self) -> None:
        while True:
            await anyio.sleep(_TICK_S)
            now = time.monotonic()
            for call in list(self._calls.values()):
                running = call.running
                if running is None or call.done.is_set():
                    continue
                if now >= running.deadline:
                    call.end("lease-lost: no successful lease renewal before the lease ended")
                elif now >= running.next_renewal:
                    running.next_renewal = now + running.ttl  # one renewal in flight at a time
                    self._spawn(self._renew, call, running)

    async def _renew(self, call: _Call, running: Running) -> None:
        why = await anyio.to_thread.run_sync(self.governance.renew, running)
        if why:
            call.end(why)

    def _follow(self, since: int) -> None:
        if self._following:
            return
        self._following = True
        thread = threading.Thread(
            target=self.governance.follow, args=(since, self._pushed, self._stop), daemon=True
        )
        thread.start()

    def _pushed(self, message: dict[str, Any]) -> None:
        """On the follower thread: a trust change, handed to the event loop."""
        try:
            anyio.from_thread.run_sync(self._on_trust_change, message, token=self._token)
        except RuntimeError:  # the loop has ended
            self._stop.set()

    def _on_trust_change(self, message: dict[str, Any]) -> None:
        kind, target = message.get("kind"), message.get("target")
        for call in list(self._calls.values()):
            running = call.running
            if running is None:
                continue
            if message.get("type") == "revocation" and (
                (kind == "execution" and target == running.execution)
                or (kind == "warrant" and target == running.grant.claims.warrant_id)
                or (kind == "principal" and target == self.governance.principal)
            ):
                call.end(f"revoked: {kind} {target} was revoked")
            else:  # a policy change may end it too: renew now
                running.next_renewal = 0.0


def _ended(why: str, running: Running) -> dict[str, Any]:
    """An unanswered call's finish (rule 4); the agent's cancellation: ``failed``, ``cancelled``."""
    if why.startswith(_CANCELLED):
        return {"outcome": "failed", "reason": "cancelled", "detail": why[:900]}
    return ended_body(why, running)
