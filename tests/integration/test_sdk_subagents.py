"""Sub-agents under attenuated warrants, against a real governor: a parent (alice)
narrows its warrant offline (``Client.delegate``) and hands it to a sub-agent (bob, a
principal of its own); bob's calls are authorized under it (``parent_warrant``).

Rule (governor.authorize step 2, issuance): delegation only narrows. The governor
issues the sub-agent a warrant only when the policy allows the sub-agent *and* the
narrowed parent covers the exact call (tool, arguments, definition), never valid past
the parent. Each way of widening is refused: another tool, other arguments, a later
expiry (it cannot outlast the parent), a removed block, a block of another shape, a
revoked parent.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from biscuit_auth import BlockBuilder

import proctor
from proctor.authorization.tokens import open_token
from proctor.integrations.sdk import Client, function_definition
from proctor.integrations.sdk.definition import definition_digest
from proctor.integrations.sdk.protocol import raw_warrant_key
from sdk_support import SdkGovernor, start_sdk_governor

pytestmark = pytest.mark.slow


def search(q: str, limit: int = 5) -> list[str]:
    """Search the corpus."""
    return [f"{q}-{i}" for i in range(limit)]


DIGEST = definition_digest(function_definition(search, "search"))
ARGS = {"q": "leases", "limit": 2}


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkGovernor]:
    yield from start_sdk_governor(tmp_path_factory.mktemp("sdk-sub"))


@pytest.fixture
def alice(gov: SdkGovernor) -> Iterator[Client]:
    with proctor.Client(gov.url, gov.alice, warrant_key=gov.warrant_key) as client:
        yield client


@pytest.fixture
def bob(gov: SdkGovernor) -> Iterator[Client]:
    with proctor.Client(gov.url, gov.bob, warrant_key=gov.warrant_key) as client:
        yield client


def grant(alice: Client, arguments: dict[str, Any] = ARGS, **narrow: Any) -> str:
    """Alice's warrant for search(ARGS), narrowed for a sub-agent."""
    auth = alice.authorize("search", arguments=arguments, executable_digest=DIGEST)
    assert auth.allowed, auth.reason
    assert auth.warrant is not None
    narrow.setdefault("expires", int(time.time()) + 120)
    return alice.delegate(auth.warrant, resource="search", arguments=arguments, **narrow)


def asked(bob: Client, token: str, tool: str = "search", arguments: dict[str, Any] = ARGS) -> Any:
    return bob.authorize(tool, arguments=arguments, executable_digest=DIGEST, parent_warrant=token)


def test_subagent_runs_under_a_delegated_warrant(gov: SdkGovernor, alice: Client, bob: Client) -> None:
    token = grant(alice)
    governed_search = proctor.governed(bob, tool="search", parent_warrant=token)(search)
    value, call = governed_search.run("leases", limit=2)  # type: ignore[attr-defined]
    assert value == ["leases-0", "leases-1"]
    assert call.status == "completed"
    report = bob.verify(bob.receipt(call.execution), log_key=gov.log_key)
    assert report.ok, report.to_json()


def test_subagent_without_a_parent_is_denied(bob: Client) -> None:
    governed_search = proctor.governed(bob, tool="search")(search)
    with pytest.raises(proctor.DeniedError):
        governed_search("leases", limit=2)


def test_subagent_cannot_widen_to_another_tool(alice: Client, bob: Client) -> None:
    token = grant(alice)
    denied = asked(bob, token, tool="fetch")  # the policy lets agents fetch under a parent
    assert not denied.allowed
    assert "parent warrant rejected" in denied.reason
    assert not asked(bob, token, tool="delete_all").allowed


def test_subagent_cannot_widen_to_other_arguments(alice: Client, bob: Client) -> None:
    token = grant(alice)
    denied = asked(bob, token, arguments={"q": "leases", "limit": 1000})
    assert not denied.allowed
    assert "parent warrant rejected" in denied.reason
    assert asked(bob, token).allowed  # the exact call still is


def test_subagent_cannot_outlast_its_parent(gov: SdkGovernor, alice: Client, bob: Client) -> None:
    bound = int(time.time()) + 30
    token = grant(alice, expires=bound)
    later = bob.delegate(token, expires=bound + 3600)  # appending a later bound widens nothing
    auth = asked(bob, later)
    assert auth.allowed
    assert auth.expires is not None
    assert auth.expires <= bound


def test_subagent_cannot_use_an_expired_parent(alice: Client, bob: Client) -> None:
    bound = int(time.time()) + 2
    token = grant(alice, expires=bound)
    while time.time() < bound + 1:
        time.sleep(0.2)
    denied = asked(bob, token)
    assert not denied.allowed
    assert "expired" in denied.reason


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7


