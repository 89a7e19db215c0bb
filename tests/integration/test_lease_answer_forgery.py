"""An on-path attacker cannot keep a revoked execution alive (ADR 0017).

Real parts: a ``proctor serve`` child process, a real ``proctor run`` enforcer, and
:class:`RewritingProxy`, an HTTP proxy between them that forwards every request and, on
command, answers each renewal itself with ``ok`` and a lease an hour long — unsigned,
or replaying a genuine signed answer to an earlier renewal, or the governor's signed
refusal with ``ok`` flipped — while hiding the event stream (so no pushed revocation
reaches the enforcer either). The governor revokes the execution; the tree must die at
the end of its lease (``lease-lost``) whatever the proxy answers. The policy's lease
TTL is 2 s (``policies/run``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gov_server import GovernorServer
from proc_support import marked
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient

POLICIES = Path(__file__).parent / "policies"
TREE = Path(__file__).parent / "procs" / "tree.py"
TTL = 2.0  # @lease_ttl_s("2") in policies/run/run.cedar
WAIT = 60.0  # generous bound on every wait for an event
HOUR_MS = 3_600_000

pytestmark = pytest.mark.slow


class RewritingProxy:
    """An HTTP proxy to a governor that can forge renewal answers.

    Modes: ``forward`` (requests go through, answers come back untouched);
    ``unsigned`` (renewals answered ``ok`` with a far expiry and no ``lease_sig``,
    without asking the governor); ``replayed`` (renewals answered with the last genuine
    ``ok`` answer seen, signature and all; with ``push``, its expiry an hour out);
    ``rewritten`` (renewals forwarded, and the governor's answer, a signed refusal,
    turned into ``ok`` with a far expiry, signature kept). The event stream is always
    answered 503 (or, with ``hang_streams``, held unanswered): no pushed revocation
    reaches the enforcer, only its renewals decide.
    """

    def __init__(self, upstream: str) -> None:
        """Listen on a free loopback port, serving in a daemon thread."""
        proxy = self
        self.mode = "forward"
        self.push = False  # replayed: also push its expiry out (the signature then no longer matches)
        self.hang_streams = False  # the event stream held unanswered instead of answered 503
        self._closed = threading.Event()
        self.start: str | None = None  # "unsigned": lease_sig dropped; "ttl": an hour's TTL, sig kept
        self.start_execution: str | None = None  # with start: the answer names this execution instead
        self.hint_ttl: int | None = None  # the authorization answer's lease TTL hint rewritten to this
        self.drop_position = False  # the (genuine, signed) start answer's log_index removed
        self.forged = 0
        self.last_ok: dict[str, Any] | None = None
        self._upstream = httpx.Client(base_url=upstream, timeout=30.0)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy.serve(self, "GET")

            def do_POST(self) -> None:
                proxy.serve(self, "POST")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Answer one request as the current mode says."""
        if handler.path.startswith("/v1/stream"):  # hidden: only the renewals decide
            if self.hang_streams:
                self._closed.wait(WAIT)
            self._send(handler, 503, b'{"error": "unavailable", "message": "test proxy: no stream"}')
            return
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        renewal = method == "POST" and handler.path.endswith("/renew")
        if renewal and self.mode == "unsigned":
            self._forge(handler, {"ok": True, "lease_expires_ms": _far(), "bundle": "sha256:x"})
            return
        if renewal and self.mode == "replayed" and self.last_ok is not None:
            replay = dict(self.last_ok)
            if self.push:
                replay["lease_expires_ms"] = _far()
            self._forge(handler, replay)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length")}
        answer = self._upstream.request(method, handler.path, content=body, headers=headers)
        content = answer.content
        if self.hint_ttl is not None and method == "POST" and handler.path == "/v1/authorize":
            parsed = orjson.loads(content)
            parsed["warrant"]["lease_ttl_ms"] = self.hint_ttl  # unsigned: only a hint
            self._forge(handler, parsed)
            return
        if self.drop_position and method == "POST" and handler.path == "/v1/executions":
            parsed = orjson.loads(content)
            parsed.pop("log_index", None)  # not under the lease signature
            self._forge(handler, parsed)
            return
        if self.start is not None and method == "POST" and handler.path == "/v1/executions":
            parsed = orjson.loads(content)
            if self.start == "unsigned":
                parsed.pop("lease_sig", None)
            parsed["lease_ttl_ms"] = HOUR_MS
            if self.start_execution is not None:
                parsed["execution"] = self.start_execution
            self._forge(handler, parsed)
            return
        if renewal and answer.status_code == 200:
            parsed = orjson.loads(content)
            if parsed.get("ok") is True:
                self.last_ok = parsed
            elif self.mode == "rewritten":
                parsed.update(ok=True, lease_expires_ms=_far())
                parsed.pop("terminate", None)
                self._forge(handler, parsed)
                return
        self._send(handler, answer.status_code, content, answer.headers.get("content-type", "text/plain"))

    def _forge(self, handler: BaseHTTPRequestHandler, answer: dict[str, Any]) -> None:
        self.forged += 1
        self._send(handler, 200, orjson.dumps(answer))

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, body: bytes, kind: str = "application/json"
    ) -> None:
        handler.send_response(status)
        handler.send_header("content-type", kind)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        """Stop serving."""
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()


