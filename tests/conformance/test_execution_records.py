"""The log tells the truth about every execution: its state commits with its event, it
starts once, it ends once, and a revoked execution never ends as "completed"."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

from gov_exec import allow, start_body
from gov_support import POLICIES, signed_bundle
from proctor.errors import ProctorError
from proctor.governor.service import Governor


def events(gov: Governor, kind: str, execution: str | None = None) -> list[dict[str, Any]]:
    found = []
    for index in range(gov.log.size):
        event = json.loads(gov.log.leaf(index))
        if event["type"] == kind and (execution is None or event.get("execution") == execution):
            found.append(event)
    return found


def test_a_revoked_execution_cannot_be_recorded_as_completed(governor: Governor) -> None:
    ex = governor.executions.start("alice", start_body(allow(governor, "r"), "r"))["execution"]
    governor.revoke("execution", ex, reason="stop it", by="admin")
    done = governor.executions.finish("alice", ex, {"outcome": "completed", "exit_status": 0})
    assert done["status"] == "terminated"
    assert events(governor, "execution.completed", ex) == []
    (terminal,) = events(governor, "execution.terminated", ex)
    assert terminal["reason"] == "revoked"
    record = governor.state.execution(ex)
    assert record is not None
    assert record["status"] == "terminated"


def test_concurrent_starts_of_one_warrant_record_one_execution(governor: Governor) -> None:
    token = allow(governor, "twice")
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        try:
            outcomes.append(governor.executions.start("alice", start_body(token, "twice"))["execution"])
        except ProctorError as e:
            outcomes.append(type(e).__name__)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    started = [o for o in outcomes if o.startswith("ex_")]
    assert len(started) == 1, outcomes
    assert len(events(governor, "execution.started")) == 1


def test_concurrent_finishes_record_one_terminal_event(governor: Governor) -> None:
    ex = governor.executions.start("alice", start_body(allow(governor, "end"), "end"))["execution"]
    barrier = threading.Barrier(6)

    def go() -> None:
        barrier.wait()
        try:
            governor.executions.finish("alice", ex, {"outcome": "completed", "exit_status": 0})
        except ProctorError:
            pass

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert (
        len(events(governor, "execution.completed", ex) + events(governor, "execution.terminated", ex)) == 1
    )


def test_the_started_row_commits_with_its_event(governor: Governor) -> None:
    started = governor.executions.start("alice", start_body(allow(governor, "row"), "row"))
    record = governor.state.execution(started["execution"])
    assert record is not None
    assert record["started_index"] == started["log_index"]
    assert record["indices"][-1] == started["log_index"]


class SlowHook(BaseHTTPRequestHandler):
    release: ClassVar[threading.Event] = threading.Event()
    called: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        SlowHook.called.set()
        SlowHook.release.wait(timeout=30)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_responses_run_after_the_commit_and_never_block_it(
    governor: Governor, gov_data: Path, tmp_path: Path
) -> None:
    server = HTTPServer(("127.0.0.1", 0), SlowHook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = tmp_path / "respond"
        src.mkdir()
        text = (POLICIES / "respond" / "respond.cedar").read_text().replace("PORT", str(server.server_port))
        (src / "respond.cedar").write_text(text)
        for extra in (POLICIES / "respond").iterdir():
            if extra.name != "respond.cedar":
                (src / extra.name).write_bytes(extra.read_bytes())
        governor.push_policy(signed_bundle(gov_data, src, version=7), by="admin")
        ex = governor.executions.start("alice", start_body(allow(governor, "v"), "v"))["execution"]
        # The webhook does not answer until released: finish must not wait for it.
        done = governor.executions.finish(
            "alice", ex, {"outcome": "terminated", "reason": "integrity", "detail": "x"}
        )
        assert not SlowHook.release.is_set()
        event = json.loads(governor.log.leaf(done["log_index"]))
        assert event["type"] == "execution.terminated"
        assert SlowHook.called.wait(timeout=10)  # ... and it was called, after the record
    finally:
        SlowHook.release.set()
        server.shutdown()
        server.server_close()
