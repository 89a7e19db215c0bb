"""Governor nodes witnessing each other (issue 12: "each node … verifies a consistency
proof from the last checkpoint it cosigned, cosigns, and refuses — with a
``witness.alarm`` event, a metric and a non-ready state — on any inconsistency").

Three ``proctor serve --shared --witness DIR`` processes on one data directory (and on
one PostgreSQL database), each
with its own witness key and state, each cosigning through its own cosigner with the
policy "two of the three nodes" (``[witnesses]``). The log is witnessed by the nodes;
with one node stopped the other two still make the quorum; a fork of the log (a copy
of the data directory grown apart, re-signed with the same key) submitted to the nodes
is refused by each: a ``witness.alarm`` event in the deployment's log, a metric, and
every node not ready.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

import gov_server
from gov_server import GovernorServer, cli
from gov_support import EXE
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient
from proctor.store.sqlite import SQLiteStore
from witness_support import append_events, fork_copy, write_policy

pytestmark = pytest.mark.slow

POLICIES = Path(__file__).parent / "policies"
NAMES = ("node-a", "node-b", "node-c")


def _wait(what: str, check: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _verify(data: Path, policy: Path, store: str | None = None) -> tuple[int, dict[str, Any]]:
    at = () if store is None else ("--store", store)
    done = cli(
        "log", "verify", "--data", str(data), "--witness-policy", str(policy), "--json", *at, check=False
    )
    return done.returncode, json.loads(done.stdout)


def _authorize(server: GovernorServer, *argv: str) -> None:
    request = {"action": "exec", "resource": "/bin/echo", "argv": ["echo", *argv], "executable_digest": EXE}
    with GovernorClient(server.url, PrincipalKey.load(server.key), timeout=30) as c:
        assert c.authorize(request)["decision"]["allow"]


def _deploy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str | None) -> SimpleNamespace:
    """One data directory (alice, a policy; its log and state in ``store`` if given), a
    fork copy of it, three witness directories, a 2-of-3 policy of the nodes' witnesses in
    ``[witnesses]``, and the three nodes."""
    data = tmp_path / "data"
    at = () if store is None else ("--store", store)
    cli("init", "--data", str(data), "--origin", "nodes.example/log", *at)
    cli(
        "principal",
        "add",
        "alice",
        "--attr",
        "role=dev",
        "--out",
        str(data / "alice.key"),
        "--data",
        str(data),
        *at,
    )
    cli("policy", "push", str(POLICIES / "run"), "--data", str(data), *at)
    fork = fork_copy(data, tmp_path / "fork")  # the same key; from here the two may grow apart
    ports = [gov_server.free_port() for _ in NAMES]
    witnesses = []
    for name, port in zip(NAMES, ports, strict=True):
        wdir = tmp_path / f"witness-{name}"
        cli("witness", "init", "--data", str(wdir), "--name", f"{name}.nodes.example/witness")
        vkey = cli("witness", "key", "--data", str(wdir)).stdout.strip()
        witnesses.append((name, vkey, f"http://127.0.0.1:{port}/witness"))
    key = (data / "keys" / "log.pub").read_text().strip()
    policy = write_policy(data / "witnesses.txt", logs=[key], witnesses=witnesses, quorum="two")
    policy.write_text(
        policy.read_text().replace("quorum two", "group two 2 " + " ".join(NAMES) + "\nquorum two")
    )
    with (data / "config.toml").open("a") as f:
        f.write('\n[witnesses]\npolicy = "witnesses.txt"\ninterval_ms = 200\n')
    # Each node on the port its policy line names (chosen above; the server takes the next one).
    chosen = iter(ports)
    monkeypatch.setattr(gov_server, "free_port", lambda: next(chosen, 0) or gov_server.free_port())
    home = cast(GovernorServer, SimpleNamespace(data=data, store=store))
    nodes = [
        GovernorServer(
            tmp_path / name,
            beside=home,
            serve_args=("--shared", "--node", name, "--witness", str(tmp_path / f"witness-{name}")),
        )
        for name in NAMES
    ]
    monkeypatch.undo()
    assert [n.port for n in nodes] == ports
    return SimpleNamespace(data=data, fork=fork, policy=policy, nodes=nodes, witnesses=witnesses, store=store)


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """Three nodes on one SQLite data directory (:func:`_deploy`)."""
    deployed = _deploy(tmp_path, monkeypatch, None)
    yield deployed
    for node in deployed.nodes:
        node.stop()


@pytest.fixture
def pg_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_dsn: str) -> Iterator[SimpleNamespace]:
    """Three nodes on one PostgreSQL database (:func:`_deploy`)."""
    deployed = _deploy(tmp_path, monkeypatch, pg_dsn)
    yield deployed
    for node in deployed.nodes:
        node.stop()


def _two_of_three(deployment: SimpleNamespace) -> None:
    data, policy, store, (a, b, c) = deployment.data, deployment.policy, deployment.store, deployment.nodes
    _authorize(a, "one")
    _authorize(b, "two")
    _wait("the log witnessed by two of the three nodes", lambda: _verify(data, policy, store)[0] == 0)

    # Each node cosigned, as a witness, at its own port.
    origin = hashlib.sha256(b"nodes.example/log").hexdigest()
    for node in (a, b, c):
        served = httpx.get(f"{node.url}/witness/{origin}/checkpoint", timeout=30)
        assert served.status_code == 200, served.text
        metrics = httpx.get(node.url + "/metrics", timeout=30).text
        assert 'proctor_witness_requests_total{outcome="cosigned"}' in metrics
        assert "proctor_witness_open_alarms 0.0" in metrics
        ready = httpx.get(node.url + "/readyz", timeout=30).json()
        assert ready["checks"]["witness"] == "ok", ready

    # Node c stops: the other two still witness every new checkpoint.
    c.stop()
    _authorize(a, "three")
    size = int(httpx.get(a.url + "/v1/log/checkpoint", timeout=30).text.split("\n")[1])

    def witnessed_now() -> bool:
        code, report = _verify(data, policy, store)
        return code == 0 and report["witnessed"]["witnessed_size"] >= size

    _wait("the grown log witnessed by the two nodes left", witnessed_now)


def test_three_nodes_witness_each_other_and_two_of_three_make_the_quorum(deployment: SimpleNamespace) -> None:
    _two_of_three(deployment)


@pytest.mark.postgres
def test_three_nodes_on_postgresql_witness_each_other_and_two_of_three_make_the_quorum(
    pg_deployment: SimpleNamespace,
) -> None:
    _two_of_three(pg_deployment)


def test_a_fork_submitted_to_the_nodes_raises_an_alarm_in_the_log_a_metric_and_stops_readiness(
    deployment: SimpleNamespace,
) -> None:
    data, fork, policy, nodes = deployment.data, deployment.fork, deployment.policy, deployment.nodes
    _authorize(nodes[0], "honest")
    _wait("the honest log witnessed", lambda: _verify(data, policy)[0] == 0)
    honest = int(httpx.get(nodes[0].url + "/v1/log/checkpoint", timeout=30).text.split("\n")[1])

    # The fork: the same key, another history of at least the witnessed size.
    append_events(fork, *(f"forked-{i}" for i in range(honest)))
    done = cli("log", "cosign", "--data", str(fork), "--witness-policy", str(policy), "--json", check=False)
    assert done.returncode == 1, done.stdout
    outcomes = {w["witness"]: w["outcome"] for w in json.loads(done.stdout)["witnesses"]}
    assert outcomes == dict.fromkeys(NAMES, "inconsistent")

    for node in nodes:
        ready = httpx.get(node.url + "/readyz", timeout=30)
        assert ready.status_code == 503
        assert "inconsistent checkpoint" in ready.json()["checks"]["witness"]
        metrics = httpx.get(node.url + "/metrics", timeout=30).text
        assert "proctor_witness_alarms_total 1.0" in metrics
        assert "proctor_witness_open_alarms 1.0" in metrics

    # Each node's witness.alarm event is in the deployment's log, with its evidence.
    def alarms() -> list[dict[str, Any]]:
        store = SQLiteStore(data / "proctor.db")
        try:
            found = [json.loads(raw) for _, raw in store.entries(0, store.tree_size())]
        finally:
            store.close()
        return [e for e in found if e["type"] == "witness.alarm"]

    _wait("three witness.alarm events in the log", lambda: len(alarms()) == 3)
    assert {e["node"] for e in alarms()} == {f"{n}.nodes.example/witness" for n in NAMES}
    assert all(e["submitted"]["checkpoint"].startswith("nodes.example/log\n") for e in alarms())

    # The witnesses kept the honest view: the honest log is still witnessed as it grows.
    _authorize(nodes[1], "later")
    size = int(httpx.get(nodes[1].url + "/v1/log/checkpoint", timeout=30).text.split("\n")[1])
    _wait(
        "the honest log witnessed after the alarm",
        lambda: (r := _verify(data, policy))[0] == 0 and r[1]["witnessed"]["witnessed_size"] >= size,
    )
