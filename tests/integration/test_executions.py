"""Executions on the governor, in process: single use, renewals, responses, counters."""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gov_support import EXE, POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.governor.executions import ExecutionConflictError
from proctor.governor.model import AuthorizeRequest, RequestShapeError
from proctor.governor.service import Governor

MEASURED = {
    "executable": "/bin/echo",
    "executable_digest": EXE,
    "files": [{"path": "/bin/echo", "digest": EXE, "role": "executable"}],
    "script_index": None,
}


def start(gov: Governor, principal: str = "alice", argv: tuple[str, ...] = ("echo", "hi")) -> tuple[str, str]:
    result = gov.authorize(
        principal, AuthorizeRequest(action="exec", resource="/bin/echo", argv=argv, executable_digest=EXE)
    )
    assert result.warrant is not None, result.decision.reason
    body = {"warrant": result.warrant, "action": "exec", "resource": "/bin/echo", "argv": list(argv),
            "measurement": MEASURED}  # fmt: skip
    started = gov.executions.start(principal, body)
    return started["execution"], result.warrant


def test_a_warrant_starts_one_execution_only(governor: Governor) -> None:
    ex, token = start(governor)
    body = {
        "warrant": token,
        "action": "exec",
        "resource": "/bin/echo",
        "argv": ["echo", "hi"],
        "measurement": MEASURED,
    }
    with pytest.raises(ExecutionConflictError, match="replayed"):
        governor.executions.start("alice", body)
    assert governor.executions.renew("alice", ex, {"integrity": "ok"})["ok"] is True


def test_renewal_reports_each_broken_trust(governor: Governor) -> None:
    ex, _ = start(governor)
    assert governor.executions.renew("alice", ex, {"integrity": "violated"})["terminate"] == "integrity"
    ex2, _ = start(governor, argv=("echo", "two"))
    governor.revoke("execution", ex2, reason="test", by="admin")
    assert governor.executions.renew("alice", ex2, {})["terminate"] == "revoked"
    ex3, _ = start(governor, argv=("echo", "three"))
    governor.set_principal_status("alice", "suspended", by="admin")
    assert governor.executions.renew("alice", ex3, {})["terminate"] == "revoked"


def test_finish_records_the_terminal_event(governor: Governor) -> None:
    ex, _ = start(governor)
    done = governor.executions.finish(
        "alice", ex, {"outcome": "completed", "exit_status": 0, "stdout_digest": "sha256:" + "0" * 64}
    )
    event = json.loads(governor.log.leaf(done["log_index"]))
    assert event["type"] == "execution.completed"
    assert event["exit_status"] == 0
    with pytest.raises(ExecutionConflictError):
        governor.executions.finish("alice", ex, {"outcome": "completed", "exit_status": 0})


def test_a_finish_that_names_a_warrant_ends_only_an_execution_under_it(governor: Governor) -> None:
    """An enforcer unsure of an execution id (a start answer it could not accept) names
    its warrant: another of its principal's executions is not ended by it."""
    ex, _ = start(governor)
    other, _ = start(governor, argv=("echo", "other"))
    mine = governor.state.execution(ex)
    theirs = governor.state.execution(other)
    assert mine is not None
    assert theirs is not None
    assert mine["warrant"] != theirs["warrant"]
    failed = {"outcome": "failed", "reason": "start-failed", "detail": "answer not accepted"}
    size = governor.log.size
    with pytest.raises(ExecutionConflictError, match="does not run under warrant"):
        governor.executions.finish("alice", other, {**failed, "warrant": mine["warrant"]})
    with pytest.raises(RequestShapeError, match="warrant: expected a warrant id"):
        governor.executions.finish("alice", other, {**failed, "warrant": 7})
    assert governor.log.size == size, "a refused finish recorded something"
    assert governor.state.execution(other)["status"] == "running"  # type: ignore[index]
    done = governor.executions.finish("alice", ex, {**failed, "warrant": mine["warrant"]})
    assert json.loads(governor.log.leaf(done["log_index"]))["reason"] == "start-failed"
    assert governor.state.execution(ex)["status"] == "failed"  # type: ignore[index]
    assert governor.executions.renew("alice", other, {})["ok"] is True  # still its own run


