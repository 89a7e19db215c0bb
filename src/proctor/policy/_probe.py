"""Step 6 of compiling a bundle: proctor's own requests pass the schema's request validation.

The context shape is fixed; only which argv positions are present and the sizes of the
sets vary. So requests built exactly as :mod:`proctor.policy.context` builds them, with
the fewest and the most context fields, are validated once per action at compile time,
and the engine need not ask Cedar to validate each request it decides.
"""

from __future__ import annotations

import cedarpy
import orjson

from proctor.errors import PolicyValidationError
from proctor.policy.context import build_context, principal_entity_json
from proctor.policy.request import PolicyRequest
from proctor.policy.schema import (
    ACTION_TYPE,
    ACTIONS,
    ARG_POSITIONS,
    COUNTERS,
    PRINCIPAL_TYPE,
    RESOURCE_TYPES,
    SchemaInfo,
)

__all__ = ["probe_requests"]

_ACTION_UIDS = {a: {"type": ACTION_TYPE, "id": a} for a in ACTIONS}


def probe_requests(schema: cedarpy.Schema, info: SchemaInfo, *, typed_tools: bool) -> None:
    """Validate the fewest- and most-fields requests of every action against ``schema``.

    Raises:
        PolicyValidationError: the schema rejects proctor's principal entity or requests.
    """
    # 6. The context shape is fixed; only which args positions are present and the
    # sizes of the sets vary. Probe both extremes for every action.
    try:
        attrs = dict.fromkeys(info.principal_attrs, "")
        entities = cedarpy.Entities.from_json_str(principal_entity_json("probe", attrs), schema)
    except ValueError as e:
        raise PolicyValidationError(
            "the bundle schema rejects proctor's principal entity", diagnostics=(f"schema: {e}",)
        ) from e
    empty = cedarpy.PolicySet.from_str("")
    for action in ACTIONS:
        is_exec = action == "exec"
        fewest = PolicyRequest("probe", {}, action, "/probe" if is_exec else "probe/tool", ("p",) * is_exec)
        most = PolicyRequest(
            "probe",
            {},
            action,
            "/probe" if is_exec else "probe/tool",
            argv=("p",) * (ARG_POSITIONS + 1) if is_exec else (),
            arguments=None if is_exec else {"k": "v", "n": 1, "b": True},
            counters=dict.fromkeys(COUNTERS, 1),
        )
        for probe in (fewest, most):
            context = build_context(probe, 0)
            if typed_tools and action == "mcp.call":
                context["tool"] = {}  # all optional; ToolCatalog.tool_context fills one
            request = {
                "principal": {"type": PRINCIPAL_TYPE, "id": "probe"},
                "action": _ACTION_UIDS[action],
                "resource": {"type": RESOURCE_TYPES[action], "id": probe.resource},
                "context": orjson.dumps(context).decode(),
            }
            errors = cedarpy.is_authorized(request, empty, entities, schema).diagnostics.errors
            if errors:
                raise PolicyValidationError(
                    f"the bundle schema does not accept proctor's {action} requests "
                    "(keep the Proctor context record as in DEFAULT_SCHEMA)",
                    diagnostics=tuple(f"schema: {e}" for e in errors),
                )
