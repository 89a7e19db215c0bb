"""Enforcers fail over across governors, or fail closed within the lease TTL (issue 12:
"A node cut off ...: its enforcers fail over or fail closed within the lease TTL").

Real parts: two ``proctor serve --shared`` processes on one data directory, real
``proctor run`` enforcers, and :class:`tcp_proxy.TcpProxy` in front of a governor to
cut it off silently (a hang, not a refusal) or make it answer 503 (not ready). The
policy's lease TTL is 2 s (``policies/run``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest

from gov_exec import measured
from gov_server import GovernorServer
from gov_support import EXE
from proc_support import alive, marked
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient
from proctor.enforcement._failover import Governors
from tcp_proxy import TcpProxy

POLICIES = Path(__file__).parent / "policies"
TREE = Path(__file__).parent / "procs" / "tree.py"
TTL = 2.0  # @lease_ttl_s("2") in policies/run/run.cedar
WAIT = 60.0  # generous bound on every wait for an event

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GovernorServer]]:
    servers = GovernorServer.nodes(tmp_path_factory.mktemp("failover"), 2, policy=POLICIES / "run")
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def proxy(nodes: list[GovernorServer]) -> Iterator[TcpProxy]:
    front = TcpProxy(nodes[0].port)
    yield front
    front.close()


class Enforcer:
    """``proctor run`` of ``tree.py MARKER`` in a child process; its stderr collected."""

    def __init__(self, servers: str, key: Path) -> None:
        self.marker = "proctor-failover-" + secrets.token_hex(6)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proctor", "run", "--server", servers, "--key", str(key), "--",
             sys.executable, str(TREE), self.marker],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (fails after WAIT seconds, or once
        stderr ended without one)."""
        deadline = time.monotonic() + WAIT
        with self._changed:
            while True:
                for line in self.lines:
                    if found := re.search(pattern, line):
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(f"no stderr line matches {pattern!r}: {self.lines}")
                self._changed.wait(timeout=min(left, 0.5))

    def started(self) -> str:
        execution = self.wait_for(r"execution (ex_[A-Za-z0-9_-]+) started").group(1)
        deadline = time.monotonic() + WAIT
        while len(marked(self.marker)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        return execution

    def tree(self) -> list[int]:
        return marked(self.marker, exclude=b"proctor\x00run")  # the governed processes only

    def exit_code(self) -> int:
        return self.proc.wait(timeout=WAIT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        for pid in marked(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def revoke(server: GovernorServer, execution: str) -> None:
    with GovernorClient(server.url, PrincipalKey.load(server.data / "keys" / "admin.key"), timeout=30) as c:
        c.json("POST", "/v1/revocations", {"kind": "execution", "target": execution, "reason": "test"})


def test_an_enforcer_whose_governor_is_cut_off_renews_through_the_next_and_still_obeys_revocations(
    nodes: list[GovernorServer], proxy: TcpProxy
) -> None:
    _, b = nodes
    run = Enforcer(f"{proxy.url},{b.url}", nodes[0].key)
    try:
        execution = run.started()
        proxy.drop()  # governor A goes silent: its enforcer sees a hang
        run.wait_for(re.escape(f"{b.url} asked first from now on ({proxy.url}: "))
        time.sleep(3 * TTL)  # several leases later, renewed through B
        assert run.proc.poll() is None, run.lines
        assert run.tree(), "the tree died although B renewed its lease"
        revoke(b, execution)
        assert run.exit_code() == 79
        run.wait_for(rf"execution {execution} terminated: revoked")
        assert run.tree() == []
    finally:
        run.stop()


def test_an_enforcer_cut_off_from_its_only_governor_kills_the_tree_within_the_lease_ttl(
    nodes: list[GovernorServer], proxy: TcpProxy
) -> None:
    run = Enforcer(proxy.url, nodes[0].key)
    try:
        run.started()
        tree = run.tree()
        assert tree
        cut = time.monotonic()
        proxy.drop()
        deadline = cut + WAIT
        while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.01)
        dead = time.monotonic() - cut
        assert not any(alive(pid) for pid in tree), "the tree outlived its lease"
        assert dead <= TTL + 2.0, f"the tree died {dead:.2f} s after the cut; the lease is {TTL} s"
        assert run.exit_code() == 79  # as for any lost lease
        run.wait_for(r"terminated: lease-lost")
    finally:
        run.stop()


def test_a_governor_answering_503_not_ready_is_passed_over_for_the_next(
    nodes: list[GovernorServer], proxy: TcpProxy
) -> None:
    _, b = nodes
    run = Enforcer(f"{proxy.url},{b.url}", nodes[0].key)
    try:
        execution = run.started()
        proxy.not_ready()  # A answers every request 503, as a node that lost its store
        run.wait_for(re.escape(f"{b.url} asked first from now on ({proxy.url}: "))
        time.sleep(3 * TTL)
        assert run.proc.poll() is None, run.lines
        revoke(b, execution)
        assert run.exit_code() == 79
        assert not any("lease-lost" in line for line in run.lines), run.lines
    finally:
        run.stop()


def test_a_governor_not_ready_at_the_start_is_passed_over_and_the_command_runs(
    nodes: list[GovernorServer], proxy: TcpProxy
) -> None:
    _, b = nodes
    proxy.not_ready()
    done = subprocess.run(
        [sys.executable, "-m", "proctor", "run", "--server", proxy.url, "--server", b.url,
         "--key", str(nodes[0].key), "--", "echo", "ran"],
        capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran\n"


class Impostor(BaseHTTPRequestHandler):
    """A governor of another deployment that would renew anything: it presents its own
    keys, and answers every renewal ``ok``."""

    asked: ClassVar[list[str]] = []
    keys: ClassVar[bool] = True  # False: it has no keys to show (404), like any other web server

    def do_GET(self) -> None:
        if not Impostor.keys:
            self._send(404, b'{"detail": "Not Found"}', "application/json")
        elif self.path == "/v1/warrant-key":
            self._send(200, base64.b64encode(b"\x01" * 32) + b"\n", "text/plain")
        elif self.path == "/v1/log/key":
            self._send(200, b"other.example/log+01234567+AQIDBA==\n", "text/plain")
        else:
            self._send(404, b"{}", "application/json")

    def do_POST(self) -> None:
        Impostor.asked.append(self.path)
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        ok = {"ok": True, "lease_expires_ms": int(time.time() * 1000) + 60_000, "bundle": "x"}
        self._send(200, json.dumps(ok).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("keys", "why"),
    [(True, "its warrant key differs"), (False, "it refused to show its keys: HTTP 404")],
    ids=["other-keys", "no-keys"],
)
def test_a_governor_of_another_deployment_in_the_list_cannot_keep_the_lease(
    nodes: list[GovernorServer], proxy: TcpProxy, keys: bool, why: str
) -> None:
    impostor = HTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    Impostor.asked, Impostor.keys = [], keys
    run = Enforcer(f"{proxy.url},http://127.0.0.1:{impostor.server_port}", nodes[0].key)
    try:
        run.started()
        proxy.drop()  # only the impostor is left to answer
        assert run.exit_code() == 79
        run.wait_for(re.escape(f"is not a governor of this deployment ({why})"))
        run.wait_for(r"terminated: lease-lost")
        assert not [p for p in Impostor.asked if p.endswith("/renew")], Impostor.asked
        assert run.tree() == []
    finally:
        run.stop()
        impostor.shutdown()
        impostor.server_close()


def test_a_revocation_recorded_while_the_stream_switches_governors_is_not_missed(
    nodes: list[GovernorServer], proxy: TcpProxy
) -> None:
    a, b = nodes
    key = PrincipalKey.load(a.key)
    request = {"action": "exec", "resource": "/bin/echo", "argv": ["echo", "s"], "executable_digest": EXE}
    with GovernorClient(b.url, key, timeout=30) as c:
        token = c.authorize(request)["warrant"]["token"]
        body = {"warrant": token, **{k: request[k] for k in ("action", "resource", "argv")}}
        started = c.json("POST", "/v1/executions", {**body, "measurement": measured()})
        root = base64.b64decode(c.text("/v1/warrant-key").strip())
    execution = str(started["execution"])
    governors = Governors([proxy.url, b.url], key)
    governors.trust(root)
    revoked, stop = threading.Event(), threading.Event()

    def on_message(message: dict[str, Any]) -> None:
        if message.get("type") == "revocation" and message.get("target") == execution:
            revoked.set()

    follower = threading.Thread(
        target=governors.follow,
        args=(f"execution={execution}", int(started["log_index"]), on_message, stop),
        daemon=True,
    )
    follower.start()
    try:
        deadline = time.monotonic() + WAIT
        while not governors._streams and time.monotonic() < deadline:  # open on A, through the proxy
            time.sleep(0.01)
        assert governors._streams, "the event stream did not open on A"
        proxy.drop()  # A goes silent with the stream open on it ...
        revoke(b, execution)  # ... and the revocation is recorded meanwhile, through B
        assert not revoked.is_set()  # A delivered nothing
        # The next renewal finds A silent and B answering: the stream moves to B and
        # resumes after the last seq it saw, so the revocation is replayed, not missed.
        renewal = governors.request("POST", f"/v1/executions/{execution}/renew", {}, timeout=1.0)
        assert renewal.url == b.url
        assert revoked.wait(WAIT), "the revocation recorded while switching never arrived"
    finally:
        stop.set()
        governors.close()


def test_with_two_governors_silent_the_third_is_still_asked_before_the_lease_ends(tmp_path: Path) -> None:
    # A 6 s lease: each of three attempts gets a third of the 4 s left at a renewal
    # (rule 3), so the third governor has over a second to answer, however loaded the machine.
    policy = tmp_path / "policy"
    policy.mkdir()
    text = (POLICIES / "run" / "run.cedar").read_text().replace('@lease_ttl_s("2")', '@lease_ttl_s("6")')
    (policy / "run.cedar").write_text(text)
    a, b = GovernorServer.nodes(tmp_path / "nodes", 2, policy=policy)
    first, second = TcpProxy(a.port), TcpProxy(a.port)
    run = Enforcer(f"{first.url},{second.url},{b.url}", a.key)
    try:
        execution = run.started()
        first.drop()
        second.drop()
        run.wait_for(re.escape(f"{b.url} asked first from now on ({first.url}: "))
        time.sleep(2 * 6.0)  # two leases later, renewed through the third
        assert run.proc.poll() is None, run.lines
        revoke(b, execution)
        assert run.exit_code() == 79
        assert not any("lease-lost" in line for line in run.lines), run.lines
    finally:
        run.stop()
        for front in (first, second):
            front.close()
        for server in (a, b):
            server.stop()


@pytest.mark.postgres
def test_on_postgresql_an_enforcer_whose_governor_is_cut_off_renews_through_the_next(
    tmp_path: Path, pg_dsn: str
) -> None:
    a = GovernorServer(
        tmp_path / "a", policy=POLICIES / "run", store=pg_dsn, serve_args=("--shared", "--node", "node-a")
    )
    # B has a data directory of its own, a copy of A's keys and configuration (another host's).
    shutil.copytree(a.data, tmp_path / "b" / "data", ignore=shutil.ignore_patterns("*.lock"))
    other_host = cast(GovernorServer, types.SimpleNamespace(data=tmp_path / "b" / "data", store=a.store))
    b = GovernorServer(tmp_path / "b", beside=other_host, serve_args=("--shared", "--node", "node-b"))
    front = TcpProxy(a.port)
    run = Enforcer(f"{front.url},{b.url}", a.key)
    try:
        execution = run.started()
        front.drop()
        run.wait_for(re.escape(f"{b.url} asked first from now on ({front.url}: "))
        time.sleep(3 * TTL)
        assert run.proc.poll() is None, run.lines
        revoke(b, execution)
        assert run.exit_code() == 79
        run.wait_for(rf"execution {execution} terminated: revoked")
    finally:
        run.stop()
        front.close()
        for server in (b, a):
            server.stop()
