"""The warrants this governor process minted, known by their exact bytes.

A warrant is minted and, a moment later, presented back to the same process to start
its execution (``POST /v1/executions``, or at once by ``POST /v1/authorize/start``).
Verifying it then (:func:`~proctor.authorization.warrants.verify_warrant_bounds`) opens
the token, checks its signature chain and runs its Datalog: about 0.2 ms here, to learn
what this process wrote itself. Rules, numbered as the code cites them:

1. Only a token this process minted on its own thread with the root key it verifies
   with is remembered, with the claims it was minted from (not one the minting helper
   process returned: its answers are paired with their claims by order only).
   Presented, it is read as verified with those claims, no attenuation bounds and the
   revocation id of its one block, read from its bytes then (not when minted: most
   warrants are never presented back here); a token with more than one block is never
   taken as minted here.
2. A token presented is looked up by its exact text (a dict of ``str``: equal hashes
   and then every character compared). Any other text — an attenuated copy, one byte
   changed, another key's token — is verified in full, as before.
3. A remembered token is still checked for everything that can change after it was
   minted: revocation (its id, parent, block), its validity window against ``now``,
   and the request it must cover (:func:`~proctor.authorization.warrants.check_verified`,
   steps 6-8). Steps 1-5 and 9 (size, encoding, signatures, claims, and the authority
   block's two time checks, which step 7 makes in Python) hold for these bytes by
   construction.
4. Bounded: at most :data:`MAX_REMEMBERED`, the oldest forgotten first; an expired one
   is forgotten when it is looked up. Forgetting only costs a full verification.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Set

from biscuit_auth import UnverifiedBiscuit

from proctor.authorization.attenuation import AttenuationBounds
from proctor.authorization.claims import WarrantClaims, WarrantRequest
from proctor.authorization.warrants import (
    VerifiedWarrant,
    check_now,
    check_verified,
    verify_warrant_bounds,
)

__all__ = ["MAX_REMEMBERED", "MintedWarrants"]

MAX_REMEMBERED = 4096


class MintedWarrants:
    """Warrants minted here, verified again by identity (module docstring).

    Args:
        root_public_key: the key every warrant is verified with (rule 1).
        size: how many are remembered (rule 4).
    """

    def __init__(self, root_public_key: bytes, *, size: int = MAX_REMEMBERED) -> None:
        self._root = root_public_key
        self._size = size
        self._known: OrderedDict[str, WarrantClaims | VerifiedWarrant] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, token: str, claims: WarrantClaims) -> None:
        """Rule 1: a token just minted from ``claims`` with the root key's private half."""
        with self._lock:
            self._known[token] = claims
            while len(self._known) > self._size:
                self._known.popitem(last=False)

    def verify(
        self,
        token: str,
        *,
        root_public_key: bytes,
        now: int,
        request: WarrantRequest | None,
        revoked: Callable[[str], bool] | Set[str] = frozenset(),
    ) -> VerifiedWarrant:
        """:func:`~proctor.authorization.warrants.verify_warrant_bounds`, the same answers
        and errors; a token minted here is checked by rules 2 and 3.

        Raises:
            WarrantError, ValueError: as :func:`~proctor.authorization.warrants.verify_warrant_bounds`.
        """
        check_now(now)
        with self._lock:
            known = self._known.get(token) if root_public_key == self._root else None
        if isinstance(known, WarrantClaims):  # rule 1: read as verified once
            known = self._verified(token, known)
        if known is None:  # rule 2
            return verify_warrant_bounds(
                token, root_public_key=root_public_key, now=now, request=request, revoked=revoked
            )
        if now >= known.expires:  # rule 4
            with self._lock:
                self._known.pop(token, None)
        check_verified(known, now=now, request=request, revoked=revoked)  # rule 3
        return known

    def _verified(self, token: str, claims: WarrantClaims) -> VerifiedWarrant | None:
        """Rule 1: the remembered token as verified, or ``None`` (forgotten: not one block)."""
        revocation_ids = tuple(UnverifiedBiscuit.from_base64(token).revocation_ids)
        with self._lock:
            if len(revocation_ids) != 1:
                self._known.pop(token, None)
                return None
            verified = VerifiedWarrant(claims, AttenuationBounds(), revocation_ids)
            if token in self._known:
                self._known[token] = verified
            return verified
