"""Fuzz the warrant decoder (``proctor.authorization.warrants`` over ``tokens`` and
``attenuation``): a token string, verified and inspected under the test root key.

Refusals allowed: ``WarrantError``. Oracles, for a token that verifies or inspects:

- its claims are one of the claims the test key minted (the authority block is signed);
- the request it was minted for is allowed only as the attenuation bounds read from
  its blocks say: a resource, argument digest or zone a block requires, and an expiry
  a block sets, hold for every request it allows;
- a request for another resource is refused.
"""

from __future__ import annotations

import dataclasses

from fuzz.fuzz_support import NOW, WARRANT_CLAIMS, WARRANT_KEY, WARRANT_REQUESTS, check
from proctor.authorization.warrants import (
    WarrantClaims,
    WarrantRequest,
    inspect_warrant,
    verify_warrant,
    verify_warrant_bounds,
)
from proctor.errors import WarrantError

__all__ = ["INSTRUMENT", "ROOT", "one_input"]

INSTRUMENT = ("proctor.authorization",)
"""The modules atheris instruments for coverage (run_harness.py reads this line)."""

ROOT = WARRANT_KEY.public_key


def _request_for(claims: WarrantClaims) -> WarrantRequest:
    return WARRANT_REQUESTS[WARRANT_CLAIMS.index(claims)]


def one_input(data: bytes) -> None:
    """One input: a warrant token (each byte one Latin-1 character)."""
    token = data.decode("latin-1")
    try:
        inspected = inspect_warrant(token, root_public_key=ROOT)
    except WarrantError:
        inspected = None
    if inspected is not None:
        check(
            WarrantClaims.from_json(inspected["claims"]) in WARRANT_CLAIMS,
            f"a warrant the test key never minted inspects: {inspected['claims']}",
        )
    try:
        verified = verify_warrant_bounds(token, root_public_key=ROOT, now=NOW, request=None)
    except WarrantError:
        return
    claims, bounds = verified.claims, verified.bounds
    check(claims in WARRANT_CLAIMS, f"a warrant the test key never minted verifies: {claims}")
    check(inspected is not None, "a warrant verifies that does not inspect")
    request = _request_for(claims)
    try:
        verify_warrant(token, root_public_key=ROOT, now=NOW, request=request)
    except WarrantError:
        pass
    else:
        check(not bounds.resources or bounds.resources == {request.resource}, "a resource bound did not hold")
        check(
            not bounds.args_digests or bounds.args_digests == {request.args_digest},
            "an args bound did not hold",
        )
        check(not bounds.zones or bounds.zones == {request.zone}, "a zone bound did not hold")
        check(bounds.expires is None or bounds.expires > NOW, "an expiry bound did not hold")
    other = dataclasses.replace(request, resource="/bin/evil" if request.action == "exec" else "evil/tool")
    try:
        verify_warrant(token, root_public_key=ROOT, now=NOW, request=other)
    except WarrantError:
        return
    check(False, "a warrant allowed a resource it does not name")
