"""The nodes registry (issue 12, "zones"): every serving governor keeps a row with its
zone, version, heartbeat and log position; ``GET /v1/nodes`` shows them to an active
principal, reports an old heartbeat as ``stale`` whatever the row says, computes the
lag itself, and a second process cannot take a live node's name
(:mod:`proctor.governor.nodes`, :mod:`proctor.store.state_nodes`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from asgi_support import call, signed
from proctor import __version__
from proctor.authorization.keys import PrincipalKey
from proctor.governor.app import GovernorApp, create_app
from proctor.governor.nodes import STALE_AFTER_MS, NodeHeartbeat, NodeMetrics
from proctor.governor.service import Governor


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def heartbeat(gov: Governor, clock: Clock, **kw: Any) -> NodeHeartbeat:
    options: dict[str, Any] = {
        "node": "gov-a",
        "zone": "eu-1",
        "url": "http://127.0.0.1:8701",
        "applied": lambda: gov.log.size,
        "readiness": gov.ready,
        "clock": clock,
    }
    return NodeHeartbeat(gov.state, **(options | kw))


def nodes(app: GovernorApp, key: PrincipalKey | None, target: str = "/v1/nodes") -> Any:
    return call(app, "GET", target, headers=signed(key, "GET", target) if key is not None else [])


def listed(app: GovernorApp, key: PrincipalKey, target: str = "/v1/nodes") -> dict[str, Any]:
    answer = nodes(app, key, target)
    assert answer.status == 200, answer.body
    doc: dict[str, Any] = answer.json()
    return doc


def test_a_serving_node_records_its_zone_version_url_and_position(governor: Governor, gov_data: Path) -> None:
    """A serving node records its zone, version, URL and position."""
    clock = Clock(governor.now())
    beat = heartbeat(governor, clock)
    assert beat.beat() is True
    doc = listed(create_app(governor), PrincipalKey.load(gov_data / "alice.key"))
    (node,) = doc["nodes"]
    assert doc["log_size"] == governor.log.size
    assert (node["node"], node["zone"], node["version"], node["url"]) == (
        "gov-a",
        "eu-1",
        __version__,
        "http://127.0.0.1:8701",
    )
    assert (node["status"], node["reason"], node["applied"], node["lag"]) == (
        "serving",
        "",
        governor.log.size,
        0,
    )
    assert node["heartbeat_ms"] == int(clock.now * 1000)
    assert 0 <= node["heartbeat_age_ms"] < STALE_AFTER_MS


def test_the_heartbeat_advances(governor: Governor) -> None:
    clock = Clock(1_000_000.0)
    beat = heartbeat(governor, clock)
    beat.beat()
    first = governor.state.node("gov-a")
    clock.now += 1.5
    beat.beat()
    second = governor.state.node("gov-a")
    assert first is not None
    assert second is not None
    assert second.heartbeat_ms - first.heartbeat_ms == 1500
    assert second.started_ms == first.started_ms


def test_lag_is_the_log_size_the_reader_read_minus_what_the_node_applied(
    governor: Governor, gov_data: Path
) -> None:
    behind = heartbeat(governor, Clock(governor.now()), node="gov-b", applied=lambda: 3)
    behind.beat()
    # The node's word on the log size is not asked: the reader's own read decides.
    doc = listed(create_app(governor), PrincipalKey.load(gov_data / "alice.key"))
    (node,) = doc["nodes"]
    assert node["applied"] == 3
    assert node["lag"] == governor.log.size - 3 > 0


def test_a_node_that_stopped_cleanly_is_marked_stopped(governor: Governor, gov_data: Path) -> None:
    beat = heartbeat(governor, Clock(governor.now()))
    beat.start()
    beat.close()
    (node,) = listed(create_app(governor), PrincipalKey.load(gov_data / "alice.key"))["nodes"]
    assert node["status"] == "stopped"


def test_a_stuck_heartbeat_never_holds_up_a_shutdown_nor_overtakes_the_stopped_mark(
    governor: Governor,
) -> None:
    inside, release = threading.Event(), threading.Event()
    calls = [0]

    def slow_after_the_first() -> tuple[bool, dict[str, str]]:
        calls[0] += 1
        if calls[0] > 1:  # the store answers slowly from now on
            inside.set()
            release.wait(60)
        return governor.ready()

    beat = heartbeat(governor, Clock(governor.now()), readiness=slow_after_the_first, interval_ms=10)
    beat.start()
    assert inside.wait(60)
    beat.close(timeout_s=0.2)  # returns while the beat is stuck
    row = governor.state.node("gov-a")
    assert row is not None
    assert row.status == "serving"
    release.set()  # the stuck beat lands, then the stopped mark after it
    deadline = time.monotonic() + 60
    while (row := governor.state.node("gov-a")) is not None and row.status != "stopped":
        assert time.monotonic() < deadline, row
        time.sleep(0.01)


def test_a_node_whose_heartbeat_is_old_is_reported_stale_whatever_its_row_says(
    governor: Governor, gov_data: Path
) -> None:
    # A node that died (SIGKILL, power) or lost the store says "serving" forever.
    beat = heartbeat(governor, Clock(governor.now() - 60))
    beat.beat()
    (node,) = listed(create_app(governor), PrincipalKey.load(gov_data / "alice.key"))["nodes"]
    assert node["status"] == "stale"
    assert node["heartbeat_age_ms"] >= 60_000
    assert "no heartbeat for" in node["reason"]
    assert "it last said: serving" in node["reason"]


def test_a_node_that_is_not_ready_says_why(governor: Governor, gov_data: Path) -> None:
    def failing() -> tuple[bool, dict[str, str]]:
        return False, {"store": "ok", "log": "error: cannot durably record: disk full"}

    heartbeat(governor, Clock(governor.now()), readiness=failing).beat()
    (node,) = listed(create_app(governor), PrincipalKey.load(gov_data / "alice.key"))["nodes"]
    assert (node["status"], node["reason"]) == ("not ready", "log: error: cannot durably record: disk full")


def test_a_second_process_cannot_take_the_name_of_a_live_node(governor: Governor) -> None:
    clock = Clock(governor.now())
    first = heartbeat(governor, clock)
    impostor = heartbeat(governor, clock, zone="us-1", url="http://elsewhere")
    assert first.beat() is True
    assert impostor.beat() is False
    assert impostor.snapshot() == (1, 1)
    assert impostor.last_error is not None
    assert "another live process serves as node" in impostor.last_error
    row = governor.state.node("gov-a")
    assert row is not None
    assert (row.instance, row.zone) == (first.instance, "eu-1")
    # Once the first is gone (stale), the name may be served again.
    clock.now += (STALE_AFTER_MS + 1000) / 1000
    assert impostor.beat() is True
    row = governor.state.node("gov-a")
    assert row is not None
    assert row.zone == "us-1"
    first.close()  # only its own row is stopped: the new owner's stays
    row = governor.state.node("gov-a")
    assert row is not None
    assert row.status == "serving"


def test_a_failed_heartbeat_is_counted_and_never_raised(governor: Governor, gov_data: Path) -> None:
    def broken() -> tuple[bool, dict[str, str]]:
        raise RuntimeError("readiness exploded")

    beat = heartbeat(governor, Clock(governor.now()), readiness=broken)
    assert beat.beat() is False
    assert beat.snapshot() == (1, 1)
    assert beat.last_error is not None
    assert "readiness exploded" in beat.last_error
    assert governor.state.node("gov-a") is None


def test_the_failures_are_in_the_metrics(governor: Governor) -> None:
    app = create_app(governor)
    beat = heartbeat(governor, Clock(governor.now()), readiness=lambda: 1 / 0)
    app.metrics.registry.register(NodeMetrics(beat))
    beat.beat()
    beat.beat()
    text = call(app, "GET", "/metrics").body.decode()
    assert "proctor_node_heartbeats_total 2.0" in text
    assert "proctor_node_heartbeat_failures_total 2.0" in text


def test_v1_nodes_needs_a_signature_from_an_active_principal(governor: Governor, gov_data: Path) -> None:
    """/v1/nodes needs a signature from an active principal."""
    heartbeat(governor, Clock(governor.now())).beat()
    app = create_app(governor)
    governor.set_principal_status("bob", "suspended", by="admin")
    assert nodes(app, None).status == 401
    assert nodes(app, PrincipalKey.load(gov_data / "bob.key")).status == 403
    assert nodes(app, PrincipalKey.load(gov_data / "alice.key")).status == 200


def test_v1_nodes_filters_by_zone_and_refuses_a_malformed_zone(governor: Governor, gov_data: Path) -> None:
    """/v1/nodes filters by zone and refuses a malformed zone."""
    clock = Clock(governor.now())
    heartbeat(governor, clock).beat()
    heartbeat(governor, clock, node="gov-b", zone="us-1").beat()
    heartbeat(governor, clock, node="gov-c", zone="").beat()
    app, alice = create_app(governor), PrincipalKey.load(gov_data / "alice.key")
    assert [n["node"] for n in listed(app, alice)["nodes"]] == ["gov-a", "gov-b", "gov-c"]
    assert [n["node"] for n in listed(app, alice, "/v1/nodes?zone=us-1")["nodes"]] == ["gov-b"]
    assert [n["node"] for n in listed(app, alice, "/v1/nodes?zone=")["nodes"]] == ["gov-c"]
    assert nodes(app, alice, "/v1/nodes?zone=%1b%5b2J").status == 422
