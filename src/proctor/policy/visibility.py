"""Whether a request could ever be allowed, whatever its context: Cedar partial evaluation.

The MCP gateway hides from ``tools/list`` the tools a principal can never call
(ADR 0018). :func:`never_allowed` evaluates the policies with the principal, action
and resource known and the whole context (arguments, time, counters, definition
digest) *unknown*. Cedar's partial evaluator answers ``Deny`` only when the decision
is deny for every context: no permit can be satisfied, or a forbid is satisfied
whatever the context. Then the tool is hidden; on any other answer (``Allow``,
``NoDecision`` with residuals) it is shown, and each call is still decided in full.

Soundness: hiding is decided only on ``Deny``, which Cedar gives only when no
residual permit remains or a forbid holds without unknowns, so a tool some context
would allow is never hidden (up to the correctness of Cedar's experimental
partial evaluator, which proctor never uses for an allow). Showing is an
over-approximation: a tool shown may still be refused on every call. An error (an
id Cedar cannot parse, an evaluator failure) hides the tool: nothing is shown that
proctor could not judge. This module is pure.
"""

from __future__ import annotations

from collections.abc import Callable

import cedarpy

from proctor.policy.schema import ACTION_TYPE, PRINCIPAL_TYPE, RESOURCE_TYPES

__all__ = ["cedar_uid", "never_allowed"]

_ESCAPES = {"\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n", "'": "\\'", '"': '\\"', "\\": "\\\\"}


def cedar_uid(entity_type: str, entity_id: str) -> str:
    """A Cedar entity UID in the normalized text form partial evaluation requires.

    Escapes as Rust's ``escape_debug`` (Cedar's normal form): ``\\0 \\t \\r \\n \\' \\" \\\\``
    and ``\\u{…}`` for other non-printable characters.

    Args:
        entity_type: ``Proctor::Tool`` …
        entity_id: the id.

    Returns:
        ``Proctor::Tool::"fs/read"``.
    """
    out = []
    for ch in entity_id:
        escaped = _ESCAPES.get(ch)
        if escaped is None:
            escaped = ch if ch.isprintable() else f"\\u{{{ord(ch):x}}}"
        out.append(escaped)
    return f'{entity_type}::"{"".join(out)}"'


def never_allowed(
    policies: cedarpy.PolicySet,
    entities: cedarpy.Entities,
    principal: str,
    action: str,
    resource: str,
    *,
    forbids: Callable[[str], str | None] = lambda _: None,
) -> str | None:
    """Why a request is denied whatever its context, or ``None`` if some context might allow it.

    Args:
        policies: the policies that apply to ``action`` on ``resource``.
        entities: the principal's entities (as the engine builds them).
        principal: the principal's name.
        action: one of the proctor actions.
        resource: the resource id.
        forbids: a policy's name from its Cedar id if it is a forbid, else ``None``
            (for the reason).

    Returns:
        ``None`` (it may be allowed: show it) or the reason it never is.
    """
    request = {
        "principal": cedar_uid(PRINCIPAL_TYPE, principal),
        "action": cedar_uid(ACTION_TYPE, action),
        "resource": cedar_uid(RESOURCE_TYPES[action], resource),
        "context": None,
    }
    try:
        result = cedarpy.is_authorized_partial(request, policies, entities)
    except Exception as e:  # noqa: BLE001 -- fail closed: an evaluation that fails hides
        return f"the policies could not be evaluated for it ({type(e).__name__}: {e})"
    errors = list(result.diagnostics.errors)
    if result.decision == cedarpy.Decision.Deny:
        named = sorted(n for n in map(forbids, result.diagnostics.reasons) if n is not None)
        if named:
            which = f"polic{'y' if len(named) == 1 else 'ies'} {', '.join(named)}"
            return f"forbid {which} applies whatever the arguments"
        return "no permit policy can apply to it, whatever the arguments"
    if errors and not result.residuals and result.decision != cedarpy.Decision.Allow:
        return f"the policies could not be evaluated for it ({errors[0]})"
    return None
