"""A start and a revocation that race are ordered: the start is recorded before the
revocation (which then covers it as running), or it sees the revocation and is refused.
Never is an execution recorded as started after its principal or warrant was revoked or
suspended (``tests/log_invariants.py``, rule ``start-not-revoked``; found by the soak).

The race is made certain: the revocation runs at the moment a start has passed its checks
of the warrant and the principal and before it takes its turn to record (the registry's
claim of the warrant), in one governor and in a shared one (``proctor serve --shared``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_exec import echo_request, start_body
from gov_support import POLICIES, signed_bundle
from log_invariants import check_log
from proctor.authorization.keys import PrincipalKey
from proctor.errors import PrincipalError, WarrantError
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor


@pytest.fixture(params=[False, True], ids=["exclusive", "shared"])
def gov(request: pytest.FixtureRequest, gov_data: Path) -> Iterator[Governor]:
    with Governor(gov_data, shared=request.param) as governor:
        alice = PrincipalKey.generate("alice")
        governor.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        governor.push_policy(signed_bundle(gov_data, POLICIES / "basic"), by="admin")
        yield governor


def _racing(
    gov: Governor, monkeypatch: pytest.MonkeyPatch, warrant_id: str, change: Callable[[], Any]
) -> None:
    """Make ``change`` happen when the start of ``warrant_id`` claims it."""
    registry = gov.executions.registry
    claim = registry.claim

    def claim_then_change(key: str) -> bool:
        claimed = claim(key)
        if key == warrant_id:
            change()
        return claimed

    monkeypatch.setattr(registry, "claim", claim_then_change)


def _allowed(gov: Governor) -> tuple[str, str]:
    """A warrant of alice's for ``echo race``: (token, id)."""
    result = gov.authorize("alice", AuthorizeRequest(**echo_request("race")))
    assert result.warrant is not None
    assert result.warrant_id is not None
    return result.warrant, result.warrant_id


CHANGES: dict[str, Callable[[Governor, str], Any]] = {
    "principal revoked": lambda gov, _w: gov.revoke("principal", "alice", reason="race", by="admin"),
    "warrant revoked": lambda gov, w: gov.revoke("warrant", w, reason="race", by="admin"),
    "principal suspended": lambda gov, _w: gov.set_principal_status("alice", "suspended", by="admin"),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_a_start_racing_a_revocation_is_refused_not_recorded_after_it(
    gov: Governor, gov_data: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    token, warrant_id = _allowed(gov)
    _racing(gov, monkeypatch, warrant_id, lambda: CHANGES[change](gov, warrant_id))
    with pytest.raises((PrincipalError, WarrantError)):
        gov.executions.start("alice", start_body(token, "race"))
    gov.close()
    report = check_log(gov_data)
    assert report.ok, report
    assert report.executions_started == 0
