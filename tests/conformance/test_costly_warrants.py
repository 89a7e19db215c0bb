"""A warrant's appended blocks are hostile input: only the shapes proctor's attenuation
writes are accepted, checked as text before any Datalog runs, and delegated
authorizations are verified off the event loop, a few at a time per principal."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from biscuit_auth import BlockBuilder

from gov_exec import allow
from gov_support import EXE
from proctor.authorization.tokens import open_token
from proctor.authorization.warrants import verify_warrant, verify_warrant_bounds
from proctor.errors import WarrantError
from proctor.governor import authorize as authorize_module
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor


def costly(token: str, root: bytes) -> str:
    """The issue's attack: 200 facts and a three-way join in one appended block."""
    facts = " ".join(f"f({i});" for i in range(200))
    join = "check if f($a), f($b), f($c), $a + $b + $c == -1;"
    return open_token(token, root_public_key=root).append(BlockBuilder(facts + " " + join)).to_base64()


def test_a_costly_attenuation_block_is_refused_before_evaluation(governor: Governor) -> None:
    token = allow(governor, "x")
    bad = costly(token, governor.warrant_public_key)
    with pytest.raises(WarrantError) as info:
        verify_warrant(
            bad, root_public_key=governor.warrant_public_key, now=int(governor.now()), request=None
        )
    assert info.value.reason == "shape"


def test_a_costly_parent_warrant_is_denied_and_recorded(governor: Governor) -> None:
    parent = costly(allow(governor, "x"), governor.warrant_public_key)
    result = governor.authorize(
        "alice",
        AuthorizeRequest(
            action="exec",
            resource="/bin/echo",
            argv=("echo", "x"),
            executable_digest=EXE,
            parent_warrant=parent,
        ),
    )
    assert result.warrant is None
    assert "(shape)" in result.decision.reason
    assert result.log_index is not None
    assert json.loads(governor.log.leaf(result.log_index))["decision"] == "deny"


def test_delegated_authorizations_do_not_run_on_the_event_loop(
    governor: Governor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real verification, wrapped to note the thread it runs on.
    threads: list[int] = []

    def noted(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return verify_warrant_bounds(*args, **kwargs)

    monkeypatch.setattr(authorize_module, "verify_warrant_bounds", noted)
    parent = allow(governor, "y")

    async def scenario() -> tuple[int, list[bool]]:
        delegated = [
            governor.authorize_async(
                "alice",
                AuthorizeRequest(
                    action="exec",
                    resource="/bin/echo",
                    argv=("echo", "y"),
                    executable_digest=EXE,
                    parent_warrant=parent,
                ),
            )
            for _ in range(8)
        ]
        honest = governor.authorize_async(
            "bob",
            AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", "b"), executable_digest=EXE),
        )
        results = await asyncio.gather(*delegated, honest)
        return threading.get_ident(), [r.allowed for r in results]

    loop_thread, allowed = asyncio.run(scenario())
    assert allowed == [True] * 9
    assert len(threads) == 8
    assert loop_thread not in threads
