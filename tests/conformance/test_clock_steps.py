"""Clock faults do not open holes: a captured request cannot be replayed after the
governor's clock stepped forward and back (also across a restart), and an enforcer whose
clock is behind is not handed a warrant that is not valid yet."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from fault_workload import JOB, kill_tokens, survivors, wait_gone
from gov_exec import allow, clocked, start_body
from gov_server import GovernorServer
from gov_support import POLICIES
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.authorization.warrants import verify_warrant
from proctor.enforcement.supervisor import RunOptions, Supervisor
from proctor.errors import AuthenticationError
from proctor.governor.service import Governor


def test_a_captured_request_does_not_replay_after_the_clock_steps_forward_and_back(
    gov_data: Path, governor: Governor
) -> None:
    admin = PrincipalKey.load(gov_data / "keys" / "admin.key")
    gov, clock = clocked(gov_data, governor)
    with gov:
        start = int(clock.now)
        captured = sign_request("GET", "/v1/principals", b"", admin, now=start)
        assert gov.authenticate("GET", "/v1/principals", b"", captured) == "admin"
        gov.log.submit([], side=[gov.nonces.persist]).wait()
        clock.now = start + 600  # the clock steps forward; old nonces are forgotten
        fresh = sign_request("GET", "/v1/principals", b"", admin, now=start + 600)
        assert gov.authenticate("GET", "/v1/principals", b"", fresh) == "admin"
        gov.log.submit([], side=[gov.nonces.persist]).wait()
        clock.now = start + 10  # ...and back
        with pytest.raises(AuthenticationError) as info:
            gov.authenticate("GET", "/v1/principals", b"", captured)
        assert info.value.reason in ("stale", "replayed")
    # The floor survives a restart with the clock still behind it.
    clock.now = start + 20
    with Governor(gov_data, clock=clock) as again, pytest.raises(AuthenticationError):
        again.authenticate("GET", "/v1/principals", b"", captured)


def test_an_enforcer_whose_clock_is_behind_gets_a_warrant_valid_for_it(
    gov_data: Path, governor: Governor
) -> None:
    token = allow(governor, "skew")
    behind = int(governor.now()) - 30
    claims = verify_warrant(token, root_public_key=governor.warrant_public_key, now=behind, request=None)
    assert claims.not_before <= behind


class Refusing(BaseHTTPRequestHandler):
    """A governor that refuses every signed request as unauthenticated (a skewed clock)."""

    def do_POST(self) -> None:
        body = b'{"error": "unauthenticated", "reason": "stale", "message": "created is too old"}'
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_lease_lost_to_refused_renewals_is_reported_as_lost_not_revoked(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        key = PrincipalKey.generate("alice")
        supervisor = Supervisor(
            RunOptions(server=f"http://127.0.0.1:{server.server_port}", key=key), ["true"]
        )
        supervisor._execution = "ex_test"
        supervisor._lease_deadline = time.monotonic() + 0.5
        supervisor._renew_once(0.5)
        assert supervisor._reason is None
        supervisor._watchdog(0.5)
        assert supervisor._reason == "lease-lost"
        assert "too old" in supervisor._detail or "stale" in supervisor._detail  # the 401, in words
    finally:
        server.shutdown()
        server.server_close()


# -- which clock each deadline reads -------------------------------------------------------
#
# Warrants expire on the wall clock — the governor's, at every renewal: the enforcer turns
# the expiry into a timer on its monotonic clock when the command starts and never reads
# its wall clock for it again. Leases are kept on each side's own clock: the enforcer's on
# its monotonic clock (a wall-clock step neither ends nor extends it), the governor's in
# wall time, because its lease records are shared by every node of a store (a step forward
# there ends leases early: fail closed; a step back extends no lease at the enforcer).


def test_a_warrant_expires_by_the_governors_wall_clock_at_renewal(gov_data: Path, governor: Governor) -> None:
    """A warrant expires by the governor's wall clock, judged at every renewal."""
    gov, clock = clocked(gov_data, governor)
    with gov:
        token = allow(gov, "wall")
        expires = verify_warrant(
            token, root_public_key=gov.warrant_public_key, now=int(clock.now), request=None
        ).expires
        ex = gov.executions.start("alice", start_body(token, "wall"))["execution"]
        assert gov.executions.renew("alice", ex, {"integrity": "ok"})["ok"] is True
        clock.now = expires + 1  # no time passed on any monotonic clock
        answer = gov.executions.renew("alice", ex, {"integrity": "ok"})
        assert answer["terminate"] == "expired", answer


