"""Layer 3, runtime verification: pure checks (no I/O, no clock: callers pass ``now``)
that the governor and the enforcer both run on a running or starting execution.

- :mod:`~proctor.verification.measurement`: what a measurement says was executed, and
  whether a warrant covers it (environment integrity: what runs is what was authorized).
- :mod:`~proctor.verification.recheck`: the re-check of a running execution at each
  lease renewal, over a read-only :class:`TrustView` of the governor's state.
- :mod:`~proctor.verification.revocation`: whether a warrant is revoked through its
  chain (itself, its ancestors, its principal since issue, its presented blocks).
- :mod:`~proctor.verification.lease`: lease arithmetic, the governor's in unix
  milliseconds and the enforcer's on its monotonic clock.
- :mod:`~proctor.verification.lease_answer`: the governor's signed answers to a start
  or a renewal, and their verification by the enforcer (ADR 0017).
"""

from proctor.verification.lease import (
    enforcer_ttl_s,
    lease_deadline,
    lease_expiry_ms,
    lease_lapsed,
    lease_remaining_s,
    renewal_interval_s,
    renewal_timeout_s,
    sweep_cutoff_ms,
)
from proctor.verification.measurement import (
    TOOL_ACTIONS,
    MeasuredResource,
    check_measurement,
    measured_resource,
    tool_definition_digest,
    tool_measurement,
)
from proctor.verification.recheck import (
    RECHECK_REASONS,
    ExecutionRecord,
    PolicyAnswer,
    Reevaluation,
    RenewalReport,
    TrustView,
    Verdict,
    recheck,
)
from proctor.verification.revocation import ChainLink, Revoked, find_revoked

__all__ = [
    "RECHECK_REASONS",
    "TOOL_ACTIONS",
    "ChainLink",
    "ExecutionRecord",
    "MeasuredResource",
    "PolicyAnswer",
    "Reevaluation",
    "RenewalReport",
    "Revoked",
    "TrustView",
    "Verdict",
    "check_measurement",
    "enforcer_ttl_s",
    "find_revoked",
    "lease_deadline",
    "lease_expiry_ms",
    "lease_lapsed",
    "lease_remaining_s",
    "measured_resource",
    "recheck",
    "renewal_interval_s",
    "renewal_timeout_s",
    "sweep_cutoff_ms",
    "tool_definition_digest",
    "tool_measurement",
]
