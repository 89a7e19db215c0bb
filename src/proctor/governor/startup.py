"""The governor's trust at start-up: the state tables checked against the log, and the
active bundle loaded from them, before anything is served.

On a discrepancy, or if the check cannot run, the governor fails closed until it is
restarted on state that agrees: not ready, every authorization denied (and recorded),
every warrant treated as revoked (no execution starts, no lease is renewed), no admin
change. The :class:`~proctor.governor.trust.TrustView` this module builds carries the
reason (``state_problem``) for the life of the process, and every read of it fails
closed while it is set.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proctor.datadir import DataDir
from proctor.errors import ProctorError
from proctor.governor.consistency import StateReport
from proctor.governor.state_audit import audit_state
from proctor.governor.trust import TrustView
from proctor.lineage.log import Log
from proctor.policy import PolicyEngine
from proctor.store.open import open_snapshot
from proctor.store.state import StateStore

__all__ = ["open_trust"]

_SHOWN_DISCREPANCIES = 20


def open_trust(
    data: DataDir, log: Log, state: StateStore, *, store: str | None = None
) -> tuple[TrustView, StateReport | None]:
    """Check the state tables against the log
    (:func:`~proctor.governor.state_audit.audit_state`) and load the active bundle the
    check matched to the log; ``store``: the store's URL (:mod:`proctor.store.open`),
    else the data directory's file.

    Returns:
        The trust view, and the check's report (``None`` if the check could not run;
        the view then says why in ``state_problem``).
    """
    report: StateReport | None = None
    problem: str | None = None
    try:
        report = audit_state(open_snapshot(store, data.db_path), log.verifier)
    except (ProctorError, ValueError) as e:
        problem = f"the state could not be checked against the log: {e}"
    if report is not None and not report.ok:
        found = report.discrepancies
        shown = "; ".join(str(d) for d in found[:_SHOWN_DISCREPANCIES])
        more = f"; and {len(found) - _SHOWN_DISCREPANCIES} more" if found[_SHOWN_DISCREPANCIES:] else ""
        problem = f"{len(found)} state row(s) disagree with the log: {shown}{more}"
    engine, bundle_error = _active_engine(report, problem, state)
    return TrustView(state, engine=engine, bundle_error=bundle_error, state_problem=problem), report


def _active_engine(
    report: StateReport | None, problem: str | None, state: StateStore
) -> tuple[PolicyEngine | None, str | None]:
    """Compile the active bundle that the state check matched to the log, after
    verifying its signature again with the key the check used (the signer's as the log
    registered it); or why there is none."""
    if problem is not None or report is None:
        return None, "the governance state disagrees with the log; nothing is served"
    active = report.active_bundle
    if active is None:
        return None, "no policy bundle has been pushed"
    if state.is_revoked("policy", active.digest):
        return None, f"the active bundle {active.digest} is revoked"
    try:
        active.signed.verify(Ed25519PublicKey.from_public_bytes(active.public_key))
        return PolicyEngine.compile(active.signed.bundle), None
    except (ProctorError, ValueError) as e:  # fail closed: deny all
        return None, f"the stored active bundle does not load: {e}"
