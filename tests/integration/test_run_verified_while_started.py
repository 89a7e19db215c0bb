"""``proctor run`` verifies the warrant while the governor records the start, and the go
comes only after both: the answer's terms it started with (the warrant's id, lease TTL
and obligations, unsigned) are held to the verified claims first.

Real parts: a ``proctor serve`` child process and the real ``Supervisor``, whose
authorize answers are altered in this process after the governor sent them (as an
on-path attacker or a faulty governor would).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_server import GovernorServer, client_of
from gov_support import POLICIES
from proctor.authorization import warrants
from proctor.authorization.keys import PrincipalKey
from proctor.enforcement import _approval, _failover
from proctor.enforcement import supervisor as supervisor_module
from proctor.enforcement.supervisor import EXIT_DENIED, RunOptions, Supervisor


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    server = GovernorServer(tmp_path_factory.mktemp("pipelined") / "gov", policy=POLICIES / "run")
    yield server
    server.stop()


class Traced:
    """One governed ``touch MARK`` with the authorize answer altered by ``alter``; what
    happened, in order: ``sent POST /v1/executions``, ``verify``, ``answered POST
    /v1/executions``."""

    def __init__(
        self, gov: GovernorServer, monkeypatch: pytest.MonkeyPatch, alter: Callable[[dict[str, Any]], None]
    ) -> None:
        self.events: list[str] = []
        self.said: list[str] = []
        real_json, real_request = _approval.ApprovingGovernors.json, _failover.Governors.request
        real_verify = warrants.verify_warrant_bounds

        def altered(governors: Any, method: str, target: str, body: Any = None, **kw: Any) -> Any:
            answer = real_json(governors, method, target, body, **kw)
            if target == "/v1/authorize" and "warrant" in answer:
                alter(answer)
            return answer

        def request(governors: Any, method: str, target: str, body: Any = None, **kw: Any) -> Any:
            told = kw.pop("on_sent", None)

            def on_sent() -> None:
                self.events.append(f"sent {method} {target}")
                if told is not None:
                    told()

            answered = real_request(governors, method, target, body, on_sent=on_sent, **kw)
            self.events.append(f"answered {method} {target}")
            return answered

        def verify(*a: Any, **kw: Any) -> Any:
            self.events.append("verify")
            return real_verify(*a, **kw)

        monkeypatch.setattr(_approval.ApprovingGovernors, "json", altered)
        monkeypatch.setattr(_failover.Governors, "request", request)
        monkeypatch.setattr(supervisor_module, "verify_warrant_bounds", verify)
        self.gov = gov
        self.monkeypatch = monkeypatch

    def run(self, mark: Path) -> tuple[int, Supervisor]:
        run = Supervisor(
            RunOptions(self.gov.url, PrincipalKey.load(self.gov.key), quiet=True),
            ["/bin/sh", "-c", f"touch {mark}"],
            stdout=io.BytesIO(),
            stderr=io.BytesIO(),
        )
        self.monkeypatch.setattr(run, "say", self.said.append)
        return run.run(), run


def _start_events(events: list[str]) -> list[str]:
    return [e for e in events if e == "verify" or e.endswith("/v1/executions")]


def test_the_warrant_is_verified_after_the_start_is_sent_and_before_the_go(
    gov: GovernorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    traced = Traced(gov, monkeypatch, lambda _: None)
    status, _ = traced.run(tmp_path / "ran")
    assert status == 0, traced.said
    assert (tmp_path / "ran").exists()
    # sent first, verified while it is answered (the answer may come before or after
    # the verification ends, never before it began)
    assert _start_events(traced.events)[:2] == ["sent POST /v1/executions", "verify"], traced.events
    assert traced.events.count("verify") == 1


@pytest.mark.parametrize(
    ("lie", "field"),
    [
        ({"max_output_bytes": 7}, "obligations"),  # the governor accepts this start: finished failed
        ({"lease_ttl_s": 2.0}, "obligations"),  # == 2 in Python; another JSON type: not the warrant's
        ({}, "lease_ttl_ms"),  # the start answer is signed for the true TTL: not accepted
        ({}, "id"),  # nor for another warrant id
    ],
    ids=["obligation-added", "obligation-retyped", "lease-ttl", "warrant-id"],
)
def test_answered_terms_that_are_not_the_warrants_start_nothing(
    gov: GovernorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lie: dict[str, Any], field: str
) -> None:
    def alter(answer: dict[str, Any]) -> None:
        if field == "obligations":
            answer["decision"]["obligations"] = {**answer["decision"]["obligations"], **lie}
        elif field == "lease_ttl_ms":
            answer["warrant"]["lease_ttl_ms"] += 1000
        else:
            answer["warrant"]["id"] = "w_" + "0" * 26

    traced = Traced(gov, monkeypatch, alter)
    status, run = traced.run(tmp_path / "ran")
    assert status == EXIT_DENIED, traced.said
    assert not (tmp_path / "ran").exists()
    said = "\n".join(traced.said)
    assert "nothing started" in said, said
    if field == "obligations":
        # the governor recorded the start (its answer verified): ended at once, never run
        assert "are not the warrant's" in said, said
        with client_of(gov) as client:
            shown = client.json("GET", f"/v1/executions/{run._execution}")
        assert shown["status"] == "failed", shown
        assert shown["reason"] == "start-failed", shown


def test_an_answer_without_the_terms_is_verified_before_the_start(
    gov: GovernorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As from a governor of an earlier version: no warrant id or TTL beside the token."""

    def alter(answer: dict[str, Any]) -> None:
        answer["warrant"].pop("id")
        answer["warrant"].pop("lease_ttl_ms")

    traced = Traced(gov, monkeypatch, alter)
    status, _ = traced.run(tmp_path / "ran")
    assert status == 0, traced.said
    assert (tmp_path / "ran").exists()
    assert _start_events(traced.events)[:2] == ["verify", "sent POST /v1/executions"], traced.events
