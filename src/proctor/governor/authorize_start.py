"""``POST /v1/authorize/start``: authorize a call and start its execution in one signed
request (ADR 0019), for an enforcer that would send ``POST /v1/authorize`` and then
``POST /v1/executions`` at once (the MCP gateway, per ``tools/call``).

It is exactly those two requests, run by the governor one after the other for one
signature, so that a tool call pays one round trip to the governor instead of two.
The rules, numbered as the code cites them:

1. The request is authenticated once, counts once against the principal's request rate
   and against its authorization rate, and its nonce is spent by the authorization's
   commit (as ``POST /v1/authorize``'s is).
2. The authorization is ``POST /v1/authorize``'s (:meth:`Governor.authorize_async`):
   the same decision, obligations, warrant and commit. A deny, or an allow that waits
   for an approval, is answered as it is, with nothing started.
3. An allow's warrant is then presented to :meth:`Executions.start` with the
   measurement of the body's ``start`` part and the authorized request's own action,
   resource, arguments and zone: the warrant is verified against what was measured,
   used once, and the start is recorded in its own commit, as a separate
   ``POST /v1/executions`` would be. Its answer is signed by the warrant key for this
   request's nonce (ADR 0017): the enforcer checks it as a start answer.
4. A start that is refused (replay, quota, a measurement the warrant does not cover)
   refuses the whole request with the start's error; the warrant it minted is never
   handed out, so it cannot be used (and it is recorded, like any warrant).
5. One commit (ADR 0019 decision 5). When the warrant was minted on the governor's own
   thread (the log is not busy; not a delegation or an approval; not shared mode), its
   start is not kept waiting for the authorization's commit:
   :meth:`Executions.start_chained` runs the same verification and checks at once and
   queues ``execution.started`` right behind ``warrant.issued``, what rule 3 reads back
   from the store (the issue's index and leaf hash, the decision's request and
   arguments) taken from the authorization in hand. The log holds the authorization's
   batch open for it (``Log.submit(followed=True)``, at most 10 ms): one commit. An
   authorization that fails fails its start (queued after a failed append; or refused
   by the writer's check of the start's parent link, which names the
   ``warrant.issued`` leaf it must follow), and the start's claim and quota slot are
   given back. A start recorded but not answered with its warrant (the authorization's
   answer is not an allow, the start's answer fails, the request is cancelled) is
   ended at once, ``failed`` with reason ``not-answered``. While a trust change holds
   the ordering lock (until its commit), nothing is chained: the event loop never
   waits for it. Otherwise rule 3 runs after the commit, as before.

The finish that follows each call, ``POST /v1/executions/{id}/finish``, is served here
on the fast path too (:func:`finish_endpoint`): the same authentication, body model and
:meth:`Executions.finish`, without FastAPI's routing and dependency injection, whose
cost per request was as large as the finish's own.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from fastapi.concurrency import run_in_threadpool

from proctor.errors import BodyTooLargeError, CanonicalizationError, RequestShapeError
from proctor.governor.executions import ChainedStart, Issue, with_arguments
from proctor.governor.issuance import Authorization
from proctor.governor.limits import MAX_BODY, parse_json
from proctor.governor.model import AuthorizeRequest, AuthorizeStartBody, FinishExecutionBody, parse_body
from proctor.lineage.log import Notify
from proctor.lineage.merkle import leaf_hash
from proctor.verification.lease_answer import request_nonce


class HotPathApp(Protocol):
    """What these endpoints use of :class:`proctor.governor.app.GovernorApp` (named
    here, not imported: the app imports this module)."""

    governor: Any
    metrics: Any
    authorizations: Any

    async def caller(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        *,
        persist: bool = True,
        rates: tuple[Any, ...] = (),
    ) -> str:
        """The principal that signed the request, within its request rates."""
        ...


__all__ = ["FINISH", "PATH", "HotPathApp", "authorize_start_endpoint", "finish_endpoint"]

PATH = "/v1/authorize/start"
FINISH = re.compile(r"/v1/executions/([A-Za-z0-9_-]{1,64})/finish")
"""The finish paths served on the fast path (other ids go through FastAPI, as before)."""


async def authorize_start_endpoint(
    app: HotPathApp, target: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes]:
    """``POST /v1/authorize/start`` (rules 1-4): (status, JSON body).

    The answer: ``{"authorization": <the POST /v1/authorize answer>}``, with
    ``"execution": <the POST /v1/executions answer>`` when the call was allowed and
    started.

    Raises:
        BodyTooLargeError, AuthenticationError, QuotaError, RequestShapeError: as
            ``POST /v1/authorize`` (nothing decided).
        WarrantError, ExecutionConflictError, PrincipalError, QuotaError, StoreError:
            the start was refused (rule 4).
    """
    governor, metrics = app.governor, app.metrics
    if len(body) > MAX_BODY:
        raise BodyTooLargeError(f"expected a body of at most {MAX_BODY} bytes, found {len(body)}")
    name = await app.caller("POST", target, headers, body, persist=False, rates=(app.authorizations,))
    try:  # rule 1: a refused body's nonce stays spent
        doc = parse_json(body) if body else None
        asked = parse_body(AuthorizeStartBody, doc)
        request = AuthorizeRequest.from_body(asked.authorize)
    except (CanonicalizationError, RequestShapeError):
        governor.persist_nonces()
        raise
    nonce = request_nonce(headers.get("signature-input", ""))
    started = time.perf_counter()
    chained: Any = None
    if not governor.shared and not (request.parent_warrant or request.approval):  # rule 5
        chain = functools.partial(_chain, governor, name, request, asked.start, nonce)
        result, chained = await _authorize_chained(governor.authorizer, name, request, chain)
    else:
        result = await governor.authorize_async(name, request)  # rule 2
    metrics.latency.observe(time.perf_counter() - started)
    (metrics.allowed if result.allowed else metrics.denied).inc()
    answer: dict[str, Any] = {"authorization": result.to_json()}
    if not result.allowed or not result.warrant:
        return 200, orjson.dumps(answer)
    if isinstance(chained, Exception):
        raise chained  # rule 4: the start was refused (its error), the warrant not handed out
    if chained is None:  # rule 3 after the authorization's commit
        start = _start_body(governor, name, request, asked.start, result.warrant)
        chained = await run_in_threadpool(governor.executions.start, name, start, nonce=nonce)
    answer["execution"] = chained
    return 200, orjson.dumps(answer)


async def _authorize_chained(
    authorizer: Any, name: str, request: AuthorizeRequest, chain: Callable[[Any, Notify], ChainedStart | None]
) -> tuple[Any, Any]:
    """Rule 5: authorize, and when the warrant was minted on this thread (its
    ``warrant.issued`` queued behind the decision already, the authorization not yet
    resolved) ``chain(op, notify)`` at once, before the authorization is durable.
    Returns the authorization's result and: ``None`` (not chained), what ``chain``
    raised, or what the chained start's ``settle()`` returned or raised once both are
    resolved. Both are settled to the end even if this request is cancelled meanwhile,
    and a start that was recorded but is not answered with its warrant (a deny, an
    error, a cancelled request) is ended at once: nothing it reserved stays held."""
    loop = asyncio.get_running_loop()
    done, chained_done = loop.create_future(), loop.create_future()
    waker = authorizer.waker(loop)
    op = authorizer.queue(name, request, waker.notifier(done))
    if not isinstance(op, Authorization):
        return op, None
    chained: ChainedStart | Exception | None = None
    minted_here = op.token and op.claims is not None and op.deferred is None and op.parent is None
    try:
        if minted_here and len(op.pending.events) == 2 and not op.pending.done():
            try:
                chained = chain(op, waker.notifier(chained_done))
            except Exception as e:  # noqa: BLE001 - rule 4: answered with it, after the commit
                chained = e
    finally:
        op.pending.followed()  # the log held the authorization's batch open for the start

    async def settled() -> tuple[Any, Any]:
        await done
        result = None
        try:
            result = authorizer.settle(op)
        finally:  # whatever the authorization's outcome, the chained start is settled
            outcome: Any = chained
            if isinstance(chained, ChainedStart):
                await chained_done
                try:
                    outcome = chained.settle()
                except Exception as e:  # noqa: BLE001 - rule 4: answered with it
                    outcome = e
                if not (
                    result is not None and result.allowed and result.warrant and isinstance(outcome, dict)
                ):
                    why = "the authorization and start were not answered with the warrant"
                    await loop.run_in_executor(None, chained.end_unanswered, why)
        return result, outcome

    task = asyncio.ensure_future(settled())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if isinstance(chained, ChainedStart):
            start = chained

            def unanswered(_: Any) -> None:
                why = "the request was cancelled before it was answered"
                loop.run_in_executor(None, start.end_unanswered, why)

            task.add_done_callback(unanswered)
        raise


def _start_body(
    governor: Any, name: str, request: AuthorizeRequest, plan: Any, warrant: str
) -> dict[str, Any]:
    """What ``POST /v1/executions`` would have carried for this authorization (rule 3)."""
    record = governor.trust.principal(name)
    return {
        "warrant": warrant,
        "action": request.action,
        "resource": request.resource,
        "argv": list(request.argv),
        "arguments": request.arguments,
        # the zone the decision was made for (Authorizer._decide): the warrant's
        "zone": request.zone or (record.zone if record is not None else ""),
        "measurement": plan.measurement,
        "containment": plan.containment if plan.containment is not None else [],
        "enforcer": plan.enforcer if plan.enforcer is not None else "",
    }


def _chain(  # noqa: PLR0917 - bound by functools.partial, then called by the authorizer
    governor: Any, name: str, request: AuthorizeRequest, plan: Any, nonce: str, op: Any, notify: Notify
) -> ChainedStart | None:
    """Rule 5: the start of the warrant minted just now (``op``: the authorization, its
    decision and ``warrant.issued`` queued, not yet durable), queued behind them;
    ``None``: not chained (rule 3 after the commit)."""
    decision, issued = op.pending.events
    index = op.pending.first
    if issued.type != "warrant.issued" or issued.data.get("warrant") != op.claims.warrant_id:
        return None
    logged = orjson.loads(decision.raw)
    issue = Issue(
        index + 1, leaf_hash(issued.raw), with_arguments(index, logged, op.opening), logged["bundle"]
    )
    start = _start_body(governor, name, request, plan, op.token)
    chained: ChainedStart | None = governor.executions.start_chained(
        name, start, issue, notify=notify, nonce=nonce
    )
    return chained


async def finish_endpoint(
    app: HotPathApp, execution_id: str, target: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes]:
    """``POST /v1/executions/{id}/finish`` on the fast path: authenticate (the nonce
    queued for the next commit, as through FastAPI), validate the body against its
    model, record the end in a worker thread (it waits for its commit).

    Raises:
        AuthenticationError, QuotaError, RequestShapeError, PrincipalError,
            ExecutionConflictError: as through FastAPI.
    """
    name = await app.caller("POST", target, headers, body)
    parsed = parse_json(body) if body else None
    parse_body(FinishExecutionBody, parsed)
    answer = await run_in_threadpool(app.governor.executions.finish, name, execution_id, parsed)
    return 200, orjson.dumps(answer)
