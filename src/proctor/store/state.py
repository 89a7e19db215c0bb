"""Governance state beside the log: principals, policy bundles, revocations, issued
warrants, executions, request nonces and authentication failures.

The lineage log is the record of what happened; this is the current state derived
from it, kept for fast lookups. Every change here is made by the governor right after
the corresponding log append, or inside it: the ``*_writer`` methods return
``write(conn, index=-1)`` callables that the log runs in its append transaction, with
the log store's connection and the event's index, so a row commits with the event that
explains it (both or neither). The log can always explain the state.

:class:`StateStore` is the one interface the governor, the state check and the CLI
read, typed with records (:mod:`proctor.store.records`). It composes (ADR 0013):

- a :class:`~proctor.store.state_backend.StateBackend`: connections, transactions, DDL
  and the schema version (SQLite today: :class:`~proctor.store.state_backend.SQLiteStateBackend`);
- query modules, one per table family, whose SQL runs unchanged on SQLite and
  PostgreSQL (:mod:`proctor.store.sql`): :mod:`~proctor.store.state_principals`
  (principals, revocations), :mod:`~proctor.store.state_policy` (bundles, ``meta``),
  :mod:`~proctor.store.state_warrants` (warrants, openings),
  :mod:`~proctor.store.state_executions` and :mod:`~proctor.store.state_requests`
  (nonces, authentication failures).

Every driver error is wrapped in :class:`~proctor.errors.StoreError`; a broken rule
(a name equal ignoring case, a bundle version that does not go forward) is a
:class:`~proctor.errors.StoreConflictError`.

Tables (schema version ``state_schema`` in ``meta``; DDL in
:mod:`proctor.store._state_schema`):

- ``principals``: name, public key, attributes (canonical JSON), zone, status. Names
  are unique ignoring case and a public key belongs to one principal (unique indexes).
- ``bundles``: every accepted signed bundle by digest, with the log index of its one
  ``state_policy.activated`` event; ``meta.active_bundle`` names the active one. Append-only
  and version-forward (triggers refuse an update, a delete, or an insert whose version
  is not above every stored one): activation history is never rewritten.
- ``revocations``: (kind, target) → reason, by whom, when, log index.
- ``warrants``: issued warrants: id, principal, parent, decision index, expiry, issue
  time, the ``warrant.issued`` index and the token.
- ``executions``: one row per started execution (a warrant starts at most one): its
  status, the policy bundle it runs under, the decision's request (for re-evaluation),
  the log indices of its events, and its lease.
- ``openings``: per decision, what its logged argument commitment hides.
- ``nonces``: (key id, nonce) → expiry, for replay protection of signed requests.
- ``auth_failures``: a bounded record of rejected requests (not logged in the Merkle
  log, so that unauthenticated callers cannot grow it).
- ``nodes``: the governor nodes serving the store, kept by their heartbeats
  (:mod:`~proctor.store.state_nodes`; an operator's view, not derived from the log).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from proctor.errors import StoreError
from proctor.store import (
    state_executions,
    state_nodes,
    state_policy,
    state_principals,
    state_requests,
    state_warrants,
)
from proctor.store._state_schema import STATE_SCHEMA_VERSION
from proctor.store.records import (
    AuthFailure,
    ExecutionSummary,
    NewExecution,
    PrincipalRecord,
    RevocationRecord,
    StoredExecution,
    StoredWarrant,
)
from proctor.store.sql import INTEGRITY_ERRORS, Connection
from proctor.store.state_backend import SQLiteStateBackend, StateBackend
from proctor.store.state_nodes import NodeRecord
from proctor.store.state_requests import MAX_AUTH_FAILURES

__all__ = [
    "STATE_SCHEMA_VERSION",
    "MAX_AUTH_FAILURES",
    "ExecutionSummary",
    "NodeRecord",
    "PrincipalRecord",
    "RevocationRecord",
    "StateStore",
    "StoredExecution",
    "StoredWarrant",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StateStore:
    """Governance state in a database: the data directory's SQLite file by default."""

    def __init__(self, path: str | Path | None = None, *, backend: StateBackend | None = None) -> None:
        """Open the state tables at ``path`` (SQLite) or in ``backend``, creating them if
        needed.

        Raises:
            StoreError: neither or both of ``path`` and ``backend`` given; the database
                cannot be opened or has an unknown state schema.
            StoreConflictError: stored principals break a rule added since they were
                registered (names equal ignoring case, a shared public key); nothing
                is changed.
        """
        if backend is None:
            if path is None:
                raise StoreError("expected the path of a state database or a backend, found neither")
            backend = SQLiteStateBackend(path)
        elif path is not None:
            raise StoreError(f"expected a path or a backend, found both ({path} and {backend!r})")
        self._backend = backend
        self._errors = backend.errors
        try:
            backend.create_or_check_schema()
        except BaseException:
            backend.close()
            raise

    def _conn(self) -> Connection:
        return self._backend.conn()

    def _run(
        self, query: Callable[Concatenate[Connection, _P], _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """``query`` on this thread's connection (autocommit), driver errors wrapped."""
        try:
            return query(self._backend.conn(), *args, **kwargs)
        except self._errors as e:
            raise StoreError(f"state store: {e}") from e

    def _write(self, write: Callable[..., None], *, index: int = -1, what: str = "state store") -> None:
        """A writer on its own, in one transaction, driver errors wrapped (``what``)."""
        try:
            with self._backend.transaction() as conn:
                write(conn, index=index)
        except self._errors as e:
            raise StoreError(f"{what}: {e}") from e

    def run(
        self, query: Callable[Concatenate[Connection, _P], _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run a query function of a ``state_*`` module (its first argument the
        connection) on this thread's connection, autocommit, driver errors wrapped in
        :class:`~proctor.errors.StoreError` (``state_approvals``, for one)."""
        return self._run(query, *args, **kwargs)

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers."""
        self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    def close(self) -> None:
        """Close every connection."""
        self._backend.close()

    # -- principals and revocations ----------------------------------------------

    principal_writer = staticmethod(state_principals.principal_writer)
    revocation_writer = staticmethod(state_principals.revocation_writer)

    def put_principal(self, record: PrincipalRecord) -> None:
        """Insert a principal, or update the one with this exact name.

        Raises:
            StoreConflictError: another principal has this name ignoring case, or this
                public key (nothing is replaced).
            StoreError: the database failed.
        """
        self._write(state_principals.principal_writer(record))

    def principal(self, name: str) -> PrincipalRecord | None:
        """The principal named ``name``."""
        return self._run(state_principals.principal, name)

    def principal_like(self, name: str) -> PrincipalRecord | None:
        """The principal whose name equals ``name`` ignoring (ASCII) case, if any."""
        return self._run(state_principals.principal_like, name)

    def principal_with_key(self, public_key: str) -> PrincipalRecord | None:
        """The principal registered with this public key (canonical base64), if any."""
        return self._run(state_principals.principal_with_key, public_key)

    def principals(self) -> list[PrincipalRecord]:
        """Every principal, by name."""
        return self._run(state_principals.principals)

    def put_revocation(self, record: RevocationRecord) -> None:
        """Record a revocation; a later revocation of the same target replaces it (a
        principal revoked, resumed and revoked again must have its latest index)."""
        self._write(state_principals.revocation_writer(record), index=record.log_index)

    def revocation(self, kind: str, target: str) -> RevocationRecord | None:
        """The latest revocation of (kind, target), or ``None``."""
        return self._run(state_principals.revocation, kind, target)

    def revocations(self, since: int = -1) -> list[RevocationRecord]:
        """Revocations recorded after log index ``since``, in log order."""
        return self._run(state_principals.revocations, since)

    def is_revoked(self, kind: str, target: str) -> bool:
        """Whether (kind, target) is revoked."""
        return self._run(state_principals.is_revoked, kind, target)

    def revoked_index(self, kind: str, target: str) -> int | None:
        """The log index of the latest revocation of (kind, target), or ``None``."""
        return self._run(state_principals.revoked_index, kind, target)

    def exists(self, kind: str, target: str) -> bool:
        """Whether the governor knows a ``warrant`` (issued by it), an ``execution``, a
        ``principal`` or a ``policy`` bundle (stored) of this id.

        Raises:
            StoreError: ``kind`` is none of those, or the database failed.
        """
        return self._run(state_principals.target_exists, kind, target)

    # -- policy bundles and meta -------------------------------------------------

    bundle_writer = staticmethod(state_policy.bundle_writer)
    probe_writer = staticmethod(state_policy.probe_writer)

    def put_bundle(self, digest: str, version: int, doc: str, activated: str, log_index: int) -> None:
        """Store an accepted bundle and make it the active one, in one transaction.

        Raises:
            StoreConflictError: the digest is stored already, or ``version`` is not
                above every stored version (activation history is append-only).
            StoreError: the database failed.
        """
        write = state_policy.bundle_writer(digest, version, doc, activated)
        self._write(write, index=log_index, what=f"cannot store bundle {digest}")

    def highest_bundle(self) -> tuple[int, str] | None:
        """``(version, digest)`` of the stored bundle with the highest version, or ``None``."""
        return self._run(state_policy.highest_bundle)

    def active_bundle(self) -> tuple[str, str] | None:
        """(digest, signed bundle JSON) of the active bundle, or ``None``."""
        return self._run(state_policy.active_bundle)

    def bundle(self, digest: str) -> str | None:
        """The signed bundle JSON with this digest."""
        return self._run(state_policy.bundle, digest)

    def bundle_index(self, digest: str) -> int | None:
        """The log index of the ``state_policy.activated`` event of this bundle."""
        return self._run(state_policy.bundle_index, digest)

    def activations(self, since: int = -1) -> list[tuple[int, str]]:
        """(log index, digest) of bundle activations after log index ``since``."""
        return self._run(state_policy.activations, since)

    def bundle_versions(self) -> list[tuple[str, int, str]]:
        """(digest, version, activated) of every stored bundle, oldest first."""
        return self._run(state_policy.bundle_versions)

    def set_meta(self, key: str, value: str) -> None:
        """Store a small named value (e.g. the index of the warrant key declaration)."""
        self._run(state_policy.set_meta, key, value)

    def meta(self, key: str) -> str | None:
        """A named value stored with :meth:`set_meta`."""
        return self._run(state_policy.meta, key)

    # -- warrants and openings ---------------------------------------------------

    warrant_writer = staticmethod(state_warrants.warrant_writer)
    opening_writer = staticmethod(state_warrants.opening_writer)

    def put_warrant(
        self,
        warrant_id: str,
        *,
        principal: str,
        parent: str,
        decision_index: int,
        expires: int,
        issued: int,
        issued_index: int = -1,
        token: str = "",
    ) -> None:
        """Record an issued warrant on its own (the governor writes the row inside the
        log commit of its ``warrant.issued`` event instead: :meth:`warrant_writer`)."""
        write = state_warrants.warrant_writer(
            warrant_id,
            principal=principal,
            parent=parent,
            decision_index=decision_index,
            expires=expires,
            issued=issued,
            token=token,
        )
        self._write(write, index=issued_index, what=f"cannot record warrant {warrant_id}")

    def warrant(self, warrant_id: str) -> StoredWarrant | None:
        """The issued warrant's record."""
        return self._run(state_warrants.warrant, warrant_id)

    def warrant_chain(self, warrant_id: str, *, limit: int = 32) -> list[str]:
        """The warrant and its ancestors, nearest first (bounded by ``limit``)."""
        return self._run(state_warrants.warrant_chain, warrant_id, limit=limit)

    def warrant_times(self, principal: str, since: int) -> list[int]:
        """Issue times (unix seconds) of the principal's warrants since ``since``, oldest first."""
        return self._run(state_warrants.warrant_times, principal, since)

    def count_warrants(self, principal: str, since: int, *, besides: Sequence[str] = ()) -> int:
        """Warrants issued to ``principal`` at or after unix time ``since``, but ``besides``."""
        return self._run(state_warrants.count_warrants, principal, since, besides=besides)

    def opening(self, decision_index: int) -> dict[str, Any] | None:
        """The opening of the decision at ``decision_index``, if one was kept."""
        return self._run(state_warrants.opening, decision_index)

    # -- executions --------------------------------------------------------------

    execution_writer = staticmethod(state_executions.execution_writer)
    execution_update_writer = staticmethod(state_executions.execution_update_writer)
    write_leases = staticmethod(state_executions.write_leases)

    def start_execution(self, record: NewExecution) -> bool:
        """Record a started execution on its own; ``False`` if its warrant already
        started one (the governor writes the row inside the log commit of its
        ``execution.started`` event instead: :meth:`execution_writer`)."""
        try:
            self._write(
                state_executions.execution_writer(record), what=f"cannot record execution {record.get('id')}"
            )
        except StoreError as e:
            if isinstance(e.__cause__, INTEGRITY_ERRORS):
                return False
            raise
        return True

    def update_execution(self, execution_id: str, **fields: Any) -> None:
        """Change some columns of an execution (``indices`` is encoded).

        Raises:
            StoreError: no column, or one that may not change; the database failed.
        """
        self._run(state_executions.update_execution, execution_id, **fields)

    def claim_warrant(self, warrant_id: str) -> bool:
        """Whether the warrant has not started an execution yet."""
        return self._run(state_executions.claim_warrant, warrant_id)

    def execution(self, execution_id: str) -> StoredExecution | None:
        """The execution's row, with ``indices`` decoded."""
        return self._run(state_executions.execution, execution_id)

    def execution_summary(self, execution_id: str) -> ExecutionSummary | None:
        """The summary of one execution, or ``None`` if there is none by that id."""
        return self._run(state_executions.execution_summary, execution_id)

    def execution_summaries(
        self, *, principal: str | None, live_only: bool, limit: int
    ) -> list[ExecutionSummary]:
        """Summaries of executions, newest start first.

        Args:
            principal: only this principal's (``None``: everyone's).
            live_only: only those still ``running`` or ``terminating``.
            limit: at most this many (1 or more).

        Raises:
            StoreError: ``limit`` is below 1, or the database cannot be read.
        """
        return self._run(
            state_executions.execution_summaries, principal=principal, live_only=live_only, limit=limit
        )

    def running_executions(self) -> list[tuple[str, str]]:
        """``(execution id, principal)`` of every execution with status ``running``."""
        return self._run(state_executions.running_executions)

    def running_leases(self) -> list[tuple[str, int]]:
        """``(execution id, lease deadline ms)`` of every running execution."""
        return self._run(state_executions.running_leases)

    def running_count(self, principal: str) -> int:
        """How many executions of ``principal`` have status ``running``."""
        return self._run(state_executions.running_count, principal)

    def starts_after(self, principal: str, after: int) -> int:
        """How many executions ``principal`` started after unix second ``after``."""
        return self._run(state_executions.starts_after, principal, after)

    def lapsed_executions(self, cutoff_ms: int) -> list[str]:
        """Ids of the ``running`` or ``terminating`` executions whose stored lease had
        lapsed at ``cutoff_ms``."""
        return self._run(state_executions.lapsed_executions, cutoff_ms)

    def renew_leases(self, rows: list[tuple[str, int, int]]) -> list[bool]:
        """Extend leases ``(execution id, deadline ms, now ms)`` in one transaction, each
        only while running and not lapsed at ``now``
        (:func:`~proctor.store.state_executions.renew_leases`); which were extended.

        Raises:
            StoreError: the database failed (none was extended).
        """
        try:
            with self._backend.transaction() as conn:
                return state_executions.renew_leases(conn, rows)
        except self._errors as e:
            raise StoreError(f"cannot renew leases: {e}") from e

    def mark_terminating(self, execution_id: str, reason: str) -> bool:
        """Mark a ``running`` execution ``terminating``; ``False`` if it was not running."""
        return self._run(state_executions.mark_terminating, execution_id, reason)

    # -- replay protection and failures -------------------------------------------

    write_nonces = staticmethod(state_requests.write_nonces)
    auth_failure_writer = staticmethod(state_requests.auth_failure_writer)

    def nonce_floor(self) -> int:
        """The latest time request nonces were forgotten at (0 if never)."""
        return self._run(state_requests.nonce_floor)

    def claim_nonces(self, rows: list[tuple[str, str, int]], purge_before: int = 0) -> tuple[list[bool], int]:
        """Claim request nonces ``(keyid, nonce, expires)`` in one transaction, for
        governor processes that share the store
        (:func:`~proctor.store.state_requests.claim_nonces`).

        Returns:
            Whether each was claimed (``False``: seen before, or older than the floor),
            and the floor.

        Raises:
            StoreError: the database failed (none was claimed).
        """
        try:
            with self._backend.transaction() as conn:
                return state_requests.claim_nonces(conn, rows, purge_before)
        except self._errors as e:
            raise StoreError(f"cannot claim request nonces: {e}") from e

    def live_nonces(self, now: int) -> list[tuple[str, str, int]]:
        """The stored request nonces that have not expired at ``now``: ``(keyid, nonce,
        expires)``. (The governor keeps the live set in memory and persists it through
        the log writer, :class:`proctor.governor.nonces.NonceCache`.)"""
        return self._run(state_requests.live_nonces, now)

    def record_auth_failures(self, rows: list[tuple[int, str, str, str]]) -> None:
        """Record rejected requests ``(time, keyid, reason, detail)`` in one transaction of
        their own (shared mode: not through the log writer, whose turn may be another
        process's; :func:`~proctor.store.state_requests.auth_failure_writer` each).

        Raises:
            StoreError: the database failed (none was recorded).
        """
        try:
            with self._backend.transaction() as conn:
                for row in rows:
                    state_requests.auth_failure_writer(*row)(conn)
        except self._errors as e:
            raise StoreError(f"cannot record rejected requests: {e}") from e

    def auth_failures(self, limit: int = 100) -> list[AuthFailure]:
        """The most recent rejected requests, newest first."""
        return self._run(state_requests.auth_failures, limit)

    # -- governor nodes -------------------------------------------------------------

    def put_node(self, record: NodeRecord, *, stale_before_ms: int) -> bool:
        """Write this node's row (:func:`~proctor.store.state_nodes.put_node`); ``False``
        if a live process of another instance holds the name. Raises StoreError."""
        return self._run(state_nodes.put_node, record, stale_before_ms=stale_before_ms)

    def stop_node(self, name: str, instance: str, now_ms: int) -> bool:
        """Mark this instance's row ``stopped``; whether it was. Raises StoreError."""
        return self._run(state_nodes.stop_node, name, instance, now_ms)

    def node(self, name: str) -> NodeRecord | None:
        """The row of node ``name``, if any. Raises StoreError."""
        return self._run(state_nodes.node, name)

    def nodes(self) -> list[NodeRecord]:
        """Every node's row, by name. Raises StoreError (also for a malformed row)."""
        return self._run(state_nodes.nodes)
