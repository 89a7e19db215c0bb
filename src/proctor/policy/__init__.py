"""Layer 2, policy governance: Cedar policies, schema, signed bundles, obligations, replay.

Pure: no I/O (except :meth:`PolicyBundle.from_directory`, the explicit loader) and no
clock (callers pass ``now``, unix seconds). The pieces:

- :mod:`.schema` — :data:`DEFAULT_SCHEMA`, the Cedar schema (namespace ``Proctor``);
- :mod:`.request` — :class:`PolicyRequest`, what is asked;
- :mod:`.context` — how a request becomes Cedar's principal, action, resource and
  context (the exact context shape, with examples);
- :mod:`.obligations` — the policy annotations that attach obligations to an allow;
- :mod:`.bundle` — :class:`PolicyBundle` and :class:`SignedBundle`;
- :mod:`.slices` — which policies each request is evaluated against;
- :mod:`.engine` — :class:`PolicyEngine`: compile a bundle, decide, replay;
- :mod:`.decision` — :class:`Decision` and :func:`deny_all`.

Typical use::

    bundle = PolicyBundle.from_directory("policies/", version=3)
    engine = PolicyEngine.compile(bundle)          # raises if anything is invalid
    decision = engine.decide(
        PolicyRequest(
            principal="alice",
            principal_attrs={"role": "dev", "zone": "prod"},
            action="exec",
            resource="/usr/bin/pg_dump",
            argv=("pg_dump", "db1"),
            zone="prod",
        ),
        now=1767225600,
    )
    decision.allow, decision.policies, decision.obligations, decision.reason
"""

from typing import TYPE_CHECKING, Any

from proctor.policy.bundle import PolicyBundle, SignedBundle
from proctor.policy.decision import Decision, deny_all
from proctor.policy.request import PolicyRequest
from proctor.policy.schema import ACTIONS, DEFAULT_SCHEMA

if TYPE_CHECKING:
    from proctor.policy.engine import PolicyEngine

__all__ = [
    "DEFAULT_SCHEMA",
    "ACTIONS",
    "PolicyRequest",
    "Decision",
    "PolicyBundle",
    "SignedBundle",
    "PolicyEngine",
    "deny_all",
]


def __getattr__(name: str) -> Any:
    # The engine loads Cedar (cedarpy), which only the governor and the policy commands
    # need: importing this package for a decision's format (the enforcer's deny message)
    # must not load it (tests/unit/test_import_boundaries.py).
    if name == "PolicyEngine":
        from proctor.policy.engine import PolicyEngine  # noqa: PLC0415

        return PolicyEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
