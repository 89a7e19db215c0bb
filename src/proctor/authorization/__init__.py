"""Layer 1, identity and authorization: principal keys, signed requests, warrants.

Everything here is pure: no clock (callers pass ``now`` as unix seconds) and no I/O,
except :meth:`PrincipalKey.load` and :meth:`PrincipalKey.save`, which read and
write one key file when asked.

- :mod:`.keys`: a principal's Ed25519 key and its ``0600`` key file.
- :mod:`.requests`: HTTP Message Signatures (RFC 9421) with Ed25519 over an
  RFC 9530 Content-Digest; authentication of a principal's request.
- :mod:`.claims`: what a warrant says (:class:`WarrantClaims`) and what an enforcer
  is about to do (:class:`WarrantRequest`).
- :mod:`.tokens`: Biscuit framing under proctor's limits: size, structure, signature
  chain, Datalog limits.
- :mod:`.warrants`: warrants as Biscuit tokens: mint, verify, attenuate, inspect.
"""

from proctor.authorization.claims import WarrantClaims, WarrantRequest, args_digest, new_warrant_id
from proctor.authorization.keys import PrincipalKey, load_public_key, valid_principal_name
from proctor.authorization.requests import sign_request, verify_request
from proctor.authorization.warrants import (
    attenuate_warrant,
    inspect_warrant,
    mint_warrant,
    verify_warrant,
)

__all__ = [
    "PrincipalKey",
    "valid_principal_name",
    "load_public_key",
    "sign_request",
    "verify_request",
    "WarrantClaims",
    "WarrantRequest",
    "args_digest",
    "new_warrant_id",
    "mint_warrant",
    "verify_warrant",
    "attenuate_warrant",
    "inspect_warrant",
]
