"""Warrants minted in the helper process: same warrants, same log, failures deny."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_support import EXE, POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.warrants import WarrantRequest, args_digest, verify_warrant
from proctor.governor.model import AuthorizeRequest
from proctor.governor.recorder import Recorder
from proctor.governor.service import Governor


@pytest.fixture
def helped(gov_data: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Governor]:
    # The helper mints while the log is busy (a lone caller mints on its own thread):
    # these tests are about the helper, so the log counts as busy throughout.
    monkeypatch.setattr(Recorder, "busy", property(lambda self: True))
    with Governor(gov_data, mint_helper=True) as gov:
        alice = PrincipalKey.generate("alice")
        gov.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        gov.push_policy(signed_bundle(gov_data, POLICIES / "basic"), by="admin")
        yield gov


def request(db: str = "db1") -> AuthorizeRequest:
    return AuthorizeRequest(
        action="exec", resource="/usr/bin/pg_dump", argv=("pg_dump", db), executable_digest=EXE
    )


def event(gov: Governor, index: int) -> dict[str, Any]:
    return dict(json.loads(gov.log.leaf(index)))


def test_a_helper_minted_warrant_verifies_and_is_recorded_after_its_decision(helped: Governor) -> None:
    assert helped.minter is not None
    assert helped.minter.pid is not None
    result = helped.authorize("alice", request())
    assert result.allowed, result.decision.reason
    assert result.warrant is not None
    assert result.log_index is not None
    assert result.warrant_index == result.log_index + 1
    claims = verify_warrant(
        result.warrant,
        root_public_key=helped.warrant_public_key,
        now=int(time.time()),
        request=WarrantRequest("exec", "/usr/bin/pg_dump", args_digest(["pg_dump", "db1"]), "", EXE),
    )
    assert claims.decision_index == result.log_index
    issued = event(helped, result.warrant_index)
    assert (issued["type"], issued["warrant"]) == ("warrant.issued", claims.warrant_id)
    row = helped.state.warrant(claims.warrant_id)
    assert row is not None
    assert (row["decision_index"], row["issued_index"]) == (
        result.log_index,
        result.warrant_index,
    )
    assert not helped.authorize("alice", request("db2")).allowed  # denies need no warrant
    assert helped.log.check_all().ok


def test_the_helper_mints_only_while_the_log_is_busy(gov_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone caller's warrant is minted on its own thread (the hand-off to the helper
    and back cost it more than minting); once a commit held several callers' appends,
    warrants go to the helper, off the caller's thread. The warrants are the same."""
    from proctor.authorization.minter import MintHelper

    sent: list[str] = []
    real = MintHelper.mint

    def spy(self: MintHelper, claims: Any, done: Any) -> None:
        sent.append(claims.warrant_id)
        real(self, claims, done)

    monkeypatch.setattr(MintHelper, "mint", spy)
    with Governor(gov_data, mint_helper=True) as gov:
        alice = PrincipalKey.generate("alice")
        gov.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        gov.push_policy(signed_bundle(gov_data, POLICIES / "basic"), by="admin")
        lone = gov.authorize("alice", request())
        assert lone.allowed, lone.decision.reason
        assert sent == []  # minted here
        assert not gov.log.busy
        gov.log.busy = True  # as the writer leaves it after a batch of several callers
        helped = gov.authorize("alice", request())
        assert helped.allowed, helped.decision.reason
        assert len(sent) == 1  # minted by the helper
        for result in (lone, helped):
            assert result.warrant is not None
            assert result.warrant_index == result.log_index + 1  # type: ignore[operator]
            issued = event(gov, result.warrant_index)
            assert (issued["type"], issued["decision_index"]) == ("warrant.issued", result.log_index)
        assert not gov.log.busy  # that batch held one caller: not busy any more
        assert gov.log.check_all().ok


def test_concurrent_authorizations_each_bind_their_own_decision(helped: Governor) -> None:
    results: list[Any] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            r = helped.authorize("alice", request())
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200
    assert all(r.allowed for r in results)
    for r in results:
        issued = event(helped, r.warrant_index)
        assert issued["decision_index"] == r.log_index
        assert event(helped, r.log_index)["type"] == "decision"
    assert helped.log.check_all().ok


def test_a_dead_helper_denies_records_warrant_failed_and_is_restarted(helped: Governor) -> None:
    assert helped.minter is not None
    pid = helped.minter.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it will not answer...
    helped.log.deferred_timeout = 0.3
    try:
        result = helped.authorize("alice", request())
    finally:
        with contextlib.suppress(ProcessLookupError):  # restarted (and reaped) already
            os.kill(pid, signal.SIGKILL)
    assert not result.allowed
    assert result.warrant is None
    assert "the warrant could not be issued" in result.decision.reason
    assert result.log_index is not None
    failed = event(helped, helped.log.size - 1)
    assert (failed["type"], failed["decision_index"]) == ("warrant.failed", result.log_index)
    assert event(helped, result.log_index)["decision"] == "allow"  # the decision stands, recorded
    helped.log.deferred_timeout = 10  # a fresh helper's start-up is not what this tests
    again = helped.authorize("alice", request())  # ...a fresh helper answers the next one
    assert again.allowed, again.decision.reason
    assert helped.minter.pid not in (None, pid)
    assert helped.log.check_all().ok


def test_a_helper_that_stops_reading_is_given_up_and_owes_nothing(gov_data: Path) -> None:
    from proctor.authorization.minter import MintHelper
    from proctor.authorization.warrants import WarrantClaims, new_warrant_id

    key = PrincipalKey.load(gov_data / "keys" / "warrant.key").private_bytes()
    helper = MintHelper(key)
    helper.start()
    answers: list[tuple[str | None, BaseException | None]] = []
    lock = threading.Lock()

    def done(token: str | None, error: BaseException | None) -> None:
        with lock:
            answers.append((token, error))

    def claims() -> WarrantClaims:
        return WarrantClaims(
            warrant_id=new_warrant_id(), principal="alice", action="exec", resource="/bin/echo",
            args_digest=args_digest(["echo"]), zone="", executable_digest="", obligations={},
            not_before=1, expires=2_000_000_000, lease_ttl_ms=5000, decision_index=7,
        )  # fmt: skip

    try:
        helper.mint(claims(), done)
        deadline = time.monotonic() + 10
        while not answers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert answers[0][0] is not None  # a token
        pid = helper.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        sent = 500  # more than its pipe holds: it stops reading, and answers nothing
        for _ in range(sent):
            helper.mint(claims(), done)  # never blocks the caller: a sender thread writes
        deadline = time.monotonic() + 10
        while len(answers) < sent + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(answers) == sent + 1  # every request sent was answered...
        assert all(error is not None for _, error in answers[1:])  # ...with an error
        assert any("stalled" in str(e) or "not reading" in str(e) for _, e in answers[1:])
        helper.mint(claims(), done)  # and a fresh helper takes the next
        deadline = time.monotonic() + 10
        while len(answers) < sent + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert answers[-1][0] is not None
        assert helper.pid not in (None, pid)
    finally:
        helper.close()
