"""The governor's one HTTP error boundary: which status and ``error`` code answers each
exception, and the one JSON envelope every refusal is sent in (ADR 0011).

Invariants:

- :data:`STATUS` is the only map from exception class to HTTP status and ``error``
  code. :func:`refusal` looks an exception up along its class's MRO, so the most
  specific row wins whatever the order of the table; every class of
  :mod:`proctor.errors` has its own row (``tests/unit/governor/test_boundary.py``).
- An exception that is not a :class:`~proctor.errors.ProctorError` is a bug: it is a
  plain 500 ``{"error": "internal"}``, and its text and traceback go to the server's log
  (``proctor.governor``), never to the client. A ``ProctorError`` without a row of its
  own takes its parent's.
- Every refusal, on the fast path and through FastAPI alike, is one envelope:
  ``{"error": code, "message": text, ...extra}``, with the same object repeated under
  ``"detail"`` for clients written against the older ``{"detail": {...}}`` shape.

Pure: no I/O but the log record of an unexpected exception; no clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from proctor.errors import (
    ArgumentsMismatchError,
    AuthenticationError,
    BodyTooLargeError,
    BundleError,
    CanonicalizationError,
    CheckpointError,
    ConfigError,
    DeniedError,
    EnforcementError,
    EventError,
    EventSizeError,
    ExecutionConflictError,
    GovernorError,
    HeadTooLargeError,
    IntegrityError,
    KeyFormatError,
    LineageError,
    LogAppendError,
    LogClosedError,
    LogIntegrityError,
    LogLockedError,
    MediaTypeError,
    NoSuchTargetError,
    NoteError,
    PolicyError,
    PolicyValidationError,
    PrincipalError,
    ProctorError,
    ProofError,
    ProofRequestError,
    QuotaError,
    RequestLimitError,
    RequestShapeError,
    StoreConflictError,
    StoreError,
    StoreIntegrityError,
    StreamLimitError,
    TerminatedError,
    VerificationError,
    WarrantError,
)

__all__ = [
    "Row",
    "STATUS",
    "INTERNAL",
    "INTERNAL_BODY",
    "envelope",
    "refusal",
    "unexpected",
    "explain",
    "http_code",
]

_log = logging.getLogger("proctor.governor")


def _no_extra(exc: Any) -> dict[str, Any]:
    return {}


def _reason(exc: Any) -> dict[str, Any]:
    return {"reason": exc.reason}


def _quota(exc: QuotaError) -> dict[str, Any]:
    extra: dict[str, Any] = {"quota": exc.quota, "limit": exc.limit, "found": exc.found}
    if exc.retry_after is not None:
        extra["retry_after"] = round(exc.retry_after, 3)
    return extra


def _diagnostics(exc: PolicyValidationError) -> dict[str, Any]:
    return {"diagnostics": list(exc.diagnostics)}


@dataclass(frozen=True)
class Row:
    """How one exception class is answered.

    Attributes:
        status: the HTTP status.
        code: the envelope's ``error`` value (a stable code clients may branch on).
        evidence: what of the exception goes into the envelope (``reason``, ``quota`` …).
    """

    status: int
    code: str
    evidence: Callable[[Any], dict[str, Any]] = _no_extra


_UNAVAILABLE = Row(503, "unavailable")  # the governor cannot do it now; nothing was done

STATUS: Mapping[type[ProctorError], Row] = {
    # The request itself: 4xx, nothing was done.
    AuthenticationError: Row(401, "unauthenticated", _reason),
    PrincipalError: Row(403, "forbidden"),
    NoSuchTargetError: Row(404, "not-found"),
    WarrantError: Row(403, "warrant-rejected", _reason),
    QuotaError: Row(429, "quota", _quota),
    RequestShapeError: Row(422, "bad-request"),
    CanonicalizationError: Row(422, "bad-request"),
    EventSizeError: Row(413, "too-large"),
    RequestLimitError: Row(400, "bad-request"),
    BodyTooLargeError: Row(413, "too-large"),
    HeadTooLargeError: Row(431, "head-too-large"),
    MediaTypeError: Row(415, "unsupported-media-type"),
    StreamLimitError: Row(429, "too-many-streams"),
    ExecutionConflictError: Row(409, "conflict"),
    ProofRequestError: Row(400, "bad-request"),
    PolicyError: Row(422, "policy-rejected"),
    BundleError: Row(422, "policy-rejected"),
    PolicyValidationError: Row(422, "policy-invalid", _diagnostics),
    # The governor's side: 503, the operation was not carried out.
    ProctorError: _UNAVAILABLE,
    ConfigError: _UNAVAILABLE,
    EventError: _UNAVAILABLE,
    LineageError: _UNAVAILABLE,
    LogClosedError: _UNAVAILABLE,
    LogLockedError: _UNAVAILABLE,
    LogAppendError: _UNAVAILABLE,
    LogIntegrityError: _UNAVAILABLE,
    VerificationError: _UNAVAILABLE,
    ProofError: _UNAVAILABLE,
    NoteError: _UNAVAILABLE,
    CheckpointError: _UNAVAILABLE,
    KeyFormatError: _UNAVAILABLE,
    EnforcementError: _UNAVAILABLE,
    IntegrityError: _UNAVAILABLE,
    StoreError: _UNAVAILABLE,
    StoreConflictError: _UNAVAILABLE,
    StoreIntegrityError: _UNAVAILABLE,  # caught inside the store; here only if a rule was missed
    GovernorError: _UNAVAILABLE,  # the client's own error; a governor never raises it
    ArgumentsMismatchError: _UNAVAILABLE,  # the engine turns it into a deny; never answered
    DeniedError: _UNAVAILABLE,  # the SDK's own errors; a governor never raises them
    TerminatedError: _UNAVAILABLE,
}
"""Exception class to its answer. Looked up along the MRO: the most specific row wins."""

INTERNAL = Row(500, "internal")
"""The answer to any exception outside :class:`~proctor.errors.ProctorError`."""


def envelope(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of a refusal: ``{"error", "message", ...extra, "detail": {the same}}``."""
    body = {"error": code, "message": message, **extra}
    return {**body, "detail": body}