def _far() -> int:
    return int(time.time() * 1000) + HOUR_MS


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    server = GovernorServer(tmp_path_factory.mktemp("forgery"), policy=POLICIES / "run")
    yield server
    server.stop()


def wait_for(lines: list[str], pattern: str) -> None:
    assert any(re.search(pattern, line) for line in lines), f"no stderr line matches {pattern!r}: {lines}"


@pytest.mark.parametrize(
    ("mode", "push"),
    [("unsigned", False), ("replayed", False), ("replayed", True), ("rewritten", False)],
    ids=["unsigned-ok", "replayed-signed-ok", "replayed-with-far-expiry", "refusal-rewritten-to-ok"],
)
def test_a_revoked_execution_dies_at_lease_end_although_the_governor_on_the_path_says_ok(
    gov: GovernorServer, mode: str, push: bool
) -> None:
    proxy = RewritingProxy(gov.url)
    marker = "lease-forgery-" + secrets.token_hex(6)
    run = subprocess.Popen(
        [sys.executable, "-m", "proctor", "run", "--server", proxy.url, "--key", str(gov.key), "--",
         sys.executable, str(TREE), marker],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        for line in run.stderr or []:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + WAIT
        while len(marked(marker, exclude=b"proctor\x00run")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marked(marker, exclude=b"proctor\x00run"), "the governed tree never started"
        # Through the proxy, untouched: the genuine signed renewals keep the lease (control).
        while proxy.last_ok is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2 * TTL)
        assert run.poll() is None, "the tree died although its renewals were genuine"
        proxy.push, proxy.mode = push, mode
        started = [
            m.group(1) for line in list(lines) if (m := re.search(r"execution (ex_\w+) started", line))
        ]
        assert len(started) == 1, lines
        with GovernorClient(gov.url, PrincipalKey.load(gov.data / "keys" / "admin.key"), timeout=30) as c:
            c.json("POST", "/v1/revocations", {"kind": "execution", "target": started[0], "reason": "test"})
        assert run.wait(timeout=WAIT) == 79
        reader.join(timeout=WAIT)
        assert proxy.forged > 0, "the proxy never answered a renewal itself"
        wait_for(lines, r"answer not accepted")
        wait_for(lines, rf"execution {started[0]} terminated: lease-lost")
        assert marked(marker, exclude=b"proctor\x00run") == []
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=WAIT)
        reader.join(timeout=WAIT)
        if run.stderr is not None:
            run.stderr.close()
        proxy.close()
        for pid in marked(marker):  # only when the enforcer was killed: its orphans
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("start", ["unsigned", "ttl"], ids=["unsigned", "an-hours-ttl"])
def test_a_start_answer_not_signed_for_its_request_starts_nothing(gov: GovernorServer, start: str) -> None:
    """A start answer rewritten on the path is not accepted: nothing runs, and the start
    the governor did record is finished ``failed`` (``start-failed``) at once."""
    proxy = RewritingProxy(gov.url)
    proxy.start = start  # the answer claims a lease of an hour
    try:
        done = subprocess.run(
            [sys.executable, "-m", "proctor", "run", "--server", proxy.url, "--key", str(gov.key), "--",
             "echo", "ran"],
            capture_output=True, text=True, timeout=WAIT, check=False,
        )  # fmt: skip
    finally:
        proxy.close()
    assert proxy.forged == 1
    assert done.returncode == 77, done.stderr
    assert done.stdout == ""
    assert "answer not accepted" in done.stderr
    # The governor recorded the start it answered: it is finished now, not left running
    # until its lease lapses (then read as a lost supervisor).
    found = re.search(r"execution (ex_\w+) was recorded, but its answer was not accepted", done.stderr)
    assert found, done.stderr
    with GovernorClient(gov.url, PrincipalKey.load(gov.data / "keys" / "admin.key"), timeout=30) as c:
        shown = c.json("GET", f"/v1/executions/{found.group(1)}")
    assert (shown["status"], shown["reason"]) == ("failed", "start-failed"), shown


def run_through(proxy: RewritingProxy, gov: GovernorServer) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "proctor", "run", "--server", proxy.url, "--key", str(gov.key), "--",
             "echo", "ran"],
            capture_output=True, text=True, timeout=WAIT, check=False,
        )  # fmt: skip
    finally:
        proxy.close()


def shown_execution(gov: GovernorServer, execution: str) -> dict[str, Any]:
    with GovernorClient(gov.url, PrincipalKey.load(gov.data / "keys" / "admin.key"), timeout=30) as c:
        shown: dict[str, Any] = c.json("GET", f"/v1/executions/{execution}")
    return shown


