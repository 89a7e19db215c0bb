"""Three governor nodes on one PostgreSQL database (issue 12, ADR 0016 "PostgreSQL"):
real ``proctor serve --shared`` processes, each with a data directory of its own (a copy
of the keys and configuration that one ``proctor init --store`` wrote, as on separate
hosts), and real ``proctor run`` enforcers.

The rules: a revocation issued on node A kills an execution leased from node C (the
follower woken by ``LISTEN/NOTIFY``); a nonce used on A is refused on B; concurrent
authorizations on all three make one tree, with no gap and no duplicate index, whose
every checkpoint is consistent with every later one (checked here and, when Go is
installed, by Go's ``x/mod`` verifier: ``PROCTOR_REQUIRE_GO=1`` makes its absence a
failure); ``max_running`` holds across nodes (the transition lock is an advisory lock
in the database, not a file on one host); an exclusive governor does not join shared
nodes on one database, whatever its data directory; ``--workers N`` serves PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import psycopg
import pytest

from gov_exec import echo_request, start_body
from gov_server import GovernorServer, cli, revoke_across
from gov_server import client_of as client
from gov_support import held_commits
from pg_support import PgCluster
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.client import GovernorError
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.log import Log
from proctor.lineage.proofs import ConsistencyProof
from proctor.store.postgres import PostgresLogStore

POLICIES = Path(__file__).parent / "policies"
GO_MAIN = Path(__file__).resolve().parents[1] / "interop" / "go" / "main.go"
GOCODE = Path("/usr/share/gocode")

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def pg_nodes(
    root: Path, dsn: str, count: int, *, config: str = "", extra: tuple[str, ...] = ()
) -> list[GovernorServer]:
    """``count`` ``proctor serve --shared`` on the database ``dsn``, named ``node-a`` ...;
    the first data directory made by ``proctor init --store``, each other a copy of it."""
    first = GovernorServer(
        root / "node-a",
        policy=POLICIES / "run",
        config=config,
        store=dsn,
        serve_args=("--shared", "--node", "node-a", *extra),
    )
    servers = [first]
    for n in "bcdefgh"[: count - 1]:
        servers.append(
            GovernorServer(
                root / f"node-{n}",
                beside=copied(first, root / f"node-{n}" / "data"),
                serve_args=("--shared", "--node", f"node-{n}", *extra),
            )
        )
    assert len({s.data for s in servers}) == count  # each node its own data directory
    return servers


def copied(server: GovernorServer, to: Path) -> GovernorServer:
    """A copy of ``server``'s data directory (keys, configuration, alice's key) at
    ``to``, standing for another host's; as a ``beside`` for :class:`GovernorServer`."""
    shutil.copytree(server.data, to, ignore=shutil.ignore_patterns("*.lock"))
    assert not (to / "proctor.db").exists()  # the store is the database, not a file
    return cast(GovernorServer, types.SimpleNamespace(data=to, store=server.store))


@pytest.fixture(scope="module")
def module_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    name = pg_cluster.create_database()
    yield pg_cluster.dsn(name)
    if not pg_cluster.running():
        pg_cluster.start()
    pg_cluster.drop_database(name)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, module_dsn: str) -> Iterator[list[GovernorServer]]:
    servers = pg_nodes(tmp_path_factory.mktemp("pg-nodes"), module_dsn, 3)
    yield servers
    for server in servers:
        server.stop()


def test_a_nonce_used_on_node_a_is_refused_on_node_b(nodes: list[GovernorServer]) -> None:
    a, b, c = nodes
    headers = sign_request("GET", "/v1/executions", b"", PrincipalKey.load(a.key), now=int(time.time()))
    assert httpx.get(a.url + "/v1/executions", headers=headers, timeout=30).status_code == 200
    for other in (b, c, a):
        answer = httpx.get(other.url + "/v1/executions", headers=headers, timeout=30)
        assert answer.status_code == 401, answer.text
        assert answer.json()["reason"] == "replayed"


def test_every_node_listens_for_changes_and_claims_the_database_shared(
    nodes: list[GovernorServer], module_dsn: str
) -> None:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        sessions: dict[str, int] = dict(
            conn.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() "
                "AND application_name IN ('proctor-listen', 'proctor-serving', 'proctor-announce') "
                "GROUP BY application_name"
            ).fetchall()
        )
        shared_claims = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    # Each node listens (log appends, other nodes' revocations) and has its session to
    # announce its own revocations before they are recorded (ADR 0021).
    each = len(nodes)
    assert sessions == {"proctor-listen": each, "proctor-serving": each, "proctor-announce": each}
    assert shared_claims == (len(nodes),)