def refusal(exc: BaseException, *, where: str = "") -> tuple[int, bytes]:
    """The status and JSON body that answer ``exc``.

    Args:
        exc: what a handler raised.
        where: the request (``"POST /v1/authorize"``), for the log record of an
            unexpected exception.

    Returns:
        ``(status, body)`` from :data:`STATUS`; for an exception outside the
        ``ProctorError`` tree, :func:`unexpected`'s plain 500.
    """
    if isinstance(exc, ProctorError):
        for cls in type(exc).__mro__:
            row = STATUS.get(cls)
            if row is not None:
                return row.status, orjson.dumps(envelope(row.code, str(exc), **row.evidence(exc)))
    return unexpected(exc, where=where)


def unexpected(exc: BaseException, *, where: str = "") -> tuple[int, bytes]:
    """Log ``exc`` with its traceback to ``proctor.governor``; the plain 500 that
    answers it (which says nothing of it)."""
    _log.error("unexpected error answering %s", where or "a request", exc_info=exc)
    return INTERNAL.status, INTERNAL_BODY


INTERNAL_BODY = orjson.dumps(envelope(INTERNAL.code, "internal error"))
"""The body of every 500: ``{"error": "internal", "message": "internal error", "detail": ...}``."""

_CODES = {400: "bad-request", 404: "not-found", 405: "method-not-allowed", 422: "bad-request"}


def http_code(status: int) -> str:
    """The ``error`` code of a refusal made by the web framework itself (no such route,
    method not allowed), by its status."""
    return _CODES.get(status, "bad-request" if status < 500 else "unavailable")


# -- what was expected, what was found --------------------------------------------------

_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
    "array": "an array",
    "object": "an object",
}
_PLURALS = {"string": "strings", "integer": "integers", "object": "objects", "array": "arrays"}
_BY_ERROR = {  # pydantic error types whose expectation is plain without a schema
    "int_parsing": "an integer",
    "int_type": "an integer",
    "string_type": "a string",
    "bool_parsing": "a boolean",
    "bool_type": "a boolean",
    "dict_type": "an object",
    "model_type": "an object",
    "list_type": "an array",
    "float_parsing": "a number",
}
_MOST_LISTED = 8


