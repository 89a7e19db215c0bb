"""Attenuation holds for the whole run: every renewal re-checks the warrant the enforcer
presented, and a delegated warrant never outlives or outgrows its parent."""

from __future__ import annotations

from pathlib import Path

import pytest

from gov_exec import allow, clocked, start_body
from gov_support import EXE
from proctor.authorization.warrants import attenuate_warrant, inspect_warrant, verify_warrant
from proctor.errors import WarrantError
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor


def test_an_attenuated_expiry_ends_the_execution_at_renewal(gov_data: Path, governor: Governor) -> None:
    gov, clock = clocked(gov_data, governor)
    with gov:
        token = allow(gov, "short")
        short = attenuate_warrant(token, root_public_key=gov.warrant_public_key, expires=int(clock.now) + 3)
        ex = gov.executions.start("alice", start_body(short, "short"))["execution"]
        assert gov.executions.renew("alice", ex, {"integrity": "ok"})["ok"] is True
        clock.now += 2
        assert gov.executions.renew("alice", ex, {"integrity": "ok"})["ok"] is True
        clock.now += 2
        answer = gov.executions.renew("alice", ex, {"integrity": "ok"})
        assert answer["terminate"] == "expired", answer


def test_an_attenuated_max_duration_ends_the_execution_at_renewal(gov_data: Path, governor: Governor) -> None:
    gov, clock = clocked(gov_data, governor)
    with gov:
        token = allow(gov, "brief")
        claims = verify_warrant(
            token, root_public_key=gov.warrant_public_key, now=int(clock.now), request=None
        )
        # max_duration_s counts from the warrant's not_before.
        brief = attenuate_warrant(
            token,
            root_public_key=gov.warrant_public_key,
            max_duration_s=int(clock.now) - claims.not_before + 2,
        )
        ex = gov.executions.start("alice", start_body(brief, "brief"))["execution"]
        assert gov.executions.renew("alice", ex, {"integrity": "ok"})["ok"] is True
        clock.now += 3
        assert gov.executions.renew("alice", ex, {"integrity": "ok"})["terminate"] == "expired"


def test_revoking_the_attenuated_copy_stops_the_execution(governor: Governor) -> None:
    token = allow(governor, "copy")
    copy = attenuate_warrant(token, root_public_key=governor.warrant_public_key, zone="zone-a")
    body = {**start_body(copy, "copy"), "zone": "zone-a"}
    ex = governor.executions.start("alice", body)["execution"]
    assert governor.executions.renew("alice", ex, {"integrity": "ok"})["ok"] is True
    # The copy's own block, not the warrant it was made from.
    own_block = inspect_warrant(copy, root_public_key=governor.warrant_public_key)["revocation_ids"][-1]
    governor.revoke("warrant", own_block, reason="the sub-agent's copy leaked", by="admin")
    assert governor.executions.renew("alice", ex, {"integrity": "ok"})["terminate"] == "revoked"


def test_a_child_never_outlives_its_attenuated_parent(gov_data: Path, governor: Governor) -> None:
    gov, clock = clocked(gov_data, governor)
    with gov:
        parent = allow(gov, "child")
        short = attenuate_warrant(parent, root_public_key=gov.warrant_public_key, expires=int(clock.now) + 3)
        child = gov.authorize(
            "alice",
            AuthorizeRequest(
                action="exec",
                resource="/bin/echo",
                argv=("echo", "child"),
                executable_digest=EXE,
                parent_warrant=short,
            ),
        )
        assert child.warrant is not None, child.decision.reason
        assert child.expires is not None
        assert child.expires <= int(clock.now) + 3
        clock.now += 4
        # The parent has expired, and so has the child: it cannot start.
        with pytest.raises(WarrantError) as info:
            gov.executions.start("alice", start_body(child.warrant, "child"))
        assert info.value.reason == "expired"
