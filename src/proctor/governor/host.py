"""What the parts that are handed the governor itself may use of it.

:class:`~proctor.governor.executions.Executions` and the receipt builder
(:func:`~proctor.governor.receipts.execution_receipt`) receive the
:class:`~proctor.governor.service.Governor` that owns them. They name it by the
:class:`ExecutionHost` protocol below instead of importing the service, so that the
modules of :mod:`proctor.governor` import in one direction only (the service imports
its parts; no part imports the service), and so that what they use of it is written
down in one place. A use of anything else is a type error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proctor.config import QuotaConfig
    from proctor.datadir import DataDir
    from proctor.governor.recorder import Recorder
    from proctor.lineage.log import Log
    from proctor.policy import PolicyEngine
    from proctor.store.state import PrincipalRecord, StateStore

__all__ = ["ExecutionHost"]


class ExecutionHost(Protocol):
    """The governor as executions and receipts use it."""

    @property
    def data(self) -> DataDir:
        """The data directory (the log's signer, for receipts)."""

    @property
    def state(self) -> StateStore:
        """The governance state tables."""

    @property
    def log(self) -> Log:
        """The lineage log (read; appended to with :attr:`recorder` or ``log.submit``)."""

    @property
    def recorder(self) -> Recorder:
        """Appends events with their state writes."""

    @property
    def node(self) -> str:
        """The governor's node name, in every event."""

    @property
    def quotas(self) -> QuotaConfig:
        """The operator's limits."""

    @property
    def warrant_public_key(self) -> bytes:
        """The warrant root's public key."""

    @property
    def engine(self) -> PolicyEngine | None:
        """The active policy engine, or ``None`` (deny everything)."""

    def now(self) -> float:
        """The governor's clock (seconds)."""

    def principal(self, name: str) -> PrincipalRecord | None:
        """A principal as governance sees it (revoked counts as suspended)."""

    def warrant_revoked(self, warrant_id: str) -> bool:
        """Whether a warrant, an ancestor or its principal since issue is revoked."""

    def set_principal_status(self, name: str, status: str, *, by: str) -> PrincipalRecord:
        """Suspend or resume a principal (a governance response)."""