def test_a_revocation_on_node_a_kills_an_execution_leased_from_node_c(nodes: list[GovernorServer]) -> None:
    a, _, c = nodes
    total, after, watched, status = revoke_across(a, c, "pg-nodes-tree-" + secrets.token_hex(6))
    assert watched >= 1
    assert status == 79
    print(
        f"\nPostgreSQL: revocation on node A -> tree leased from node C dead: {total:.1f} ms from the call ({total - after:.1f} ms of it the call, until A answered)"
    )


def test_concurrent_authorizations_across_nodes_make_one_consistent_tree(
    nodes: list[GovernorServer], module_dsn: str, tmp_path: Path
) -> None:
    per_thread, threads_per_node = 15, 2
    failures: list[str] = []

    def work(server: GovernorServer) -> None:
        with client(server) as c:
            for i in range(per_thread):
                answer = c.authorize(echo_request(f"t{i}"))
                if not answer["decision"]["allow"]:
                    failures.append(str(answer))

    workers = [threading.Thread(target=work, args=(s,)) for s in nodes for _ in range(threads_per_node)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=180)
    assert failures == []
    # The log and the state rows agree, from a node's own data directory.
    verified = json.loads(
        cli("log", "verify", "--data", str(nodes[2].data), "--store", module_dsn, "--json").stdout
    )
    assert verified["ok"] is True, verified
    size = int(verified["size"])
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        count, low, high = conn.execute("SELECT count(*), min(idx), max(idx) FROM entries").fetchone() or (
            0,
            0,
            0,
        )
    assert (count, low, high) == (size, 0, size - 1)  # no gap, no duplicate (idx is the key)
    store = PostgresLogStore(module_dsn)
    try:
        events = [json.loads(data) for _, data in store.entries(0, size)]
        stored = [(s, note) for s, note in store.checkpoints() if s <= size]
    finally:
        store.close()
    decisions = [e for e in events if e["type"] == "decision"]
    assert {d["node"] for d in decisions} >= {"node-a", "node-b", "node-c"}
    with Log.open(nodes[1].data, store=module_dsn) as log:
        latest = open_checkpoint(log.checkpoint(), log.verifier)
        assert latest.size >= size
        # Every stored checkpoint verifies and is a prefix of the latest; prefixes of one
        # tree are prefixes of each other, so each is consistent with every later one.
        for old_size, note in stored:
            old = open_checkpoint(note, log.verifier)
            assert old.size == old_size
            if 0 < old_size < latest.size:
                proof = ConsistencyProof.from_json(log.consistency_proof(old_size, latest.size))
                proof.verify(old.root_hash, latest.root_hash)
        doc = {
            "vkey": log.verifier_key(),
            "checkpoint": log.checkpoint(),
            "leaves": [
                {
                    "index": i,
                    "data_b64": base64.b64encode(log.leaf(i)).decode(),
                    "proof": log.inclusion_proof(i, latest.size)["hashes"],
                }
                for i in range(latest.size)
            ],
            "consistency": [
                {
                    "old_checkpoint": note,
                    "old_size": old_size,
                    "new_size": latest.size,
                    "hashes": log.consistency_proof(old_size, latest.size)["hashes"],
                }
                for old_size, note in stored
                if 0 < old_size < latest.size
            ],
        }
    checked = go_verify(doc, tmp_path)
    if checked is not None:
        assert checked["ok"] is True, checked
        assert checked["leaves_verified"] == latest.size
        assert checked["consistency_verified"] == len(doc["consistency"])


