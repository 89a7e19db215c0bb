"""The SDK's side of the governor's protocol, without I/O: request bodies, the checks
on answers, the digests. :class:`~proctor.integrations.sdk.client.Client` and
:class:`~proctor.integrations.sdk.client.AsyncClient` send what this module builds and
read what it checks, so both behave the same.

Rules, numbered as the code cites them:

1. A call's arguments are its bound arguments (``inspect.signature(fn).bind``, defaults
   applied; ``*args`` a list, ``**kwargs`` an object; a method's ``self`` or ``cls`` left
   out) and must be canonical JSON: what cannot be digested cannot be bound into a
   warrant, so it does not run.
2. Before anything starts, the warrant verifies under the governor's warrant key and
   covers exactly this call: action, resource, argument digest and definition digest
   (a warrant for other arguments or another definition starts nothing here, and the
   governor refuses it too).
3. A lease is held only on answers signed by the warrant key for this execution, this
   kind of request and this request's nonce, granting the warrant's own TTL (ADR 0017,
   :func:`~proctor.verification.lease_answer.verify_lease_answer`); a refusal
   (``"ok": false``) is acted upon signed or not (ending the call is failing closed).
4. A result's digest (``stdout_digest``) is ``sha256:`` + hex SHA-256 of its RFC 8785
   canonical JSON, or of its ``repr`` (UTF-8) when it is not JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

from proctor.authorization.claims import args_digest
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.warrants import VerifiedWarrant, verify_warrant_bounds
from proctor.canonical import canonicalize
from proctor.errors import CanonicalizationError, DeniedError, KeyFormatError, VerificationError, WarrantError
from proctor.integrations.sdk.results import Authorization, Lease, Renewal
from proctor.verification.lease_answer import named_start, verify_lease_answer
from proctor.verification.measurement import tool_measurement

__all__ = [
    "KeyLike",
    "accept_start",
    "authorize_body",
    "bind_arguments",
    "check_arguments",
    "check_renewal",
    "check_start",
    "unaccepted_start",
    "check_warrant",
    "finish_body",
    "prepare_start",
    "principal_key",
    "raw_warrant_key",
    "receiver",
    "result_digest",
    "start_body",
]


KeyLike = PrincipalKey | str | os.PathLike[str]
"""A principal key, or the path of its key file (``proctor principal add --out``)."""


def principal_key(key: KeyLike) -> PrincipalKey:
    """The principal key ``key`` is, or names the file of.

    Raises:
        KeyFormatError: it is neither, or the file is not a key (or is readable by others).
    """
    if isinstance(key, PrincipalKey):
        return key
    if isinstance(key, str | os.PathLike):
        return PrincipalKey.load(key)
    raise KeyFormatError(f"key: expected a PrincipalKey or a key file path, found {type(key).__name__}")


def raw_warrant_key(value: bytes | str) -> bytes:
    """The 32 raw bytes of a warrant key given raw or as base64 (``GET /v1/warrant-key``).

    Raises:
        KeyFormatError: not base64, or not 32 bytes.
    """
    if isinstance(value, str):
        try:
            value = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError) as e:
            raise KeyFormatError(f"warrant key: expected base64, found {value[:60]!r}") from e
    if len(value) != 32:
        raise KeyFormatError(f"warrant key: expected 32 bytes of Ed25519 public key, found {len(value)}")
    return bytes(value)


def bind_arguments(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The arguments of one call of ``fn`` as a JSON object (rule 1).

    Raises:
        TypeError: the call does not match ``fn``'s signature (as calling it would).
        DeniedError: (reason ``arguments``) an argument is not canonical JSON.
    """
    bound = inspect.signature(inspect.unwrap(fn)).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if name == receiver(fn):
            continue  # a method's object is not an argument of the call
        kind = bound.signature.parameters[name].kind
        arguments[name] = list(value) if kind is inspect.Parameter.VAR_POSITIONAL else value
    check_arguments(arguments)
    return arguments


def receiver(fn: Callable[..., Any]) -> str:
    """The name of a method's receiver parameter (a first parameter named ``self`` or
    ``cls``), which is not among a call's arguments; ``""`` for none."""
    params = list(inspect.signature(inspect.unwrap(fn)).parameters)
    return params[0] if params and params[0] in ("self", "cls") else ""


