"""Governance responses to an execution's own violation (layer 4, "coordinate the
response"), as the policy's ``@on_violation`` annotation lists them.

``terminate`` has happened already (the enforcer killed the tree); ``suspend``
suspends the principal (its own ``principal.changed`` event); ``webhook:URL`` POSTs the
facts as JSON. The terminal event records which responses the policy asked for; they
run only after that event committed, never before it and never inside it, so a slow or
hostile webhook can neither delay the record nor hold the log. Webhooks run on a
thread of their own; their outcome goes to the governor's log and metrics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from proctor.errors import ProctorError

__all__ = ["VIOLATIONS", "planned_responses", "run_responses"]

VIOLATIONS = ("integrity", "obligation")
"""Termination reasons that count as the execution's own violation (and get responses)."""

_log = logging.getLogger("proctor.governor")
_MAX_RESPONSES = 8


def planned_responses(obligations: Mapping[str, Any]) -> list[str]:
    """The responses ``@on_violation`` asks for (``terminate`` when it says nothing).

    Args:
        obligations: the decision's obligations.

    Returns:
        The response names, in order, at most eight.
    """
    wanted = str(obligations.get("on_violation", "terminate"))
    return [r.strip() for r in wanted.split(",") if r.strip()][:_MAX_RESPONSES]


def run_responses(
    responses: list[str],
    facts: dict[str, Any],
    *,
    suspend: Callable[[str], object],
) -> None:
    """Carry out ``responses`` for a violation already recorded.

    Args:
        responses: from :func:`planned_responses`.
        facts: ``{"execution", "principal", "warrant", "reason", "detail"}``.
        suspend: suspends a principal (records its own event).
    """
    for response in responses:
        if response == "suspend":
            try:
                suspend(str(facts["principal"]))
            except ProctorError as e:
                _log.error("governance response suspend for %s failed: %s", facts["execution"], e)
        elif response.startswith("webhook:"):
            url = response.removeprefix("webhook:")
            threading.Thread(target=_webhook, args=(url, dict(facts)), daemon=True).start()


def _webhook(url: str, facts: dict[str, Any]) -> None:
    try:
        answer = httpx.post(url, json=facts, timeout=2.0)
        if not answer.is_success:
            status = answer.status_code
            _log.error("governance webhook %s for %s answered %s", url, facts["execution"], status)
    except httpx.HTTPError as e:
        _log.error("governance webhook %s for %s failed: %s", url, facts["execution"], e)
