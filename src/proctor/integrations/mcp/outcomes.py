"""What a governed ``tools/call`` is finished with, and the definitions it is checked
against: the bodies of ``POST /v1/executions/{id}/finish`` for each way a call ends
(answered, unanswered, never forwarded), and the digests of the upstream's tool
definitions (:func:`definition_digests`) the gateway compares with the warrant's
before each call is forwarded (rule 3 of :mod:`proctor.integrations.mcp.governance`)."""

from __future__ import annotations

import hashlib
import time
from typing import Any, Protocol

import orjson

from proctor.canonical import canonicalize
from proctor.verification import tool_definition_digest

__all__ = [
    "StartedCall",
    "definition_digests",
    "ended_body",
    "finish_body",
    "not_forwarded_body",
    "unforwardable",
]


class StartedCall(Protocol):
    """What these bodies read of a started call
    (:class:`proctor.integrations.mcp.governance.Running` is one)."""

    @property
    def began(self) -> float:
        """``time.monotonic()`` when the call was started."""
        ...


def not_forwarded_body(why: str) -> dict[str, Any]:
    """The finish of a started call that was never forwarded (its tool definition
    changed, say): ``failed``, reason ``not-forwarded``."""
    return {"outcome": "failed", "reason": "not-forwarded", "detail": why[:900]}


def unforwardable(live: dict[str, str] | LookupError, tool: str, resource: str, digest: str) -> str:
    """Why a started call must not be forwarded after the re-list (the live definitions,
    or why they could not be read), or ``""``: its definition is the warrant's."""
    if isinstance(live, LookupError):
        return f"refused: cannot read the upstream's live tool definitions: {live}"
    if live.get(tool) != digest:
        return (
            f"refused: the definition of {resource} changed after it was listed "
            f"(authorized {digest}, now {live.get(tool, 'absent')})"
        )
    return ""


_DIGEST_CACHE: dict[bytes, str] = {}
_DIGEST_CACHE_MAX = 4096


def definition_digests(tools: list[Any]) -> dict[str, str]:
    """Each tool's definition digest; a definition seen before (byte for byte, keys
    sorted) is not canonicalized again: the re-list before each call stays cheap."""
    found: dict[str, str] = {}
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            continue
        try:
            key = orjson.dumps(tool, option=orjson.OPT_SORT_KEYS)
            digest = _DIGEST_CACHE.get(key)
            if digest is None:
                digest = tool_definition_digest(tool)
                if len(_DIGEST_CACHE) >= _DIGEST_CACHE_MAX:
                    _DIGEST_CACHE.clear()
                _DIGEST_CACHE[key] = digest
            found[tool["name"]] = digest
        except Exception:  # noqa: BLE001, S112 - a tool that cannot be measured cannot be called
            continue
    return found


def finish_body(answer: dict[str, Any], running: StartedCall) -> dict[str, Any]:
    """The finish of a call the upstream answered: ``completed``, or ``failed`` for an
    ``isError`` result or an error; ``stdout_digest`` the RFC 8785 digest of the result."""
    result = answer.get("result")
    try:
        digest = (
            "sha256:" + hashlib.sha256(canonicalize(result if result is not None else answer)).hexdigest()
        )
    except (TypeError, ValueError):
        digest = ""
    duration_ms = int((time.monotonic() - running.began) * 1000)
    if isinstance(result, dict) and result.get("isError") is not True:
        return {"outcome": "completed", "exit_status": 0, "stdout_digest": digest, "duration_ms": duration_ms}
    why = "the tool answered isError" if isinstance(result, dict) else "the upstream answered an error"
    return {"outcome": "failed", "reason": "tool-error", "detail": why, "stdout_digest": digest}


def ended_body(why: str, running: StartedCall) -> dict[str, Any]:
    """The finish of a call that ended unanswered: ``terminated`` with the governance
    reason (revoked, lease-lost, policy, expired), else ``failed``."""
    reason = why.split(":", 1)[0]
    if reason in ("revoked", "lease-lost", "policy", "expired"):
        return {"outcome": "terminated", "reason": reason, "detail": why[:900]}
    return {"outcome": "failed", "reason": "not-answered", "detail": why[:900]}
