"""The governor's Prometheus metrics (``GET /metrics``).

The health page (:mod:`proctor.console.health_pages`) shows these same numbers, read
from this registry; a number it shows is a metric here first.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from proctor.errors import ProctorError

if TYPE_CHECKING:
    from proctor.governor.service import Governor

__all__ = ["REVOCATION_BUCKETS", "GovernorMetrics", "RevocationTimes"]

#: Buckets of ``proctor_revocation_seconds`` (a revoked execution dies in milliseconds
#: when its enforcer streams; within a lease when it only renews).
REVOCATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class GovernorMetrics:
    """Decisions, decision latency, rejected requests and the log's size, in a registry
    of their own (one per application, so that tests can make many)."""

    def __init__(self, governor: Governor) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "proctor_decisions", "Authorization decisions by outcome.", ["outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "proctor_decision_seconds",
            "Time to decide, record and (on allow) issue a warrant.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.allowed = self.decisions.labels("allow")
        self.denied = self.decisions.labels("deny")
        self.auth_failures = Counter(
            "proctor_auth_failures", "Rejected unauthenticated requests.", ["reason"], registry=self.registry
        )
        self.quota_refusals = Counter(
            "proctor_quota_refusals",
            "Requests refused because their principal was at a quota (not written to the log).",
            ["quota"],
            registry=self.registry,
        )
        log_size = Gauge("proctor_log_size", "Entries in the lineage log.", registry=self.registry)
        log_size.set_function(lambda: governor.log.size)
        leases = Gauge(
            "proctor_active_leases",
            "Executions running under a lease (the store's count).",
            registry=self.registry,
        )
        leases.set_function(lambda: _or_nan(lambda: len(governor.state.running_leases())))
        age = Gauge(
            "proctor_checkpoint_age_seconds",
            "Seconds since the newest entry the latest signed checkpoint covers was recorded.",
            registry=self.registry,
        )
        age.set_function(lambda: _or_nan(lambda: _checkpoint_age(governor)))
        lag = Gauge(
            "proctor_trust_lag_entries",
            "Log entries (revocations among them) recorded by other nodes and not yet applied here.",
            registry=self.registry,
        )
        lag.set_function(lambda: _or_nan(lambda: _trust_lag(governor)[0]))
        lag_s = Gauge(
            "proctor_trust_lag_seconds",
            "Seconds the oldest of those entries has waited to be applied here (0: none waits).",
            registry=self.registry,
        )
        lag_s.set_function(lambda: _or_nan(lambda: _trust_lag(governor)[1]))
        self.revocations = RevocationTimes(governor)
        self.registry.register(self.revocations)
        if governor.cosigner is not None:  # witnessing: submissions, failures, witnessed size, lag, alarm
            from proctor.governor.cosigner import CosignerMetrics  # noqa: PLC0415 - only with [witnesses]

            self.registry.register(CosignerMetrics(governor.cosigner, governor.log))


def _or_nan(read: Callable[[], float]) -> float:
    """``read()``, or NaN when the store or log cannot answer (a scrape never fails on it)."""
    try:
        return float(read())
    except (ProctorError, ValueError, TypeError, KeyError):
        return math.nan


def _entry_time(governor: Governor, index: int) -> float:
    """Unix seconds of log entry ``index`` (its ``time``).

    Raises:
        TypeError: the entry has no ``time`` string.
        ValueError: its ``time`` is not RFC 3339.
    """
    text = orjson.loads(governor.log.leaf(index)).get("time")
    if not isinstance(text, str):
        raise TypeError(f"expected an RFC 3339 time in entry {index}, found {text!r}")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _checkpoint_age(governor: Governor) -> float:
    """Seconds since the newest entry of the latest checkpoint was recorded (0 when empty)."""
    size = governor.log.checkpoint_size()
    return 0.0 if size == 0 else max(0.0, governor.now() - _entry_time(governor, size - 1))


def _trust_lag(governor: Governor) -> tuple[int, float]:
    """Entries recorded and not yet applied by this process's follower (shared mode;
    ``(0, 0.0)`` exclusive: it applies every change as it records it), and how long the
    oldest of them has waited."""
    follower = governor.follower
    if follower is None:
        return 0, 0.0
    applied = follower.applied
    behind = max(0, governor.log.size - applied)
    if behind == 0:
        return 0, 0.0
    return behind, max(0.0, governor.now() - _entry_time(governor, applied))


class RevocationTimes(Collector):
    """How long revoked executions took to die, from the log (a collector)::

        proctor_revocation_seconds{le}      histogram: a revocation of a running execution
                                            recorded -> its end recorded
        proctor_revocation_last_seconds     the latest of them (NaN: none yet)

    Each time is the difference of the two events' logged ``time`` (as ``proctor demo``
    reports it), so it is the same whichever node records which. Measured at each
    scrape, incrementally: the revocations of executions recorded since the last one
    (from the store's revocations table, by log index; those before this process
    started are not counted) wait, at most :attr:`PENDING` of them (the oldest dropped
    beyond), until their execution's row says it ended; then its last event is read.
    A revocation of an execution that had already ended is not counted.
    """

    PENDING = 1024

    def __init__(self, governor: Governor) -> None:
        self._governor = governor
        self._since = governor.log.size - 1
        self._pending: dict[str, int] = {}  # execution id -> the revocation's log index
        self._counts = [0] * (len(REVOCATION_BUCKETS) + 1)
        self._sum = 0.0
        self._last = math.nan
        self._lock = threading.Lock()

    def _catch_up(self) -> None:
        gov = self._governor
        for record in gov.state.revocations(self._since):
            self._since = max(self._since, record.log_index)
            if record.kind == "execution" and record.log_index >= 0:
                self._pending[record.target] = record.log_index
        while len(self._pending) > self.PENDING:
            del self._pending[next(iter(self._pending))]
        for execution_id, revoked_at in list(self._pending.items()):
            row = gov.state.execution(execution_id)
            if row is not None and row["status"] in ("running", "terminating"):
                continue
            ended_at = int(row["indices"][-1]) if row is not None and row["indices"] else -1
            if ended_at > revoked_at:
                self._observe(_entry_time(gov, ended_at) - _entry_time(gov, revoked_at))
            del self._pending[execution_id]

    def _observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self._counts[next((i for i, le in enumerate(REVOCATION_BUCKETS) if seconds <= le), -1)] += 1
        self._sum += seconds
        self._last = seconds

    def collect(self) -> Iterator[Metric]:
        """The current values (called at each scrape; a store that cannot be read
        leaves them as they were)."""
        with self._lock:
            # Tried again at the next scrape: the pending executions stay.
            with contextlib.suppress(ProctorError, ValueError, TypeError, KeyError):
                self._catch_up()
            cumulative, total = [], 0
            for le, count in zip((*REVOCATION_BUCKETS, math.inf), self._counts, strict=True):
                total += count
                cumulative.append(("+Inf" if math.isinf(le) else repr(le), float(total)))
            histogram = HistogramMetricFamily(
                "proctor_revocation_seconds",
                "From a running execution's revocation recorded to its end recorded (the events' times).",
                buckets=cumulative,
                sum_value=self._sum,
            )
            last = GaugeMetricFamily(
                "proctor_revocation_last_seconds", "The latest of proctor_revocation_seconds (NaN: none yet)."
            )
            last.add_metric([], self._last)
        yield histogram
        yield last
