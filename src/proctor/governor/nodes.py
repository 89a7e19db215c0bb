"""The governor nodes serving a store: each one's heartbeat, and the list an operator
reads (``GET /v1/nodes``, ``proctor nodes``).

A :class:`NodeHeartbeat` runs in every ``proctor serve`` process: a background thread
that writes the process's row in the ``nodes`` table (:mod:`proctor.store.state_nodes`)
every :data:`DEFAULT_INTERVAL_MS`: its name (``--node``), zone (``--zone``), proctor
version, URL, start time, the log size whose trust changes it has applied (the
follower's position in shared mode; in exclusive mode, the log's size: it writes every
change itself) and whether it is ready (``serving``, or ``not ready`` with the failed
checks of ``/readyz``). On a clean shutdown it marks the row ``stopped``.

Rules:

1. The heartbeat never blocks or stops serving: it runs on its own thread, and a beat
   that fails (the store cannot be written, readiness cannot be read) is logged,
   counted (``proctor_node_heartbeat_failures_total``) and tried again next interval.
   A node whose beats keep failing shows, to every reader, a heartbeat growing old:
   it turns ``stale``, which is what an operator must see of a node cut off from the
   store (it denies everything then anyway: ADR 0016).
2. A name belongs to one live process at a time (rule 1 of
   :mod:`proctor.store.state_nodes`): a second process under a live node's name gets
   its beats refused, logs an error naming the clash and counts it as a failure.
3. A reader (:func:`nodes_view`) trusts no node's word on liveness: a row whose
   heartbeat is older than :data:`STALE_AFTER_MS` is reported ``stale`` whatever it
   says, and its lag (log size minus applied) is computed from the log size the
   reader itself read.

4. In shared mode the heartbeat also counts the live nodes (not stopped, heartbeat
   fresh) into the process's :class:`~proctor.governor.quotas.RateShare`, so that the
   nodes together admit each principal's per-second quota once, not once per node
   (invariant 7 of :mod:`proctor.governor.quotas`). A beat that cannot read the table
   keeps the last count.

The table is otherwise an operator's view: it decides nothing else, and a process that
can write the store can write anything in it (the store's credentials are the boundary).
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from proctor import __version__
from proctor.errors import PrincipalError, RequestShapeError
from proctor.governor._events import rfc3339
from proctor.governor.identity import verify_zone
from proctor.governor.quotas import RateShare
from proctor.store.state import NodeRecord, StateStore
from proctor.store.state_nodes import MAX_REASON

if TYPE_CHECKING:
    from proctor.governor.service import Governor

__all__ = [
    "DEFAULT_INTERVAL_MS",
    "STALE_AFTER_MS",
    "NodeHeartbeat",
    "NodeMetrics",
    "heartbeat_while_serving",
    "list_nodes",
    "live_nodes",
    "nodes_view",
]

_log = logging.getLogger("proctor.governor.nodes")

DEFAULT_INTERVAL_MS = 1000
"""How often a node writes its row."""
STALE_AFTER_MS = 5 * DEFAULT_INTERVAL_MS
"""A row whose heartbeat is older than this is ``stale`` (five beats missed)."""


class NodeHeartbeat:
    """This process's row in the ``nodes`` table, kept current (module docstring)."""

    def __init__(
        self,
        state: StateStore,
        *,
        node: str,
        zone: str,
        url: str,
        applied: Callable[[], int],
        readiness: Callable[[], tuple[bool, dict[str, str]]],
        interval_ms: int = DEFAULT_INTERVAL_MS,
        clock: Callable[[], float] = time.time,
        share: RateShare | None = None,
    ) -> None:
        """Args:
        state: the store the row goes in.
        node: this node's name (``--node``).
        zone: its zone: ``""`` (none) or a name as a principal's zone.
        url: where it serves (``""``: not known).
        applied: the log size whose trust changes this process has applied.
        readiness: ``/readyz``'s answer: ready, and each check's ``ok`` or error.
        interval_ms: between beats (1 to 60,000).
        clock: unix seconds.
        share: set to the live nodes at each beat (rule 4); ``None``: not counted.

        Raises:
            RequestShapeError: a zone, name or interval not as described (the row
                would not be written).
        """
        verify_zone(zone)
        if not isinstance(interval_ms, int) or not 1 <= interval_ms <= 60_000:
            raise RequestShapeError(f"heartbeat interval: expected 1 to 60000 ms, found {interval_ms!r}")
        if not node or len(node) > 256 or len(url) > 256:
            raise RequestShapeError(
                f"node: expected a name and a URL of 1-256 characters, found {node!r:.80}"
            )
        self.node = node
        self.zone = zone
        self.url = url
        self.instance = secrets.token_hex(8)
        self._state = state
        self._applied = applied
        self._readiness = readiness
        self._interval_s = interval_ms / 1000
        self._clock = clock
        self._share = share
        self.started_ms = self._now_ms()
        self._lock = threading.Lock()
        self.beats = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def of(
        cls,
        governor: Governor,
        *,
        zone: str,
        url: str,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        share: RateShare | None = None,
    ) -> NodeHeartbeat:
        """The heartbeat of ``governor``'s process: its node name, state store and
        readiness; applied: its follower's position (shared), else its log's size.

        Raises:
            RequestShapeError: as the constructor.
        """
        follower = governor.follower
        applied = (lambda: follower.applied) if follower is not None else (lambda: governor.log.size)
        return cls(
            governor.state,
            node=governor.node,
            zone=zone,
            url=url,
            applied=applied,
            readiness=governor.ready,
            interval_ms=interval_ms,
            clock=governor.now,
            share=share if governor.shared else None,
        )

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def record(self) -> NodeRecord:
        """This node's row as of now (readiness and position read now).

        Raises:
            ProctorError: readiness or the position cannot be read, or is malformed.
        """
        ok, checks = self._readiness()
        reason = "" if ok else "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
        return NodeRecord(
            self.node,
            self.instance,
            self.zone,
            __version__,
            self.url,
            self.started_ms,
            self._now_ms(),
            int(self._applied()),
            "serving" if ok else "not ready",
            reason[:MAX_REASON],
        )

    def beat(self) -> bool:
        """Write the row once; whether it was written (a failure is logged and counted,
        never raised: rule 1)."""
        error: str | None = None
        try:
            record = self.record()
            if not self._state.put_node(record, stale_before_ms=record.heartbeat_ms - STALE_AFTER_MS):
                error = (
                    f"another live process serves as node {self.node!r}: this one's heartbeat is refused "
                    "(give each governor process its own --node)"
                )
            if error is None and self._share is not None:
                self._share.set(live_nodes(self._state.nodes(), now_ms=record.heartbeat_ms))
        except Exception as e:  # noqa: BLE001 - the heartbeat must never die; it reports instead
            error = f"cannot record the heartbeat of node {self.node!r}: {e}"
        with self._lock:
            self.beats += 1
            self.failures += error is not None
            before, self.last_error = self.last_error, error
            failures = self.failures
        # Once per new trouble, and once a minute while it lasts (not a line per beat).
        if error is not None and (error != before or failures % 60 == 1):
            _log.warning("%s", error)
        elif error is None and before is not None:
            _log.warning("node %r: its heartbeat is recorded again", self.node)
        return error is None

    def start(self) -> None:
        """Beat now and then every interval, on a background thread, until :meth:`close`."""
        if self._thread is not None:
            return

        def run() -> None:
            self.beat()
            while not self._stopping.wait(self._interval_s):
                self.beat()
            self._stop()  # on this thread: after its last beat, never overtaken by it

        self._thread = threading.Thread(target=run, name="proctor-node-heartbeat", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 3.0) -> None:
        """Stop beating and mark the row ``stopped`` (rule 2 of
        :mod:`proctor.store.state_nodes`), waiting at most ``timeout_s`` for it: a
        store that cannot be written (or answers too slowly) does not hold a shutdown
        up; it is logged, and the row then turns ``stale``."""
        self._stopping.set()
        if self._thread is None:
            self._stop()
            return
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            _log.warning("node %r: the store did not take the stopped mark in time", self.node)

    def _stop(self) -> None:
        try:
            self._state.stop_node(self.node, self.instance, self._now_ms())
        except Exception as e:  # noqa: BLE001 - a store closed or gone under a late stop
            _log.warning("cannot mark node %r stopped: %s", self.node, e)

    def snapshot(self) -> tuple[int, int]:
        """``(beats, failures)`` so far."""
        with self._lock:
            return self.beats, self.failures