def check_arguments(arguments: Mapping[str, Any]) -> None:
    """Rule 1 for arguments given as an object.

    Raises:
        DeniedError: (reason ``arguments``) they are not a canonical JSON object.
    """
    if not isinstance(arguments, Mapping) or not all(type(k) is str for k in arguments):
        raise DeniedError(
            f"arguments: expected a JSON object, found {type(arguments).__name__}", reason="arguments"
        )
    try:
        canonicalize(dict(arguments))
    except (CanonicalizationError, TypeError, ValueError) as e:
        raise DeniedError(
            f"arguments: expected canonical JSON values, found one that is not ({e}); nothing ran",
            reason="arguments",
        ) from e


def result_digest(value: Any) -> str:
    """``sha256:<hex>`` of a result (rule 4)."""
    try:
        data = canonicalize(value)
    except (CanonicalizationError, TypeError, ValueError):
        data = repr(value).encode("utf-8", "backslashreplace")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def authorize_body(
    *,
    action: str,
    resource: str,
    arguments: Mapping[str, Any] | None,
    executable_digest: str = "",
    parent_warrant: str = "",
    zone: str = "",
    approval: str = "",
) -> dict[str, Any]:
    """The body of ``POST /v1/authorize`` (empty fields left out)."""
    body: dict[str, Any] = {"action": action, "resource": resource}
    if arguments is not None:
        body["arguments"] = dict(arguments)
    for name, value in (
        ("executable_digest", executable_digest),
        ("parent_warrant", parent_warrant),
        ("zone", zone),
        ("approval", approval),
    ):
        if value:
            body[name] = value
    return body


def start_body(
    warrant: str, *, action: str, resource: str, arguments: Mapping[str, Any], measurement: Mapping[str, Any]
) -> dict[str, Any]:
    """The body of ``POST /v1/executions`` for a tool call."""
    return {
        "warrant": warrant,
        "action": action,
        "resource": resource,
        "arguments": dict(arguments),
        "measurement": dict(measurement),
        "enforcer": "proctor-sdk",
    }


def check_warrant(
    token: str,
    *,
    warrant_key: bytes,
    now: int,
    action: str,
    resource: str,
    arguments: Mapping[str, Any],
    definition_digest: str,
) -> VerifiedWarrant:
    """Rule 2: the warrant verifies and covers exactly this call.

    Raises:
        DeniedError: (reason ``warrant``) it does not.
    """
    try:
        verified = verify_warrant_bounds(token, root_public_key=warrant_key, now=now, request=None)
    except (WarrantError, KeyFormatError, ValueError) as e:
        raise DeniedError(
            f"{resource}: the warrant does not verify: {e}", reason="warrant", tool=resource
        ) from e
    claims = verified.claims
    wanted = (
        ("action", claims.action, action),
        ("resource", claims.resource, resource),
        ("args_digest", claims.args_digest, args_digest(arguments)),
        ("definition digest", claims.executable_digest, definition_digest),
    )
    for name, granted, asked in wanted:
        if not hmac.compare_digest(granted.encode(), asked.encode()):
            raise DeniedError(
                f"{resource}: the warrant's {name} is {granted!r}, this call's is {asked!r}; nothing ran",
                reason="warrant",
                tool=resource,
            )
    return verified


def prepare_start(
    warrant: str,
    *,
    warrant_key: bytes,
    now: int,
    action: str,
    resource: str,
    arguments: Mapping[str, Any],
    definition_digest: str,
) -> tuple[VerifiedWarrant, dict[str, Any]]:
    """The warrant checked against this call (:func:`check_warrant`), and the body of the
    ``POST /v1/executions`` that starts it, measured as the tool ``definition_digest``.

    Raises:
        DeniedError: (reason ``warrant``) the warrant does not cover exactly this call.
    """
    verified = check_warrant(
        warrant,
        warrant_key=warrant_key,
        now=now,
        action=action,
        resource=resource,
        arguments=arguments,
        definition_digest=definition_digest,
    )
    body = start_body(
        warrant,
        action=action,
        resource=resource,
        arguments=arguments,
        measurement=tool_measurement(resource, definition_digest),
    )
    return verified, body


