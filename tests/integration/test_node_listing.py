"""``GET /v1/nodes`` and ``proctor nodes`` end to end: real ``proctor serve`` processes
in different zones, each listing every node of the store (with their zone, URL,
version, heartbeat and lag), over HTTP, through the CLI with ``--server``, and from the
store directly; a node stopped cleanly is listed ``stopped``, a killed one turns
``stale`` (the in-process rules: ``tests/conformance/test_node_registry.py``)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_server import GovernorServer, cli
from proctor import __version__
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient

POLICIES = Path(__file__).parent / "policies"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GovernorServer]]:
    root = tmp_path_factory.mktemp("zoned")
    first = GovernorServer(
        root / "node-a",
        policy=POLICIES / "run",
        serve_args=("--shared", "--node", "node-a", "--zone", "eu-1"),
    )
    second = GovernorServer(
        root / "node-b", beside=first, serve_args=("--shared", "--node", "node-b", "--zone", "us-1")
    )
    yield [first, second]
    for server in (first, second):
        server.stop()


def over_http(server: GovernorServer, target: str = "/v1/nodes") -> dict[str, Any]:
    with GovernorClient(server.url, PrincipalKey.load(server.key), timeout=30) as client:
        doc: dict[str, Any] = client.json("GET", target)
    return doc


def eventually(what: str, read: Callable[[], dict[str, Any]], holds: Callable[[dict[str, Any]], bool]) -> Any:
    deadline = time.monotonic() + 60
    while True:
        doc = read()
        if holds(doc):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: never held; last seen {doc}")
        time.sleep(0.2)


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in doc["nodes"]}


def both_serving(doc: dict[str, Any]) -> bool:
    shown = by_name(doc)
    return all(
        shown.get(n, {}).get("status") == "serving" and shown[n]["lag"] == 0 for n in ("node-a", "node-b")
    )


def test_each_node_lists_every_node_with_its_zone_url_and_version(zoned: list[GovernorServer]) -> None:
    a, b = zoned
    for server in (a, b):
        doc = eventually(f"{server.url} lists both", functools.partial(over_http, server), both_serving)
        shown = by_name(doc)
        assert (shown["node-a"]["zone"], shown["node-b"]["zone"]) == ("eu-1", "us-1")
        assert (shown["node-a"]["url"], shown["node-b"]["url"]) == (a.url, b.url)
        assert {n["version"] for n in doc["nodes"]} == {__version__}
        assert all(n["applied"] == doc["log_size"] - n["lag"] for n in doc["nodes"])
    only_us = over_http(a, "/v1/nodes?zone=us-1")
    assert [n["node"] for n in only_us["nodes"]] == ["node-b"]


def test_proctor_nodes_lists_them_through_a_server_and_from_the_store(zoned: list[GovernorServer]) -> None:
    a, b = zoned
    eventually("both listed", lambda: over_http(a), both_serving)
    through_b = json.loads(cli("nodes", "--server", b.url, "--data", str(b.data), "--json").stdout)
    offline = json.loads(cli("nodes", "--data", str(a.data), "--json").stdout)  # beside running governors
    for doc in (through_b, offline):
        assert {n: s["zone"] for n, s in by_name(doc).items()}.items() >= {
            ("node-a", "eu-1"),
            ("node-b", "us-1"),
        }
    eu = json.loads(cli("nodes", "--data", str(a.data), "--zone", "eu-1", "--json").stdout)
    assert [n["node"] for n in eu["nodes"]] == ["node-a"]
    bad = cli("nodes", "--data", str(a.data), "--zone", "not a zone", check=False)
    assert bad.returncode == 2
    assert "zone: expected" in bad.stderr
    gone = cli("nodes", "--server", "http://127.0.0.1:9", "--data", str(a.data), check=False)
    assert gone.returncode == 3


def test_a_node_stopped_cleanly_is_listed_stopped_and_a_killed_one_turns_stale(
    zoned: list[GovernorServer], tmp_path: Path
) -> None:
    a = zoned[0]
    stopping = GovernorServer(tmp_path / "c", beside=a, serve_args=("--shared", "--node", "node-c"))
    killed = GovernorServer(tmp_path / "d", beside=a, serve_args=("--shared", "--node", "node-d"))
    read = functools.partial(over_http, a)

    def status(doc: dict[str, Any], node: str) -> str | None:
        return by_name(doc).get(node, {}).get("status")

    eventually("c and d serving", read, lambda d: status(d, "node-c") == status(d, "node-d") == "serving")
    stopping.stop()
    killed.kill()
    killed.stop()
    assert status(read(), "node-c") == "stopped"
    stale = eventually("d stale", read, lambda d: status(d, "node-d") == "stale")
    assert "no heartbeat for" in by_name(stale)["node-d"]["reason"]


@pytest.mark.postgres
def test_a_node_on_postgresql_is_listed_with_its_zone(pg_dsn: str, tmp_path: Path) -> None:
    gov = GovernorServer(
        tmp_path, policy=POLICIES / "run", store=pg_dsn, serve_args=("--node", "pg-1", "--zone", "eu-2")
    )
    try:
        doc = eventually("pg-1 listed", lambda: over_http(gov), lambda d: "pg-1" in by_name(d))
        assert (by_name(doc)["pg-1"]["zone"], by_name(doc)["pg-1"]["url"]) == ("eu-2", gov.url)
        offline = json.loads(cli("nodes", "--data", str(gov.data), "--store", pg_dsn, "--json").stdout)
        assert by_name(offline)["pg-1"]["status"] == "serving"
    finally:
        gov.stop()
    offline = json.loads(cli("nodes", "--data", str(gov.data), "--store", pg_dsn, "--json").stdout)
    assert by_name(offline)["pg-1"]["status"] == "stopped"