class NodeMetrics(Collector):
    """The heartbeat's Prometheus metrics (a collector for ``/metrics``)::

    proctor_node_heartbeats_total           beats tried
    proctor_node_heartbeat_failures_total   beats that did not write the row
    """

    def __init__(self, heartbeat: NodeHeartbeat) -> None:
        self._heartbeat = heartbeat

    def collect(self) -> Iterator[CounterMetricFamily]:
        """The current values (called at each scrape)."""
        beats, failures = self._heartbeat.snapshot()
        yield CounterMetricFamily("proctor_node_heartbeats", "Node heartbeats tried.", value=beats)
        yield CounterMetricFamily(
            "proctor_node_heartbeat_failures",
            "Node heartbeats that did not record this node's row (store unavailable, name taken).",
            value=failures,
        )


def live_nodes(records: list[NodeRecord], *, now_ms: int, stale_after_ms: int = STALE_AFTER_MS) -> int:
    """How many nodes are live at ``now_ms``: not stopped, heartbeat fresh (rule 4)."""
    return sum(1 for r in records if r.status != "stopped" and now_ms - r.heartbeat_ms <= stale_after_ms)


@contextmanager
def heartbeat_while_serving(
    governor: Governor,
    *,
    zone: str,
    sock: socket.socket,
    registry: CollectorRegistry,
    share: RateShare | None = None,
) -> Iterator[NodeHeartbeat]:
    """``proctor serve``: this node's heartbeat, its metrics in ``registry``, while the
    block serves on ``sock`` (its URL: the socket's address); the row marked
    ``stopped`` when the block ends, however it ends. Shared mode: ``share`` follows
    the live nodes (rule 4).

    Raises:
        RequestShapeError: ``zone`` is not a zone.
    """
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    heartbeat = NodeHeartbeat.of(governor, zone=zone, url=f"http://{shown}:{port}", share=share)
    registry.register(NodeMetrics(heartbeat))
    heartbeat.start()
    try:
        yield heartbeat
    finally:
        heartbeat.close()