def test_a_rewritten_lease_hint_ends_the_start_it_refused(gov: GovernorServer) -> None:
    """The authorization's answer says another lease TTL than the warrant's (a hint, not
    signed): the genuine signed start answer then does not match it and is refused, the
    warrant verifies but not the hinted terms, nothing runs — and the start the governor
    recorded under that verified warrant is finished at once, not left holding the
    warrant and a running slot until its lease lapses."""
    proxy = RewritingProxy(gov.url)
    proxy.hint_ttl = HOUR_MS
    done = run_through(proxy, gov)
    assert proxy.forged == 1
    assert done.returncode == 77, done.stderr
    assert done.stdout == ""
    found = re.search(r"execution (ex_\w+) was recorded, but its answer was not accepted", done.stderr)
    assert found, done.stderr
    shown = shown_execution(gov, found.group(1))  # well before its 2 s lease could lapse
    assert (shown["status"], shown["reason"]) == ("failed", "start-failed"), shown


def test_a_start_answer_without_its_log_position_starts_nothing(gov: GovernorServer) -> None:
    """The start answer is genuine and signed, but its ``log_index`` (the position the
    enforcer follows revocations from, outside the signature) was removed on the path:
    the command does not start, and the recorded start is finished."""
    proxy = RewritingProxy(gov.url)
    proxy.drop_position = True
    done = run_through(proxy, gov)
    assert proxy.forged == 1
    assert done.returncode == 77, done.stderr
    assert done.stdout == ""
    found = re.search(r"execution (ex_\w+): the start answer has no log position to follow", done.stderr)
    assert found, done.stderr
    shown = shown_execution(gov, found.group(1))
    assert (shown["status"], shown["reason"]) == ("failed", "start-failed"), shown


def test_a_start_answer_naming_another_run_does_not_end_it(gov: GovernorServer) -> None:
    """The rewritten start answer names another running execution of the same principal:
    the run that was refused finishes by that id only with its own verified warrant, and
    the governor ends nothing that does not run under it (409): the other run goes on."""
    marker = "other-run-" + secrets.token_hex(6)
    other = subprocess.Popen(
        [sys.executable, "-m", "proctor", "run", "--server", gov.url, "--key", str(gov.key), "--",
         sys.executable, str(TREE), marker],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        for line in other.stderr or []:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proxy = RewritingProxy(gov.url)
    try:
        deadline = time.monotonic() + WAIT
        started: list[str] = []
        while not started and time.monotonic() < deadline:
            started = [
                m.group(1) for line in list(lines) if (m := re.search(r"execution (ex_\w+) started", line))
            ]
            time.sleep(0.05)
        assert started, lines
        proxy.start, proxy.start_execution = "unsigned", started[0]
        done = subprocess.run(
            [sys.executable, "-m", "proctor", "run", "--server", proxy.url, "--key", str(gov.key), "--",
             "echo", "ran"],
            capture_output=True, text=True, timeout=WAIT, check=False,
        )  # fmt: skip
        assert done.returncode == 77, done.stderr
        assert done.stdout == ""
        assert f"execution {started[0]} was recorded, but its answer was not accepted" in done.stderr
        assert "refused to record the end" in done.stderr, done.stderr  # the governor's 409
        with GovernorClient(gov.url, PrincipalKey.load(gov.data / "keys" / "admin.key"), timeout=30) as c:
            shown = c.json("GET", f"/v1/executions/{started[0]}")
        assert shown["status"] == "running", shown
        assert other.poll() is None, "the other run ended"
    finally:
        proxy.close()
        if other.poll() is None:
            other.send_signal(signal.SIGTERM)
            other.wait(timeout=WAIT)
        reader.join(timeout=WAIT)
        if other.stderr is not None:
            other.stderr.close()
        for pid in marked(marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_a_governor_whose_renewals_are_forged_is_passed_over_for_the_next(tmp_path: Path) -> None:
    a, b = GovernorServer.nodes(tmp_path, 2, policy=POLICIES / "run")
    proxy = RewritingProxy(a.url)
    proxy.hang_streams = True  # A stays asked first until one of its answers is not accepted
    marker = "lease-forgery-" + secrets.token_hex(6)
    run = subprocess.Popen(
        [sys.executable, "-m", "proctor", "run", "--server", f"{proxy.url},{b.url}", "--key", str(a.key),
         "--", sys.executable, str(TREE), marker],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert run.stderr is not None
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(run.stderr or []), daemon=True).start()  # line by line
    moved = f"{b.url} asked first from now on ({proxy.url}: {proxy.url}: answer not accepted"
    try:
        deadline = time.monotonic() + WAIT
        while proxy.last_ok is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proxy.mode = "unsigned"  # A's renewals forged from now on: no answer from A
        while not any(moved in line for line in list(seen)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(moved in line for line in list(seen)), seen
        time.sleep(2 * TTL)  # leases renewed through B
        assert run.poll() is None, seen
        assert marked(marker, exclude=b"proctor\x00run"), "the tree died although B renewed its lease"
    finally:
        run.kill()
        run.wait(timeout=WAIT)
        run.stderr.close()
        proxy.close()
        for pid in marked(marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for server in (a, b):
            server.stop()
