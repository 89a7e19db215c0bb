"""The health page's numbers (proctor.console.health_data) and its rendering
(proctor.console.health_pages), on a real governor in a temporary directory.

Rules: percentiles as PromQL's ``histogram_quantile``; the snapshot's numbers are the
registry's (``/metrics``); one reading per interval however many ask; anyone sees a
node's public fields only; a governor that is not ready is shown not ready; markup in
what the governor reports is text.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gov_support import POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.console import mount
from proctor.console.health_data import HealthMonitor, Reading, for_viewer, quantile, read_registry
from proctor.console.health_pages import HealthStreams, shown
from proctor.errors import StreamLimitError
from proctor.governor.app import create_app
from proctor.governor.service import Governor, initialize

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(1.0, 0.0), (2.0, 0.0), (INF, 0.0)], None),
        (0.5, [(1.0, 10.0), (2.0, 10.0), (INF, 10.0)], 0.5),
        (0.5, [(1.0, 0.0), (2.0, 10.0), (INF, 10.0)], 1.5),
        (0.99, [(1.0, 50.0), (2.0, 100.0), (INF, 100.0)], 1.98),
        (0.99, [(1.0, 1.0), (2.0, 1.0), (INF, 100.0)], 2.0),
        (1.0, [(1.0, 5.0), (2.0, 5.0), (INF, 5.0)], 1.0),
    ],
    ids=[
        "nothing-counted",
        "first-bucket-from-zero",
        "interpolated",
        "p99",
        "inf-bucket-largest-bound",
        "max",
    ],
)
def test_quantiles_are_promql_histogram_quantile(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    found = quantile(q, buckets)
    assert found == pytest.approx(expected) if expected is not None else found is None


@pytest.mark.parametrize("q", [-0.1, 1.5, math.nan], ids=["below", "above", "nan"])
def test_a_quantile_outside_zero_to_one_is_an_error(q: float) -> None:
    with pytest.raises(ValueError, match="expected a quantile"):
        quantile(q, [(1.0, 1.0), (INF, 1.0)])


def test_a_rate_and_percentiles_are_the_difference_of_two_readings() -> None:
    before = {
        'proctor_decisions_total{outcome="allow"}': 10.0,
        'proctor_decisions_total{outcome="deny"}': 0.0,
        'proctor_decision_seconds_bucket{le="0.001"}': 10.0,
        'proctor_decision_seconds_bucket{le="0.01"}': 10.0,
        'proctor_decision_seconds_bucket{le="+Inf"}': 10.0,
    }
    # 20 more in 10 s, every one between 1 and 10 ms: the old fast ones do not count.
    after = {**before, 'proctor_decisions_total{outcome="deny"}': 20.0}
    after |= {
        'proctor_decision_seconds_bucket{le="0.01"}': 30.0,
        'proctor_decision_seconds_bucket{le="+Inf"}': 30.0,
    }
    rate, p50, p99, counted = Reading.of(after, 110.0).since(Reading.of(before, 100.0))
    assert (rate, counted) == (2.0, 20.0)
    assert p50 == pytest.approx(5.5)
    assert p99 == pytest.approx(9.91)


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (None, "int", "\u2014"),
        (12.6, "int", "13"),
        (3.14159, "ms", "3.14"),
        (31.4159, "ms", "31.4"),
        (0.25, "rate", "0.2"),
        (7, "s", "7.0"),
        ("<b>", "text", "<b>"),
        (True, "int", "\u2014"),
    ],
    ids=["missing", "int", "ms-small", "ms-large", "rate", "seconds", "text", "bool-is-not-a-number"],
)
def test_numbers_are_written_as_the_script_writes_them(value: object, kind: str, text: str) -> None:
    assert shown(value, kind) == text


def test_health_streams_are_bounded() -> None:
    streams = HealthStreams(2)
    streams.acquire()
    streams.acquire()
    with pytest.raises(StreamLimitError, match="at most 2 open health streams"):
        streams.acquire()
    streams.release()
    streams.acquire()
    with pytest.raises(ValueError, match="at least 1"):
        HealthStreams(0)


@pytest.fixture
def governor(tmp_path: Path) -> Iterator[Governor]:
    data = tmp_path / "data"
    initialize(data, origin="test.example/health")
    with Governor(data, node="<script>alert(1)</script>") as gov:
        alice = PrincipalKey.generate("alice")
        gov.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        yield gov


def test_the_snapshot_holds_the_registry_numbers_read_once_per_interval(governor: Governor) -> None:
    governor.push_policy(signed_bundle(governor.data.path, POLICIES / "basic"), by="admin")
    app = create_app(governor)
    monitor = HealthMonitor(governor, app.metrics.registry, interval_s=3600)
    first = monitor.snapshot()
    assert monitor.snapshot() is first  # within the interval: the same reading, the store untouched
    values = read_registry(app.metrics.registry)
    assert first["log"]["size"] == values["proctor_log_size"] == governor.log.size
    assert first["ready"] is True
    assert first["decisions"]["rate_per_s"] is None  # one reading: no rate yet
    for key, value in first["metrics"].items():
        # JSON has no NaN: a sample /metrics writes NaN ("none yet") is null here.
        same = values[key] == value or (value is None and math.isnan(values[key]))
        assert same or key.startswith("proctor_checkpoint_age"), key


def test_decisions_recorded_between_readings_show_as_a_rate(governor: Governor) -> None:
    governor.push_policy(signed_bundle(governor.data.path, POLICIES / "basic"), by="admin")
    app = create_app(governor)
    now = [1000.0]
    monitor = HealthMonitor(governor, app.metrics.registry, clock=lambda: now[0])
    monitor.snapshot()
    now[0] = 1010.0
    # The counters move in the app's routes (the browser test drives them): here, 30
    # decisions of 2 ms each, as the authorize route counts them.
    app.metrics.allowed.inc(30)
    for _ in range(30):
        app.metrics.latency.observe(0.002)
    later = monitor.snapshot()
    assert later["decisions"]["total"] == 30
    assert later["decisions"]["rate_per_s"] == pytest.approx(3.0)
    assert 1.0 <= later["decisions"]["p50_ms"] <= 2.0
    assert later["series"][-1]["rate"] == pytest.approx(3.0)


def test_anyone_sees_a_nodes_public_fields_only() -> None:
    node = {"node": "n", "zone": "z", "status": "serving", "heartbeat_age_ms": 1, "applied": 2, "lag": 0}
    full = {"nodes": [{**node, "url": "http://10.0.0.1:8700", "version": "1.0", "reason": "x"}]}
    assert for_viewer(full, admin=False)["nodes"] == [node]
    assert for_viewer(full, admin=True) == full


def test_a_governor_without_policy_is_shown_not_ready_and_markup_is_text(governor: Governor) -> None:
    app = create_app(governor)
    mount(app)
    with TestClient(app) as http:
        page = http.get("/health")
        snapshot = http.get("/health.json").json()
    assert page.status_code == 200
    assert "Not ready" in page.text
    assert snapshot["ready"] is False
    assert snapshot["checks"]["policy"].startswith("error")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


class _Slow(Collector):
    """A collector whose reading waits for ``go`` (a store that answers slowly)."""

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.go = threading.Event()

    def collect(self) -> Iterator[Metric]:
        self.reading.set()
        self.go.wait(30)
        yield GaugeMetricFamily("slow", "A slow reading.", value=1.0)


def test_no_viewer_waits_behind_a_reading_in_progress(governor: Governor) -> None:
    registry = CollectorRegistry()
    slow = _Slow()
    slow.go.set()
    registry.register(slow)
    now = [1000.0]
    monitor = HealthMonitor(governor, registry, clock=lambda: now[0])
    first = monitor.snapshot()
    now[0], slow.go, slow.reading = 1010.0, threading.Event(), threading.Event()
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(monitor.snapshot)
        assert slow.reading.wait(30)
        assert monitor.snapshot() is first  # at once: the store is being read by another
        slow.go.set()
        assert reading.result(timeout=30)["seq"] == first["seq"] + 1
