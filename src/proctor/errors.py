"""The whole exception tree of proctor.

Every exception proctor raises on purpose derives from :class:`ProctorError`, and
every name ends in ``Error``. Foreign exceptions are wrapped at the boundary where
they enter (``raise StoreError(...) from e``), so callers catch proctor's tree and
nothing else::

    ProctorError
    ├── ConfigError                 data directory missing, malformed or of an unknown version
    ├── EventError                  an event is not acceptable to the lineage log
    │   ├── CanonicalizationError   not in the canonical JSON subset (RFC 8785 / I-JSON)
    │   └── EventSizeError          larger than the 64 KiB limit
    ├── LineageError                the lineage log cannot do what was asked
    │   ├── LogClosedError          the log was closed
    │   ├── LogLockedError          another process is appending to the same log
    │   ├── LogAppendError          an append was not made durable (nothing was acknowledged)
    │   ├── LogIntegrityError       stored data does not match its hashes or checkpoints
    │   └── ProofRequestError       a proof was asked for an index or size the log cannot prove
    ├── VerificationError           a proof, signature or checkpoint does not verify
    │   ├── ProofError              an RFC 9162 inclusion or consistency proof is invalid
    │   ├── NoteError               a C2SP signed note is malformed or its signature is bad
    │   ├── CheckpointError         a C2SP checkpoint body is malformed
    │   └── WarrantError            a warrant is forged, expired, out of scope or revoked
    ├── KeyFormatError              a key string or key file is malformed
    ├── AuthenticationError         a request's signature, timestamp or nonce is not acceptable
    ├── PrincipalError              a principal is unknown, malformed, or may not do this
    │   └── NoSuchTargetError       an admin operation names something the governor does not know
    ├── QuotaError                  a principal is at one of its quotas (HTTP 429); nothing was done
    ├── RequestShapeError           an API request body does not have the expected shape
    ├── RequestLimitError           a request exceeds a limit of the governor's HTTP boundary
    │   ├── BodyTooLargeError       the body is (or says it is) over the limit
    │   ├── HeadTooLargeError       the head has too many fields or bytes
    │   ├── MediaTypeError          a body is declared as something other than what the route reads
    │   └── StreamLimitError        no event stream slot is free
    ├── ExecutionConflictError      an execution cannot change as asked (replayed warrant, ended)
    ├── GovernorError               (client side) the governor refused, or could not be reached
    ├── DeniedError                 (SDK) a governed call was not authorized; it did not run
    ├── TerminatedError             (SDK) governance ended a governed call while it ran
    ├── EnforcementError            an execution cannot be started, contained or supervised
    │   └── IntegrityError          what would run (or runs) is not what was measured
    ├── ArgumentsMismatchError      a tool call's arguments do not fit its catalogued schema (a deny)
    ├── PolicyError                 a policy bundle cannot be activated
    │   ├── PolicyValidationError   policies do not parse or validate against the schema
    │   └── BundleError             a bundle is malformed, or its signature or digest is wrong
    └── StoreError                  the persistence layer failed (wraps the driver's error)
        ├── StoreConflictError      the stored state moved under a writer (another writer?)
        └── StoreIntegrityError     a constraint refused a statement (caught inside proctor.store)

Deny is never an exception: a denied request is a ``Decision``. Exceptions mean the
operation could not be carried out, and every caller treats them as "no".

Every class is defined here, and only here; modules that raise one may re-export it
under its old import path. Which HTTP status and ``error`` code each class is answered
with is one table in :mod:`proctor.governor.boundary` (an exception that is not a
``ProctorError`` is a plain 500 there, logged and never described to the client).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ProctorError",
    "ConfigError",
    "EventError",
    "CanonicalizationError",
    "EventSizeError",
    "LineageError",
    "LogClosedError",
    "LogLockedError",
    "LogAppendError",
    "LogIntegrityError",
    "ProofRequestError",
    "VerificationError",
    "ProofError",
    "NoteError",
    "CheckpointError",
    "WarrantError",
    "KeyFormatError",
    "AuthenticationError",
    "PrincipalError",
    "NoSuchTargetError",
    "QuotaError",
    "RequestShapeError",
    "RequestLimitError",
    "BodyTooLargeError",
    "HeadTooLargeError",
    "MediaTypeError",
    "StreamLimitError",
    "ExecutionConflictError",
    "GovernorError",
    "ArgumentsMismatchError",
    "DeniedError",
    "TerminatedError",
    "EnforcementError",
    "IntegrityError",
    "PolicyError",
    "PolicyValidationError",
    "BundleError",
    "StoreError",
    "StoreConflictError",
    "StoreIntegrityError",
]


class ProctorError(Exception):
    """Root of every exception proctor raises on purpose."""


class ConfigError(ProctorError):
    """A data directory is missing, malformed, or of an unknown format version."""


class EventError(ProctorError):
    """An event is not acceptable to the lineage log; nothing was written."""


class CanonicalizationError(EventError):
    """A value lies outside the canonical JSON subset the log accepts."""


class EventSizeError(EventError):
    """An event's canonical encoding is larger than the limit."""