def without_last_block(token: str) -> str:
    """The token with its last appended block cut out of the protobuf (Biscuit field 3)."""
    data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    fields: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        start = i
        tag, i = _varint(data, i)
        if tag & 7 == 0:
            _, i = _varint(data, i)
        elif tag & 7 == 2:
            size, i = _varint(data, i)
            i += size
        else:
            raise AssertionError(f"unexpected wire type {tag & 7}")
        fields.append((tag >> 3, data[start:i]))
    last = max(n for n, (number, _) in enumerate(fields) if number == 3)
    kept = b"".join(raw for n, (_, raw) in enumerate(fields) if n != last)
    encoded = base64.urlsafe_b64encode(kept).decode()
    return encoded if token.endswith("=") else encoded.rstrip("=")


def test_subagent_cannot_remove_a_block(alice: Client, bob: Client) -> None:
    auth = alice.authorize("search", arguments=ARGS, executable_digest=DIGEST)
    assert auth.warrant is not None
    # Narrowed to another argument digest: useless as is; without its block it would be
    # alice's whole warrant.
    token = alice.delegate(auth.warrant, arguments={"q": "other"})
    assert "parent warrant rejected (scope)" in asked(bob, token).reason
    stripped = without_last_block(token)
    assert stripped != token
    denied = asked(bob, stripped)
    assert not denied.allowed
    assert "parent warrant rejected (forged)" in denied.reason


def test_subagent_cannot_append_a_block_of_another_shape(
    gov: SdkGovernor, alice: Client, bob: Client
) -> None:
    token = grant(alice)
    biscuit = open_token(token, root_public_key=raw_warrant_key(gov.warrant_key))
    for source in ('resource("fetch");', "check if true;", 'args_digest("sha256:00");'):
        hostile = biscuit.append(BlockBuilder(source)).to_base64()
        denied = asked(bob, hostile, tool="fetch" if "fetch" in source else "search")
        assert not denied.allowed, source
        assert "parent warrant rejected (shape)" in denied.reason, denied.reason


def test_subagent_cannot_use_a_revoked_parent(gov: SdkGovernor, alice: Client, bob: Client) -> None:
    auth = alice.authorize("search", arguments=ARGS, executable_digest=DIGEST)
    assert auth.warrant is not None
    assert auth.warrant_id is not None
    token = alice.delegate(auth.warrant, expires=int(time.time()) + 120)
    assert asked(bob, token).allowed
    with proctor.Client(gov.url, gov.admin) as admin:
        admin.revoke("warrant", auth.warrant_id, reason="test")
    denied = asked(bob, token)
    assert not denied.allowed
    assert "revoked" in denied.reason


def test_subagent_never_gains_a_tool_its_policy_does_not_give(alice: Client, bob: Client) -> None:
    # alice may call add; agents may not, delegated or not.
    auth = alice.authorize("add", arguments={"a": 1, "b": 1}, executable_digest=DIGEST)
    assert auth.warrant is not None
    token = alice.delegate(auth.warrant, expires=int(time.time()) + 60)
    denied = asked(bob, token, tool="add", arguments={"a": 1, "b": 1})
    assert not denied.allowed


async def search_async(q: str, limit: int = 5) -> list[str]:
    """Search the corpus."""
    await asyncio.sleep(0)
    return [f"{q}-{i}" for i in range(limit)]


def test_async_subagent_delegation(gov: SdkGovernor) -> None:
    digest = definition_digest(function_definition(search_async, "search"))

    async def scenario() -> list[str]:
        async with (
            proctor.AsyncClient(gov.url, gov.alice) as parent,
            proctor.AsyncClient(gov.url, gov.bob) as child,
        ):
            auth = await parent.authorize("search", arguments=ARGS, executable_digest=digest)
            assert auth.warrant is not None
            token = await parent.delegate(auth.warrant, expires=int(time.time()) + 60, arguments=ARGS)
            governed_search = proctor.governed(child, tool="search", parent_warrant=token)(search_async)
            with pytest.raises(proctor.DeniedError):  # other arguments than the parent's
                await governed_search("leases", limit=3)
            # The parent's warrant binds search_async's definition: the sync search
            # (another definition), delegated the same way, is refused.
            with pytest.raises(proctor.DeniedError):
                async with proctor.governed(
                    child,
                    tool="search",
                    arguments=ARGS,
                    parent_warrant=token,
                    definition=function_definition(search, "search"),
                ):
                    pass
            return await governed_search("leases", limit=2)

    assert asyncio.run(scenario()) == ["leases-0", "leases-1"]
