"""The governor's Prometheus metrics (``GET /metrics``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from proctor.governor.service import Governor

__all__ = ["GovernorMetrics"]


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
        if governor.cosigner is not None:  # witnessing: submissions, failures, witnessed size, lag, alarm
            from proctor.governor.cosigner import CosignerMetrics  # noqa: PLC0415 - only with [witnesses]

            self.registry.register(CosignerMetrics(governor.cosigner, governor.log))
