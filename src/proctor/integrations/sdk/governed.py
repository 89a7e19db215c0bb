"""``@governed`` and ``with governed(...)``: a Python tool function runs only under a
warrant. The steps of a call are numbered in :mod:`~proctor.integrations.sdk.steps`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from proctor.errors import DeniedError
from proctor.integrations.sdk.aclient import AsyncClient
from proctor.integrations.sdk.client import Client
from proctor.integrations.sdk.definition import definition_digest, function_definition, named_definition
from proctor.integrations.sdk.protocol import bind_arguments, check_arguments
from proctor.integrations.sdk.results import Lease
from proctor.integrations.sdk.steps import (
    GovernedCall,
    LeaseKeeper,
    close_async,
    close_sync,
    keep_async,
    open_async,
    open_sync,
)

__all__ = ["Governed", "GovernedCall", "governed"]

P = ParamSpec("P")
R = TypeVar("R")


class Governed:
    """What :func:`governed` returns: a decorator for a tool function, and a context
    manager (``with`` for a :class:`Client`, ``async with`` for an :class:`AsyncClient`)
    for a block that is one tool call. Each use is a new governed call."""

    def __init__(
        self,
        client: Client | AsyncClient,
        *,
        tool: str,
        arguments: Mapping[str, Any] | None,
        definition: Mapping[str, Any] | None,
        parent_warrant: str,
        approval_timeout: float,
    ) -> None:
        if not isinstance(client, Client | AsyncClient):
            raise TypeError(
                f"client: expected a proctor.Client or AsyncClient, found {type(client).__name__}"
            )
        if type(tool) is not str or not tool:
            raise ValueError(f"tool: expected a tool name, found {tool!r}")
        self.client = client
        self.tool = tool
        self.arguments = dict(arguments) if arguments is not None else None
        self.definition = dict(definition) if definition is not None else None
        self.parent_warrant = parent_warrant
        self.approval_timeout = approval_timeout
        self._active: list[tuple[GovernedCall, LeaseKeeper | asyncio.Task[None] | None]] = []

    # -- decorator -----------------------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Govern every call of ``fn`` (a plain function with a :class:`Client`, a
        coroutine function with an :class:`AsyncClient`).

        The wrapper also has ``.run(*args, **kwargs)``, which returns ``(result,
        GovernedCall)`` (awaitable for a coroutine function), for the execution id.

        Raises:
            TypeError: the function and the client do not match.
        """
        definition = self.definition or function_definition(fn, self.tool)
        digest = definition_digest(definition)
        if inspect.iscoroutinefunction(fn):
            if not isinstance(self.client, AsyncClient):
                raise TypeError(f"{self.tool}: an async function is governed with a proctor.AsyncClient")
            return self._wrap_async(fn, digest)  # type: ignore[return-value]
        if not isinstance(self.client, Client):
            raise TypeError(f"{self.tool}: a plain function is governed with a proctor.Client")
        return self._wrap_sync(fn, digest)

    def _wrap_sync(self, fn: Callable[P, R], digest: str) -> Callable[P, R]:
        client = self.client
        if not isinstance(client, Client):  # checked by the caller; narrows the type
            raise TypeError("expected a proctor.Client")

        def run(*args: P.args, **kwargs: P.kwargs) -> tuple[R, GovernedCall]:
            call = GovernedCall(self.tool, bind_arguments(fn, args, kwargs), digest)
            open_sync(client, call, self.parent_warrant, self.approval_timeout)
            keeper = LeaseKeeper(client, _lease(call), call, lambda: None)
            keeper.start()
            try:
                value = fn(*args, **kwargs)
            except Exception as e:
                keeper.stop()
                close_sync(client, call, e)
                raise
            keeper.stop()
            call.result = value
            close_sync(client, call, None)
            return value, call

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return run(*args, **kwargs)[0]

        wrapper.run = run  # type: ignore[attr-defined]
        return wrapper

    def _wrap_async(
        self, fn: Callable[P, Coroutine[Any, Any, Any]], digest: str
    ) -> Callable[P, Awaitable[Any]]:
        client = self.client
        if not isinstance(client, AsyncClient):
            raise TypeError("expected a proctor.AsyncClient")

        async def run(*args: P.args, **kwargs: P.kwargs) -> tuple[Any, GovernedCall]:
            call = GovernedCall(self.tool, bind_arguments(fn, args, kwargs), digest)
            await open_async(client, call, self.parent_warrant, self.approval_timeout)
            task = asyncio.ensure_future(fn(*args, **kwargs))
            keeper = asyncio.create_task(keep_async(client, _lease(call), call, task))
            try:
                value = await task
            except BaseException as e:
                keeper.cancel()
                if call.terminated and isinstance(e, asyncio.CancelledError):
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        current.uncancel()
                    await close_async(client, call, None)  # raises TerminatedError
                await close_async(client, call, e)
                raise
            keeper.cancel()
            call.result = value
            await close_async(client, call, None)
            return value, call

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return (await run(*args, **kwargs))[0]

        wrapper.run = run  # type: ignore[attr-defined]
        return wrapper

    # -- context managers ------------------------------------------------------------

    def _new_call(self) -> GovernedCall:
        if self.arguments is None:
            raise TypeError(f"{self.tool}: with governed(...) needs arguments= (the call's exact arguments)")
        check_arguments(self.arguments)
        definition = self.definition or named_definition(self.tool)
        return GovernedCall(self.tool, dict(self.arguments), definition_digest(definition))

    def __enter__(self) -> GovernedCall:
        client = self.client
        if not isinstance(client, Client):
            raise TypeError(
                f"{self.tool}: `with governed(...)` needs a proctor.Client (async with: AsyncClient)"
            )
        call = self._new_call()
        open_sync(client, call, self.parent_warrant, self.approval_timeout)
        keeper = LeaseKeeper(client, _lease(call), call, lambda: None)
        keeper.start()
        self._active.append((call, keeper))
        return call

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        call, keeper = self._active.pop()
        if isinstance(keeper, LeaseKeeper):
            keeper.stop()
        if isinstance(self.client, Client):
            close_sync(self.client, call, error)

    async def __aenter__(self) -> GovernedCall:
        client = self.client
        if not isinstance(client, AsyncClient):
            raise TypeError(f"{self.tool}: `async with governed(...)` needs a proctor.AsyncClient")
        call = self._new_call()
        await open_async(client, call, self.parent_warrant, self.approval_timeout)
        current = asyncio.current_task()
        if current is None:
            raise RuntimeError("async with governed(...) runs inside a task")
        keeper = asyncio.create_task(keep_async(client, _lease(call), call, current))
        self._active.append((call, keeper))
        return call

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        call, keeper = self._active.pop()
        if isinstance(keeper, asyncio.Task):
            keeper.cancel()
        if not isinstance(self.client, AsyncClient):
            return
        if call.terminated and isinstance(error, asyncio.CancelledError):
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                current.uncancel()
            error = None
        await close_async(self.client, call, error)


