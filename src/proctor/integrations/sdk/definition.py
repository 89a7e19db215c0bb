"""What a governed Python function *is*, as the digest its warrant binds.

A tool call executes no file, so what the warrant binds as ``executable_digest`` is the
digest of the tool's definition (:func:`proctor.verification.measurement.tool_definition_digest`,
the same digest the MCP gateway computes for an MCP tool). For a Python function the
definition is an MCP-shaped object, so one policy vocabulary covers both::

    {"name": TOOL,                         # the governed tool name (the resource)
     "description": DOCSTRING or "",
     "inputSchema": {"type": "object",
                     "properties": {PARAM: {}, ...},   # every parameter, by name
                     "required": [PARAM, ...]},        # those without a default
     "python": {"qualname": "module.qualname",
                "code": "sha256:<hex>"}}               # of the function's source text

``code`` is the SHA-256 of the function's source (``inspect.getsource``), or, when
there is none (a function built at run time), of its marshalled code object together
with its constants: a change to the body, the signature, the docstring or the tool name
changes the digest, so a warrant issued for one version of a function cannot start
another (measurement steps 5-8). What it does not cover: functions the body calls, and
globals it reads (documented in docs/sdk.md).
"""

from __future__ import annotations

import hashlib
import inspect
import marshal
from collections.abc import Callable
from typing import Any

from proctor.errors import CanonicalizationError, DeniedError, IntegrityError
from proctor.integrations.sdk.protocol import receiver
from proctor.verification.measurement import tool_definition_digest

__all__ = ["function_definition", "definition_digest", "named_definition"]


def _code_digest(fn: Callable[..., Any]) -> str:
    try:
        text = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is None:
            raise DeniedError(
                f"cannot measure {fn!r}: expected a Python function with source or a code object",
                reason="unmeasurable",
            ) from None
        text = marshal.dumps(code)
    return "sha256:" + hashlib.sha256(text).hexdigest()


def function_definition(fn: Callable[..., Any], tool: str) -> dict[str, Any]:
    """The definition of ``fn`` governed as ``tool`` (module docstring).

    Args:
        fn: the function (a coroutine function too); wrappers made with
            ``functools.wraps`` are unwrapped to the function they wrap.
        tool: the tool name it is governed as.

    Returns:
        The definition object, JSON.

    Raises:
        DeniedError: ``fn`` has neither source nor a code object (nothing to measure).
    """
    target = inspect.unwrap(fn)
    signature = inspect.signature(target)
    params = [p for p in signature.parameters.values() if p.name != receiver(target)]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {p.name: {} for p in params},
        "required": [
            p.name
            for p in params
            if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ],
    }
    return {
        "name": tool,
        "description": inspect.getdoc(target) or "",
        "inputSchema": schema,
        "python": {
            "qualname": f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}",
            "code": _code_digest(target),
        },
    }


def named_definition(tool: str) -> dict[str, Any]:
    """The definition of a ``with governed(...)`` block given none: the tool's name alone.

    It binds nothing of the code the block runs; pass ``definition=`` to bind more.
    """
    return {"name": tool, "description": "", "inputSchema": {"type": "object"}}


def definition_digest(definition: dict[str, Any]) -> str:
    """``sha256:<hex>`` of a definition (:func:`tool_definition_digest`).

    Raises:
        DeniedError: the definition is not an object with a name and an input schema,
            or not canonical JSON.
    """
    try:
        return tool_definition_digest(definition)
    except (IntegrityError, CanonicalizationError) as e:
        raise DeniedError(f"cannot measure the tool definition: {e}", reason="unmeasurable") from e
