"""Where a warrant is minted under ``proctor serve`` (ADR 0006, amended 2026-12-05): on
the caller's thread while the log is quiet, in the helper process while it is busy.
Either way every answer matches the log; a failure on either path is a recorded deny;
a helper that died while it was not used does not hold the log back when load comes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_support import EXE, POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.warrants import WarrantRequest, args_digest, verify_warrant
from proctor.errors import WarrantError
from proctor.governor.issuance import WarrantIssuer
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor

REQUEST = AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", "hi"), executable_digest=EXE)


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many warrants each path minted (the real paths, counted on the way in)."""
    counted: Counter[str] = Counter()
    lock = threading.Lock()
    here, later = WarrantIssuer.mint_here, WarrantIssuer.mint_later

    def count(path: str, real: Any) -> Any:
        def counting(self: WarrantIssuer, *args: Any) -> Any:
            with lock:
                counted[path] += 1
            return real(self, *args)

        return counting

    monkeypatch.setattr(WarrantIssuer, "mint_here", count("here", here))
    monkeypatch.setattr(WarrantIssuer, "mint_later", count("helper", later))
    return counted


@pytest.fixture
def gov(gov_data: Path) -> Iterator[Governor]:
    with Governor(gov_data, mint_helper=True) as governor:
        alice = PrincipalKey.generate("alice")
        governor.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        governor.push_policy(signed_bundle(gov_data, POLICIES / "basic"), by="admin")
        yield governor


def _matches_the_log(gov: Governor, results: list[Any]) -> None:
    seen: set[int] = set()
    for r in results:
        assert r.allowed, r.decision.reason
        decision = json.loads(gov.log.leaf(r.log_index))
        issued = json.loads(gov.log.leaf(r.warrant_index))
        assert (decision["type"], decision["decision"]) == ("decision", "allow")
        assert (issued["type"], issued["decision_index"], issued["warrant"]) == (
            "warrant.issued",
            r.log_index,
            r.warrant_id,
        )
        assert r.warrant_index == r.log_index + 1
        claims = verify_warrant(
            r.warrant,
            root_public_key=gov.warrant_public_key,
            now=int(time.time()),
            request=WarrantRequest("exec", "/bin/echo", args_digest(["echo", "hi"]), "", EXE),
        )
        assert claims.decision_index == r.log_index
        row = gov.state.warrant(r.warrant_id)
        assert row is not None
        assert (row["decision_index"], row["issued_index"]) == (r.log_index, r.warrant_index)
        assert r.warrant_index not in seen
        seen.add(r.warrant_index)
    assert gov.log.check_all().ok


def test_threads_take_both_paths_and_every_answer_matches_the_log(
    gov: Governor, paths: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What is checked here is the paths and the log, not the stall detector: on a loaded
    # CI machine the helper process can go unscheduled for longer than 0.25 s.
    monkeypatch.setattr("proctor.authorization.minter.STALL_S", 5.0)
    results: list[Any] = []
    lock = threading.Lock()

    def caller() -> None:
        for _ in range(40):
            r = gov.authorize("alice", REQUEST)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 640
    _matches_the_log(gov, results)
    assert paths["here"] > 0, paths  # the first, at least: the log was quiet
    assert paths["helper"] > 0, paths  # 16 callers fill batches: the log turned busy


@pytest.mark.parametrize(
    "error", [WarrantError("key unavailable (simulated)"), RuntimeError("a bug (simulated)")]
)
def test_a_mint_failing_on_the_calling_thread_is_a_recorded_deny(
    gov: Governor, paths: Counter[str], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    import proctor.governor.issuance as issuance

    def broken(*args: Any, **kwargs: Any) -> str:
        raise error

    monkeypatch.setattr(issuance, "mint_warrant", broken)
    assert not gov.log.busy
    r = gov.authorize("alice", REQUEST)
    assert paths == Counter(here=1)
    assert not r.allowed
    assert r.warrant is None
    assert str(error) in r.decision.reason
    assert r.log_index is not None
    decision = json.loads(gov.log.leaf(r.log_index))
    failed = json.loads(gov.log.leaf(r.log_index + 1))
    assert decision["decision"] == "allow"  # the decision stands, recorded; the answer is deny
    assert (failed["type"], failed["decision_index"]) == ("warrant.failed", r.log_index)
    assert str(error) in failed["reason"]
    assert gov.log.size == r.log_index + 2
    assert gov.log.check_all().ok


def test_a_helper_that_died_while_idle_is_restarted_without_holding_the_log(
    gov: Governor, paths: Counter[str]
) -> None:
    """The helper is not used while the log is quiet, so its death shows only when the
    log turns busy. The warrants asked for then are minted on the caller's thread (no
    commit waits for a fresh helper's start-up) while a fresh helper starts in the
    background; once it runs, a busy log uses it again."""
    assert gov.minter is not None
    dead = gov.minter.pid
    assert dead is not None
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while gov.minter.ready and time.monotonic() < deadline:  # its reader sees the end
        time.sleep(0.01)
    assert not gov.minter.ready
    assert gov.authorize("alice", REQUEST).allowed  # quiet: minted here, nothing noticed
    gov.log.busy = True  # as the writer leaves it after a batch of several callers
    began = time.monotonic()
    first = gov.authorize("alice", REQUEST)
    took = time.monotonic() - began
    assert first.allowed, first.decision.reason
    assert paths == Counter(here=2)  # not the dead helper, and not a wait for a new one
    assert took < 1.0, f"the authorization waited {took:.2f} s"
    deadline = time.monotonic() + 20
    while not gov.minter.ready and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gov.minter.ready, "no fresh helper was started"
    assert gov.minter.pid not in (None, dead)
    gov.log.busy = True
    again = gov.authorize("alice", REQUEST)
    assert again.allowed, again.decision.reason
    assert paths == Counter(here=2, helper=1)
    _matches_the_log(gov, [first, again])