def go_verify(doc: dict[str, Any], work: Path) -> dict[str, Any] | None:
    """Go's ``x/mod`` verifier's answer on ``doc`` (``tests/interop/go/main.go``, as
    ``test_go_interop.py`` builds it), or ``None`` without Go (a failure under
    ``PROCTOR_REQUIRE_GO=1``)."""
    go = shutil.which("go")
    sumdb = GOCODE / "src" / "golang.org" / "x" / "mod" / "sumdb"
    if go is None or not (sumdb / "tlog" / "tlog.go").is_file():
        if os.environ.get("PROCTOR_REQUIRE_GO") == "1":
            pytest.fail("Go or the x/mod sources are missing and PROCTOR_REQUIRE_GO=1 is set")
        return None
    binary = work / "proctor-go-verify"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": str(GOCODE),
        "GOFLAGS": "",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "GOENV": "off",
        "GOCACHE": str(work / "gocache"),
        "CGO_ENABLED": "0",
    }
    built = subprocess.run(
        [go, "build", "-o", str(binary), GO_MAIN.name],
        cwd=GO_MAIN.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    done = subprocess.run(
        [str(binary)], input=json.dumps(doc), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"Go rejected the nodes' tree: {done.stdout} {done.stderr}"
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_an_exclusive_governor_does_not_join_shared_nodes_on_one_database(
    nodes: list[GovernorServer], tmp_path: Path
) -> None:
    # Its own data directory (another host's): the governors.lock file cannot see the
    # nodes; the claim in the database does.
    other = copied(nodes[0], tmp_path / "data")
    proc = cli("serve", "--data", str(other.data), "--port", "0", check=False, timeout=60,
               env=os.environ | {"PROCTOR_STORE": str(nodes[0].store)})  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "an exclusive governor" not in proc.stderr
    assert "other governors serve the database" in proc.stderr
    assert "--shared" in proc.stderr


def test_max_running_holds_across_nodes_on_one_database(tmp_path: Path, pg_dsn: str) -> None:
    servers = pg_nodes(tmp_path, pg_dsn, 3, config="[quotas.principals.alice]\nmax_running = 2\n")
    try:
        with client(servers[0]) as c:
            tokens = [c.authorize(echo_request(f"q{i}"))["warrant"]["token"] for i in range(6)]
        answers: list[int] = []
        barrier = threading.Barrier(len(tokens))

        def start(server: GovernorServer, token: str, i: int) -> None:
            with client(server) as c:
                barrier.wait()
                try:
                    c.json("POST", "/v1/executions", start_body(token, f"q{i}"))
                    answers.append(201)
                except GovernorError as e:
                    answers.append(e.status)

        threads = [
            threading.Thread(target=start, args=(servers[i % 3], token, i)) for i, token in enumerate(tokens)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sorted(answers) == [201, 201, 429, 429, 429, 429]
    finally:
        for server in servers:
            server.stop()


def test_workers_serve_a_postgresql_store(tmp_path: Path, pg_dsn: str) -> None:
    server = GovernorServer(tmp_path, policy=POLICIES / "run", store=pg_dsn, serve_args=("--workers", "2"))
    try:
        with client(server) as c:
            for i in range(10):
                assert c.authorize(echo_request(f"w{i}"))["decision"]["allow"] is True
        headers = sign_request(
            "GET", "/v1/executions", b"", PrincipalKey.load(server.key), now=int(time.time())
        )
        codes = [
            httpx.get(server.url + "/v1/executions", headers=headers, timeout=30).status_code
            for _ in range(4)
        ]
        assert codes == [200, 401, 401, 401]  # a new connection each: either worker, once
    finally:
        server.stop()
    verified = json.loads(
        cli("log", "verify", "--data", str(server.data), "--store", pg_dsn, "--json").stdout
    )
    assert verified["ok"] is True


def test_a_revocation_reaches_another_nodes_streams_before_it_is_recorded(
    tmp_path: Path, pg_dsn: str
) -> None:
    """ADR 0021: node A announces a revocation to the other nodes (``NOTIFY`` outside any
    transaction) as soon as it is queued; node C's streams have it while A's commit is
    still held back, and the recorded copy follows once A commits."""
    import asyncio

    from proctor.governor.service import Governor

    server = GovernorServer(tmp_path / "init", policy=POLICIES / "run", store=pg_dsn)
    server.stop()  # only its initialised data directory and database are wanted
    a = Governor(server.data, node="node-a", shared=True, store=pg_dsn)
    c = Governor(server.data, node="node-c", shared=True, store=pg_dsn)
    digest = "sha256:" + secrets.token_hex(32)  # a bundle may be revoked before it is ever pushed

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        queue = c.broadcaster.subscribe()
        try:
            with held_commits(a.log._store) as (holding, release):
                revoking = asyncio.ensure_future(
                    asyncio.to_thread(a.revoke, "policy", digest, reason="leaked", by="admin")
                )
                early = await asyncio.wait_for(queue.get(), 20)
                assert await asyncio.to_thread(holding.wait, 20)
                assert not revoking.done()  # A's commit is still held: C heard it first
                release.set()
                await asyncio.wait_for(revoking, 20)
            recorded = await asyncio.wait_for(queue.get(), 20)
            return early, recorded
        finally:
            c.broadcaster.unsubscribe(queue)

    try:
        early, recorded = asyncio.run(scenario())
    finally:
        a.close()
        c.close()
    assert early == {"type": "revocation", "seq": -1, "kind": "policy", "target": digest, "recorded": False}
    assert (recorded["target"], "recorded" in recorded) == (digest, False)
    assert recorded["seq"] >= 0
