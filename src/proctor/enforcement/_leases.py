"""The enforcer's side of signed lease answers (ADR 0017): which answers to a start or a
renewal it takes as the governor's, through :class:`~proctor.enforcement._failover.Governors`.

Rules, numbered as the code cites them:

1. A lease is extended only on an answer signed by the trusted warrant key for this
   execution, this kind of request and this request's nonce, granting the verified
   warrant's TTL (:func:`proctor.verification.lease_answer.verify_lease_answer`). Any
   other answer — unsigned, tampered, replayed, for another execution — is no answer
   from that governor: the next one is asked, and when none answers validly before the
   lease's end the tree dies then, as when none answers at all.
2. A refusal (``"ok": false``) is acted upon whether it is signed or not: killing the
   tree is what failing closed does anyway, and whoever can forge it can also drop
   every answer.
3. The nonce is read from the ``Signature-Input`` of the request that was sent
   (``response.request``), so it is the one the governor verified, not a copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proctor.enforcement._failover import Answered
from proctor.errors import VerificationError
from proctor.verification.lease_answer import Kind, LeaseAnswer, request_nonce, verify_lease_answer

__all__ = ["LeaseCheck"]


@dataclass(frozen=True)
class LeaseCheck:
    """What every lease answer of one execution must be bound to.

    Attributes:
        warrant_key: the trusted warrant key (raw Ed25519, 32 bytes).
        warrant: the id of the warrant the enforcer verified.
        lease_ttl_ms: the TTL that warrant grants (its ``lease_ttl_ms`` claim): the
            enforcer runs on it, never on an unsigned ``lease_ttl_ms``.
    """

    warrant_key: bytes
    warrant: str
    lease_ttl_ms: int

    def start(self, answered: Answered) -> None:
        """Accept an answer to ``POST /v1/executions`` (rule 1), for ``Governors.request``.

        Raises:
            VerificationError: it is not the governor's signed start of this warrant.
        """
        body = _json(answered)
        execution = body.get("execution") if isinstance(body, dict) else None
        if type(execution) is not str:
            raise VerificationError(f"start answer: expected an execution id, found {execution!r}")
        self.verify(answered, "start", execution)

    def renewal(self, execution: str) -> Callable[[Answered], None]:
        """The acceptance of answers to ``POST /v1/executions/{execution}/renew`` (rules 1, 2)."""

        def accept(answered: Answered) -> None:
            body = _json(answered)
            if isinstance(body, dict) and body.get("ok") is False:
                return  # rule 2
            self.verify(answered, "renew", execution)

        return accept

    def verify(self, answered: Answered, kind: Kind, execution: str) -> LeaseAnswer:
        """Verify one answer (rules 1, 3).

        Raises:
            VerificationError: see :func:`~proctor.verification.lease_answer.verify_lease_answer`.
        """
        sent = answered.response.request.headers.get("signature-input", "")
        return verify_lease_answer(
            _json(answered),
            kind=kind,
            execution=execution,
            nonce=request_nonce(sent),  # rule 3
            warrant=self.warrant,
            lease_ttl_ms=self.lease_ttl_ms,
            warrant_key=self.warrant_key,
        )


def _json(answered: Answered) -> object:
    try:
        return answered.json()
    except ValueError as e:
        raise VerificationError(f"lease answer: expected JSON, found {answered.response.text[:80]!r}") from e
