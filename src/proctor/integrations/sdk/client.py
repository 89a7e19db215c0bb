"""``proctor.Client``: a principal's signed calls to a governor (``proctor.AsyncClient``,
:mod:`~proctor.integrations.sdk.aclient`, is the same for ``async`` code).

Both send the same requests (built and checked by :mod:`~proctor.integrations.sdk.protocol`)
and fail closed the same way:

- :meth:`Client.authorize` never raises because of the governor: a refusal, a
  malformed answer or a governor that cannot be reached is an
  :class:`~proctor.integrations.sdk.results.Authorization` that is not ``allowed``,
  with the reason; only ``allowed`` may lead to anything running.
- :meth:`Client.start` raises :class:`~proctor.errors.DeniedError` unless the warrant
  verifies for exactly this call and the governor's start answer is signed for it.
- :meth:`Client.verify` checks a receipt offline with the code ``proctor verify`` runs
  (:func:`proctor.receipts.check_receipt`), given the log key the caller trusts.

The governor's warrant key verifies warrants and signed lease answers. Pass it
(``warrant_key=``, base64 or 32 raw bytes, from ``GET /v1/warrant-key`` over a channel
you trust) to pin it; otherwise it is read from the governor on first use and trusted
from then on (trust on first use: whoever answers for the governor at that moment is
believed, see docs/sdk.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from proctor.authorization.claims import args_digest
from proctor.authorization.warrants import attenuate_warrant
from proctor.client import GovernorClient
from proctor.errors import DeniedError, GovernorError, KeyFormatError, VerificationError
from proctor.integrations.sdk.protocol import (
    KeyLike,
    accept_start,
    authorize_body,
    check_arguments,
    check_renewal,
    finish_body,
    prepare_start,
    principal_key,
    raw_warrant_key,
    unaccepted_start,
)
from proctor.integrations.sdk.results import Approval, Authorization, Finished, Lease, Renewal
from proctor.receipts.check import ReceiptReport, check_receipt
from proctor.verification.lease_answer import request_nonce

__all__ = ["Client"]


class Client:
    """A principal's synchronous client of one governor.

    Args:
        server: the governor's base URL, ``http://127.0.0.1:8700``.
        key: the principal's key, or its key file's path.
        warrant_key: the governor's warrant key to pin (base64 or raw bytes); ``None``:
            read from the governor on first use.
        timeout: seconds per request.

    Raises:
        KeyFormatError: the key or the warrant key is malformed.
    """

    def __init__(
        self, server: str, key: KeyLike, *, warrant_key: bytes | str | None = None, timeout: float = 10.0
    ) -> None:
        self.key = principal_key(key)
        self.server = server.rstrip("/")
        self._http = GovernorClient(self.server, self.key, timeout=timeout)
        self._warrant_key = None if warrant_key is None else raw_warrant_key(warrant_key)

    @property
    def principal(self) -> str:
        """The principal's name."""
        return self.key.name

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def warrant_key(self) -> bytes:
        """The governor's warrant key (pinned, or read once from ``GET /v1/warrant-key``).

        Raises:
            GovernorError: it could not be read.
            KeyFormatError: the governor's answer is not a key.
        """
        if self._warrant_key is None:
            self._warrant_key = raw_warrant_key(self._http.text("/v1/warrant-key"))
        return self._warrant_key

    def log_key(self) -> str:
        """The governor's log verifier key, as it says (``GET /v1/log/key``): to verify a
        receipt, compare it with the key you trust rather than trusting this answer."""
        return self._http.text("/v1/log/key").strip()

    def authorize(
        self,
        resource: str,
        *,
        action: str = "tool.call",
        arguments: Mapping[str, Any] | None = None,
        executable_digest: str = "",
        parent_warrant: str = "",
        zone: str = "",
        approval: str = "",
    ) -> Authorization:
        """Ask for a warrant (``POST /v1/authorize``); every failure is a denial.

        Args:
            resource: the tool (``tool.call``: its name; ``mcp.call``: ``server/tool``).
            action: ``tool.call``, ``mcp.call`` or ``exec``.
            arguments: the exact tool arguments (bound into the warrant).
            executable_digest: the tool definition's digest (bound into the warrant).
            parent_warrant: a warrant this request is delegated under (:meth:`delegate`).
            zone: the zone it would run in (``""``: the principal's).
            approval: an approved approval's id, to redeem (``ap_…``).

        Returns:
            The authorization; ``allowed`` only with a warrant.

        Raises:
            DeniedError: (reason ``arguments``) the arguments are not canonical JSON.
        """
        if arguments is not None:
            check_arguments(arguments)
        body = authorize_body(
            action=action,
            resource=resource,
            arguments=arguments,
            executable_digest=executable_digest,
            parent_warrant=parent_warrant,
            zone=zone,
            approval=approval,
        )
        try:
            return Authorization.from_json(self._http.json("POST", "/v1/authorize", body))
        except (GovernorError, ValueError) as e:
            return Authorization.denied(f"no authorization from the governor: {e}")

    def approval(self, approval_id: str) -> Approval:
        """The status of an approval this principal waits for (``GET /v1/approvals/{id}``).

        Raises:
            GovernorError: the governor refused or could not be reached, or answered no approval.
        """
        found = Approval.from_json(self._http.json("GET", f"/v1/approvals/{approval_id}"))
        if found is None:
            raise GovernorError(f"approval {approval_id}: the governor's answer is not an approval", status=0)
        return found

    def start(
        self,
        authorization: Authorization,
        *,
        resource: str,
        arguments: Mapping[str, Any],
        definition_digest: str,
        action: str = "tool.call",
    ) -> Lease:
        """Start the execution an allowed authorization's warrant covers (``POST /v1/executions``).

        Raises:
            DeniedError: not allowed, the warrant does not cover this call, the
                governor refused the start or its answer is not signed for it.
        """
        if not authorization.allowed or authorization.warrant is None:
            raise authorization.denial(resource)
        try:
            key = self.warrant_key()
        except (GovernorError, KeyFormatError) as e:
            raise DeniedError(
                f"{resource}: no warrant key to verify the warrant with: {e}", reason="start", tool=resource
            ) from e
        verified, body = prepare_start(
            authorization.warrant,
            warrant_key=key,
            now=int(time.time()),
            action=action,
            resource=resource,
            arguments=arguments,
            definition_digest=definition_digest,
        )
        try:
            response = self._http.call("POST", "/v1/executions", body)
            answer = response.json()
            nonce = request_nonce(response.request.headers.get("signature-input", ""))
        except (GovernorError, ValueError, VerificationError) as e:
            raise DeniedError(
                f"{resource}: the execution did not start: {e}", reason="start", tool=resource
            ) from e
        try:
            return accept_start(
                answer,
                nonce=nonce,
                authorization=authorization,
                warrant=verified,
                warrant_key=key,
                resource=resource,
            )
        except DeniedError as e:  # what the governor recorded is ended, not left to its lease
            ended = unaccepted_start(answer, verified, str(e.__cause__ or e))
            if ended is not None:
                with contextlib.suppress(GovernorError, ValueError):
                    self._http.json("POST", *ended)
            raise

    def renew(self, lease: Lease) -> Renewal:
        """Renew a lease (``POST /v1/executions/{id}/renew``).

        Raises:
            GovernorError: no answer, or an ``ok`` that is not signed for this request
                (not a renewal: the lease still ends when it would have).
        """
        try:
            response = self._http.call("POST", f"/v1/executions/{lease.execution}/renew", {})
            nonce = request_nonce(response.request.headers.get("signature-input", ""))
            return check_renewal(response.json(), nonce=nonce, lease=lease, warrant_key=self.warrant_key())
        except (VerificationError, KeyFormatError, ValueError) as e:
            raise GovernorError(f"renewal of {lease.execution}: not a valid answer: {e}", status=0) from e

    def finish(
        self, lease: Lease, *, outcome: str, result_digest: str = "", reason: str = "", detail: str = ""
    ) -> Finished:
        """Record how the call ended (``POST /v1/executions/{id}/finish``).

        Args:
            outcome: ``completed``, ``failed`` or ``terminated``.
            result_digest: the result's digest (``stdout_digest``).
            reason: why it failed or was terminated.
            detail: more words about it.

        Raises:
            GovernorError: the governor refused or could not be reached.
        """
        body = finish_body(outcome, result_digest=result_digest, reason=reason, detail=detail)
        return Finished.from_json(
            self._http.json("POST", f"/v1/executions/{lease.execution}/finish", body), lease.execution
        )

    def revoke(self, kind: str, target: str, *, reason: str = "") -> dict[str, Any]:
        """Revoke a warrant, execution, principal or policy (admins only; ``POST /v1/revocations``).

        Raises:
            GovernorError: refused (not an admin, unknown target) or unreachable.
        """
        done: dict[str, Any] = self._http.json(
            "POST", "/v1/revocations", {"kind": kind, "target": target, "reason": reason}
        )
        return done

    def receipt(self, execution: str) -> dict[str, Any]:
        """An ended execution's receipt (``GET /v1/executions/{id}/receipt``).

        Raises:
            GovernorError: refused (not yours, not ended) or unreachable.
        """
        doc: dict[str, Any] = self._http.json("GET", f"/v1/executions/{execution}/receipt")
        return doc

    def verify(self, receipt: Any, *, log_key: str, replay: bool = False) -> ReceiptReport:
        """Verify a receipt offline, as ``proctor verify`` does; never raises.

        Args:
            receipt: the receipt (a JSON object, or its text).
            log_key: the log verifier key you trust (``origin+keyid+base64``).
            replay: also re-evaluate the decision with the carried policy.

        Returns:
            The report: ``ok``, every step, the failing one.
        """
        return check_receipt(receipt, log_key=log_key, replay=replay)

    def delegate(
        self,
        warrant: str,
        *,
        expires: int | None = None,
        resource: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> str:
        """Narrow a warrant offline for a sub-agent (appends a block of checks).

        The sub-agent passes the result as ``parent_warrant`` to its own
        :meth:`authorize`; the governor issues it a warrant only for what the narrowed
        parent covers (the same tool, arguments and definition) and never past the
        parent's expiry. See docs/sdk.md, "Sub-agents".

        Args:
            warrant: the parent's warrant token.
            expires: an earlier expiry, unix seconds.
            resource: the only tool allowed.
            arguments: the only arguments allowed (bound as their digest).

        Raises:
            WarrantError: the warrant does not verify, or nothing was narrowed.
        """
        digest = None if arguments is None else args_digest(arguments)
        return attenuate_warrant(
            warrant,
            root_public_key=self.warrant_key(),
            expires=expires,
            resource=resource,
            args_digest=digest,
        )
