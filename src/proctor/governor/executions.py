"""Executions and their leases, on the governor's side.

An enforcer (``proctor run``) that verified a warrant locally *starts* an execution
here; the warrant is single-use, so a replayed warrant cannot start a second one. It
then *renews* the lease every TTL/3; each renewal re-verifies, in the numbered steps of
:mod:`proctor.verification.recheck` (the pure core; this module reads the rows, caches
the presented warrant, records and updates): the execution and the warrant chain are
not revoked, the principal is active, the warrant has not expired, the lease is still
alive, the enforcer saw no integrity violation, and the policy still allows it — if the
active bundle changed, the logged request is re-evaluated against it. A renewal that
fails says which reason to terminate with; the enforcer kills the tree and *finishes*
the execution, which appends the terminal event. Heartbeats are not logged; only
changes of trust are (``execution.verified`` when the policy version changed and was
re-evaluated). Lease arithmetic: :mod:`proctor.verification.lease`.

Why one module: start, renewal, finish and the sweep are the transitions of one state
machine over one execution's row, its lease and its single-use warrant. They share the
per-execution claim that keeps two changes of one execution from both being recorded,
and the rule that every transition commits with the event that explains it; that
invariant is audited by reading every transition in one place.

Several governor processes on one store (shared mode, ADR 0016): any of them may start,
renew, finish or sweep any execution (an enforcer that fails over to another governor
keeps its lease). Leases are read from the store and renewed through to it
(:class:`~proctor.governor.registry.ExecutionRegistry`), and every change of status runs
under the :class:`~proctor.governor.registry.TransitionLock`, re-reading the row under
it, so that two processes never both record a start of one warrant, two ends of one
execution, or a start past ``max_running``.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from proctor.authorization.minted import MintedWarrants
from proctor.authorization.warrants import (
    VerifiedWarrant,
    WarrantClaims,
    WarrantRequest,
    args_digest,
    verify_warrant_bounds,
)
from proctor.errors import (  # ExecutionConflictError: defined there, re-exported here
    ExecutionConflictError,
    IntegrityError,
    LogLockedError,
    PrincipalError,
    ProctorError,
    StoreError,
    WarrantError,
)
from proctor.governor._events import rfc3339
from proctor.governor.model import RequestShapeError
from proctor.governor.registry import ExecutionRegistry, StartSlot, TransitionLock
from proctor.governor.responses import VIOLATIONS, planned_responses, run_responses
from proctor.lineage.log import Append, Notify, Side
from proctor.policy import Decision, PolicyEngine, PolicyRequest
from proctor.policy.commitment import ArgumentOpening, reveal
from proctor.store.state import StoredExecution
from proctor.verification import check_measurement, measured_resource
from proctor.verification.lease import lease_expiry_ms, lease_lapsed, millis, sweep_cutoff_ms
from proctor.verification.lease_answer import LEASE_SIG_FIELD, LeaseAnswer, sign_lease_answer
from proctor.verification.recheck import ExecutionRecord, RenewalReport, Verdict, recheck

if TYPE_CHECKING:
    from proctor.config import QuotaConfig
    from proctor.governor.recorder import Recorder
    from proctor.governor.trust import ReadOnlyTrust
    from proctor.lineage.log import Log
    from proctor.note import NoteSigner
    from proctor.store.state import StateStore

_log = logging.getLogger("proctor.governor")

__all__ = [
    "REVOCATION_ORDER_WAIT_S",
    "TERMINATION_REASONS",
    "VIOLATIONS",
    "ChainedStart",
    "ExecutionConflictError",
    "Executions",
    "Issue",
    "with_arguments",
]

REVOCATION_ORDER_WAIT_S = 0.5
"""Shared mode: how long an execution's revocation waits to be ordered with finishes
(:meth:`Executions.revocation_ordered`) before it goes ahead without."""

TERMINATION_REASONS = (
    "revoked",
    "expired",
    "policy",
    "integrity",
    "lease-lost",
    "obligation",
    "supervisor-lost",
    "interrupted",
)


@dataclass(frozen=True)
class Issue:
    """What a start reads of its warrant's issue: the ``warrant.issued`` event's index and
    leaf hash (the start's parent link), and the decision's request with its arguments
    and bundle (kept in the execution's row: a renewal under another bundle re-evaluates
    the request, also when that bundle was pushed between the decision and the start)."""

    issued_index: int
    leaf_hash: bytes
    request: dict[str, Any]
    bundle: str = ""
    """The digest of the bundle that decided (the decision event's ``bundle``)."""


def with_arguments(index: int, decision: dict[str, Any], opening: ArgumentOpening | None) -> dict[str, Any]:
    """The request of the decision at ``index`` with its arguments, revealed from their
    commitment by ``opening`` (the decision's own; ``None``: none was kept).

    Raises:
        WarrantError: the request commits to arguments and the opening is missing or is
            not theirs.
    """
    logged = decision.get("request", {})
    if "args_commitment" not in logged:
        return dict(logged)
    if opening is None:
        raise WarrantError(f"the arguments of the decision at {index} are not kept", reason="malformed")
    try:
        return reveal(logged, opening)
    except ProctorError as e:
        raise WarrantError(f"the decision at {index}: {e}", reason="malformed") from e


_OUTPUT_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _output_digest(body: Any, name: str) -> str:
    """``{name}_digest`` of a finish body: absent or "" (not captured), or a SHA-256
    digest, which the receipt makes a subject of its Statement. Anything else is refused
    before it is recorded: a logged end the receipt checker must refuse would leave the
    execution without a receipt for good (``proctor.receipts._parts.outputs``).

    Raises:
        RequestShapeError: neither "" nor ``sha256:<64 lowercase hex>``.
    """
    value = body.get(f"{name}_digest", "") if isinstance(body, dict) else ""
    if value != "" and (type(value) is not str or _OUTPUT_DIGEST.fullmatch(value) is None):
        raise RequestShapeError(
            f"{name}_digest: expected sha256:<64 lowercase hex> or nothing, found {value!r:.80}"
        )
    return str(value)


def _field(body: Any, key: str, kind: type, *, default: Any = None) -> Any:
    value = body.get(key, default) if isinstance(body, dict) else None
    if type(value) is not kind:
        raise RequestShapeError(f"{key}: expected {kind.__name__}, found {type(value).__name__}")
    return value


def _planned(containment: Any) -> list[str]:
    """The containment backends a start names: the first 16 strings of an array; anything
    else is recorded as none planned, as the field always was (ADR 0011)."""
    if type(containment) is not list:
        return []
    return [c[:256] for c in containment if type(c) is str][:16]


SWEEP_GRACE_MS = 1000
"""How long past its lease a running execution may go unrenewed and unfinished before
the governor records it as ``supervisor-lost`` (its enforcer killed it at the lease's
expiry, or died and took the tree with it; either way no one governs it any more)."""


class Executions:
    """Start, renew and finish executions of one governor.

    Lease deadlines live in memory (this process is the only one that renews them) and
    are persisted in batches through the log writer's next transaction, so that a
    renewal never waits for SQLite's write lock. Every change of an execution's state
    commits in the same transaction as the event that explains it (``execution.started``
    with its row, a terminal event with the status), and one execution changes state
    at most once at a time (``_busy``), so two concurrent starts of one warrant, or a
    finish racing the sweeper, can never both be recorded.
    """

    def __init__(
        self,
        *,
        state: StateStore,
        log: Log,
        recorder: Recorder,
        trust: ReadOnlyTrust,
        clock: Callable[[], float],
        node: str,
        quotas: QuotaConfig,
        warrant_public_key: bytes,
        suspend: Callable[[str], object],
        log_signer: Callable[[], NoteSigner],
        transitions: TransitionLock | None = None,
        lease_signer: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """Load the running executions from ``state``; keep what the transitions use.

        Each collaborator is named here and nothing else is reached (ADR 0012): not the
        governor, so what a start, renewal or finish can read or change is this list.

        Args:
            state: the governance state tables (rows read; written with the events).
            log: the lineage log: events appended with their rows (``submit``), earlier
                events read (``leaf``, ``leaf_hash``), and whether it can record now.
            recorder: queues the registry's lease writes for the log writer's next
                transaction (``side_write``).
            trust: principals, revoked warrants and the active engine, read only.
            clock: the governor's clock (seconds).
            node: the governor's node name, in every event.
            quotas: the operator's limits on running executions and starts.
            warrant_public_key: the warrant root's public key (raw Ed25519).
            suspend: suspends a principal, recording its own event (the one governance
                response a violation triggers here).
            log_signer: loads the log's checkpoint signing key, when a receipt is built.
            transitions: shared mode (other governor processes serve ``state``): the
                lock every change of status runs under, and the sign to read leases and
                counts from the store; ``None``: this process is the only one.
            lease_signer: signs with the warrant key the start and renew answers to a
                signed request (:mod:`proctor.verification.lease_answer`, ADR 0017).
        """
        self._state = state
        self._log = log
        self._trust = trust
        self._clock = clock
        self._node = node
        self._quotas = quotas
        self._warrant_public_key = warrant_public_key
        self.minted = MintedWarrants(warrant_public_key)
        """The warrants this process minted (its issuer tells it), which a start verifies
        by their exact bytes (:mod:`proctor.authorization.minted`, ADR 0026)."""
        self._suspend = suspend
        self._log_signer = log_signer
        self._transitions = transitions
        self._lease_signer = lease_signer
        self._gate = threading.Lock()  # exclusive mode: see trust_change
        self._trust_changes = 0
        self._ending = threading.Lock()  # see execution_revocation
        self._revoking: set[str] = set()
        self.registry = ExecutionRegistry(
            state.running_leases(),
            state.running_executions(),
            recorder.side_write,
            shared=state if transitions is not None else None,
        )

    @contextlib.contextmanager
    def execution_revocation(self, execution_id: str) -> Iterator[None]:
        """Hold this around queueing the revocation of one execution: a finish decides its
        outcome and queues its end either before the revocation (a lower index: it ended
        before it was revoked) or after it, seeing it, and then ends it ``terminated``
        whatever its enforcer says — also before the revocation's commit marks its row
        (ADR 0021: a revocation takes effect when it is queued). Nothing is remembered if
        the body raises (the revocation was not queued). Exclusive mode only: shared, a
        queueing may wait for the log's turn between processes, which must not be waited
        for under this lock, which a finish takes; there the revocation holds the
        transition lock, under which a finish reads the row, until it committed
        (:meth:`trust_change`, taken by the administration)."""
        ordered = self._ending_order()
        with ordered:
            yield
            if ordered is self._ending:
                self._revoking.add(execution_id)

    def _ending_order(self) -> contextlib.AbstractContextManager[Any]:
        """The lock that orders an execution's revocation with its finish (exclusive mode;
        see :meth:`execution_revocation`), or nothing (shared mode)."""
        return self._ending if self._transitions is None else contextlib.nullcontext()

    @contextlib.contextmanager
    def revocation_ordered(self) -> Iterator[None]:
        """Shared mode, around an execution's revocation from before it is queued until it
        committed: the transition lock, under which every process's finish reads the
        execution's row, so that a finish reads it before the revocation was queued or
        after it committed (``terminating``), never in between. If the lock cannot be had
        within :data:`REVOCATION_ORDER_WAIT_S` (a store that stalls, a change stuck on
        another process), the revocation goes ahead without it, queued and pushed at
        once as before: stopping the execution comes before ordering its record, and only
        then does the window reopen. Exclusive mode: nothing
        (:meth:`execution_revocation` orders them)."""
        if self._transitions is None:
            yield
            return
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._transitions.held(timeout=REVOCATION_ORDER_WAIT_S))
            except LogLockedError as e:
                _log.warning("revoking without ordering it with finishes: %s", e)
            yield

    @property
    def shared(self) -> bool:
        """Whether several governor processes serve this store (ADR 0016)."""
        return self._transitions is not None

    def _turn(self) -> contextlib.AbstractContextManager[None]:
        """Shared mode: the transition lock, for one change of status; else nothing."""
        return self._transitions.held() if self._transitions is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def trust_change(self) -> Iterator[None]:
        """Hold this around a change that takes trust away from starts (a principal's or a
        warrant's revocation, a suspension), from before its events are queued until they
        committed: a start then records ``execution.started`` either before the change
        (whose index is later: it covers the execution as running) or after it committed,
        having re-checked the principal and the warrant chain (:meth:`_queue_start`).
        Never is a start recorded after a revocation it did not see.

        Exclusive mode: a lock that a start holds only while it re-checks and queues.
        Shared mode: the transition lock, which every start holds until it is durable, on
        every process of the store.

        Raises:
            LogLockedError: shared mode, and the lock stayed taken past its timeout.
        """
        if self._transitions is not None:
            with self._transitions.held():
                yield
            return
        with self._gate:
            try:
                yield
            finally:
                self._trust_changes += 1  # once committed: a start checked before it re-checks

    def close(self) -> None:
        """Stop what shared mode runs (the lease writer, the lock between processes)."""
        self.registry.close()
        if self._transitions is not None:
            self._transitions.close()

    def running_count(self, principal: str) -> int:
        """How many executions of ``principal`` are running."""
        return self.registry.running_count(principal)

    def revoked(self, execution_id: str) -> None:
        """The execution was revoked (its row says ``terminating`` now)."""
        with self._ending:
            self._revoking.discard(execution_id)  # the row says it from now on
        record = self._state.execution(execution_id)
        if record is not None:
            self.registry.not_running(execution_id, str(record["principal"]))

    def lease_expires_ms(self, record: StoredExecution) -> int:
        """The execution's lease deadline (memory first: the table lags behind)."""
        return self.registry.lease_deadline(record["id"], record["lease_expires_ms"])

    def _record(self, event: dict[str, Any], side: list[Side]) -> int:
        """Append ``event`` with ``side`` in one commit; its index once durable."""
        return self._log.submit([event], side=side).wait()[0]

    def sweep(self, *, grace_ms: int = SWEEP_GRACE_MS) -> list[str]:
        """Record ``execution.terminated`` (``supervisor-lost``) for every running
        execution whose lease lapsed ``grace_ms`` ago with no renewal or finish.

        Returns:
            The ids of the executions it closed.
        """
        now = self._clock()
        cutoff = sweep_cutoff_ms(now, grace_ms)
        lapsed = self.registry.lapsed(cutoff)
        closed = []
        for execution_id in lapsed:
            if not self.registry.claim(execution_id):
                continue  # being finished right now
            try:
                with self._turn():  # shared: another process may be closing it, or renewed it
                    if self._sweep_one(execution_id, now, cutoff):
                        closed.append(execution_id)
            finally:
                self.registry.release(execution_id)
        return closed

    def _sweep_one(self, execution_id: str, now: float, cutoff: int) -> bool:
        """Close one lapsed execution, if it still is (read again: renewed or ended
        meanwhile, by this process or another); whether it was closed."""
        record = self._state.execution(execution_id)
        if record is None or record["status"] not in ("running", "terminating"):
            self.registry.ended(execution_id)
            return False
        expired_at = self.lease_expires_ms(record)
        if not lease_lapsed(expired_at, cutoff):
            return False  # renewed meanwhile
        event = {
            "v": 1,
            "type": "execution.terminated",
            "time": rfc3339(now),
            "node": self._node,
            "execution": execution_id,
            "duration_ms": max(0, int(now * 1000) - int(record["started"]) * 1000),
            "reason": "supervisor-lost",
            "signal": "",
            "processes_killed": 0,
            "detail": f"the lease expired at {expired_at} ms with no renewal or finish from the enforcer",
            "stdout_digest": "",
            "stderr_digest": "",
            "parent": self._link(int(record["started_index"])),
        }
        ended = self._state.execution_update_writer(
            execution_id, status="terminated", reason="supervisor-lost", ended=int(now)
        )
        self._record(event, [ended])
        self.registry.not_running(execution_id, str(record["principal"]))
        self.registry.ended(execution_id)
        return True

    def _link(self, index: int) -> dict[str, Any]:
        return {"index": index, "leaf_hash": base64.b64encode(self._log.leaf_hash(index)).decode()}

    def start(self, principal: str, body: Any, *, nonce: str | None = None) -> dict[str, Any]:
        """Verify the warrant against what the enforcer measured; record ``execution.started``.

        The answer to a signed request (``nonce``: its nonce) carries ``lease_sig``
        (:meth:`_signed`); an in-process call without one is answered unsigned.

        Raises:
            WarrantError: the warrant does not verify for this request, or does not
                cover the measured executable.
            ExecutionConflictError: the warrant already started an execution.
            PrincipalError: the warrant belongs to someone else, or the principal is not active.
            QuotaError: the principal is at ``max_running`` or ``max_starts_per_minute``
                (HTTP 429); nothing was recorded and the warrant stays unused.
            StoreError: shared mode, and this process's trust is behind the store's (503).
        """
        seen = self._trust_changes  # before any check of trust (_queue_start)
        verified, zone, now = self._verify_start(principal, body)
        claims = verified.claims
        issued = self._state.warrant(claims.warrant_id)
        if issued is None or issued["issued_index"] < 0:
            raise WarrantError(
                f"warrant {claims.warrant_id} was not issued by this governor", reason="forged"
            )
        # 3. Single use: a warrant starts at most one execution. The claim covers the
        #    time until the row commits with the event; the row's uniqueness after.
        #    (Shared mode: the transition lock covers the other processes' starts.)
        if not self.registry.claim(claims.warrant_id):
            raise ExecutionConflictError(f"warrant {claims.warrant_id} is starting an execution (replayed)")
        try:
            with self._turn():
                slot = self._admit(principal, claims, now)
                try:
                    index = int(issued["issued_index"])
                    decision = orjson.loads(self._log.leaf(claims.decision_index))
                    issue = Issue(
                        index,
                        self._log.leaf_hash(index),
                        self._full_request(claims.decision_index, decision),
                        str(decision.get("bundle", "")),
                    )
                    event, row, answer = self._start_event(principal, body, zone, verified, issue, now)
                    answer["log_index"] = self._queue_start(
                        event, row, principal, claims.warrant_id, seen
                    ).wait()[0]
                    self.registry.started(
                        answer["execution"], principal, answer["lease_expires_ms"], verified, slot
                    )
                    return self._signed(answer, "start", answer["execution"], nonce)
                finally:
                    self.registry.abandon_start(slot)  # nothing once it started
        finally:
            self.registry.release(claims.warrant_id)

    def start_chained(
        self, principal: str, body: Any, issue: Issue, *, notify: Notify, nonce: str | None
    ) -> ChainedStart | None:
        """:meth:`start` for a warrant this governor minted for an authorization whose
        commit is still pending (``POST /v1/authorize/start``, ADR 0019 decision 5): the
        same verification and checks, but what :meth:`start` reads back once the
        authorization is durable — the issue's index and leaf hash, the decision's
        request — is ``issue``, and ``execution.started`` is queued behind the
        authorization at once (same commit, or the next: an authorization that fails
        fails it too) instead of waiting for it. Exclusive mode only: shared mode holds
        the transition lock until a start is durable, and reads the store.

        ``notify`` is called when the start's append is resolved; then
        :meth:`ChainedStart.settle` answers (signed for ``nonce``), or raises. ``None``:
        nothing queued, because a trust change is being recorded (its lock is taken: this
        runs on the event loop, which must not wait for it); start after the commit.

        Raises:
            As :meth:`start`, before anything of the start is queued; ``WarrantError``
            also when ``issue`` is not this warrant's (the entry behind its decision).
        """
        if self._transitions is not None:
            raise StoreError("a chained start is not available in shared mode")
        seen = self._trust_changes
        verified, zone, now = self._verify_start(principal, body)
        claims = verified.claims
        if issue.issued_index != claims.decision_index + 1:  # what start() reads from the store
            raise WarrantError(
                f"warrant {claims.warrant_id} was not issued behind its decision", reason="forged"
            )
        if not self.registry.claim(claims.warrant_id):
            raise ExecutionConflictError(f"warrant {claims.warrant_id} is starting an execution (replayed)")
        append: Append | None = None
        try:
            slot = self._admit(principal, claims, now)
            try:
                event, row, answer = self._start_event(principal, body, zone, verified, issue, now)
                append = self._try_queue_start(event, row, principal, claims.warrant_id, seen, notify)
            finally:
                if append is None:
                    self.registry.abandon_start(slot)
        finally:
            if append is None:
                self.registry.release(claims.warrant_id)
        if append is None:
            return None
        return ChainedStart(
            self, principal=principal, verified=verified, slot=slot, answer=answer, append=append, nonce=nonce
        )

    def _verify_start(self, principal: str, body: Any) -> tuple[VerifiedWarrant, str, float]:
        """Steps 1 and 2 of a start: the verified warrant, the zone, and the time.

        Raises:
            As :meth:`start`.
        """
        lagging = self._trust.lagging
        if lagging is not None:
            raise StoreError(f"{lagging}; no execution starts here")
        token = _field(body, "warrant", str)
        measurement = _field(body, "measurement", dict)
        argv = body.get("argv", [])
        arguments = body.get("arguments")
        if type(argv) is not list or not all(type(a) is str for a in argv):
            raise RequestShapeError("argv: expected an array of strings")
        action = _field(body, "action", str)
        try:
            measured = measured_resource(measurement)
        except IntegrityError as e:
            raise RequestShapeError(str(e)) from e
        now = self._clock()
        # 1. The warrant verifies for exactly what the enforcer measured: the resource
        #    is the measured file, its digest the warrant's executable digest.
        request = WarrantRequest(
            action=action,
            resource=_field(body, "resource", str),
            args_digest=args_digest(arguments if isinstance(arguments, dict) else argv),
            zone=_field(body, "zone", str, default=""),
            executable_digest=measured.digest if action == "exec" or measured.tool else "",
        )
        verified = self.minted.verify(
            token,
            root_public_key=self._warrant_public_key,
            now=int(now),
            request=request,
            revoked=self._trust.warrant_revoked,
        )
        claims = verified.claims
        try:
            check_measurement(
                measurement,
                action=claims.action,
                resource=claims.resource,
                executable_digest=claims.executable_digest,
            )
        except IntegrityError as e:
            raise WarrantError(
                f"warrant {claims.warrant_id} does not cover what was measured: {e}", reason="scope"
            ) from e
        # 2. It is the caller's and the caller is active (and, in :meth:`start`, this
        #    governor issued it).
        if claims.principal != principal:
            raise PrincipalError(
                f"warrant {claims.warrant_id} belongs to {claims.principal!r}, not {principal!r}"
            )
        record = self._trust.principal(principal)
        if record is None or record.status != "active":
            raise PrincipalError(f"principal {principal!r} is not active")
        return verified, request.zone, now

    def _admit(self, principal: str, claims: WarrantClaims, now: float) -> StartSlot:
        """Steps 3 and 4, under the warrant's claim: unused, and within the quotas.

        Raises:
            ExecutionConflictError: the warrant already started an execution.
            QuotaError: over a start quota (nothing recorded, the warrant stays unused).
        """
        if not self._state.claim_warrant(claims.warrant_id):
            raise ExecutionConflictError(
                f"warrant {claims.warrant_id} already started an execution (replayed)"
            )
        # 4. Quotas (proctor.governor.quotas): admitted and reserved in one step of the
        #    registry before anything is recorded; refused, the warrant stays unused. A
        #    start that is not recorded gives its slot back.
        return self.registry.admit_start(principal, int(now), self._quotas.limits(principal))

    def _start_event(  # noqa: PLR0917 - the parts of one verified start, in order
        self,
        principal: str,
        body: dict[str, Any],
        zone: str,
        verified: VerifiedWarrant,
        issue: Issue,
        now: float,
    ) -> tuple[dict[str, Any], Side, dict[str, Any]]:
        """``execution.started``, its row, and the answer (without its log index)."""
        claims = verified.claims
        engine = self._trust.engine
        execution_id = "ex_" + base64.b32encode(secrets.token_bytes(15)).decode().lower()
        ttl_ms = claims.lease_ttl_ms
        lease_expires = lease_expiry_ms(now, ttl_ms)
        event = {
            "v": 1,
            "type": "execution.started",
            "time": rfc3339(now),
            "node": self._node,
            "execution": execution_id,
            "warrant": claims.warrant_id,
            "principal": principal,
            "measurement": body["measurement"],
            "containment": _planned(body.get("containment")),
            "enforcer": str(body.get("enforcer", ""))[:256],
            "zone": zone,
            "lease_ttl_ms": ttl_ms,
            "parent": {"index": issue.issued_index, "leaf_hash": base64.b64encode(issue.leaf_hash).decode()},
        }
        if verified.bounds.blocks:
            event["attenuations"] = verified.bounds.blocks
        row = self._state.execution_writer(
            {
                "id": execution_id,
                "warrant": claims.warrant_id,
                "principal": principal,
                "bundle": issue.bundle or (engine.bundle_digest if engine is not None else ""),
                "request": orjson.dumps(issue.request).decode(),
                "started_index": -1,
                "indices": [claims.decision_index, issue.issued_index],
                "lease_expires_ms": lease_expires,
                "ttl_ms": ttl_ms,
                "started": int(now),
                "presented": str(body["warrant"]),
            }
        )
        answer = {
            "execution": execution_id,
            "log_index": -1,  # once queued
            "lease_ttl_ms": ttl_ms,
            "lease_expires_ms": lease_expires,
            "warrant": claims.warrant_id,
            "expires": verified.expires,
        }
        return event, row, answer

    def _queue_start(
        self,
        event: dict[str, Any],
        row: Side,
        principal: str,
        warrant_id: str,
        seen: int,
        *,
        notify: Notify | None = None,
    ) -> Append:
        """Queue ``execution.started`` with its row, ordered with the trust changes
        (:meth:`trust_change`): if one may have committed since :meth:`start` began
        (``seen``; in shared mode, always: another process may have made it), the
        principal and the warrant chain are read again from the store first.

        Raises:
            PrincipalError: the principal is no longer active.
            WarrantError: the warrant, an ancestor, or its principal was revoked.
        """
        if self._transitions is not None:
            return self._queue_rechecked(event, row, principal, warrant_id, recheck=True, notify=notify)
        with self._gate:
            recheck = self._trust_changes != seen
            return self._queue_rechecked(event, row, principal, warrant_id, recheck=recheck, notify=notify)

    def _try_queue_start(  # noqa: PLR0917 - _queue_start's
        self, event: dict[str, Any], row: Side, principal: str, warrant_id: str, seen: int, notify: Notify
    ) -> Append | None:
        """:meth:`_queue_start` on the event loop (a chained start, exclusive mode): ``None``
        instead of waiting while a trust change holds the ordering lock until its commit."""
        if not self._gate.acquire(blocking=False):
            return None
        try:
            recheck = self._trust_changes != seen
            return self._queue_rechecked(event, row, principal, warrant_id, recheck=recheck, notify=notify)
        finally:
            self._gate.release()

    def _queue_rechecked(
        self,
        event: dict[str, Any],
        row: Side,
        principal: str,
        warrant_id: str,
        *,
        recheck: bool,
        notify: Notify | None,
    ) -> Append:
        if recheck:
            record = self._state.principal(principal)
            if record is None or self._trust.effective(record).status != "active":
                raise PrincipalError(f"principal {principal!r} is not active (changed during the start)")
            if self._trust.warrant_revoked(warrant_id):
                raise WarrantError(f"warrant {warrant_id} was revoked during the start", reason="revoked")
        return self._log.submit([event], side=[row], notify=notify)

    def _full_request(self, index: int, decision: dict[str, Any]) -> dict[str, Any]:
        """The decision's request with its arguments (the log has only their commitment;
        re-evaluation under a new policy needs them)."""
        logged = decision.get("request", {})
        kept = self._state.opening(index) if "args_commitment" in logged else None
        try:
            opening = None if kept is None else ArgumentOpening.from_json(kept)
        except ProctorError as e:
            raise WarrantError(f"the decision at {index}: {e}", reason="malformed") from e
        return with_arguments(index, decision, opening)

    def _owned(self, principal: str, execution_id: str) -> StoredExecution:
        record = self._state.execution(execution_id)
        if record is None or record["principal"] != principal:
            raise PrincipalError(f"no execution {execution_id!r} of {principal!r}")
        return record

    def renew(
        self, principal: str, execution_id: str, body: Any, *, nonce: str | None = None
    ) -> dict[str, Any]:
        """Re-verify everything; extend the lease, or say why the execution must die.

        Every answer names the lease's TTL and the warrant; the answer to a signed
        request (``nonce``: its nonce) carries ``lease_sig`` (:meth:`_signed`).

        Raises:
            StoreError: the log cannot durably record now (a full disk): no lease is
                renewed, so every execution dies when its lease ends (fail closed);
                or (shared mode) this process's trust is behind the store's.
        """
        failure = self._log.commit_failure
        if failure is not None:
            raise StoreError(f"the governor cannot durably record ({failure}); the lease is not renewed")
        lagging = self._trust.lagging
        if lagging is not None:  # shared: a revocation recorded elsewhere may not be known here
            raise StoreError(f"{lagging}; the lease is not renewed here")
        record = self._owned(principal, execution_id)
        answer = self._renewed(record, body)
        answer["lease_ttl_ms"], answer["warrant"] = int(record["ttl_ms"]), str(record["warrant"])
        return self._signed(answer, "renew", execution_id, nonce)

    def signed_start(self, answer: dict[str, Any], nonce: str | None) -> dict[str, Any]:
        """A start's answer with ``lease_sig`` for the request of ``nonce`` (:meth:`_signed`)."""
        return self._signed(answer, "start", str(answer["execution"]), nonce)

    def _signed(
        self, answer: dict[str, Any], kind: str, execution_id: str, nonce: str | None
    ) -> dict[str, Any]:
        """``answer`` with ``lease_sig``: the warrant key's signature binding it to the
        request of ``nonce`` (:mod:`proctor.verification.lease_answer`, ADR 0017)."""
        if nonce is None or self._lease_signer is None:
            return answer
        lease = LeaseAnswer(
            execution=execution_id,
            kind="start" if kind == "start" else "renew",
            nonce=nonce,
            ok=bool(answer.get("ok", True)),
            terminate=str(answer.get("terminate", "")),
            lease_expires_ms=int(answer.get("lease_expires_ms", 0)),
            lease_ttl_ms=int(answer["lease_ttl_ms"]),
            warrant=str(answer["warrant"]),
        )
        answer[LEASE_SIG_FIELD] = sign_lease_answer(lease, self._lease_signer)
        return answer

    def _renewed(self, record: StoredExecution, body: Any) -> dict[str, Any]:
        execution_id, principal = record["id"], record["principal"]
        now = self._clock()
        if record["status"] != "running":
            return {
                "ok": False,
                "terminate": record["reason"] or "revoked",
                "detail": f"status {record['status']}",
            }
        verdict = self._recheck(record, body, now)
        if verdict.terminate is not None:
            self.registry.not_running(execution_id, principal)
            # Only a running execution (not one that ended meanwhile, here or elsewhere).
            self._state.mark_terminating(execution_id, verdict.terminate)
            return {"ok": False, "terminate": verdict.terminate, "detail": verdict.detail}
        expires = lease_expiry_ms(now, int(record["ttl_ms"]))
        if not self.registry.set_lease(execution_id, expires, now_ms=millis(now)):
            # Shared mode: since it was read, another process ended or revoked it, or
            # its stored lease lapsed (the sweeper's to close): never revived.
            current = self._state.execution(execution_id)
            if current is not None and current["status"] != "running":
                return {
                    "ok": False,
                    "terminate": current["reason"] or "revoked",
                    "detail": f"status {current['status']}",
                }
            return {"ok": False, "terminate": "lease-lost", "detail": "the lease expired before this renewal"}
        return {"ok": True, "lease_expires_ms": expires, "bundle": record["bundle"]}

    def presented(self, record: StoredExecution) -> VerifiedWarrant:
        """The warrant the enforcer presented at the start of the execution of ``record``
        (verified again after a restart).

        Raises:
            WarrantError: the warrant does not verify.
        """
        verified = self.registry.presented(record["id"])
        if verified is not None:
            return verified
        token = str(record.get("presented") or "")
        if not token:  # started before presented warrants were kept: the issued one
            issued = self._state.warrant(record["warrant"])
            token = str(issued["token"]) if issued is not None else ""
        verified = verify_warrant_bounds(
            token,
            root_public_key=self._warrant_public_key,
            now=int(record["started"]),
            request=None,
        )
        self.registry.remember(record["id"], verified)
        return verified

    def _recheck(self, record: StoredExecution, body: Any, now: float) -> Verdict:
        """:func:`proctor.verification.recheck.recheck` over this governor's state; records
        ``execution.verified`` for a re-evaluation under a new bundle, before the verdict
        is acted on."""
        execution = ExecutionRecord(  # raises VerificationError on a malformed row
            execution_id=record["id"],
            principal=record["principal"],
            warrant_id=record["warrant"],
            bundle=record["bundle"],
            request=record["request"],
            lease_expires_ms=self.lease_expires_ms(record),
        )
        view = _TrustView(self._state, self._trust, presented=lambda: self.presented(record))
        verdict = recheck(execution, view, now, RenewalReport.from_json(body))
        done = verdict.reevaluation
        if done is not None:
            self._record_verified(record, done.allowed, done.bundle, done.reason, now)
        return verdict

    def _record_verified(
        self, record: StoredExecution, allowed: bool, bundle: str, reason: str, now: float
    ) -> None:
        event = {
            "v": 1,
            "type": "execution.verified",
            "time": rfc3339(now),
            "node": self._node,
            "execution": record["id"],
            "checked": ["policy"],
            "result": "allowed" if allowed else "denied",
            "bundle": bundle,
            "reason": reason,
            "parent": self._link(int(record["started_index"])),
        }
        # The new bundle is the execution's only if it allowed it; both with the event.
        if allowed:
            update = self._state.execution_update_writer(record["id"], bundle=bundle)
        else:
            update = self._state.execution_update_writer(record["id"])
        index = self._record(event, [update])
        record["indices"] = [*record["indices"], index]
        if allowed:
            record["bundle"] = bundle

    def finish(self, principal: str, execution_id: str, body: Any) -> dict[str, Any]:
        """Append ``execution.completed`` or ``execution.terminated``; close the execution.

        An execution that was revoked, or told to terminate, can only end as
        terminated: its enforcer's word that it completed is not taken.
        """
        # The warrant never changes: checked before the claim, a refused finish holds nothing.
        _bound_to(self._owned(principal, execution_id), body)
        if not self.registry.claim(execution_id):
            raise ExecutionConflictError(f"execution {execution_id} is already ending")
        try:
            with self._turn():  # shared: read again under it (another process may have ended it)
                record = self._owned(principal, execution_id)
                if record["status"] in ("completed", "terminated", "failed"):
                    raise ExecutionConflictError(
                        f"execution {execution_id} already ended ({record['status']})"
                    )
                answer, responses, facts = self._finished(record, body)
        finally:
            self.registry.release(execution_id)
        if responses:  # only now that the violation is on record (and no lock is held)
            run_responses(responses, facts, suspend=self._suspend)
        return answer

    def _finished(
        self, record: StoredExecution, body: Any
    ) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        """Record the end; the answer, and the governance responses to run with their facts."""
        execution_id = record["id"]
        outcome = _field(body, "outcome", str)
        now = self._clock()
        event: dict[str, Any] = {
            "v": 1,
            "time": rfc3339(now),
            "node": self._node,
            "execution": execution_id,
            "duration_ms": max(0, int(now * 1000) - int(record["started"]) * 1000),
            "parent": self._link(int(record["started_index"])),
        }
        usage = body.get("resource_usage", {})
        if isinstance(usage, dict):
            event["resource_usage"] = {
                str(k)[:64]: int(v) for k, v in list(usage.items())[:32] if type(v) is int
            }
        if outcome not in ("completed", "terminated", "failed"):
            raise RequestShapeError(f"outcome: expected completed, terminated or failed, found {outcome!r}")
        with self._ending_order():  # the outcome, and its end queued, in one order with revocations
            pending, status, responses = self._ending_queued(record, body, event, outcome, now)
        index = pending.wait()[0]
        with self._ending:
            self._revoking.discard(execution_id)  # ended: nothing more to decide
        self.registry.ended(execution_id)
        self.registry.not_running(execution_id, str(record["principal"]))
        facts: dict[str, Any] = {}
        if responses:
            facts = {
                "execution": execution_id,
                "principal": record["principal"],
                "warrant": record["warrant"],
                "reason": event["reason"],
                "detail": event.get("detail", ""),
            }
        return {"execution": execution_id, "log_index": index, "status": status}, responses, facts

    def _ending_queued(
        self, record: StoredExecution, body: Any, event: dict[str, Any], outcome: str, now: float
    ) -> tuple[Append, str, list[str]]:
        """Under ``_ending``: the end's event completed and queued; (its pending append,
        the status, the governance responses). An execution whose revocation is queued
        (:meth:`execution_revocation`) or whose row says ``terminating`` ends terminated."""
        execution_id = record["id"]
        revoked = execution_id in self._revoking
        terminating = record["status"] == "terminating" or revoked
        governors_reason = record["reason"] or ("revoked" if revoked else "")
        outputs = {name: _output_digest(body, name) for name in ("stdout", "stderr")}
        if outcome == "completed":
            exit_status = _field(body, "exit_status", int)
            if terminating:
                # Governance had decided it must die (revoked, or a failed renewal):
                # whatever its enforcer says, the log says it was terminated.
                outcome = "terminated"
                body = {
                    **body,
                    "reason": governors_reason or "revoked",
                    "detail": f"ended (exit status {exit_status}) after governance had terminated it",
                }
            else:
                event.update(
                    type="execution.completed",
                    exit_status=exit_status,
                    stdout_digest=outputs["stdout"],
                    stderr_digest=outputs["stderr"],
                )
        if outcome in ("terminated", "failed"):
            reason = _field(body, "reason", str)
            if terminating and governors_reason and outcome == "terminated":
                reason = governors_reason  # the governor's reason, not the enforcer's
            if outcome == "terminated" and reason not in TERMINATION_REASONS:
                raise RequestShapeError(
                    f"reason: expected one of {list(TERMINATION_REASONS)}, found {reason!r}"
                )
            event.update(
                type="execution.terminated",
                reason=reason[:64],
                signal=str(body.get("signal", ""))[:16],
                processes_killed=int(body["processes_killed"])
                if type(body.get("processes_killed")) is int
                else 0,
                detail=str(body.get("detail", ""))[:1000],
                stdout_digest=outputs["stdout"],
                stderr_digest=outputs["stderr"],
            )
            if "exit_status" in body and type(body["exit_status"]) is int:
                event["exit_status"] = body["exit_status"]
        responses: list[str] = []
        if outcome == "terminated" and event["reason"] in VIOLATIONS:
            decision = orjson.loads(self._log.leaf(int(record["indices"][0])))
            responses = planned_responses(decision.get("obligations", {}))
            event["responses"] = [{"response": r} for r in responses]
        status = "completed" if outcome == "completed" else outcome
        ended = self._state.execution_update_writer(
            execution_id, status=status, reason=event.get("reason", ""), ended=int(now)
        )
        return self._log.submit([event], side=[ended]), status, responses

    def receipt(self, execution_id: str) -> dict[str, Any]:
        """The execution's self-contained, offline-verifiable receipt
        (:func:`proctor.governor.receipts.execution_receipt`)."""
        from proctor.governor.receipts import execution_receipt  # noqa: PLC0415 - built on demand

        return execution_receipt(execution_id, state=self._state, log=self._log, log_signer=self._log_signer)


class _TrustView:
    """The governor's state as :func:`~proctor.verification.recheck.recheck` reads it, for
    one renewal of one execution. The active engine is read once, when the re-check asks
    for its digest, so the bundle compared is the bundle that decides."""

    __slots__ = ("_engine", "_presented", "_state", "_trust")

    def __init__(
        self, state: StateStore, trust: ReadOnlyTrust, *, presented: Callable[[], VerifiedWarrant]
    ) -> None:
        self._state = state
        self._trust = trust
        self._presented = presented
        self._engine: PolicyEngine | None = None

    def is_revoked(self, kind: str, target: str) -> bool:
        return self._state.is_revoked(kind, target)

    def warrant_revoked(self, warrant_id: str) -> bool:
        # The trust view's, which also counts every warrant revoked while the state is untrusted.
        return self._trust.warrant_revoked(warrant_id)

    def principal_active(self, name: str) -> bool:
        principal = self._trust.principal(name)
        return principal is not None and principal.status == "active"

    def presented_warrant(self) -> VerifiedWarrant:
        return self._presented()

    def active_bundle(self) -> str | None:
        self._engine = self._trust.engine
        return None if self._engine is None else self._engine.bundle_digest

    def decide(self, request: str, now: int) -> Decision:
        if self._engine is None:  # recheck asks only after active_bundle named one
            raise ProctorError("no policy engine was read for this re-check; nothing is re-evaluated")
        return self._engine.decide(PolicyRequest.from_json(orjson.loads(request)), now=now)


class ChainedStart:
    """A start queued behind its authorization (:meth:`Executions.start_chained`): once
    its append is resolved, :meth:`settle` answers as :meth:`Executions.start` does, or
    raises why it was not recorded; either way its claim and quota slot are given back
    (a recorded start's slot became its running execution). A recorded start whose
    answer the caller does not hand out (its authorization was not answered with the
    warrant, the request was cancelled) is ended at once by :meth:`end_unanswered`."""

    def __init__(
        self,
        executions: Executions,
        *,
        principal: str,
        verified: VerifiedWarrant,
        slot: StartSlot,
        answer: dict[str, Any],
        append: Append,
        nonce: str | None,
    ) -> None:
        self._executions, self._principal, self._verified = executions, principal, verified
        self._slot, self._answer, self.append = slot, answer, append
        self._nonce = nonce
        self.recorded = False
        self._ended = False

    def settle(self) -> dict[str, Any]:
        """The start's answer, signed for the request's nonce, once its append is resolved.

        Raises:
            LineageError, StoreError, EventError: the start was not recorded.
        """
        try:
            answer = dict(self._answer, log_index=self.append.result()[0])
            registry = self._executions.registry
            registry.started(
                answer["execution"], self._principal, answer["lease_expires_ms"], self._verified, self._slot
            )
            self.recorded = True
            return self._executions.signed_start(answer, self._nonce)
        finally:
            self._executions.registry.abandon_start(self._slot)  # nothing once it started
            self._executions.registry.release(self._verified.claims.warrant_id)

    def end_unanswered(self, why: str) -> None:
        """Record the end of a start that was recorded but not handed out (``failed``,
        reason ``not-answered``): nothing runs under it, and it no longer counts as
        running. Once; a failure to record is left to the sweeper (the lease lapses)."""
        if not self.recorded or self._ended:
            return
        self._ended = True
        body = {"outcome": "failed", "reason": "not-answered", "detail": why[:900]}
        try:
            self._executions.finish(self._principal, str(self._answer["execution"]), body)
        except ProctorError as e:
            _log.warning("could not end the unanswered start %s: %s", self._answer["execution"], e)


def _bound_to(record: StoredExecution, body: Any) -> None:
    """A finish that names a warrant ends the execution only if it runs under it: an
    enforcer that knows its warrant but not whether the execution id it holds is genuine
    (a start answer it could not accept) cannot end another of its principal's runs.

    Raises:
        RequestShapeError: ``warrant`` is not a string.
        ExecutionConflictError: the execution runs under another warrant (nothing recorded).
    """
    warrant = body.get("warrant") if isinstance(body, dict) else None
    if warrant is None:
        return
    if type(warrant) is not str:
        raise RequestShapeError(f"warrant: expected a warrant id, found {type(warrant).__name__}")
    if not hmac.compare_digest(warrant.encode(), str(record["warrant"]).encode()):
        raise ExecutionConflictError(f"execution {record['id']} does not run under warrant {warrant[:80]!r}")
