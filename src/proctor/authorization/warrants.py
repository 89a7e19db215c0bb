"""Warrants: Biscuit tokens (Ed25519) that authorize one execution.

Why one module: minting, verifying, attenuating and inspecting a warrant are four
readings of one token format (the authority block's fact names, the authorizer facts
the checks compare against, the Datalog limits). Kept together, a change to a fact name
or a limit is made once and seen by all four; split, one reader could drift from the
writer.

The authority block, signed by the governor's root key, carries the claims as facts
(``warrant_version(1)``, ``warrant``, ``principal``, ``action``, ``resource``,
``args_digest``, ``zone``, ``executable_digest``, ``obligation(name, value)``,
``not_before``, ``expires`` (dates), ``lease_ttl_ms``, ``decision_index``, ``parent``)
and two checks that enforce the validity window against the authorizer's
``time($t)`` fact, so any Biscuit verifier enforces it too.

Attenuation appends blocks of checks only, offline. Nothing can widen a warrant:
Biscuit's default scope makes the authorizer and every block trust only the
authority block, the block itself and the authorizer (Biscuit specification,
"Scopes"), so facts in an appended block are never read as claims, and a check can
only add a condition. The checks this module appends compare against authorizer
facts: ``time``, ``req_action``, ``req_resource``, ``req_args_digest``, ``req_zone``,
``req_executable_digest``, or ``inspection(true)`` when no request is given.

Invariants of :func:`verify_warrant` (numbered in the code):

- size limits are checked before anything is parsed, and the block count before any
  signature is computed (:func:`~proctor.authorization.tokens.open_token`);
- appended blocks are accepted only in the shapes proctor's own attenuation writes,
  checked as text before any Datalog runs
  (:mod:`~proctor.authorization.attenuation`), so their evaluation cost is bounded;
- the claims are read from the authority block only, after the signature chain verified;
- every Datalog evaluation runs under explicit limits (:data:`MAX_FACTS`,
  :data:`MAX_ITERATIONS`, :data:`MAX_TIME_MS`); hitting one is a rejection.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Any

from biscuit_auth import Authorizer, Biscuit, BiscuitBuilder, BlockBuilder, PrivateKey, Rule

from proctor.authorization.attenuation import AttenuationBounds, attenuation_bounds
from proctor.authorization.claims import (
    MAX_TIME,
    WarrantClaims,
    WarrantRequest,
    args_digest,
    new_warrant_id,
)
from proctor.authorization.keys import valid_principal_name
from proctor.authorization.tokens import (
    BISCUIT_ERRORS,
    MAX_BLOCKS,
    MAX_FACTS,
    MAX_ITERATIONS,
    MAX_TIME_MS,
    MAX_TOKEN_CHARS,
    biscuit_date,
    datalog_failure,
    inline_parameters,
    limited_authorizer,
    open_token,
)
from proctor.errors import KeyFormatError, WarrantError

__all__ = [
    "MAX_TOKEN_CHARS",
    "MAX_BLOCKS",
    "MAX_FACTS",
    "MAX_ITERATIONS",
    "MAX_TIME_MS",
    "WarrantClaims",
    "WarrantRequest",
    "args_digest",
    "new_warrant_id",
    "mint_warrant",
    "verify_warrant",
    "VerifiedWarrant",
    "verify_warrant_bounds",
    "check_verified",
    "check_now",
    "attenuate_warrant",
    "inspect_warrant",
]

_AUTHORITY = """
warrant_version(1);
warrant({warrant_id});
principal({principal});
action({action});
resource({resource});
args_digest({args_digest});
zone({zone});
executable_digest({executable_digest});
not_before({not_before});
expires({expires});
lease_ttl_ms({lease_ttl_ms});
decision_index({decision_index});
parent({parent});
check if time($t), not_before($nb), $t >= $nb;
check if time($t), expires($e), $t < $e;
"""
_CLAIMS_RULE = (
    "claims($w, $p, $a, $r, $d, $z, $x, $nb, $e, $l, $i, $par, $v) <- "
    "warrant($w), principal($p), action($a), resource($r), args_digest($d), zone($z), "
    "executable_digest($x), not_before($nb), expires($e), lease_ttl_ms($l), "
    "decision_index($i), parent($par), warrant_version($v)"
)
_OBLIGATIONS_RULE = "obligations($n, $v) <- obligation($n, $v)"
_REQUEST = """
time({now});
req_action({action});
req_resource({resource});
req_args_digest({args_digest});
req_zone({zone});
req_executable_digest({executable_digest});
allow if warrant($w);
"""
_INSPECTION = """
time({now});
inspection(true);
allow if warrant($w);
"""


def _authorizer(biscuit: Biscuit, now: int, request: WarrantRequest | None) -> Authorizer:
    # The authorizer provides time and the request (or inspection(true)) as facts.
    if request is None:
        builder = limited_authorizer(_INSPECTION, {"now": biscuit_date(now)})
    else:
        builder = limited_authorizer(
            _REQUEST,
            {
                "now": biscuit_date(now),
                "action": request.action,
                "resource": request.resource,
                "args_digest": request.args_digest,
                "zone": request.zone,
                "executable_digest": request.executable_digest,
            },
        )
    try:
        return builder.build(biscuit)
    except BISCUIT_ERRORS as e:
        raise datalog_failure(e, "loading the warrant") from e


def _authorize(authorizer: Authorizer) -> WarrantError | None:
    try:
        authorizer.authorize()
    except BISCUIT_ERRORS as e:
        return datalog_failure(e, "the warrant's checks failed")
    return None


def _claims(authorizer: Authorizer) -> WarrantClaims:
    # Step 5: read the claims from the authority block. The authorizer's rules trust
    # only the authority block and the authorizer, so facts of appended blocks are
    # invisible here. query() before authorize() evaluates no rules, only the facts.
    try:
        rows = authorizer.query(Rule(_CLAIMS_RULE))
        obligation_rows = authorizer.query(Rule(_OBLIGATIONS_RULE))
    except BISCUIT_ERRORS as e:
        raise datalog_failure(e, "reading the claims") from e
    if len(rows) != 1:
        raise WarrantError(
            f"expected exactly one value of each claim in the authority block, found {len(rows)} combinations"
        )
    (w, p, a, r, d, z, x, nb, exp, lease, index, parent, version) = rows[0].terms
    if type(version) is not int or version != 1:
        raise WarrantError(f"expected warrant_version 1, found {version!r}")
    if not isinstance(nb, dt.datetime) or not isinstance(exp, dt.datetime):
        raise WarrantError("expected dates for not_before and expires")
    obligations: dict[str, int | str | bool] = {}
    for row in obligation_rows:
        name, value = row.terms
        if type(name) is not str:
            raise WarrantError(f"expected obligation names to be strings, found {name!r}")
        if name in obligations:
            raise WarrantError(f"obligation {name!r} appears twice in the authority block")
        obligations[name] = value
    return WarrantClaims(
        warrant_id=w,
        principal=p,
        action=a,
        resource=r,
        args_digest=d,
        zone=z,
        executable_digest=x,
        obligations=obligations,
        not_before=int(nb.timestamp()),
        expires=int(exp.timestamp()),
        lease_ttl_ms=lease,
        decision_index=index,
        parent=parent,
    )


def mint_warrant(claims: WarrantClaims, *, root_private_key: bytes) -> str:
    """Issue a warrant.

    Args:
        claims: what the warrant authorizes.
        root_private_key: the governor's 32-byte Ed25519 root seed.

    Returns:
        The token, base64url.

    Raises:
        KeyFormatError: the root key is not 32 bytes.
        WarrantError: (reason ``too-large``) the token would exceed :data:`MAX_TOKEN_CHARS`.
    """
    if type(root_private_key) is not bytes or len(root_private_key) != 32:
        raise KeyFormatError("expected the 32-byte Ed25519 root private key seed")
    parameters: dict[str, Any] = {
        "warrant_id": claims.warrant_id,
        "principal": claims.principal,
        "action": claims.action,
        "resource": claims.resource,
        "args_digest": claims.args_digest,
        "zone": claims.zone,
        "executable_digest": claims.executable_digest,
        "not_before": biscuit_date(claims.not_before),
        "expires": biscuit_date(claims.expires),
        "lease_ttl_ms": claims.lease_ttl_ms,
        "decision_index": claims.decision_index,
        "parent": claims.parent,
    }
    source = [_AUTHORITY]
    for i, (name, value) in enumerate(sorted(claims.obligations.items())):
        source.append(f"obligation({{ob_{i}_name}}, {{ob_{i}_value}});")
        parameters[f"ob_{i}_name"] = name
        parameters[f"ob_{i}_value"] = value
    try:
        root = PrivateKey("ed25519-private/" + root_private_key.hex())
        token = BiscuitBuilder(*inline_parameters("\n".join(source), parameters)).build(root).to_base64()
    except BISCUIT_ERRORS as e:
        raise WarrantError(f"cannot mint warrant {claims.warrant_id}: {e}") from e
    if len(token) > MAX_TOKEN_CHARS:
        raise WarrantError(
            f"the warrant would be {len(token)} characters, more than {MAX_TOKEN_CHARS}", reason="too-large"
        )
    return token


@dataclass(frozen=True)
class VerifiedWarrant:
    """A warrant that verified, with everything a later re-check needs.

    Attributes:
        claims: the authority block's claims.
        bounds: what the appended blocks narrow it to.
        revocation_ids: one Biscuit revocation id (hex) per block, authority first.
    """

    claims: WarrantClaims
    bounds: AttenuationBounds
    revocation_ids: tuple[str, ...]

    @property
    def expires(self) -> int:
        """The warrant's effective expiry: the authority's, or an earlier attenuated one."""
        attenuated = self.bounds.expires
        return self.claims.expires if attenuated is None else min(self.claims.expires, attenuated)

    def ids(self) -> tuple[str, ...]:
        """Every id whose revocation revokes this copy: the warrant, its parent, each block."""
        return (*self.claims.ids(), *self.revocation_ids)


def verify_warrant(
    token: str,
    *,
    root_public_key: bytes,
    now: int,
    request: WarrantRequest | None,
    revoked: Callable[[str], bool] | Set[str] = frozenset(),
) -> WarrantClaims:
    """Verify a warrant for what is about to be done (:func:`verify_warrant_bounds`).

    Returns:
        The claims of the authority block.
    """
    return verify_warrant_bounds(
        token, root_public_key=root_public_key, now=now, request=request, revoked=revoked
    ).claims


def check_now(now: object) -> None:
    """The verification time must be integer unix seconds in ``[0, MAX_TIME]``.

    Raises:
        ValueError: it is not (``True``, a float, a negative or too large number).
    """
    if type(now) is not int or not 0 <= now <= MAX_TIME:
        raise ValueError(f"expected now as unix seconds in [0, {MAX_TIME}], found {now!r}")


def verify_warrant_bounds(
    token: str,
    *,
    root_public_key: bytes,
    now: int,
    request: WarrantRequest | None,
    revoked: Callable[[str], bool] | Set[str] = frozenset(),
) -> VerifiedWarrant:
    """Verify a warrant for what is about to be done.

    Steps:
      1. At most :data:`MAX_TOKEN_CHARS` characters (``too-large``), before parsing.
      2. base64url (``malformed``; ``truncated`` if it ends mid-byte).
      3. The outer structure is complete (``truncated``) and has at most
         :data:`MAX_BLOCKS` blocks (``too-large``), before any signature is checked.
      4. The signature chain verifies with the root key (``forged``: another key,
         an altered byte, or a wrong root key).
      4b. Every appended block has one of the accepted shapes (``shape``), read as
         text before any Datalog runs (:mod:`~proctor.authorization.attenuation`).
      5. The claims are read from the authority block (``malformed``, ``limit``).
      6. Neither the warrant, its parent, nor any block's revocation id is revoked
         (``revoked``).
      7. ``not_before <= now < expires``, where ``expires`` is the earliest of the
         authority's and every attenuated time bound (``not-yet-valid``, ``expired``).
      8. With a request: action, resource and args digest equal the claims; the zone
         equals unless the claim is ``""``; the executable digest equals unless the
         claim is ``""`` (``scope``).
      9. The authorizer runs every block's checks under the Datalog limits
         (``limit``); a failed attenuation check is ``expired`` if it passes at
         ``not_before`` (a time bound that has passed), otherwise ``scope``.

    Args:
        token: the warrant.
        root_public_key: the governor's 32-byte Ed25519 root public key.
        now: the current time, unix seconds.
        request: what the enforcer measured, or ``None`` to check signature, validity
            and revocation only (attenuation checks on the request then pass; they
            compare against ``inspection(true)``).
        revoked: a set of revoked ids, or a function answering whether an id is
            revoked. It is asked about the warrant id, the parent id (the governor
            resolves deeper ancestry when it revokes), and each block's Biscuit
            revocation id (hex), so one attenuated copy can be revoked alone.

    Returns:
        The claims, the attenuation bounds and the revocation ids.

    Raises:
        WarrantError: with ``reason`` as in the steps above.
        KeyFormatError: the root key is not a 32-byte Ed25519 key.
        ValueError: ``now`` is not an integer time.
        Exception: whatever ``revoked`` raises is passed on (no answer is no warrant).
    """
    check_now(now)
    # Steps 1-4
    biscuit = open_token(token, root_public_key=root_public_key)
    # Step 4b
    bounds = attenuation_bounds(biscuit)
    # Step 5
    authorizer = _authorizer(biscuit, now, request)
    claims = _claims(authorizer)
    verified = VerifiedWarrant(claims, bounds, tuple(biscuit.revocation_ids))
    check_verified(verified, now=now, request=request, revoked=revoked)  # steps 6-8
    # Step 9 (Biscuit specification, "Authorizer": every check of every block, then
    # the policies; default scopes mean appended facts are never trusted)
    failure = _authorize(authorizer)
    if failure is not None:
        if failure.reason != "limit" and _authorize(_authorizer(biscuit, claims.not_before, request)) is None:
            raise WarrantError(
                f"warrant {claims.warrant_id}: an attenuated validity bound has passed", reason="expired"
            )
        raise failure
    return verified


def check_verified(
    verified: VerifiedWarrant,
    *,
    now: int,
    request: WarrantRequest | None,
    revoked: Callable[[str], bool] | Set[str] = frozenset(),
) -> None:
    """Steps 6-8 of :func:`verify_warrant_bounds` for a warrant whose signature chain
    and claims were read already: not revoked, within its validity, and (with a
    request) covering exactly it.

    Raises:
        WarrantError: ``revoked``, ``not-yet-valid``, ``expired`` or ``scope``.
    """
    claims = verified.claims
    # Step 6 (Biscuit specification, "Revocation identifiers": one per block)
    is_revoked = revoked.__contains__ if isinstance(revoked, Set) else revoked
    for rid in (*claims.ids(), *verified.revocation_ids):
        if is_revoked(rid):
            raise WarrantError(f"warrant {claims.warrant_id}: {rid} is revoked", reason="revoked")
    # Step 7
    if now < claims.not_before:
        raise WarrantError(
            f"warrant {claims.warrant_id} is valid from {claims.not_before}, now is {now}",
            reason="not-yet-valid",
        )
    if now >= verified.expires:
        raise WarrantError(
            f"warrant {claims.warrant_id} expired at {verified.expires}, now is {now}", reason="expired"
        )
    # Step 8
    if request is None:
        return
    mismatches = [
        f"{name} differ (the warrant's {granted!r}, the request's {asked!r})"
        for name, ok, granted, asked in (
            ("action", request.action == claims.action, claims.action, request.action),
            ("resource", request.resource == claims.resource, claims.resource, request.resource),
            (
                "args_digest",
                request.args_digest == claims.args_digest,
                claims.args_digest,
                request.args_digest,
            ),
            ("zone", claims.zone in ("", request.zone), claims.zone, request.zone),
            (
                "executable_digest",
                claims.executable_digest in ("", request.executable_digest),
                claims.executable_digest,
                request.executable_digest,
            ),
        )
        if not ok
    ]
    if mismatches:
        raise WarrantError(
            f"warrant {claims.warrant_id} does not cover this request: {'; '.join(mismatches)}",
            reason="scope",
        )


def attenuate_warrant(
    token: str,
    *,
    root_public_key: bytes,
    expires: int | None = None,
    resource: str | None = None,
    args_digest: str | None = None,
    zone: str | None = None,
    max_duration_s: int | None = None,
) -> str:
    """Narrow a warrant offline by appending a block of checks.

    The token's signature is verified first (nothing is appended to a forgery); no
    private key is needed. Each argument adds one check:

    - ``expires``: ``check if time($t), $t < expires``;
    - ``max_duration_s``: the same, at the authority ``not_before + max_duration_s``
      (the lease renewals re-verify the warrant, so the execution ends by then);
    - ``resource`` / ``args_digest`` / ``zone``: the request's value must equal it
      (``check if req_resource($r), $r == … or inspection(true)``).

    Args:
        token: the warrant to narrow.
        root_public_key: the governor's 32-byte Ed25519 root public key.
        expires: a new, earlier expiry (unix seconds).
        resource: the only resource allowed.
        args_digest: the only argument digest allowed.
        zone: the only zone allowed.
        max_duration_s: seconds after the warrant's ``not_before`` when it stops being valid.

    Returns:
        The attenuated token, base64url.

    Raises:
        WarrantError: the token does not verify (see :func:`verify_warrant` steps 1-5),
            no narrowing was asked for, an argument is malformed (``malformed``), or
            the result would be too large (``too-large``).
        KeyFormatError: the root key is not a 32-byte Ed25519 key.
    """
    biscuit = open_token(token, root_public_key=root_public_key)
    attenuation_bounds(biscuit)
    claims = _claims(_authorizer(biscuit, 0, None))
    if biscuit.block_count() + 1 > MAX_BLOCKS:
        raise WarrantError(f"the warrant already has {MAX_BLOCKS} blocks", reason="too-large")
    checks: list[str] = []
    parameters: dict[str, Any] = {}
    if expires is not None:
        if type(expires) is not int or not 0 <= expires <= MAX_TIME:
            raise WarrantError(f"expires: expected unix seconds, found {expires!r}")
        checks.append("check if time($t), $t < {expires};")
        parameters["expires"] = biscuit_date(expires)
    if max_duration_s is not None:
        if type(max_duration_s) is not int or max_duration_s <= 0:
            raise WarrantError(f"max_duration_s: expected a positive integer, found {max_duration_s!r}")
        checks.append("check if time($t), $t < {duration_end};")
        parameters["duration_end"] = biscuit_date(min(claims.not_before + max_duration_s, MAX_TIME))
    if resource is not None:
        # The same rules as the claims, applied by building a request that holds it.
        WarrantRequest(claims.action, resource, claims.args_digest)
        checks.append("check if req_resource($r), $r == {resource} or inspection(true);")
        parameters["resource"] = resource
    if args_digest is not None:
        WarrantRequest(claims.action, claims.resource, args_digest)
        checks.append("check if req_args_digest($d), $d == {args_digest} or inspection(true);")
        parameters["args_digest"] = args_digest
    if zone is not None:
        if not valid_principal_name(zone):
            raise WarrantError(f"zone: expected a zone name, found {zone!r}")
        checks.append("check if req_zone($z), $z == {zone} or inspection(true);")
        parameters["zone"] = zone
    if not checks:
        raise WarrantError(
            "expected at least one narrowing (expires, resource, args_digest, zone, max_duration_s)"
        )
    try:
        block = BlockBuilder(*inline_parameters("\n".join(checks), parameters))
        attenuated = biscuit.append(block).to_base64()
    except BISCUIT_ERRORS as e:
        raise WarrantError(f"cannot attenuate warrant {claims.warrant_id}: {e}") from e
    if len(attenuated) > MAX_TOKEN_CHARS:
        raise WarrantError(
            f"the attenuated warrant would be {len(attenuated)} characters, more than {MAX_TOKEN_CHARS}",
            reason="too-large",
        )
    return attenuated


def inspect_warrant(token: str, *, root_public_key: bytes) -> dict[str, Any]:
    """Read a warrant without judging it: no time, scope or revocation checks.

    Args:
        token: the warrant.
        root_public_key: the governor's 32-byte Ed25519 root public key.

    Returns:
        ``{"claims": <WarrantClaims.to_json()>, "block_count": n,
        "attenuations": [<Datalog source of each appended block>],
        "revocation_ids": [<hex, one per block>]}``.

    Raises:
        WarrantError: the token does not verify (see :func:`verify_warrant` steps 1-5).
        KeyFormatError: the root key is not a 32-byte Ed25519 key.
    """
    biscuit = open_token(token, root_public_key=root_public_key)
    claims = _claims(_authorizer(biscuit, 0, None))
    count = biscuit.block_count()
    return {
        "claims": claims.to_json(),
        "block_count": count,
        "attenuations": [biscuit.block_source(i) for i in range(1, count)],
        "revocation_ids": list(biscuit.revocation_ids),
    }
