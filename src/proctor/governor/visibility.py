"""``POST /v1/authorize/visible``: which tools a principal could ever call (ADR 0018).

The MCP gateway asks, signed as the agent's principal, about the tools its upstream
lists; it shows in ``tools/list`` only those answered ``visible``. A tool is hidden
when the active policy denies it to this principal whatever the call's arguments and
context (:meth:`proctor.policy.engine.PolicyEngine.never_allowed`: Cedar partial
evaluation with the context unknown), or when it is not in the bundle's tool
catalogs. Everything is hidden when nothing could be allowed: no valid policy, the
principal not active, the governance state in doubt.

This is a dry decision: nothing is logged, no warrant is issued, no counter moves.
It tells a principal only about its own rights, over resources it names. Hiding is
a convenience for the agent, not the control: every call is still authorized in full.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from proctor.governor.trust import ReadOnlyTrust

__all__ = ["MAX_RESOURCES", "VisibleBody", "visible_tools"]

MAX_RESOURCES = 1000
"""The most resources one request may ask about."""


class VisibleBody(BaseModel):
    """``POST /v1/authorize/visible``: the tools to judge, as ``server/tool`` resources."""

    model_config = ConfigDict(extra="forbid")

    action: Annotated[
        Literal["mcp.call", "tool.call"], Field(description="the tool action the calls would be")
    ] = "mcp.call"
    resources: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=4096)]],
        Field(max_length=MAX_RESOURCES, description="server/tool resources, as the upstream lists them"),
    ]


def visible_tools(trust: ReadOnlyTrust, principal: str, body: VisibleBody) -> dict[str, Any]:
    """The answer to ``POST /v1/authorize/visible``.

    Args:
        trust: the governor's trust (principals, the active engine, the state's health).
        principal: the authenticated caller.
        body: the validated body.

    Returns:
        ``{"visible": [resource, …], "hidden": [{"resource", "reason"}, …], "bundle": digest}``,
        each resource asked once, in the order asked.
    """
    engine = trust.engine
    record = trust.principal(principal)
    resources = list(dict.fromkeys(body.resources))
    everything: str | None = None
    if trust.state_problem is not None:
        everything = "the governance state disagrees with the log; nothing is authorized until it is repaired"
    elif engine is None:
        everything = "no valid policy bundle is active"
    elif record is None or record.status != "active":
        everything = f"principal {principal!r} is not active"
    if everything is not None or engine is None or record is None:
        reason = everything or "nothing can be allowed"
        hidden = [{"resource": r, "reason": reason} for r in resources]
        return {"visible": [], "hidden": hidden, "bundle": engine.bundle_digest if engine else ""}
    attrs = dict(record.attrs)
    attrs.setdefault("role", "")
    attrs["zone"] = record.zone
    visible: list[str] = []
    hidden_list: list[dict[str, str]] = []
    for resource in resources:
        why = engine.never_allowed(principal, attrs, body.action, resource)
        if why is None:
            visible.append(resource)
        else:
            hidden_list.append({"resource": resource, "reason": why})
    return {"visible": visible, "hidden": hidden_list, "bundle": engine.bundle_digest}
