"""``proctor.AsyncClient``: :class:`~proctor.integrations.sdk.client.Client` for
``async`` code (``httpx.AsyncClient``); the same requests, checks and failures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from proctor.authorization.claims import args_digest
from proctor.authorization.warrants import attenuate_warrant
from proctor.client import AsyncGovernorClient
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

__all__ = ["AsyncClient"]


class AsyncClient:
    """:class:`Client` for ``async`` code: the same methods, awaited (``delegate`` and
    ``verify`` too, for one calling convention)."""

    def __init__(
        self, server: str, key: KeyLike, *, warrant_key: bytes | str | None = None, timeout: float = 10.0
    ) -> None:
        """See :class:`Client`."""
        self.key = principal_key(key)
        self.server = server.rstrip("/")
        self._http = AsyncGovernorClient(self.server, self.key, timeout=timeout)
        self._warrant_key = None if warrant_key is None else raw_warrant_key(warrant_key)

    @property
    def principal(self) -> str:
        """The principal's name."""
        return self.key.name

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def warrant_key(self) -> bytes:
        """:meth:`Client.warrant_key`."""
        if self._warrant_key is None:
            self._warrant_key = raw_warrant_key(await self._http.text("/v1/warrant-key"))
        return self._warrant_key

    async def log_key(self) -> str:
        """:meth:`Client.log_key`."""
        return (await self._http.text("/v1/log/key")).strip()

    async def authorize(
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
        """:meth:`Client.authorize`."""
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
            return Authorization.from_json(await self._http.json("POST", "/v1/authorize", body))
        except (GovernorError, ValueError) as e:
            return Authorization.denied(f"no authorization from the governor: {e}")

    async def approval(self, approval_id: str) -> Approval:
        """:meth:`Client.approval`."""
        found = Approval.from_json(await self._http.json("GET", f"/v1/approvals/{approval_id}"))
        if found is None:
            raise GovernorError(f"approval {approval_id}: the governor's answer is not an approval", status=0)
        return found

    async def start(
        self,
        authorization: Authorization,
        *,
        resource: str,
        arguments: Mapping[str, Any],
        definition_digest: str,
        action: str = "tool.call",
    ) -> Lease:
        """:meth:`Client.start`."""
        if not authorization.allowed or authorization.warrant is None:
            raise authorization.denial(resource)
        try:
            key = await self.warrant_key()
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
            response = await self._http.call("POST", "/v1/executions", body)
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
                    await self._http.json("POST", *ended)
            raise

    async def renew(self, lease: Lease) -> Renewal:
        """:meth:`Client.renew`."""
        try:
            response = await self._http.call("POST", f"/v1/executions/{lease.execution}/renew", {})
            nonce = request_nonce(response.request.headers.get("signature-input", ""))
            key = await self.warrant_key()
            return check_renewal(response.json(), nonce=nonce, lease=lease, warrant_key=key)
        except (VerificationError, KeyFormatError, ValueError) as e:
            raise GovernorError(f"renewal of {lease.execution}: not a valid answer: {e}", status=0) from e

    async def finish(
        self, lease: Lease, *, outcome: str, result_digest: str = "", reason: str = "", detail: str = ""
    ) -> Finished:
        """:meth:`Client.finish`."""
        body = finish_body(outcome, result_digest=result_digest, reason=reason, detail=detail)
        answer = await self._http.json("POST", f"/v1/executions/{lease.execution}/finish", body)
        return Finished.from_json(answer, lease.execution)

    async def revoke(self, kind: str, target: str, *, reason: str = "") -> dict[str, Any]:
        """:meth:`Client.revoke`."""
        done: dict[str, Any] = await self._http.json(
            "POST", "/v1/revocations", {"kind": kind, "target": target, "reason": reason}
        )
        return done

    async def receipt(self, execution: str) -> dict[str, Any]:
        """:meth:`Client.receipt`."""
        doc: dict[str, Any] = await self._http.json("GET", f"/v1/executions/{execution}/receipt")
        return doc

    async def verify(self, receipt: Any, *, log_key: str, replay: bool = False) -> ReceiptReport:
        """:meth:`Client.verify` (pure; awaited for one calling convention)."""
        return check_receipt(receipt, log_key=log_key, replay=replay)

    async def delegate(
        self,
        warrant: str,
        *,
        expires: int | None = None,
        resource: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> str:
        """:meth:`Client.delegate`."""
        digest = None if arguments is None else args_digest(arguments)
        return attenuate_warrant(
            warrant,
            root_public_key=await self.warrant_key(),
            expires=expires,
            resource=resource,
            args_digest=digest,
        )
