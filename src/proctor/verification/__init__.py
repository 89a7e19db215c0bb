"""Layer 3, runtime verification: pure checks (no I/O, no clock: callers pass ``now``)
that the governor and the enforcer both run on a running or starting execution.

- :mod:`~proctor.verification.measurement`: what a measurement says was executed, and
  whether a warrant covers it (environment integrity: what runs is what was authorized).
"""

from proctor.verification.measurement import MeasuredResource, check_measurement, measured_resource

__all__ = ["MeasuredResource", "check_measurement", "measured_resource"]
