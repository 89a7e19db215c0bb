"""The typed rows of the governance state (:class:`proctor.store.state.StateStore`).

What the state store hands out and takes in: one type per table family, the same for
every backend (SQLite today, PostgreSQL later; ADR 0013). The query modules
(``proctor.store.state_*``) decode their rows into these and check each column, so a
record you hold is well-formed; a row that cannot be decoded is a
:class:`~proctor.errors.StoreError` naming the row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NotRequired, TypedDict

__all__ = [
    "PrincipalRecord",
    "RevocationRecord",
    "ExecutionSummary",
    "StoredWarrant",
    "StoredExecution",
    "NewExecution",
    "AuthFailure",
]


@dataclass(frozen=True)
class PrincipalRecord:
    """A stored principal."""

    name: str
    public_key: str
    attrs: dict[str, str]
    zone: str
    status: str
    created: str
    updated: str

    def to_json(self) -> dict[str, Any]:
        """The principal as the API shows it (every field; ``attrs`` copied)."""
        return asdict(self)


@dataclass(frozen=True)
class RevocationRecord:
    """A stored revocation."""

    kind: str
    target: str
    reason: str
    by: str
    time: str
    log_index: int

    def to_json(self) -> dict[str, Any]:
        """The revocation as the API shows it (every field)."""
        return asdict(self)


@dataclass(frozen=True)
class ExecutionSummary:
    """What may be shown of a stored execution: no arguments, no warrant token.

    Attributes:
        id: the execution id (``ex_…``).
        principal: whose it is.
        warrant: the warrant id it started with.
        action: the request's action (``exec`` …).
        resource: the request's resource (the measured file, for ``exec``).
        zone: the zone it runs in (``""``: none).
        status: ``running``, ``terminating``, ``completed``, ``terminated`` or ``failed``.
        reason: why it is terminating or was terminated (``""`` otherwise).
        bundle: the digest of the policy bundle it runs under.
        started: unix seconds of its start.
        ended: unix seconds of its end (0 while it runs).
        lease_expires_ms: the lease deadline as stored (the governor's memory is newer).
        ttl_ms: the lease's time to live.
        indices: the log indices of its events, in order.
    """

    id: str
    principal: str
    warrant: str
    action: str
    resource: str
    zone: str
    status: str
    reason: str
    bundle: str
    started: int
    ended: int
    lease_expires_ms: int
    ttl_ms: int
    indices: tuple[int, ...]


class StoredWarrant(TypedDict):
    """An issued warrant's row (``warrants``)."""

    id: str
    principal: str
    parent: str
    decision_index: int
    expires: int
    issued: int
    issued_index: int
    token: str


class StoredExecution(TypedDict):
    """An execution's row (``executions``), ``indices`` decoded: the log indices of its
    events, in order. The governor updates ``indices`` and ``bundle`` in a copy it holds
    while it records (the row itself changes only through the state store's writers)."""

    id: str
    warrant: str
    principal: str
    status: str
    reason: str
    bundle: str
    request: str
    started_index: int
    indices: list[int]
    lease_expires_ms: int
    ttl_ms: int
    started: int
    ended: int
    presented: str


class NewExecution(TypedDict):
    """A started execution as the governor records it (the insert of its row, committed
    with its ``execution.started`` event): its status starts ``running``, and
    ``started_index`` and the last of ``indices`` become that event's index."""

    id: str
    warrant: str
    principal: str
    bundle: str
    request: str
    started_index: int
    indices: list[int]
    lease_expires_ms: int
    ttl_ms: int
    started: int
    presented: NotRequired[str]


class AuthFailure(TypedDict):
    """A rejected request, from the bounded ``auth_failures`` table."""

    time: int
    keyid: str
    reason: str
    detail: str
