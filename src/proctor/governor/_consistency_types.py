"""The data of the state check (:mod:`proctor.governor.consistency`): the rows it
reads (the store's records, :mod:`proctor.store.snapshot`, re-exported), the
discrepancies it finds and its report. Frozen dataclasses, no behaviour beyond
rendering."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from proctor.policy import SignedBundle
from proctor.store.snapshot import BundleRow, PrincipalRow, RevocationRow, StateRows, WarrantRow

__all__ = [
    "ActiveBundle",
    "BundleRow",
    "Discrepancy",
    "PrincipalRow",
    "RevocationRow",
    "StateReport",
    "StateRows",
    "WarrantRow",
]


@dataclass(frozen=True)
class Discrepancy:
    """One row that disagrees with the log.

    Attributes:
        table: ``principals``, ``bundles``, ``meta``, ``revocations``, ``warrants``, or
            ``log`` for an event the check cannot read.
        key: the row's key (a principal's name, a bundle digest, ``kind/target``, a
            warrant id, a log index).
        field: the column (``row`` when the row itself is missing or unexplained).
        expected: what the log says (JSON).
        found: what the table holds (JSON).
        index: the log index of the event that says so, when there is one.
    """

    table: str
    key: str
    field: str
    expected: str
    found: str
    index: int | None = None

    def __str__(self) -> str:
        at = "" if self.index is None else f" (log index {self.index})"
        where = f"{self.table}[{self.key}].{self.field}"
        return f"{where}: the log says {self.expected}{at}, the table has {self.found}"

    def to_json(self) -> dict[str, Any]:
        """The discrepancy as a JSON object (every field)."""
        return asdict(self)


@dataclass(frozen=True)
class ActiveBundle:
    """The active bundle as checked.

    Attributes:
        digest: its digest, the one the last ``policy.activated`` event names.
        signed: the stored signed bundle (its text hashes to ``digest``).
        public_key: the signer's raw Ed25519 key the signature verified with.
        key_from_log: whether that key is the one the log registered (else the row's).
    """

    digest: str
    signed: SignedBundle
    public_key: bytes
    key_from_log: bool


@dataclass(frozen=True)
class StateReport:
    """The result of :func:`check_state`.

    Attributes:
        discrepancies: every row that disagrees with the log, in table order.
        unverified: what the log is too old to vouch for (no discrepancy).
        events: how many state events were replayed.
        active_bundle: the active bundle, when the log names one and it checked out.
    """

    discrepancies: tuple[Discrepancy, ...]
    unverified: tuple[str, ...] = ()
    events: int = 0
    active_bundle: ActiveBundle | None = None

    @property
    def ok(self) -> bool:
        """Whether every row agrees with the log."""
        return not self.discrepancies

    def to_json(self) -> dict[str, Any]:
        """``{"ok", "events", "discrepancies": [...], "unverified": [...]}``."""
        return {
            "ok": self.ok,
            "events": self.events,
            "discrepancies": [d.to_json() for d in self.discrepancies],
            "unverified": list(self.unverified),
        }