class LineageError(ProctorError):
    """The lineage log cannot carry out the operation."""


class LogClosedError(LineageError):
    """The log was closed; no further operation is possible on this handle."""


class LogLockedError(LineageError):
    """Another process holds the append lock of this log."""


class LogAppendError(LineageError):
    """An append was not made durable; no index was acknowledged."""


class LogIntegrityError(LineageError):
    """Stored data does not match its hashes or its signed checkpoints.

    Attributes:
        index: the first log index found broken, or ``None`` when the damage is
            not tied to one entry (a bad checkpoint signature, say).
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class ProofRequestError(LineageError):
    """A proof was requested for an index or tree size the log cannot prove."""


class VerificationError(ProctorError):
    """A proof, signature or checkpoint does not verify."""


class ProofError(VerificationError):
    """An RFC 9162 inclusion or consistency proof is invalid.

    Attributes:
        reason: a stable code for what failed: ``malformed``, ``index-out-of-range``,
            ``size-order``, ``empty-proof``, ``too-many-hashes``, ``too-few-hashes``,
            ``root-mismatch``, ``old-root-mismatch`` or ``new-root-mismatch``.
    """

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class NoteError(VerificationError):
    """A C2SP signed note is malformed, or carries no valid signature by a trusted key."""


class CheckpointError(VerificationError):
    """A C2SP tlog-checkpoint body is malformed."""


class WarrantError(VerificationError):
    """A warrant does not verify: forged, truncated, wrong key, expired, not yet
    valid, out of scope, widened, over a Datalog limit, or revoked.

    Attributes:
        reason: a stable code for what failed (``forged``, ``expired``,
            ``not-yet-valid``, ``scope``, ``revoked``, ``limit``, ``malformed`` …).
    """

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class KeyFormatError(ProctorError):
    """A key string or key file is malformed."""


class AuthenticationError(ProctorError):
    """A request is not authenticated: unsigned, badly signed, stale, or replayed.

    Attributes:
        reason: a stable code (``unsigned``, ``bad-signature``, ``unknown-key``,
            ``stale``, ``replayed``, ``malformed``).
    """

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class PrincipalError(ProctorError):
    """A principal is unknown, malformed, suspended, or not allowed this operation."""


class NoSuchTargetError(PrincipalError):
    """An admin operation names a principal, warrant or execution the governor does not
    know (HTTP 404); nothing was changed or logged."""


class QuotaError(ProctorError):
    """A principal is at one of its quotas (``<data>/config.toml``, ``[quotas]``); nothing
    was done or recorded. HTTP 429: try again once the quota has room.

    Attributes:
        quota: which quota: ``max_running``, ``max_starts_per_minute``,
            ``max_streams`` or ``max_authorizations_per_second``.
        limit: the quota's value for this principal.
        found: what the principal holds already (executions running or being started;
            starts in the last 60 seconds; authorization requests in the last second).
        retry_after: for a rate, seconds until the principal's next request would be
            admitted (``None`` for the other quotas).
    """

    def __init__(
        self, message: str, *, quota: str, limit: int, found: int, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.quota = quota
        self.limit = limit
        self.found = found
        self.retry_after = retry_after


class RequestShapeError(ProctorError):
    """An API request body does not have the expected shape (HTTP 422); nothing was done."""


class RequestLimitError(ProctorError):
    """A request exceeds a limit of the governor's HTTP boundary
    (:mod:`proctor.governor.limits`); nothing of it was acted on (HTTP 400)."""


class BodyTooLargeError(RequestLimitError):
    """The request body is, or says it is, longer than
    :data:`proctor.governor.limits.MAX_BODY` (HTTP 413)."""


class HeadTooLargeError(RequestLimitError):
    """The request head is over :data:`proctor.governor.limits.MAX_HEAD_BYTES` or has
    more than :data:`proctor.governor.limits.MAX_HEADER_FIELDS` field lines (HTTP 431)."""


class MediaTypeError(RequestLimitError):
    """A request body is declared (``Content-Type``) as something other than what its
    route reads: JSON for the API (HTTP 415); nothing of it was read."""


class StreamLimitError(RequestLimitError):
    """No event stream slot is free for this principal (HTTP 429); try again later."""


class ExecutionConflictError(ProctorError):
    """The execution cannot change as asked (replayed warrant, already finished) (HTTP 409)."""


class GovernorError(ProctorError):
    """(Client side, :mod:`proctor.client`.) The governor answered with an error, or
    could not be reached.

    Attributes:
        status: the HTTP status, or 0 when the governor could not be reached.
        body: the JSON error body (``{"error", "message", ...}``), when there was one.
    """

    def __init__(self, message: str, *, status: int, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ArgumentsMismatchError(ProctorError, ValueError):
    """A tool call's arguments do not fit the tool's catalogued input schema.

    Raised while the policy engine builds the typed ``context.tool``; the engine turns it
    into a deny naming the mismatch, so a governor never answers it as an error.
    """


class DeniedError(ProctorError):
    """(SDK, :mod:`proctor.integrations.sdk`.) A governed call was not authorized, so it
    did not run: the policy denied it, or no warrant or lease could be had (the governor
    refused or could not be reached, the arguments are not JSON). Failing closed: every
    "no answer" is this error, never a call that runs.

    Attributes:
        reason: the decision's reason, or what went wrong instead.
        policies: the ids of the policies that decided (a deny's forbids), if any.
        tool: the governed tool's name (the request's resource).
        decision: the governor's decision as JSON, when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        policies: tuple[str, ...] = (),
        tool: str = "",
        decision: Any = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason or message
        self.policies = policies
        self.tool = tool
        self.decision = decision