def test_a_governor_whose_clock_steps_forward_past_a_lease_ends_it(
    gov_data: Path, governor: Governor
) -> None:
    """A governor whose wall clock steps forward past a lease ends it (fail closed), never extends it."""
    gov, clock = clocked(gov_data, governor)
    with gov:
        ex = gov.executions.start("alice", start_body(allow(gov, "lease"), "lease"))["execution"]
        assert gov.executions.renew("alice", ex, {"integrity": "ok"})["ok"] is True
        clock.now += 120  # the basic policy's lease is shorter
        answer = gov.executions.renew("alice", ex, {"integrity": "ok"})
        assert answer["ok"] is False, answer
        assert answer["terminate"] == "lease-lost", answer


STEPPED = POLICIES.parent / "procs" / "stepped_clock_run.py"
TTL = 2.0  # the run policy's lease
GRACE = 0.5
MARGIN = 3.0


def _stepped_run(
    server: GovernorServer, markers: Path, token: str, seconds: float, step: float
) -> subprocess.Popen[str]:
    """``proctor run`` of the fault job whose wall clock steps by ``step`` one second in."""
    return subprocess.Popen(
        [sys.executable, str(STEPPED), "1.0", str(step), "--", "run", "--server", server.url, "--key", str(server.key),
         "--", sys.executable, str(JOB), str(markers), token, str(seconds)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_an_enforcers_wall_clock_stepping_forward_ends_neither_its_lease_nor_its_warrant(
    tmp_path: Path,
) -> None:
    """An enforcer's wall clock stepping forward a year, past its lease and its warrant's
    expiry, ends neither (its lease runs on its monotonic clock; the governor judges expiry)."""
    server = GovernorServer(tmp_path / "gov", policy=POLICIES / "run")
    markers = tmp_path / "markers"
    markers.mkdir()
    try:
        run = _stepped_run(server, markers, "faultjob-forward", 1.75 * TTL, 366 * 86400)
        _, err = run.communicate(timeout=120)
        assert "the wall clock stepped" in err, err
        assert run.returncode == 0, err  # renewed after the step until the job ended by itself
        assert (markers / "faultjob-forward").exists()
    finally:
        server.stop()


def test_an_enforcers_wall_clock_stepping_back_does_not_extend_its_lease(tmp_path: Path) -> None:
    """An enforcer's wall clock stepping back does not extend its lease: with the governor gone, the command dies within it."""
    server = GovernorServer(tmp_path / "gov", policy=POLICIES / "run")
    markers = tmp_path / "markers"
    markers.mkdir()
    run = _stepped_run(server, markers, "faultjob-back", 60, -3600)
    try:
        assert run.stderr is not None
        assert "started" in run.stderr.readline()
        assert "stepped" in run.stderr.readline()  # one second in
        assert survivors(["faultjob-back"]), "the command is not running"
        server.kill()
        left, took = wait_gone(["faultjob-back"], TTL + GRACE + MARGIN)
        assert left == [], (
            f"the command outlived its lease after its enforcer's clock stepped back ({took:.2f} s)"
        )
        assert run.wait(timeout=60) == 79
    finally:
        if run.poll() is None:
            run.kill()
        run.wait(timeout=60)
        if run.stderr is not None:
            run.stderr.close()
        kill_tokens(["faultjob-back"])
        server.stop()