def nodes_view(
    records: list[NodeRecord],
    *,
    log_size: int,
    now_ms: int,
    zone: str | None = None,
    stale_after_ms: int = STALE_AFTER_MS,
) -> dict[str, Any]:
    """The nodes as ``GET /v1/nodes`` and ``proctor nodes`` show them (rule 3).

    Args:
        records: the stored rows.
        log_size: the log's size as the reader read it.
        now_ms: the reader's clock (unix ms).
        zone: only the nodes of this zone (``""``: those with none); ``None``: all.
        stale_after_ms: a heartbeat older than this makes the node ``stale``.

    Returns:
        ``{"nodes": [{"node", "zone", "version", "url", "started", "started_ms",
        "heartbeat", "heartbeat_ms", "heartbeat_age_ms", "applied", "lag", "status",
        "reason"}], "log_size"}``, by name. ``lag``: entries of the log the node has
        not applied (never negative).

    Raises:
        RequestShapeError: ``zone`` is not a zone.
    """
    if zone is not None:
        verify_zone(zone)
    shown = []
    for r in records:
        if zone is not None and r.zone != zone:
            continue
        age = now_ms - r.heartbeat_ms
        status, reason = r.status, r.reason
        if status != "stopped" and age > stale_after_ms:
            was = f"{status}: {reason}" if reason else status
            status, reason = "stale", f"no heartbeat for {age / 1000:.1f} s (it last said: {was})"
        shown.append(
            {
                "node": r.name,
                "zone": r.zone,
                "version": r.version,
                "url": r.url,
                "started": rfc3339(r.started_ms / 1000),
                "started_ms": r.started_ms,
                "heartbeat": rfc3339(r.heartbeat_ms / 1000),
                "heartbeat_ms": r.heartbeat_ms,
                "heartbeat_age_ms": age,
                "applied": r.applied,
                "lag": max(0, log_size - r.applied),
                "status": status,
                "reason": reason,
            }
        )
    return {"nodes": shown, "log_size": log_size}


def list_nodes(gov: Governor, caller: str, *, zone: str | None = None) -> dict[str, Any]:
    """``GET /v1/nodes``: the nodes serving ``gov``'s store, for an active principal.

    Raises:
        PrincipalError: the caller is not active (403).
        RequestShapeError: ``zone`` is not a zone (422).
        StoreError: the store cannot be read (503).
    """
    record = gov.principal(caller)
    if record is None or record.status != "active":
        raise PrincipalError(f"principal {caller!r} is not active")
    records = gov.state.nodes()
    # The size after the rows: no row can then claim more than it (each was written
    # with a size read before it, and the log only grows).
    return nodes_view(records, log_size=gov.log.size, now_ms=int(gov.now() * 1000), zone=zone)