def _found(value: Any) -> str:
    """What kind of JSON value ``value`` is, for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string" if len(value) > 40 else repr(value)
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _resolve(root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {}), root)
    return schema


def _at(root: Mapping[str, Any], loc: Sequence[int | str]) -> Mapping[str, Any]:
    """The part of JSON schema ``root`` that describes the value at ``loc``."""
    schema = _resolve(root, root)
    for key in loc:
        if isinstance(key, int):
            schema = schema.get("items", {})
        else:
            properties = schema.get("properties", {})
            extra = schema.get("additionalProperties", {})
            schema = properties.get(key, extra if isinstance(extra, dict) else {})
        schema = _resolve(schema, root)
    return schema


def _describe(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """What a JSON schema asks for, in words ("an array of strings", "one of [...]")."""
    schema = _resolve(schema, root)
    if "enum" in schema:
        return f"one of {list(schema['enum'])}"
    if "anyOf" in schema:
        return " or ".join(_describe(s, root) for s in schema["anyOf"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(_TYPES.get(str(k), str(k)) for k in kind)
    if kind == "array":
        items = _resolve(schema.get("items", {}), root).get("type")
        return f"an array of {_PLURALS[items]}" if items in _PLURALS else "an array"
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict) and values.get("type") in _PLURALS:
            return f"an object of {_PLURALS[values['type']]}"
        return "an object"
    return _TYPES.get(str(kind), "a JSON value")


def _one(error: Mapping[str, Any], root: Mapping[str, Any] | None, *, skip: int) -> str:
    loc = tuple(error.get("loc", ()))
    where = ".".join(str(k) for k in loc[skip:])
    kind, ctx, value = error.get("type", ""), error.get("ctx") or {}, error.get("input")
    if root is not None:
        expected = _describe(_at(root, loc), root) if loc else "a JSON object"
    else:
        expected = _BY_ERROR.get(kind, "")
    if kind == "missing":
        what = f"expected {expected or 'a value'}, found nothing"
    elif kind == "value_error":
        what = str(ctx.get("error", error.get("msg", "")))
    elif kind == "string_too_short" and ctx.get("min_length") == 1:
        what = "expected a non-empty string"
    elif kind in ("string_too_short", "string_too_long"):
        bound = "at least" if kind.endswith("short") else "at most"
        limit = ctx.get("min_length", ctx.get("max_length"))
        length = len(value) if isinstance(value, str) else "?"
        what = f"expected {bound} {limit} characters, found {length}"
    elif kind in ("too_short", "too_long"):
        bound = "at least" if kind.endswith("short") else "at most"
        limit = ctx.get("min_length", ctx.get("max_length"))
        what = f"expected {bound} {limit} entries, found {ctx.get('actual_length', '?')}"
    elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = next(
            f"{op} {ctx[k]}" for k, op in (("ge", ">="), ("le", "<="), ("gt", ">"), ("lt", "<")) if k in ctx
        )
        what = f"expected {expected or 'a number'} {bound}, found {value!r:.40}"
    elif expected:
        what = f"expected {expected}, found {_found(value)}"
    else:
        what = str(error.get("msg", "invalid"))
    return f"{where}: {what}" if where else what


def explain(
    errors: Iterable[Mapping[str, Any]], schema: Mapping[str, Any] | None = None, *, skip: int = 0
) -> str:
    """One message for a pydantic validation failure: each wrong field with what was
    expected and what was found; unknown fields named together.

    Args:
        errors: ``ValidationError.errors()`` (or FastAPI's ``RequestValidationError``).
        schema: the model's JSON schema, to say what a field expects; without it the
            error type says it.
        skip: leading ``loc`` parts to leave out of the field names.
    """
    errors = list(errors)
    parts: list[str] = []
    unknown: dict[tuple[int | str, ...], list[str]] = {}
    for error in errors:
        if error.get("type") == "extra_forbidden":
            loc = tuple(error.get("loc", ()))
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
    for parent, names in unknown.items():
        known = sorted(_at(schema, parent).get("properties", {})) if schema is not None else []
        prefix = ".".join(str(k) for k in parent[skip:])
        what = f"unknown fields {sorted(names)}; expected some of {known}"
        parts.append(f"{prefix}: {what}" if prefix else what)
    parts += [_one(e, schema, skip=skip) for e in errors if e.get("type") != "extra_forbidden"]
    more = len(parts) - _MOST_LISTED
    listed = "; ".join(parts[:_MOST_LISTED])
    return f"{listed}; and {more} more" if more > 0 else listed
