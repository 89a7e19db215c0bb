"""The database stops mid-run (issue 12, must hold): a real ``proctor serve`` on a real
PostgreSQL that the test stops and starts again, real ``proctor run`` enforcers.

While the database is down the governor fails closed: no authorization is allowed, no
execution starts, no lease is renewed (the enforcers kill their trees when their leases
end, exit 79 ``lease-lost``), and ``/readyz`` answers 503 naming the store. When the
database is back the governor recovers by itself, without a restart: its connection
pool replaces the broken connections, the log writer reloads the stored tree (checked
against its signed checkpoint) and goes on. Nothing it acknowledged is lost, the log has
no gap, ``proctor log verify --store`` passes and receipts issued before the outage
still verify; also when the server crashes (``immediate``) in the middle of a burst of
concurrent authorizations: every "allow" answered is in the log, every request that
failed was answered with a deny or an error, never an allow.

The scenario of rules (a) to (d) runs once (a module fixture) and each test checks one
rule on what it observed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from gov_server import GovernorServer, cli
from gov_support import EXE
from pg_support import PgCluster
from proc_support import marked
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient, GovernorError

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

POLICIES = Path(__file__).parent / "policies"  # "run": a 2 s lease for role=dev
TREE = Path(__file__).parent / "procs" / "tree.py"
WAIT = 120.0  # seconds: generous, the machine is shared; the tests wait on events


def echo(tag: str) -> dict[str, Any]:
    return {"action": "exec", "resource": "/bin/echo", "argv": ["echo", tag], "executable_digest": EXE}


@dataclass(frozen=True)
class Answer:
    """One authorization's answer: ``allow``, ``deny`` (both with the decision's log
    index, or -1 if the governor said none) or ``error`` (an HTTP error or none)."""

    kind: str
    index: int = -1
    request_digest: str = ""
    detail: str = ""


def authorize(client: GovernorClient, tag: str) -> Answer:
    try:
        got = client.authorize(echo(tag))
    except GovernorError as e:
        return Answer("error", detail=f"HTTP {e.status}: {e}")
    except httpx.HTTPError as e:
        return Answer("error", detail=repr(e))
    decision = got["decision"]
    index = got.get("log_index")
    return Answer(
        "allow" if decision["allow"] else "deny",
        -1 if index is None else int(index),
        str(decision.get("request_digest", "")),
        str(decision.get("reason", "")),
    )


def logged_entries(dsn: str) -> list[tuple[int, dict[str, Any]]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=30) as conn:
        rows = conn.execute("SELECT idx, data FROM entries ORDER BY idx").fetchall()
    return [(int(i), json.loads(bytes(d))) for i, d in rows]


def assert_acknowledged_are_logged(answers: list[Answer], dsn: str) -> None:
    """Every answer that carried a log index is that index's decision in the log, and the
    log's entries are 0..size-1 without a gap."""
    entries = logged_entries(dsn)
    assert [i for i, _ in entries] == list(range(len(entries))), "the log has a gap"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=30) as conn:
        (size,) = conn.execute("SELECT tree_size FROM log_head").fetchone() or (-1,)
    assert size == len(entries)
    by_index = dict(entries)
    for a in answers:
        if a.index < 0:
            continue
        event = by_index.get(a.index)
        assert event is not None, f"acknowledged {a.kind} at {a.index} is not in the log"
        assert event["type"] == "decision"
        assert event["decision"] == a.kind
        assert event["request_digest"] == a.request_digest