def _lease(call: GovernedCall) -> Lease:
    if call.lease is None:  # _open_* set it or raised
        raise DeniedError(f"{call.tool}: no execution was started", reason="start", tool=call.tool)
    return call.lease


def governed(
    client: Client | AsyncClient,
    *,
    tool: str,
    arguments: Mapping[str, Any] | None = None,
    definition: Mapping[str, Any] | None = None,
    parent_warrant: str = "",
    approval_timeout: float = 60.0,
) -> Governed:
    """Govern a tool function, or a block that is one tool call (module docstring).

    As a decorator::

        @governed(client, tool="search")
        def search(query: str, limit: int = 10) -> list[str]: ...

    As a context manager (the block is the call; set ``call.result`` for its digest)::

        with governed(client, tool="send", arguments={"to": to}) as call:
            call.result = send(to)

    Args:
        client: a :class:`Client` (plain functions, ``with``) or an
            :class:`AsyncClient` (coroutine functions, ``async with``).
        tool: the tool's name: the resource policies name (``Proctor::Tool::"search"``).
        arguments: the block's exact arguments (context manager only; a decorated
            function's are its bound arguments).
        definition: the definition whose digest the warrant binds (default: the
            function's, :func:`~proctor.integrations.sdk.definition.function_definition`;
            for a block, the tool's name alone).
        parent_warrant: a delegated warrant to authorize under (a sub-agent's).
        approval_timeout: seconds to wait for an admin's approval when the decision
            requires one (0: do not wait); then the call is denied.

    Returns:
        The decorator / context manager.

    Raises:
        DeniedError: (when called) not authorized; the function or block did not run.
        TerminatedError: (when called) governance ended the call while it ran.
    """
    return Governed(
        client,
        tool=tool,
        arguments=arguments,
        definition=definition,
        parent_warrant=parent_warrant,
        approval_timeout=approval_timeout,
    )
