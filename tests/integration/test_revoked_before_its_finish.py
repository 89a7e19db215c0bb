"""A finish that arrives after an execution's revocation was queued, and before that
revocation committed, ends the execution ``terminated`` (``revoked``), whatever its
enforcer says: a revocation takes effect when it is queued (ADR 0021), and the log's
order must say so (``tests/log_invariants.py``, ``revoked-execution-ends``). A fresh-clone
CI run found the log saying otherwise once (``test_faults_network``: revoked at leaf 149,
``execution.completed`` at 151): the finish had read the execution's row before the
revocation's commit marked it ``terminating``. In process, with the real log and state.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gov_support import EXE, held_commits
from log_invariants import Report, check_events
from proctor.governor import executions as executions_module
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor

MEASURED = {
    "executable": "/bin/echo",
    "executable_digest": EXE,
    "files": [{"path": "/bin/echo", "digest": EXE, "role": "executable"}],
    "script_index": None,
}


def _started(gov: Governor, word: str) -> str:
    result = gov.authorize(
        "alice",
        AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", word), executable_digest=EXE),
    )
    assert result.warrant is not None, result.decision.reason
    body = {"warrant": result.warrant, "action": "exec", "resource": "/bin/echo", "argv": ["echo", word],
            "measurement": MEASURED}  # fmt: skip
    return str(gov.executions.start("alice", body)["execution"])


def _ends(gov: Governor, execution: str) -> list[dict[str, Any]]:
    events = [json.loads(gov.log.leaf(i)) for i in range(gov.log.size)]
    return [e for e in events if e.get("execution") == execution and e["type"] != "execution.started"]


def _finished_during_the_revocation(revoker: Governor, finisher: Governor, execution: str) -> list[Any]:
    """``revoker`` revokes ``execution``, its commit held back; meanwhile ``finisher``'s
    enforcer reports the command completed (it finished before the kill reached it). The
    finish's answers (empty while it waits for the revocation's commit, checked 0.5 s
    in; then its answer)."""
    finished: list[Any] = []
    with held_commits(revoker.log._store) as (holding, release):
        revoking = threading.Thread(
            target=lambda: revoker.revoke("execution", execution, reason="test", by="admin")
        )
        revoking.start()
        assert holding.wait(10), "the revocation was not queued"
        # Queued, not committed: the row still says running.
        finishing = threading.Thread(
            target=lambda: finished.append(
                finisher.executions.finish("alice", execution, {"outcome": "completed", "exit_status": 0})
            )
        )
        finishing.start()
        finishing.join(0.5)  # its end waits behind the revocation's commit
        waited = list(finished)
        release.set()
        revoking.join(30)
        finishing.join(30)
    assert not waited, "the finish went ahead of a revocation it could not see"
    return finished


def _ended_revoked(gov: Governor, execution: str, finished: list[Any]) -> None:
    """The finish answered ``terminated``, the log ends the execution ``terminated``
    (``revoked``), and the log's invariants hold."""
    assert finished, "the finish did not return"
    assert finished[0]["status"] == "terminated", finished
    ends = _ends(gov, execution)
    assert [e["type"] for e in ends] == ["execution.terminated"], ends
    assert ends[0]["reason"] == "revoked"
    report = Report()
    check_events([(i, json.loads(gov.log.leaf(i))) for i in range(gov.log.size)], report)
    assert report.ok, [str(v) for v in report.violations]


def test_a_finish_between_a_revocation_and_its_commit_ends_it_terminated(governor: Governor) -> None:
    execution = _started(governor, "racing")
    _ended_revoked(governor, execution, _finished_during_the_revocation(governor, governor, execution))


def test_a_finish_before_the_revocation_is_queued_keeps_its_outcome(governor: Governor) -> None:
    execution = _started(governor, "first")
    answer = governor.executions.finish("alice", execution, {"outcome": "completed", "exit_status": 0})
    assert answer["status"] == "completed"
    assert [e["type"] for e in _ends(governor, execution)] == ["execution.completed"]


def test_shared_a_finish_on_another_process_waits_for_the_revocations_commit(
    gov_data: Path, governor: Governor
) -> None:
    """Two governor processes on one store (ADR 0016), in this process: node A revokes,
    its commit held back; node B's finish must not read the row in between (it would
    say running, and B would record ``completed`` after A's revocation)."""
    governor.close()
    a, b = (Governor(gov_data, node=f"node-{n}", shared=True) for n in "ab")
    try:
        execution = _started(b, "shared")
        _ended_revoked(b, execution, _finished_during_the_revocation(a, b, execution))
    finally:
        a.close()
        b.close()


def test_shared_a_revocation_is_not_held_back_by_a_stuck_transition(
    gov_data: Path, governor: Governor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ordering with finishes must not cost the revocation itself: with the lock held
    elsewhere past REVOCATION_ORDER_WAIT_S, it is queued, pushed and recorded anyway."""
    governor.close()
    monkeypatch.setattr(executions_module, "REVOCATION_ORDER_WAIT_S", 0.2)
    a, b = (Governor(gov_data, node=f"node-{n}", shared=True) for n in "ab")
    try:
        execution = _started(b, "stuck")
        release = threading.Event()
        held = threading.Event()

        def hold() -> None:
            assert b.executions._transitions is not None
            with b.executions._transitions.held():
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        try:
            began = time.monotonic()
            answer = a.revoke("execution", execution, reason="test", by="admin")
            assert time.monotonic() - began < 3
        finally:
            release.set()
            holder.join(10)
        assert (answer["kind"], answer["target"]) == ("execution", execution), answer
        recorded = json.loads(a.log.leaf(answer["log_index"]))
        assert (recorded["type"], recorded["target"]) == (
            "revocation",
            {"kind": "execution", "id": execution},
        )
    finally:
        a.close()
        b.close()