def test_revoking_a_running_execution_reads_no_store_and_an_ended_one_still_can(governor: Governor) -> None:
    # A revocation's latency is how long the revoked execution runs on: one this node
    # holds the lease of exists without a read; an ended one, or an unknown id, is asked
    # of the store (the second revocable, the third refused with nothing recorded).
    import asyncio

    from proctor.errors import NoSuchTargetError

    running, _ = start(governor)
    ended, _ = start(governor, argv=("echo", "two"))
    governor.executions.finish("alice", ended, {"outcome": "completed", "exit_status": 0})
    asked: list[tuple[str, str]] = []
    real = governor.state.exists

    def exists(kind: str, target: str) -> bool:
        asked.append((kind, target))
        return real(kind, target)

    governor.state.exists = exists  # type: ignore[method-assign]
    assert governor.executions.registry.holds(running)
    assert not governor.executions.registry.holds(ended)

    done = asyncio.run(governor.revoke_async("execution", running, reason="test", by="admin"))
    assert done["log_index"] > 0
    assert asked == []
    assert governor.executions.renew("alice", running, {})["terminate"] == "revoked"
    governor.revoke("execution", ended, reason="test", by="admin")
    assert asked == [("execution", ended)]
    size = governor.log.size
    with pytest.raises(NoSuchTargetError):
        asyncio.run(governor.revoke_async("execution", "ex_unknown", reason="test", by="admin"))
    assert asked[-1] == ("execution", "ex_unknown")
    assert governor.log.size == size


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_violation_responses_suspend_and_call_the_webhook(
    governor: Governor, gov_data: Path, tmp_path: Path
) -> None:
    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        src = tmp_path / "respond"
        shutil.copytree(POLICIES / "respond", src)
        policy = src / "respond.cedar"
        policy.write_text(policy.read_text().replace("PORT", str(server.server_port)))
        governor.push_policy(signed_bundle(gov_data, src, version=5), by="admin")
        ex, _ = start(governor)
        done = governor.executions.finish("alice", ex, {"outcome": "terminated", "reason": "obligation",
                                                        "detail": "output exceeded 10 bytes"})  # fmt: skip
        event = json.loads(governor.log.leaf(done["log_index"]))
        # The terminal event records what the policy asked for; the responses ran after it
        # committed: the suspension is its own later event, the webhook its own thread.
        planned = [r["response"] for r in event["responses"]]
        assert "suspend" in planned
        assert any(r.startswith("webhook:") for r in planned)
        suspended = json.loads(governor.log.leaf(governor.log.size - 1))
        assert suspended["type"] == "principal.changed"
        assert governor.log.size - 1 > done["log_index"]
        deadline = time.monotonic() + 10
        while not Hook.received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert Hook.received[-1]["execution"] == ex
        assert Hook.received[-1]["reason"] == "obligation"
        record = governor.state.principal("alice")
        assert record is not None
        assert record.status == "suspended"
        assert not governor.authorize(
            "alice",
            AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo",), executable_digest=EXE),
        ).allowed
    finally:
        server.shutdown()
        server.server_close()