class TerminatedError(ProctorError):
    """(SDK, :mod:`proctor.integrations.sdk`.) Governance ended a governed call while it
    ran: its execution was revoked, its lease was refused or lost. An ``async`` call is
    cancelled; a synchronous one cannot be stopped from outside, so its result is
    withheld and this is raised when it returns.

    Attributes:
        execution: the execution's id.
        reason: the governor's termination reason (``revoked``, ``lease-lost`` ...).
    """

    def __init__(self, message: str, *, execution: str, reason: str) -> None:
        super().__init__(message)
        self.execution = execution
        self.reason = reason


class EnforcementError(ProctorError):
    """An execution cannot be started, contained or supervised as required."""


class IntegrityError(EnforcementError):
    """What would run, or runs, is not what was measured and authorized."""


class PolicyError(ProctorError):
    """A policy bundle cannot be activated; the previous bundle stays active."""


class PolicyValidationError(PolicyError):
    """Policies do not parse, or do not validate against the schema.

    Attributes:
        diagnostics: Cedar's messages, one string each.
    """

    def __init__(self, message: str, *, diagnostics: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics


class BundleError(PolicyError):
    """A policy bundle is malformed, or its digest or signature does not verify."""


class StoreError(ProctorError):
    """The persistence layer failed; the driver's exception is the ``__cause__``."""


class StoreConflictError(StoreError):
    """The stored state is not what the writer expected (a second writer, or tampering)."""


class StoreIntegrityError(StoreError):
    """A statement violated a constraint (unique, primary key, check, foreign key).

    Raised by the PostgreSQL connection adapter in place of ``psycopg.IntegrityError``
    (its ``__cause__``), under the name :data:`proctor.store.sql.IntegrityViolation`;
    code written for both backends catches it next to ``sqlite3.IntegrityError``
    (:data:`proctor.store.sql.INTEGRITY_ERRORS`), so it does not leave the store.
    """
