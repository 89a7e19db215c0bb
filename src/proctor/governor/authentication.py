"""Request authentication at the governor: who signed a request, once.

:class:`Authenticator` verifies an RFC 9421 signature
(:func:`proctor.authorization.requests.verify_request`) against the principals the
:class:`~proctor.governor.trust.TrustView` knows, and refuses a nonce seen before
(:class:`~proctor.governor.nonces.NonceCache`). A rejection is recorded (bounded table,
not the Merkle log) through the log writer, so that a flood of bad requests never
waits on a write.

Several governor processes on one store (shared mode, ADR 0016): a nonce new to this
process is then claimed in the store before the request goes on, with the other
claims waiting (one transaction); if another process claimed it first, the request is
a replay and is refused here as on the process that saw it. A rejection is then
recorded in a transaction of its own, batched (:class:`~proctor.governor.batching.WriteBatcher`),
not through the log writer: its turn may be another process's, and a flood of bad
requests must never make the event loop wait for it. In the exclusive mode the path is
as before: memory only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout

from proctor.authorization.requests import verify_request
from proctor.errors import AuthenticationError, StoreError
from proctor.governor.access_log import PRINCIPAL
from proctor.governor.batching import WriteBatcher
from proctor.governor.nonces import NonceCache
from proctor.governor.recorder import Recorder
from proctor.governor.trust import TrustView
from proctor.store.state import StateStore

__all__ = ["NONCE_CLAIM_TIMEOUT_S", "Authenticator"]

NONCE_CLAIM_TIMEOUT_S = 10.0
"""Shared mode: how long a request waits for the store to claim its nonce (then 503)."""

_Nonce = tuple[str, str, int]


class Authenticator:
    """Authenticates signed requests for one governor."""

    def __init__(
        self,
        *,
        trust: TrustView,
        nonces: NonceCache,
        recorder: Recorder,
        state: StateStore,
        clock: Callable[[], float],
    ) -> None:
        """Args:
        trust: the principals' public keys.
        nonces: the replay cache (claims in the store when it is shared).
        recorder: where a rejection's record is queued (a side write).
        state: builds that record.
        clock: the governor's clock (seconds).
        """
        self._trust = trust
        self._nonces = nonces
        self._recorder = recorder
        self._state = state
        self._clock = clock
        self._failures: WriteBatcher[tuple[int, str, str, str], None] | None = None
        if nonces.shared:
            self._failures = WriteBatcher(self._record_failures, name="auth-failures")

    def _record_failures(self, rows: list[tuple[int, str, str, str]]) -> list[None]:
        self._state.record_auth_failures(rows)
        return [None] * len(rows)

    def close(self) -> None:
        """Record the rejections still queued, then stop (shared mode)."""
        if self._failures is not None:
            self._failures.close()

    def authenticate(self, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> str:
        """The principal that signed this request.

        The nonce is checked against the in-memory replay cache and persisted with the
        log writer's next transaction; shared, a nonce new to this process is claimed
        in the store (waiting for it on this thread).

        Raises:
            AuthenticationError: unsigned, malformed, stale, unknown key, bad signature
                or replayed (on any process sharing the store); nothing else happens.
            StoreError: shared, and the store could not claim the nonce (refused).
        """
        name, fresh, now = self._verify(method, target, body, headers)
        if fresh is not None:
            try:
                claimed = self._nonces.claim(*fresh).result(timeout=NONCE_CLAIM_TIMEOUT_S)
            except FutureTimeout as e:
                raise StoreError(f"the store did not claim the nonce within {NONCE_CLAIM_TIMEOUT_S} s") from e
            self._claimed(fresh, claimed, now, f"{method} {target}", headers)
        PRINCIPAL.set(name)  # for the access log: the verified name, never a claimed one
        return name

    async def authenticate_async(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str]
    ) -> str:
        """:meth:`authenticate` for an event loop: a claim in the store is awaited, never
        waited for on the loop's thread. Raises as :meth:`authenticate`."""
        name, fresh, now = self._verify(method, target, body, headers)
        if fresh is not None:
            future = asyncio.wrap_future(self._nonces.claim(*fresh))
            try:
                claimed = await asyncio.wait_for(future, NONCE_CLAIM_TIMEOUT_S)
            except TimeoutError as e:
                raise StoreError(f"the store did not claim the nonce within {NONCE_CLAIM_TIMEOUT_S} s") from e
            self._claimed(fresh, claimed, now, f"{method} {target}", headers)
        PRINCIPAL.set(name)
        return name

    def _verify(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[str, _Nonce | None, int]:
        """The signer, the nonce still to claim in the store (shared) and the time
        freshness was judged at; a rejection is recorded."""
        nonces = self._nonces
        # Freshness is judged no earlier than the nonce floor: a clock that stepped back
        # cannot reopen the window of a request whose nonce was forgotten (nonces.py).
        now = nonces.effective_now(int(self._clock()))
        fresh: list[_Nonce] = []

        def remember_shared(keyid: str, nonce: str, expires: int) -> bool:
            if not nonces.remember(keyid, nonce, expires, now=now):
                return False  # seen by this process: no need to ask the store
            fresh.append((keyid, nonce, expires))
            return True

        try:
            name = verify_request(
                method,
                target,
                body,
                headers,
                public_key_for=self._trust.public_key_for,
                now=now,
                remember_nonce=remember_shared
                if nonces.shared
                else lambda keyid, nonce, expires: nonces.remember(keyid, nonce, expires, now=now),
            )
        except AuthenticationError as e:
            self._record_refusal(e, now, f"{method} {target}", headers)
            raise
        return name, (fresh[0] if fresh else None), now

    def _claimed(self, fresh: _Nonce, claimed: bool, now: int, what: str, headers: Mapping[str, str]) -> None:
        """Refuse (and record) a nonce the store did not let this process claim."""
        if claimed:
            return
        keyid, nonce, expires = fresh
        floor = self._nonces.floor
        if expires < floor:
            error = AuthenticationError(
                f"expected a request newer than the nonce floor {floor} (its nonce may have been "
                f"forgotten), found one that expires at {expires}",
                reason="stale",
            )
        else:
            error = AuthenticationError(f"nonce {nonce!r} of {keyid!r} was already used", reason="replayed")
        self._record_refusal(error, now, what, headers)
        raise error

    def _record_refusal(
        self, e: AuthenticationError, now: int, what: str, headers: Mapping[str, str]
    ) -> None:
        keyid = headers.get("signature-input", "")[:128]
        if self._failures is not None:  # shared: not in the log writer's turn (module docstring)
            self._failures.submit((now, keyid, e.reason, f"{what}: {e}"))  # a failure is ignored, as below
            return
        self._recorder.side_write(self._state.auth_failure_writer(now, keyid, e.reason, f"{what}: {e}"))
