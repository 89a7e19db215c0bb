"""Call limits count a call in flight once (proctor.governor.call_limits): from its check
until the release of its hold, whether or not its rows are already committed."""

from __future__ import annotations

import pytest

from proctor.governor.call_limits import CallHold, CallLimits
from proctor.policy import Decision, PolicyRequest
from proctor.store import state_warrants
from proctor.store.state import StateStore

NOW = 1_000_000


def limited(obligations: dict[str, str]) -> Decision:
    return Decision(allow=True, policies=("p",), errors=(), obligations=obligations)


def request(path: str = "/a") -> PolicyRequest:
    return PolicyRequest(
        principal="alice",
        principal_attrs={"role": "", "zone": ""},
        action="mcp.call",
        resource="fs/read",
        arguments={"path": path},
    )


def commit(state: StateStore, hold: CallHold, warrant: str) -> None:
    """What the warrant's commit stores: the warrant's row and the call's row."""
    state.run(
        state_warrants.warrant_writer(
            warrant, principal="alice", parent="", decision_index=1, expires=NOW + 60, issued=NOW
        ),
        index=2,
    )
    state.run(CallLimits.counted(hold, NOW), 2, warrant)


@pytest.mark.parametrize("kind", ["rate", "budget"])
def test_a_committed_call_not_yet_released_is_counted_once(state: StateStore, kind: str) -> None:
    calls = CallLimits(state)
    decision = limited({kind: "2/3600s"})
    first = calls.check("alice", request(), "sha256:a", decision, NOW)
    assert isinstance(first, CallHold)
    commit(state, first, f"w-{kind}-1")  # committed; the hold is not released yet
    second = calls.check("alice", request(), "sha256:b", decision, NOW)
    assert isinstance(second, CallHold), f"{kind}: {second}"  # 1 counted, room for 1
    third = calls.check("alice", request(), "sha256:c", decision, NOW)
    assert isinstance(third, str)
    assert "has 2 calls" in third
    calls.release(first)
    calls.release(second)
    fourth = calls.check("alice", request(), "sha256:c", decision, NOW)
    assert isinstance(fourth, CallHold), f"{kind}: {fourth}"  # the second was never stored
    calls.release(fourth)


def test_blast_radius_counts_a_digest_held_and_stored_once(state: StateStore) -> None:
    calls = CallLimits(state)
    decision = limited({"blast_radius": "2/3600s"})
    first = calls.check("alice", request("/a"), "sha256:a", decision, NOW)
    assert isinstance(first, CallHold)
    commit(state, first, "w1")
    second = calls.check("alice", request("/b"), "sha256:b", decision, NOW)
    assert isinstance(second, CallHold), second
    assert calls.check("alice", request("/a"), "sha256:a", decision, NOW) is not None  # same target: room
    third = calls.check("alice", request("/c"), "sha256:c", decision, NOW)
    assert isinstance(third, str)
    assert "has 2 distinct argument sets" in third
