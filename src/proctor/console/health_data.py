"""The health page's numbers: the governor's ``/metrics``, read from its registry, and
its nodes and readiness, one snapshot at a time with a few minutes of history.

Invariants:

1. Every number the page shows that ``/metrics`` also shows is read from the same
   Prometheus registry (:class:`~proctor.governor.metrics.GovernorMetrics`), and the
   samples it was read from travel with the snapshot (``metrics``: exposition name to
   value), so that anyone can hold the page against ``/metrics``.
2. Rates and percentiles are computed from counters and histogram buckets over a
   sliding window (the difference of two readings), as PromQL's ``rate`` and
   ``histogram_quantile`` do: no observation is kept here.
3. At most one reading per :attr:`HealthMonitor.interval_s`, however many people watch:
   every page and stream shares the latest snapshot (the readings touch the store), and
   no viewer waits behind a reading in progress once there is a snapshot to show.
4. A part that cannot be read (the store down) is shown as unavailable with the reason,
   never as a stale or invented number; readiness is the governor's own
   (:meth:`~proctor.governor.service.Governor.ready`, as ``/readyz``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.registry import CollectorRegistry

from proctor.errors import ProctorError
from proctor.governor._events import rfc3339
from proctor.governor.nodes import nodes_view

if TYPE_CHECKING:
    from proctor.governor.service import Governor

__all__ = [
    "HISTORY",
    "MIN_REVOCATIONS",
    "PUBLIC_NODE_FIELDS",
    "WINDOW_S",
    "HealthMonitor",
    "Reading",
    "buckets_of",
    "for_viewer",
    "quantile",
    "read_registry",
    "sample_key",
]

WINDOW_S = 60.0
"""The sliding window of the headline rate and percentiles."""
HISTORY = 300
"""Readings kept for the charts (five minutes at one a second)."""
MIN_REVOCATIONS = 10
"""Revocation-to-death percentiles are shown from this many revocations on."""
PUBLIC_NODE_FIELDS = ("node", "zone", "status", "heartbeat_age_ms", "applied", "lag")
"""What anyone sees of a node; its URL, version and failure reason are for admins."""

_DECISIONS = "proctor_decisions_total"
_LATENCY = "proctor_decision_seconds"
_REVOKED = "proctor_revocation_seconds"
#: The plain samples the page shows, by exposition name.
_SHOWN = (
    "proctor_log_size",
    "proctor_active_leases",
    "proctor_checkpoint_age_seconds",
    "proctor_trust_lag_entries",
    "proctor_trust_lag_seconds",
    "proctor_cosign_witnessed_size",
    "proctor_cosign_lag_entries",
    "proctor_cosign_alarm",
    "proctor_cosign_round_failures_total",
    "proctor_node_heartbeats_total",
    "proctor_node_heartbeat_failures_total",
    f"{_LATENCY}_count",
    f"{_LATENCY}_sum",
    "proctor_revocation_last_seconds",
    f"{_REVOKED}_count",
    f"{_REVOKED}_sum",
)


def sample_key(name: str, labels: Mapping[str, str]) -> str:
    """A sample's name as the exposition format writes it: ``name{a="x",b="y"}``
    (labels sorted; no braces without labels)."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def read_registry(registry: CollectorRegistry) -> dict[str, float]:
    """Every sample of ``registry`` (what ``/metrics`` prints), by :func:`sample_key`."""
    values: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue  # the time a counter was made: not a number the page shows
            values[sample_key(sample.name, sample.labels)] = float(sample.value)
    return values