def test_rate_counters_follow_the_store(gov_data: Path) -> None:
    from proctor.governor.counters import RateCounters

    with Governor(gov_data) as gov:
        key = PrincipalKey.generate("carol")
        gov.add_principal("carol", key.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        now = 1_000_000_000 - 1_000_000_000 % 86400 + 7200  # 02:00 UTC some day
        for i, t in enumerate([now - 4000, now - 3000, now - 100, now - 30, now - 5]):
            gov.state.put_warrant(
                f"wr_{i}", principal="carol", parent="", decision_index=0, expires=now + 99, issued=t
            )
        counters = RateCounters(gov.state)
        assert counters.counts("carol", now) == {"rate_1m": 2, "rate_1h": 4, "budget_used": 5}
        counters.issued("carol", now)
        assert counters.counts("carol", now + 1) == {"rate_1m": 3, "rate_1h": 5, "budget_used": 6}
        assert counters.counts("carol", now + 3700) == {"rate_1m": 0, "rate_1h": 0, "budget_used": 6}
        assert counters.counts("carol", now + 86400) == {"rate_1m": 0, "rate_1h": 0, "budget_used": 0}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_lapsed_lease_is_recorded_as_supervisor_lost(gov_data: Path, governor: Governor) -> None:
    import time

    governor.close()
    clock = Clock(time.time())
    with Governor(gov_data, clock=clock) as gov:
        lapsed, _ = start(gov, argv=("echo", "lapsed"))
        alive, _ = start(gov, argv=("echo", "alive"))
        ttl_s = gov.state.execution(lapsed)["ttl_ms"] / 1000  # type: ignore[index]
        clock.now += ttl_s - 0.5
        assert gov.executions.renew("alice", alive, {"integrity": "ok"})["ok"] is True
        clock.now += 0.5 + 0.9  # lapsed: 0.9 s past its lease, inside the grace
        assert gov.executions.sweep() == []
        clock.now += 0.2
        assert gov.executions.sweep() == [lapsed]
        record = gov.state.execution(lapsed)
        assert record is not None
        assert (record["status"], record["reason"]) == ("terminated", "supervisor-lost")
        event = json.loads(gov.log.leaf(record["indices"][-1]))
        assert (event["type"], event["reason"]) == ("execution.terminated", "supervisor-lost")
        assert event["parent"]["index"] == record["started_index"]
        # The enforcer coming back is told to stop, and cannot finish it a second time.
        assert gov.executions.renew("alice", lapsed, {})["ok"] is False
        with pytest.raises(ExecutionConflictError):
            gov.executions.finish("alice", lapsed, {"outcome": "completed", "exit_status": 0})
        assert gov.state.execution(alive)["status"] == "running"  # type: ignore[index]
        assert gov.log.check_all().ok


def test_renewed_leases_are_persisted_and_survive_a_restart(gov_data: Path, governor: Governor) -> None:
    ex, _ = start(governor)
    answer = governor.executions.renew("alice", ex, {"integrity": "ok"})
    governor.log.submit([]).wait()  # the queued lease write has committed by now
    assert governor.state.execution(ex)["lease_expires_ms"] == answer["lease_expires_ms"]  # type: ignore[index]
    governor.close()
    with Governor(gov_data) as again:
        record = again.state.execution(ex)
        assert record is not None
        assert again.executions.lease_expires_ms(record) == answer["lease_expires_ms"]


def test_the_concurrency_counter_follows_every_status_change(gov_data: Path, governor: Governor) -> None:
    def concurrency() -> int:
        result = governor.authorize(
            "alice",
            AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", "c"), executable_digest=EXE),
        )
        assert result.log_index is not None
        return int(json.loads(governor.log.leaf(result.log_index))["request"]["counters"]["concurrency"])

    assert concurrency() == 0
    a, _ = start(governor, argv=("echo", "a"))
    b, _ = start(governor, argv=("echo", "b"))
    c, _ = start(governor, argv=("echo", "c2"))
    d, _ = start(governor, argv=("echo", "d"))
    assert concurrency() == 4
    governor.executions.finish("alice", a, {"outcome": "completed", "exit_status": 0})
    assert concurrency() == 3
    governor.revoke("execution", b, reason="test", by="admin")
    assert concurrency() == 2
    assert governor.executions.renew("alice", c, {"integrity": "violated"})["ok"] is False
    assert concurrency() == 1
    governor.close()
    with Governor(gov_data) as again:  # rebuilt from the table after a restart
        assert again.executions.running_count("alice") == 1
        assert [p for _, p in again.state.running_executions()] == ["alice"]
        record = again.state.execution(d)
        assert record is not None
        assert record["status"] == "running"
