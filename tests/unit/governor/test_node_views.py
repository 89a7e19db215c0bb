"""How the nodes are shown (:func:`proctor.governor.nodes.nodes_view`, ``proctor nodes``
for a person): stale past :data:`STALE_AFTER_MS` whatever the row says, a stopped node
stays stopped, lag never negative, and text from the store escaped on a terminal."""

from __future__ import annotations

import pytest

from proctor.cli_nodes import _text
from proctor.errors import RequestShapeError, StoreError
from proctor.governor.nodes import STALE_AFTER_MS, nodes_view
from proctor.store.state_nodes import NodeRecord

NOW = 1_700_000_000_000


def row(
    name: str, *, age_ms: int = 0, status: str = "serving", applied: int = 10, reason: str = ""
) -> NodeRecord:
    return NodeRecord(
        name, "i-" + name, "eu-1", "1.0", "http://x", NOW - 60_000, NOW - age_ms, applied, status, reason
    )


@pytest.mark.parametrize(
    ("stored", "age_ms", "shown"),
    [
        ("serving", STALE_AFTER_MS, "serving"),
        ("serving", STALE_AFTER_MS + 1, "stale"),
        ("not ready", STALE_AFTER_MS + 1, "stale"),
        ("stopped", 10 * STALE_AFTER_MS, "stopped"),
    ],
    ids=["fresh", "stale", "stale-not-ready", "stopped-stays-stopped"],
)
def test_an_old_heartbeat_is_stale_whatever_the_row_says(stored: str, age_ms: int, shown: str) -> None:
    (node,) = nodes_view([row("a", age_ms=age_ms, status=stored)], log_size=10, now_ms=NOW)["nodes"]
    assert node["status"] == shown


def test_lag_is_never_negative() -> None:
    # A row written after the reader read the log size may claim more than it saw.
    (node,) = nodes_view([row("a", applied=12)], log_size=10, now_ms=NOW)["nodes"]
    assert node["lag"] == 0


def test_a_zone_filter_must_be_a_zone() -> None:
    with pytest.raises(RequestShapeError, match="zone: expected"):
        nodes_view([], log_size=0, now_ms=NOW, zone="eu 1")


@pytest.mark.parametrize(
    "change",
    [{"status": "stale"}, {"applied": -1}, {"name": ""}, {"zone": "x" * 300}, {"heartbeat_ms": "1"}],
    ids=["status-stale-is-never-stored", "negative-applied", "no-name", "long-zone", "text-time"],
)
def test_a_malformed_node_record_is_refused(change: dict[str, object]) -> None:
    fields = row("a").__dict__ | change
    with pytest.raises(StoreError, match="node"):
        NodeRecord(**fields)


def test_a_person_sees_the_stored_text_escaped() -> None:
    nodes = [row("a", age_ms=STALE_AFTER_MS + 1, status="not ready", reason="log: \x1b[2J gone")]
    shown = _text(nodes_view(nodes, log_size=10, now_ms=NOW))
    assert "\x1b" not in shown
    assert "\\x1b[2J" in shown
    assert "stale" in shown
