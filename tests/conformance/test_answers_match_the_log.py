"""Every answer a client receives matches what the log records, and nothing the minting
helper does can hold the log back: revocations never queue behind a stalled helper."""

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
from proctor.errors import WarrantError
from proctor.governor.model import AuthorizeRequest
from proctor.governor.recorder import Recorder
from proctor.governor.service import Governor

REQUEST = AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", "hi"), executable_digest=EXE)


@pytest.fixture
def helped(gov_data: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Governor]:
    # The helper mints while the log is busy (a lone caller mints on its own thread):
    # these tests are about the helper, so the log counts as busy throughout.
    monkeypatch.setattr(Recorder, "busy", property(lambda self: True))
    with Governor(gov_data, mint_helper=True) as gov:
        alice = PrincipalKey.generate("alice")
        gov.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        gov.push_policy(signed_bundle(gov_data, POLICIES / "basic"), by="admin")
        assert gov.authorize("alice", REQUEST).allowed  # the helper is up
        yield gov


def test_a_failed_mint_is_recorded_as_warrant_failed(
    governor: Governor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import proctor.governor.issuance as issuance

    def broken(*args: Any, **kwargs: Any) -> str:
        raise WarrantError("signing key unavailable (simulated)")

    monkeypatch.setattr(issuance, "mint_warrant", broken)
    result = governor.authorize("alice", REQUEST)
    assert not result.allowed
    assert result.log_index is not None
    decision = json.loads(governor.log.leaf(result.log_index))
    failed = json.loads(governor.log.leaf(result.log_index + 1))
    # The decision allowed, no warrant came of it, and the log says both.
    assert decision["decision"] == "allow"
    assert (failed["type"], failed["decision_index"]) == ("warrant.failed", result.log_index)
    assert "signing key unavailable" in failed["reason"]


def test_revocations_do_not_queue_behind_a_stalled_minting_helper(helped: Governor) -> None:
    assert helped.minter is not None
    pid = helped.minter.pid
    assert pid is not None
    helped.log.deferred_timeout = 60  # the backstop: far longer than this test may take
    os.kill(pid, signal.SIGSTOP)
    try:
        answers: list[bool] = []
        pending = [
            threading.Thread(target=lambda: answers.append(helped.authorize("alice", REQUEST).allowed))
            for _ in range(5)
        ]
        for t in pending:
            t.start()
        time.sleep(0.1)  # the authorizations hold reserved slots now
        began = time.monotonic()
        helped.revoke("policy", "sha256:" + "0" * 64, reason="a leaked bundle", by="admin")
        took = time.monotonic() - began
        for t in pending:
            t.join(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert took < 10, f"the revocation waited {took:.1f} s behind the stalled helper"
    assert answers == [False] * 5  # denied, and recorded as warrant.failed
    assert helped.log.check_all().ok