def readiness(url: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(url + "/readyz", timeout=WAIT)
    return answer.status_code, answer.json()


def wait_ready(url: str) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + WAIT
    status: int = 0
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            status, body = readiness(url)
            if status == 200:
                break
        time.sleep(0.2)
    return status, body


def wait_gone(marker: str) -> list[int]:
    deadline = time.monotonic() + WAIT
    while marked(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return marked(marker)


def settled_statuses(server: GovernorServer) -> list[str]:
    """The executions' statuses once none is running (the sweeper closes lapsed leases)."""
    deadline = time.monotonic() + WAIT
    while True:
        listed = server.admin("executions", "list", "--status", "all", "--json")
        statuses = [e["status"] for e in json.loads(listed.stdout)["executions"]]
        if "running" not in statuses or time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


def run(server: GovernorServer, *command: str, receipt: Path | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "proctor", "run", "--server", server.url, "--key", str(server.key)]
    if receipt is not None:
        args += ["--receipt", str(receipt)]
    return subprocess.Popen(
        [*args, "--", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def kill_marked(marker: str) -> None:
    for pid in marked(marker):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


MODES = ["exclusive", "shared"]


def governors(root: Path, dsn: str, mode: str, origin: str) -> list[GovernorServer]:
    """One exclusive ``proctor serve`` on ``dsn``, or two ``--shared`` ones."""
    if mode == "exclusive":
        return [GovernorServer(root, policy=POLICIES / "run", origin=origin, store=dsn)]
    first = GovernorServer(
        root / "node-a", policy=POLICIES / "run", origin=origin, store=dsn,
        serve_args=("--shared", "--node", "node-a"),
    )  # fmt: skip
    return [first, GovernorServer(root / "node-b", beside=first, serve_args=("--shared", "--node", "node-b"))]


@dataclass
class Outage:
    """What the scenario saw (module docstring); per governor where a list."""

    mode: str
    dsn: str
    data: Path
    log_key: str
    answers: list[Answer] = field(default_factory=list)  # every authorization, in order
    before_receipt: Path | None = None
    during: list[Answer] = field(default_factory=list)
    ready_during: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    run_during: tuple[int, str] = (0, "")
    ran_during: bool = False
    tree_left: list[int] = field(default_factory=list)
    enforcer: tuple[int, str] = (0, "")
    same_processes_after: bool = False
    ready_after: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    after: list[Answer] = field(default_factory=list)
    run_after: tuple[int, str] = (0, "")
    statuses_after: list[str] = field(default_factory=list)
    serve_err: str = ""


@pytest.fixture(scope="module", params=MODES)
def outage(
    request: pytest.FixtureRequest, pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outage]:
    mode: str = request.param
    root = tmp_path_factory.mktemp(f"pg-outage-{mode}")
    name = pg_cluster.create_database()
    dsn = pg_cluster.dsn(name)
    servers = governors(root, dsn, mode, "outage.example/gov")
    server = servers[0]  # the enforcers' governor
    seen = Outage(mode, dsn, server.data, (server.data / "keys" / "log.pub").read_text().strip())
    marker = "proctor-test-" + secrets.token_hex(6)
    enforcer: subprocess.Popen[str] | None = None
    clients = [GovernorClient(s.url, PrincipalKey.load(server.key), timeout=WAIT) for s in servers]
    try:
        pids = [s.proc.pid if s.proc is not None else -1 for s in servers]
        # Before: a governed command with its receipt, and authorizations answered.
        seen.before_receipt = root / "before.json"
        done = run(server, "sh", "-c", "echo before", receipt=seen.before_receipt)
        out, err = done.communicate(timeout=WAIT)
        assert (done.returncode, out) == (0, "before\n"), err
        seen.answers += [authorize(c, f"before-{i}-{n}") for i in range(3) for n, c in enumerate(clients)]
        assert {a.kind for a in seen.answers} == {"allow"}
        # A long-running tree under a 2 s lease, renewed until the database goes.
        enforcer = run(server, sys.executable, str(TREE), marker)
        assert enforcer.stderr is not None
        assert enforcer.stdout is not None
        assert re.search(r"execution ex_\w+ started", enforcer.stderr.readline())
        assert enforcer.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # a renewal or two went through

        pg_cluster.stop()
        try:
            seen.during = [authorize(c, f"during-{i}-{n}") for i in range(2) for n, c in enumerate(clients)]
            seen.ready_during = [readiness(s.url) for s in servers]
            touched = root / "ran-during"
            started = run(server, "sh", "-c", f"echo ran > {touched}")
            out, err = started.communicate(timeout=WAIT)
            seen.run_during = (started.returncode, err)
            seen.ran_during = touched.exists()
            seen.tree_left = wait_gone(marker)
            enforcer.wait(timeout=WAIT)
            seen.enforcer = (enforcer.returncode, enforcer.stderr.read())
        finally:
            pg_cluster.start()
        seen.ready_after = [wait_ready(s.url) for s in servers]
        seen.same_processes_after = all(
            s.proc is not None and s.proc.pid == pid and s.proc.poll() is None
            for s, pid in zip(servers, pids, strict=True)
        )
        seen.after = [authorize(c, f"after-{i}-{n}") for i in range(3) for n, c in enumerate(clients)]
        seen.statuses_after = settled_statuses(server)
        done = run(server, "sh", "-c", "echo after", receipt=root / "after.json")
        out, err = done.communicate(timeout=WAIT)
        seen.run_after = (done.returncode, out)
        seen.answers += seen.during + seen.after
        for s in servers:
            s.stop()
        seen.serve_err = "".join(s.log_path.read_text() for s in servers)
        yield seen
    finally:
        for c in clients:
            c.close()
        if enforcer is not None:
            if enforcer.poll() is None:
                enforcer.kill()
            enforcer.wait(timeout=30)
            for pipe in (enforcer.stdout, enforcer.stderr):
                if pipe is not None:
                    pipe.close()
        kill_marked(marker)
        if not pg_cluster.running():
            pg_cluster.start()
        for s in servers:
            s.stop()
        pg_cluster.drop_database(name)


def test_without_its_database_a_governor_allows_nothing(outage: Outage) -> None:
    assert outage.during, "no authorization was tried during the outage"
    assert [a.kind for a in outage.during if a.kind == "allow"] == []
    # Not recorded, so nothing acknowledged: no log index handed out.
    assert all(a.index == -1 for a in outage.during), outage.during


def test_without_its_database_a_governor_reports_not_ready_naming_the_store(outage: Outage) -> None:
    assert outage.ready_during
    for status, body in outage.ready_during:
        assert status == 503, body
        assert body["ready"] is False
        store = body["checks"]["store"]
        assert store.startswith("error: "), store
        assert "dbname=" in store, store  # which database (its DSN, redacted)
        assert "password=***" in store or ":***@" in store, store


def test_without_its_database_no_execution_starts(outage: Outage) -> None:
    code, err = outage.run_during
    assert outage.ran_during is False, err
    assert code in (3, 77), err  # unavailable or denied, never run


def test_without_its_database_running_executions_die_at_lease_expiry(outage: Outage) -> None:
    assert outage.tree_left == [], "processes of the governed tree outlived their lease"
    code, err = outage.enforcer
    assert code == 79, err
    assert "lease-lost" in err


def test_after_the_outage_no_execution_is_left_running(outage: Outage) -> None:
    # The tree killed during the outage is closed in the store once it is back (the
    # enforcer's report or the sweeper's lapsed lease), not left "running" for ever.
    assert outage.statuses_after
    assert "running" not in outage.statuses_after, outage.statuses_after


def test_when_its_database_returns_a_governor_recovers_without_a_restart(outage: Outage) -> None:
    assert [status for status, _ in outage.ready_after] == [200] * len(outage.ready_after), outage.ready_after
    assert outage.same_processes_after
    assert outage.after
    assert {a.kind for a in outage.after} == {"allow"}, outage.after
    assert outage.run_after == (0, "after\n")


def test_after_the_outage_nothing_acknowledged_is_lost_and_the_log_verifies(outage: Outage) -> None:
    assert_acknowledged_are_logged(outage.answers, outage.dsn)
    verified = cli("log", "verify", "--data", str(outage.data), "--store", outage.dsn, "--json")
    assert json.loads(verified.stdout)["ok"] is True
    assert outage.before_receipt is not None
    checked = cli("verify", str(outage.before_receipt), "--log-key", outage.log_key)
    assert json.loads(checked.stdout)["ok"] is True


def test_the_password_of_the_store_is_never_printed_during_an_outage(outage: Outage) -> None:
    from psycopg.conninfo import conninfo_to_dict

    secret = str(conninfo_to_dict(outage.dsn)["password"])
    assert secret not in outage.serve_err
    assert secret not in json.dumps(outage.ready_during)
    assert all(secret not in a.detail for a in outage.answers)


@pytest.mark.parametrize("mode", MODES)
def test_a_database_crash_mid_burst_loses_no_allow_that_was_answered(
    pg_cluster: PgCluster, pg_dsn: str, tmp_path: Path, mode: str
) -> None:
    servers = governors(tmp_path, pg_dsn, mode, "burst.example/gov")
    answers: list[Answer] = []
    lock = threading.Lock()
    stop = threading.Event()
    crashed = threading.Event()

    def work(n: int) -> None:
        server = servers[n % len(servers)]
        with GovernorClient(server.url, PrincipalKey.load(servers[0].key), timeout=WAIT) as client:
            i = 0
            while not stop.is_set():
                got = authorize(client, f"burst-{n}-{i}")
                i += 1
                with lock:
                    answers.append(got)
                if got.kind != "allow" and crashed.is_set():
                    time.sleep(0.05)  # no busy loop against a governor that refuses

    def count(kind: str) -> int:
        with lock:
            return sum(1 for a in answers if a.kind == kind)

    def wait_for(kind: str, at_least: int) -> None:
        deadline = time.monotonic() + WAIT
        while count(kind) < at_least and time.monotonic() < deadline:
            time.sleep(0.01)
        assert count(kind) >= at_least, f"expected {at_least} {kind} answers, found {count(kind)}"

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    try:
        for t in threads:
            t.start()
        wait_for("allow", 30)
        crashed.set()
        pg_cluster.stop("immediate")  # as a crash: the server recovers from its WAL
        try:
            failed_before = count("deny") + count("error")
            deadline = time.monotonic() + WAIT
            while count("deny") + count("error") < failed_before + 6 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            pg_cluster.start()
        allowed_before = count("allow")
        for server in servers:
            status, body = wait_ready(server.url)
            assert status == 200, body
        wait_for("allow", allowed_before + 12)  # and it authorizes again, by itself
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=WAIT)
        for server in servers:
            server.stop()
    assert count("deny") + count("error") >= 6, "the burst never met the outage"
    # Every allow carried its index; every failure was a deny or an error.
    assert all(a.index >= 0 for a in answers if a.kind == "allow")
    assert {a.kind for a in answers} <= {"allow", "deny", "error"}
    assert_acknowledged_are_logged(answers, pg_dsn)
    verified = cli("log", "verify", "--data", str(servers[0].data), "--store", pg_dsn, "--json")
    assert json.loads(verified.stdout)["ok"] is True