def buckets_of(values: Mapping[str, float], name: str) -> tuple[tuple[float, float], ...]:
    """Histogram ``name``'s cumulative ``(le, count)`` buckets in ``values``, ``+Inf`` last."""
    prefix = f'{name}_bucket{{le="'
    return tuple(sorted((float(k[len(prefix) : -2]), v) for k, v in values.items() if k.startswith(prefix)))


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram's cumulative ``(le, count)`` buckets, by linear
    interpolation within the bucket it falls in (PromQL's ``histogram_quantile``): in
    the ``+Inf`` bucket, the largest finite bound. ``None`` when it counted nothing.

    Raises:
        ValueError: ``q`` is not in [0, 1], or the buckets are empty.
    """
    if not 0.0 <= q <= 1.0 or not buckets:
        raise ValueError(f"expected a quantile in [0, 1] and buckets, found q={q!r}, {len(buckets)} buckets")
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


@dataclass(frozen=True)
class Reading:
    """One reading of the registry: when, the decision counters, the latency buckets.

    Attributes:
        at: unix seconds.
        values: every sample, by :func:`sample_key`.
        decisions: allowed plus denied, so far.
        buckets: the latency histogram's cumulative ``(le, count)``, ``+Inf`` last.
    """

    at: float
    values: Mapping[str, float]
    decisions: float
    buckets: tuple[tuple[float, float], ...]

    @classmethod
    def of(cls, values: Mapping[str, float], at: float) -> Reading:
        """The reading of ``values`` (from :func:`read_registry`) taken at ``at``."""
        decisions = sum(v for k, v in values.items() if k.startswith(_DECISIONS + "{"))
        return cls(at, dict(values), decisions, buckets_of(values, _LATENCY))

    def since(self, earlier: Reading) -> tuple[float, float | None, float | None, float]:
        """Between ``earlier`` and this: decisions per second, p50 and p99 latency in
        milliseconds (``None``: no decision), and the decisions counted."""
        span = self.at - earlier.at
        counted = self.decisions - earlier.decisions
        rate = counted / span if span > 0 else 0.0
        before = dict(earlier.buckets)
        delta = [(le, count - before.get(le, 0.0)) for le, count in self.buckets]
        p50 = quantile(0.5, delta) if delta else None
        p99 = quantile(0.99, delta) if delta else None
        return (
            rate,
            None if p50 is None else p50 * 1000,
            None if p99 is None else p99 * 1000,
            counted,
        )


class HealthMonitor:
    """Snapshots of one governor's health, shared by every viewer (module docstring)."""

    def __init__(
        self,
        governor: Governor,
        registry: CollectorRegistry,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Args:
        governor: whose nodes and readiness are read.
        registry: its metrics (``app.metrics.registry``: the numbers of ``/metrics``).
        interval_s: at most one reading this often.
        clock: unix seconds.
        """
        self.governor = governor
        self.registry = registry
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._readings: deque[Reading] = deque(maxlen=HISTORY)
        self._snapshot: dict[str, Any] | None = None
        self._seq = 0

    def snapshot(self) -> dict[str, Any]:
        """The latest snapshot, read now unless one was read within the interval.

        Blocking (the store is read): call it from a worker thread on an event loop.
        While another thread reads, the latest snapshot is returned at once (its
        ``time`` says how old it is): a slow store holds one worker thread here, not one
        per viewer (the API's routes share those threads)."""
        latest = self._snapshot
        if latest is not None and self._clock() - latest["at"] < self.interval_s * 0.9:
            return latest
        if latest is not None and not self._lock.acquire(blocking=False):
            return latest
        if latest is None:
            self._lock.acquire()
        try:
            now = self._clock()
            latest = self._snapshot
            if latest is not None and now - latest["at"] < self.interval_s * 0.9:
                return latest
            reading = Reading.of(read_registry(self.registry), now)
            self._readings.append(reading)
            self._seq += 1
            self._snapshot = self._build(reading)
            return self._snapshot
        finally:
            self._lock.release()

    def _build(self, reading: Reading) -> dict[str, Any]:
        v = reading.values
        window = next((r for r in self._readings if reading.at - r.at <= WINDOW_S), reading)
        # The first reading has nothing to compare with: no rate yet (not a rate of 0).
        rate: float | None
        rate, p50, p99, counted = reading.since(window) if window is not reading else (None, None, None, 0.0)
        ready, checks = self.governor.ready()
        series = [
            {"t": round(b.at * 1000), "rate": r, "p50": m, "p99": n}
            for a, b in zip(self._readings, list(self._readings)[1:], strict=False)
            for r, m, n, _ in [b.since(a)]
        ]
        shown = {k: v[k] for k in _SHOWN if k in v}
        shown |= {k: x for k, x in v.items() if k.startswith((_DECISIONS, "proctor_cosign_"))}
        shown |= {k: x for k, x in v.items() if k.startswith((f"{_LATENCY}_bucket", f"{_REVOKED}_bucket"))}
        revoked = buckets_of(v, _REVOKED)
        # Percentiles of a handful of revocations are their buckets' guesses: none below
        # MIN_REVOCATIONS (the latest is shown exactly, from its gauge).
        enough = bool(revoked) and revoked[-1][1] >= MIN_REVOCATIONS
        died = [quantile(q, revoked) if enough else None for q in (0.5, 0.99)]
        return {
            "seq": self._seq,
            "at": reading.at,
            "time": rfc3339(reading.at),
            "node": self.governor.node,
            "ready": ready,
            "checks": checks,
            "decisions": {
                "allow": v.get(sample_key(_DECISIONS, {"outcome": "allow"}), 0.0),
                "deny": v.get(sample_key(_DECISIONS, {"outcome": "deny"}), 0.0),
                "total": reading.decisions,
                "window_s": round(reading.at - window.at, 3),
                "in_window": counted,
                "rate_per_s": rate,
                "p50_ms": p50,
                "p99_ms": p99,
            },
            "leases": {"active": _number(v.get("proctor_active_leases"))},
            "log": {
                "size": _number(v.get("proctor_log_size")),
                "checkpoint_age_s": _number(v.get("proctor_checkpoint_age_seconds")),
                **self._witnesses(v),
            },
            "revocation": {
                "lag_entries": _number(v.get("proctor_trust_lag_entries")),
                "lag_s": _number(v.get("proctor_trust_lag_seconds")),
                "terminated": _number(v.get(f"{_REVOKED}_count")),
                "last_ms": _ms(v.get("proctor_revocation_last_seconds")),
                "p50_ms": _ms(died[0]),
                "p99_ms": _ms(died[1]),
            },
            **self._nodes(),
            "series": series,
            "metrics": {k: _number(x) for k, x in sorted(shown.items())},
        }

    def _witnesses(self, v: Mapping[str, float]) -> dict[str, Any]:
        """The witnesses' part of the log's status (``None`` without ``[witnesses]``)."""
        cosigner = self.governor.cosigner
        if cosigner is None:
            return {"witnesses": None}
        latest = cosigner.latest_witnessed()
        lines = [] if latest is None else latest.note.rsplit("\n\n", 1)[-1].splitlines()
        # The signature lines after the body: the log's own, then each witness's cosignature.
        cosignatures = max(0, sum(1 for line in lines if line.startswith("\u2014 ")) - 1)
        names = sorted({k.split('witness="', 1)[1].split('"', 1)[0] for k in v if 'witness="' in k})
        submitted = "proctor_cosign_submissions_total"
        return {
            "witnesses": {
                "witnessed_size": _number(v.get("proctor_cosign_witnessed_size")),
                "lag_entries": _number(v.get("proctor_cosign_lag_entries")),
                "alarm": bool(v.get("proctor_cosign_alarm", 0.0)),
                "cosignatures": cosignatures,
                "each": [
                    {
                        "name": name,
                        "submissions": v.get(sample_key(submitted, {"witness": name}), 0.0),
                        "failures": sum(
                            x
                            for k, x in v.items()
                            if k.startswith("proctor_cosign_failures_total{") and f'witness="{name}"' in k
                        ),
                    }
                    for name in names
                ],
            }
        }

    def _nodes(self) -> dict[str, Any]:
        """The nodes serving the store and their zones; unavailable with the reason when
        the store cannot be read (invariant 4)."""
        gov = self.governor
        try:
            records = gov.state.nodes()
            view = nodes_view(records, log_size=gov.log.size, now_ms=int(gov.now() * 1000))
        except ProctorError as e:
            return {"nodes": None, "zones": None, "nodes_error": f"cannot read the nodes: {e}"}
        zones: dict[str, dict[str, int]] = {}
        for node in view["nodes"]:
            zone = zones.setdefault(node["zone"], {"nodes": 0, "serving": 0})
            zone["nodes"] += 1
            zone["serving"] += node["status"] == "serving"
        return {
            "nodes": view["nodes"],
            "zones": [{"zone": z, **counts} for z, counts in sorted(zones.items())],
            "nodes_error": None,
        }


def _number(value: float | None) -> float | None:
    """A sample for JSON: ``None`` for a missing or NaN one (JSON has no NaN)."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return value


def _ms(seconds: float | None) -> float | None:
    value = _number(seconds)
    return None if value is None else value * 1000


def for_viewer(snapshot: Mapping[str, Any], *, admin: bool) -> dict[str, Any]:
    """``snapshot`` as a viewer may see it: an admin the whole; anyone else each node's
    :data:`PUBLIC_NODE_FIELDS` only (its URL, version and failure reason withheld)."""
    if admin or snapshot.get("nodes") is None:
        return dict(snapshot)
    nodes: Iterable[Mapping[str, Any]] = snapshot["nodes"]
    return {**snapshot, "nodes": [{k: n[k] for k in PUBLIC_NODE_FIELDS} for n in nodes]}
