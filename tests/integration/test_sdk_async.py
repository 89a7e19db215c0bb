"""The SDK's async side (``proctor.AsyncClient``, ``@governed`` on ``async def``,
``async with governed(...)``) against a real governor: the same rules as the sync side
(test_sdk.py), and a revocation during an async call cancels it at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

import proctor
from gov_server import free_port
from proctor.authorization.keys import PrincipalKey
from proctor.client import AsyncGovernorClient
from proctor.integrations.sdk import AsyncClient, GovernedCall
from proctor.receipts import check_receipt
from sdk_support import SdkGovernor, receipt_events, start_sdk_governor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkGovernor]:
    yield from start_sdk_governor(tmp_path_factory.mktemp("sdk-async"))


def alice_of(gov: SdkGovernor, **kw: Any) -> AsyncClient:
    return proctor.AsyncClient(gov.url, gov.alice, **kw)


def test_async_allowed_call_runs_and_its_receipt_verifies(gov: SdkGovernor) -> None:
    async def scenario() -> tuple[Any, GovernedCall, dict[str, Any]]:
        async with alice_of(gov) as alice:

            @proctor.governed(alice, tool="add")
            async def add(a: int, b: int = 1) -> int:
                await asyncio.sleep(0)
                return a + b

            value, call = await add.run(20, b=22)  # type: ignore[attr-defined]
            assert await add(1) == 2
            return value, call, await alice.receipt(call.execution)

    value, call, receipt = asyncio.run(scenario())
    assert value == 42
    assert call.status == "completed"
    assert check_receipt(receipt, log_key=gov.log_key).ok
    assert receipt_events(receipt)["execution.completed"]["stdout_digest"] == call.result_digest


def test_async_denied_call_raises_and_never_runs(gov: SdkGovernor) -> None:
    ran: list[int] = []

    async def scenario() -> proctor.DeniedError:
        async with alice_of(gov) as alice:

            @proctor.governed(alice, tool="add")
            async def add(a: int) -> int:
                ran.append(a)
                return a

            with pytest.raises(proctor.DeniedError) as denied:
                await add(13)
            return denied.value

    denied = asyncio.run(scenario())
    assert denied.policies == ("no-13",)
    assert ran == []


def test_async_unreachable_governor_is_a_denial(gov: SdkGovernor) -> None:
    ran: list[int] = []

    async def scenario() -> None:
        nobody = proctor.AsyncClient(f"http://127.0.0.1:{free_port()}", gov.alice, timeout=2)

        @proctor.governed(nobody, tool="add")
        async def add(a: int) -> int:
            ran.append(a)
            return a

        with pytest.raises(proctor.DeniedError):
            await add(1)
        with pytest.raises(proctor.DeniedError):
            async with proctor.governed(nobody, tool="add", arguments={"a": 2}):
                ran.append(2)
        await nobody.aclose()

    asyncio.run(scenario())
    assert ran == []


def test_async_long_call_holds_its_lease(gov: SdkGovernor) -> None:
    async def scenario() -> GovernedCall:
        async with alice_of(gov) as alice:

            @proctor.governed(alice, tool="slow")
            async def slow(seconds: float) -> str:
                await asyncio.sleep(seconds)
                return "done"

            value, call = await slow.run(3.5)  # type: ignore[attr-defined]
            assert value == "done"
            return call  # type: ignore[no-any-return]

    assert asyncio.run(scenario()).status == "completed"


def test_revocation_during_an_async_call_cancels_it(gov: SdkGovernor) -> None:
    reached: list[str] = []

    async def scenario() -> tuple[proctor.TerminatedError, dict[str, Any]]:
        admin_http = AsyncGovernorClient(gov.url, PrincipalKey.load(gov.admin))
        async with alice_of(gov) as alice, proctor.AsyncClient(gov.url, gov.admin) as admin, admin_http:

            @proctor.governed(alice, tool="slow")
            async def slow(seconds: float) -> str:
                reached.append("started")
                await asyncio.sleep(seconds)
                reached.append("finished")  # never: the call is cancelled
                return "done"

            async def revoke_when_running() -> None:
                while "started" not in reached:
                    await asyncio.sleep(0.05)
                listed = await admin_http.json("GET", "/v1/executions?status=running&principal=alice")
                for ex in listed["executions"]:
                    if ex["resource"] == "slow":
                        await admin.revoke("execution", ex["id"], reason="test")

            revoker = asyncio.create_task(revoke_when_running())
            began = time.monotonic()
            with pytest.raises(proctor.TerminatedError) as ended:
                await slow(60)
            await revoker
            assert time.monotonic() - began < 45  # cancelled, not run to its end
            return ended.value, await alice.receipt(ended.value.execution)

    ended, receipt = asyncio.run(scenario())
    assert reached == ["started"]
    assert ended.reason == "revoked"
    assert receipt_events(receipt)["execution.terminated"]["reason"] == "revoked"


def test_async_with_records_the_block(gov: SdkGovernor) -> None:
    async def scenario() -> GovernedCall:
        async with alice_of(gov) as alice:
            async with proctor.governed(alice, tool="search", arguments={"q": "leases"}) as call:
                call.result = {"hits": 2}
            return call

    call = asyncio.run(scenario())
    assert call.status == "completed"


def test_a_client_of_the_wrong_kind_is_refused_at_decoration(gov: SdkGovernor) -> None:
    sync = proctor.Client(gov.url, gov.alice)

    async def tool() -> None:
        return None

    with pytest.raises(TypeError, match="AsyncClient"):
        proctor.governed(sync, tool="add")(tool)
    sync.close()