def finish_body(outcome: str, *, result_digest: str, reason: str, detail: str) -> dict[str, Any]:
    """The body of ``POST /v1/executions/{id}/finish`` (a completed call: exit status 0).

    Raises:
        ValueError: ``outcome`` is not completed, failed or terminated.
    """
    if outcome == "completed":
        return {"outcome": "completed", "exit_status": 0, "stdout_digest": result_digest}
    if outcome not in ("failed", "terminated"):
        raise ValueError(f"outcome: expected completed, failed or terminated, found {outcome!r}")
    body = {"outcome": outcome, "reason": reason or outcome, "detail": detail[:1000]}
    if result_digest:
        body["stdout_digest"] = result_digest
    return body


def accept_start(
    answer: Any,
    *,
    nonce: str,
    authorization: Authorization,
    warrant: VerifiedWarrant,
    warrant_key: bytes,
    resource: str,
) -> Lease:
    """:func:`check_start`, with a start answer that is not the governor's a denial.

    Raises:
        DeniedError: (reason ``start``) the answer does not verify (rule 3).
    """
    try:
        return check_start(
            answer, nonce=nonce, token=str(authorization.warrant), warrant=warrant, warrant_key=warrant_key
        )
    except VerificationError as e:
        raise DeniedError(
            f"{resource}: the start answer is not the governor's ({e}); treated as refused",
            reason="start",
            tool=resource,
        ) from e


def unaccepted_start(answer: Any, warrant: VerifiedWarrant, why: str) -> tuple[str, dict[str, Any]] | None:
    """A start answer that does not verify may still name a start the governor recorded:
    the target and body that finish it (``failed``, ``start-failed``) rather than leave it
    running until its lease lapses, or ``None`` when it names none. The id is the
    unverified answer's, so the body names the verified warrant: the governor ends the
    execution only if it runs under it (else 409, nothing recorded)."""
    execution = named_start(answer, warrant.claims.warrant_id)
    if execution is None:
        return None
    body = {
        "outcome": "failed",
        "reason": "start-failed",
        "detail": f"the start answer is not the governor's ({why}); nothing ran"[:1000],
        "warrant": warrant.claims.warrant_id,
    }
    return f"/v1/executions/{execution}/finish", body


def check_start(
    answer: Any, *, nonce: str, token: str, warrant: VerifiedWarrant, warrant_key: bytes
) -> Lease:
    """Rule 3 for the answer to ``POST /v1/executions``.

    Raises:
        VerificationError: it is not the governor's signed start of this warrant.
    """
    execution = answer.get("execution") if isinstance(answer, dict) else None
    if type(execution) is not str:
        raise VerificationError(f"start answer: expected an execution id, found {execution!r:.80}")
    verified = verify_lease_answer(
        answer,
        kind="start",
        execution=execution,
        nonce=nonce,
        warrant=warrant.claims.warrant_id,
        lease_ttl_ms=warrant.claims.lease_ttl_ms,
        warrant_key=warrant_key,
    )
    index = answer.get("log_index")
    return Lease(
        execution=execution,
        warrant=token,
        warrant_id=warrant.claims.warrant_id,
        lease_ttl_ms=warrant.claims.lease_ttl_ms,
        lease_expires_ms=verified.lease_expires_ms,
        log_index=index if type(index) is int else None,
    )


def check_renewal(answer: Any, *, nonce: str, lease: Lease, warrant_key: bytes) -> Renewal:
    """Rule 3 for the answer to ``POST /v1/executions/{id}/renew``.

    Returns:
        The renewal: ``ok`` only when signed and granted; a refusal as it came.

    Raises:
        VerificationError: an ``ok`` that is not the governor's signed renewal.
    """
    if isinstance(answer, dict) and answer.get("ok") is False:
        reason = answer.get("terminate")
        return Renewal(ok=False, terminate=reason if type(reason) is str and reason else "revoked")
    verified = verify_lease_answer(
        answer,
        kind="renew",
        execution=lease.execution,
        nonce=nonce,
        warrant=lease.warrant_id,
        lease_ttl_ms=lease.lease_ttl_ms,
        warrant_key=warrant_key,
    )
    if not verified.ok:
        return Renewal(ok=False, terminate=verified.terminate or "revoked")
    return Renewal(ok=True, lease_expires_ms=verified.lease_expires_ms)
