"""Clock faults do not open holes: a captured request cannot be replayed after the
governor's clock stepped forward and back (also across a restart), and an enforcer whose
clock is behind is not handed a warrant that is not valid yet."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from gov_exec import allow, clocked
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
