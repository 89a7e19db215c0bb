"""The Python SDK (``proctor.Client``, ``@governed``) against a real governor
(``proctor serve``): a tool function runs only under a warrant for its exact arguments
and definition, holds its lease while it runs, and leaves a receipt that verifies.

Rules (proctor.integrations.sdk.steps, .protocol): a deny raises DeniedError and the
function never runs; a governor that cannot be reached is a denial; a warrant for
arguments X (or definition D) cannot start a call with arguments Y (or definition E),
neither through the SDK nor past it; a revocation during a synchronous call withholds
its result; a long call keeps its lease.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import proctor
from gov_server import client_of, free_port
from proctor.client import GovernorError
from proctor.errors import VerificationError
from proctor.integrations.sdk import Client, GovernedCall, function_definition
from proctor.integrations.sdk.definition import definition_digest
from proctor.verification.measurement import tool_measurement
from sdk_support import SdkGovernor, receipt_events, start_sdk_governor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkGovernor]:
    yield from start_sdk_governor(tmp_path_factory.mktemp("sdk"))


@pytest.fixture
def alice(gov: SdkGovernor) -> Iterator[Client]:
    with proctor.Client(gov.url, gov.alice, warrant_key=gov.warrant_key) as client:
        yield client


def test_allowed_call_runs_once_and_its_receipt_verifies(gov: SdkGovernor, alice: Client) -> None:
    ran: list[tuple[int, int]] = []

    @proctor.governed(alice, tool="add")
    def add(a: int, b: int = 1) -> int:
        """Add two numbers."""
        ran.append((a, b))
        return a + b

    value, call = add.run(2, b=3)  # type: ignore[attr-defined]
    assert value == 5
    assert ran == [(2, 3)]
    assert add(4) == 5  # defaults are bound too
    assert isinstance(call, GovernedCall)
    assert call.status == "completed"
    assert call.arguments == {"a": 2, "b": 3}
    receipt = alice.receipt(call.execution)
    report = alice.verify(receipt, log_key=gov.log_key)
    assert report.ok, report.to_json()
    events = receipt_events(receipt)
    assert events["execution.completed"]["stdout_digest"] == call.result_digest
    digest = definition_digest(function_definition(add, "add"))
    assert events["execution.started"]["measurement"] == tool_measurement("add", digest)
    # proctor verify, the CLI, agrees
    assert not alice.verify(receipt, log_key=gov.log_key.replace("+", "-", 1)).ok


def test_denied_call_raises_denied_error_and_never_runs(alice: Client) -> None:
    ran: list[int] = []

    @proctor.governed(alice, tool="add")
    def add(a: int, b: int = 1) -> int:
        ran.append(a)
        return a + b

    with pytest.raises(proctor.DeniedError) as denied:
        add(13)
    assert denied.value.policies == ("no-13",)
    assert denied.value.tool == "add"
    assert "no-13" in str(denied.value)

    @proctor.governed(alice, tool="delete_all")
    def delete_all() -> None:
        ran.append(-1)

    with pytest.raises(proctor.DeniedError):
        delete_all()

    @proctor.governed(alice, tool="unknown_tool")
    def unknown_tool() -> None:
        ran.append(-2)

    with pytest.raises(proctor.DeniedError):  # no permit: default deny
        unknown_tool()
    assert ran == []


def test_unreachable_governor_is_a_denial_and_nothing_runs(gov: SdkGovernor) -> None:
    ran: list[int] = []
    nobody = proctor.Client(
        f"http://127.0.0.1:{free_port()}", gov.alice, warrant_key=gov.warrant_key, timeout=2
    )

    @proctor.governed(nobody, tool="add")
    def add(a: int) -> int:
        ran.append(a)
        return a

    with pytest.raises(proctor.DeniedError) as denied:
        add(1)
    assert "no authorization from the governor" in str(denied.value)
    auth = nobody.authorize("add", arguments={"a": 1})
    assert not auth.allowed
    assert auth.warrant is None
    with pytest.raises(proctor.DeniedError), proctor.governed(nobody, tool="add", arguments={"a": 1}):
        ran.append(2)
    assert ran == []
    nobody.close()


def test_arguments_that_are_not_json_are_a_denial(alice: Client) -> None:
    ran: list[object] = []

    @proctor.governed(alice, tool="add")
    def add(a: object, b: int = 1) -> int:
        ran.append(a)
        return b

    with pytest.raises(proctor.DeniedError) as denied:
        add(object())
    assert denied.value.reason == "arguments"
    assert ran == []


def test_warrant_for_arguments_x_cannot_start_arguments_y(gov: SdkGovernor, alice: Client) -> None:
    definition = {"name": "add", "description": "", "inputSchema": {"type": "object"}}
    digest = definition_digest(definition)
    auth = alice.authorize("add", arguments={"a": 1, "b": 1}, executable_digest=digest)
    assert auth.allowed
    # The SDK does not start it (rule 2) ...
    with pytest.raises(proctor.DeniedError) as denied:
        alice.start(auth, resource="add", arguments={"a": 2, "b": 1}, definition_digest=digest)
    assert "args_digest" in str(denied.value)
    # ... and the governor refuses it when asked past the SDK.
    body = {
        "warrant": auth.warrant,
        "action": "tool.call",
        "resource": "add",
        "arguments": {"a": 2, "b": 1},
        "measurement": tool_measurement("add", digest),
    }
    with client_of(gov.server) as raw, pytest.raises(GovernorError) as refused:
        raw.call("POST", "/v1/executions", body)
    assert refused.value.status in (403, 409), refused.value.body
    # The warrant still starts the call it was issued for.
    lease = alice.start(auth, resource="add", arguments={"a": 1, "b": 1}, definition_digest=digest)
    assert alice.finish(lease, outcome="completed", result_digest="").status == "completed"


def test_warrant_for_one_definition_cannot_start_another(gov: SdkGovernor, alice: Client) -> None:
    one = definition_digest({"name": "add", "description": "v1", "inputSchema": {"type": "object"}})
    other = definition_digest({"name": "add", "description": "v2", "inputSchema": {"type": "object"}})
    auth = alice.authorize("add", arguments={"a": 1}, executable_digest=one)
    assert auth.allowed
    with pytest.raises(proctor.DeniedError):
        alice.start(auth, resource="add", arguments={"a": 1}, definition_digest=other)
    body = {
        "warrant": auth.warrant,
        "action": "tool.call",
        "resource": "add",
        "arguments": {"a": 1},
        "measurement": tool_measurement("add", other),
    }
    with client_of(gov.server) as raw, pytest.raises(GovernorError) as refused:
        raw.call("POST", "/v1/executions", body)
    assert refused.value.status == 403, refused.value.body


def test_long_call_holds_its_lease(gov: SdkGovernor, alice: Client) -> None:
    @proctor.governed(alice, tool="slow")
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    # The policy gives "slow" a 1 s lease: without renewals it would be lost (and the
    # end recorded as terminated, raising TerminatedError here).
    value, call = slow.run(3.5)  # type: ignore[attr-defined]
    assert value == "done"
    assert call.status == "completed"
    assert alice.verify(alice.receipt(call.execution), log_key=gov.log_key).ok


def test_context_manager_records_the_block_and_its_result(gov: SdkGovernor, alice: Client) -> None:
    with proctor.governed(alice, tool="search", arguments={"q": "proctor", "limit": 3}) as call:
        call.result = ["a", "b", "c"]
    assert call.status == "completed"
    events = receipt_events(alice.receipt(call.execution))
    assert events["execution.completed"]["stdout_digest"] == call.result_digest


def test_exception_is_recorded_as_failed_and_raised(gov: SdkGovernor, alice: Client) -> None:
    @proctor.governed(alice, tool="add")
    def add(a: int) -> int:
        raise ValueError(f"cannot add {a}")

    with pytest.raises(ValueError, match="cannot add 7"):
        add(7)
    with pytest.raises(KeyError), proctor.governed(alice, tool="add", arguments={"a": 8}) as call:
        raise KeyError("x")
    assert call.status == "failed"
    events = receipt_events(alice.receipt(call.execution))
    assert events["execution.terminated"]["reason"] == "exception"


def test_revocation_during_a_sync_call_withholds_its_result(gov: SdkGovernor, alice: Client) -> None:
    after: list[str] = []
    seen: list[GovernedCall] = []

    def revoked_while_running(admin: Client) -> None:
        with proctor.governed(alice, tool="slow", arguments={"seconds": 30}) as call:
            seen.append(call)
            admin.revoke("execution", call.execution, reason="test")
            deadline = time.monotonic() + 30
            while not call.terminated and time.monotonic() < deadline:
                time.sleep(0.05)  # the lease keeper's next renewal is refused
            after.append(call.terminated)
            call.result = "the result"

    with proctor.Client(gov.url, gov.admin) as admin, pytest.raises(proctor.TerminatedError) as ended:
        revoked_while_running(admin)
    assert after == ["revoked"]
    (call,) = seen
    assert ended.value.reason == "revoked"
    assert ended.value.execution == call.execution
    receipt = alice.receipt(call.execution)
    assert alice.verify(receipt, log_key=gov.log_key).ok
    assert receipt_events(receipt)["execution.terminated"]["reason"] == "revoked"


def test_sync_and_threads_share_one_client(gov: SdkGovernor, alice: Client) -> None:
    @proctor.governed(alice, tool="add")
    def add(a: int, b: int = 1) -> int:
        return a + b

    results: list[Any] = []
    threads = [threading.Thread(target=lambda n=n: results.append(add(n))) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == [1, 2, 3, 4]


def test_a_key_file_path_is_a_key(gov: SdkGovernor, tmp_path: Path) -> None:
    with proctor.Client(gov.url, str(gov.alice)) as by_path:
        assert by_path.principal == "alice"
        assert by_path.authorize("add", arguments={"a": 1}).allowed


def test_a_warrant_that_does_not_verify_under_the_pinned_key_starts_nothing(gov: SdkGovernor) -> None:
    ran: list[int] = []
    other_key = base64.b64encode(bytes(32)).decode()
    with proctor.Client(gov.url, gov.alice, warrant_key=other_key) as pinned:

        @proctor.governed(pinned, tool="add")
        def add(a: int) -> int:
            ran.append(a)
            return a

        with pytest.raises(proctor.DeniedError) as denied:
            add(1)
    assert denied.value.reason == "warrant"
    assert ran == []


def test_governor_gone_during_a_sync_call_withholds_its_result(tmp_path: Path) -> None:
    server = start_sdk_governor(tmp_path)
    gone = next(server)
    seen: list[GovernedCall] = []
    try:
        with proctor.Client(gone.url, gone.alice, timeout=2) as alice:

            def while_the_governor_dies() -> None:
                with proctor.governed(alice, tool="slow", arguments={"seconds": 30}) as call:
                    seen.append(call)
                    gone.server.kill()
                    deadline = time.monotonic() + 30
                    while not call.terminated and time.monotonic() < deadline:
                        time.sleep(0.05)  # no renewal answered: the 1 s lease runs out
                    call.result = "the result"

            with pytest.raises(proctor.TerminatedError) as ended:
                while_the_governor_dies()
    finally:
        next(server, None)
    assert ended.value.reason == "lease-lost"
    assert seen[0].terminated == "lease-lost"


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_start_answer_that_does_not_verify_starts_nothing_and_is_ended(
    gov: SdkGovernor, monkeypatch: pytest.MonkeyPatch, flavour: str
) -> None:
    """The start answer is not the governor's (as if altered on the path): a denial, the
    function never runs, and the start the governor recorded is finished at once
    (``failed``, ``start-failed``), not left running until its lease lapses."""

    def not_the_governors(*args: Any, **kwargs: Any) -> Any:
        raise VerificationError("lease answer: the signature does not verify (test)")

    monkeypatch.setattr("proctor.integrations.sdk.protocol.verify_lease_answer", not_the_governors)
    ran: list[int] = []

    def listed() -> dict[str, dict[str, Any]]:
        with client_of(gov.server, gov.alice) as client:
            shown = client.json("GET", "/v1/executions?status=all&limit=1000")["executions"]
        return {e["id"]: e for e in shown}

    before = listed()
    if flavour == "sync":
        with proctor.Client(gov.url, gov.alice, warrant_key=gov.warrant_key) as client:

            @proctor.governed(client, tool="add")
            def add(a: int, b: int = 1) -> int:
                ran.append(a)
                return a + b

            with pytest.raises(proctor.DeniedError) as denied:
                add(7)
    else:

        async def scenario() -> None:
            async with proctor.AsyncClient(gov.url, gov.alice, warrant_key=gov.warrant_key) as client:

                @proctor.governed(client, tool="add")
                async def add(a: int, b: int = 1) -> int:
                    ran.append(a)
                    return a + b

                await add(7)

        with pytest.raises(proctor.DeniedError) as denied:
            asyncio.run(scenario())
    assert denied.value.reason == "start"
    assert ran == []
    new = [e for i, e in listed().items() if i not in before]
    assert len(new) == 1, new
    assert (new[0]["status"], new[0]["reason"]) == ("failed", "start-failed"), new[0]
