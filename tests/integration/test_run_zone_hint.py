"""The zone an authorize answer names beside its warrant (``warrant.zone``): a hint that
saves ``proctor run`` a second opening of the warrant, and that cannot change the zone a
run is in.

Real parts: a ``proctor serve`` child process and the real ``Supervisor``, whose
answers are altered in this process after the governor sent them (as an on-path
attacker or a faulty governor would).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_server import GovernorServer, cli
from gov_support import POLICIES
from proctor.authorization import warrants
from proctor.authorization.keys import PrincipalKey
from proctor.enforcement import _approval
from proctor.enforcement import supervisor as supervisor_module
from proctor.enforcement.supervisor import EXIT_DENIED, RunOptions, Supervisor


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    root = tmp_path_factory.mktemp("zone")
    first = GovernorServer(root / "gov", policy=POLICIES / "run")
    first.stop()  # a principal is added with the store to itself
    data = first.data
    cli("principal", "add", "zoe", "--attr", "role=dev", "--zone", "lab", "--out", str(data / "zoe.key"),
        "--data", str(data))  # fmt: skip
    server = GovernorServer(root / "again", beside=first)
    yield server
    server.stop()


def _run(
    gov: GovernorServer, mark: Path, monkeypatch: pytest.MonkeyPatch, alter: Callable[[dict[str, Any]], None]
) -> tuple[int, int, str]:
    """One governed ``touch MARK`` with the authorize answer altered by ``alter``:
    (exit status, warrant verifications, what the supervisor said)."""
    real_json = _approval.ApprovingGovernors.json
    real_verify = warrants.verify_warrant_bounds
    verifications = [0]

    def altered(self: Any, method: str, target: str, body: Any = None, **kw: Any) -> Any:
        answer = real_json(self, method, target, body, **kw)
        if target == "/v1/authorize" and "warrant" in answer:
            alter(answer["warrant"])
        return answer

    def counted(*a: Any, **kw: Any) -> Any:
        verifications[0] += 1
        return real_verify(*a, **kw)

    monkeypatch.setattr(_approval.ApprovingGovernors, "json", altered)
    monkeypatch.setattr(supervisor_module, "verify_warrant_bounds", counted)
    said: list[str] = []
    run = Supervisor(
        RunOptions(gov.url, PrincipalKey.load(gov.data / "zoe.key"), quiet=True),
        ["/bin/sh", "-c", f"touch {mark}"],
        stdout=io.BytesIO(),
        stderr=io.BytesIO(),
    )
    monkeypatch.setattr(run, "say", said.append)
    return run.run(), verifications[0], "\n".join(said)


def test_the_answer_names_the_warrants_zone_and_the_warrant_is_opened_once(
    gov: GovernorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    status, verifications, said = _run(gov, tmp_path / "ran", monkeypatch, lambda w: seen.append(w["zone"]))
    assert status == 0, said
    assert seen == ["lab"]  # zoe's own
    assert verifications == 1
    assert (tmp_path / "ran").exists()


def test_a_zone_hint_that_is_not_the_warrants_starts_nothing(
    gov: GovernorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for lie in ("somewhere-else", ""):  # "" would pass a warrant for any zone

        def alter(warrant: dict[str, Any], lie: str = lie) -> None:
            warrant["zone"] = lie

        status, _, said = _run(gov, tmp_path / "ran", monkeypatch, alter)
        assert status == EXIT_DENIED, lie
        assert "the warrant does not verify locally; nothing started" in said, said
        assert not (tmp_path / "ran").exists()


def test_an_answer_without_the_zone_opens_the_warrant_to_read_it(
    gov: GovernorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As from a governor of an earlier version."""
    status, verifications, said = _run(gov, tmp_path / "ran", monkeypatch, lambda w: w.pop("zone"))
    assert status == 0, said
    assert verifications == 2
    assert (tmp_path / "ran").exists()
