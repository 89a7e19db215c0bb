"""Fuzz warrant attenuation (``attenuate_warrant``, and blocks of any Datalog appended
offline, as whoever holds a warrant can): structured inputs, read by
:class:`~fuzz.fuzz_support.Reader`.

Each input picks a warrant minted by the test key, narrows it in one to three steps —
``attenuate_warrant`` with arguments drawn from the input, or a block built from
Datalog pieces and strings drawn from the input — and then asks for a request drawn
from the input at a time drawn from it. Refusals allowed: ``WarrantError``. Oracles:

- a narrowed warrant allows a request only if the warrant it was narrowed from allows
  it at the same time (nothing widens);
- its effective expiry is no later than its parent's;
- the bounds read from its blocks hold for every request it allows.
"""

from __future__ import annotations

import datetime as dt
import itertools
from functools import cache
from typing import Any

from biscuit_auth import BlockBuilder

from fuzz.fuzz_support import NOW, WARRANT_CLAIMS, WARRANT_KEY, WARRANT_REQUESTS, Reader, check
from proctor.authorization.claims import WarrantRequest, args_digest
from proctor.authorization.tokens import BISCUIT_ERRORS, open_token
from proctor.authorization.warrants import (
    VerifiedWarrant,
    attenuate_warrant,
    mint_warrant,
    verify_warrant_bounds,
)
from proctor.errors import WarrantError

__all__ = ["INSTRUMENT", "one_input"]

INSTRUMENT = ("proctor.authorization",)
"""The modules atheris instruments for coverage (run_harness.py reads this line)."""

ROOT = WARRANT_KEY.public_key
_OTHER_DIGEST = args_digest(["rm", "-rf", "/"])
_PIECES = (
    "check if time($t), $t < {date};",
    'check if req_resource($r), $r == "{text}" or inspection(true);',
    'check if req_args_digest($d), $d == "{text}" or inspection(true);',
    'check if req_zone($z), $z == "{text}" or inspection(true);',
    "check if req_resource($r), $r == {text} or inspection(true);",
    'check if req_zone($z), $z == "{raw}" or inspection(true);',
    'check if req_resource($r), $r == "{raw}" or true;',
    'resource("{raw}");',
    "resource({text});",
    "zone({text});",
    "time({date});",
    "check if true;",
    "check if time($t), $t < {date} or inspection(true);",
    'check if req_resource($r), $r.starts_with("/bin") or inspection(true);',
    "allowed($r) <- req_resource($r);",
    "check if req_resource($r) trusting previous;",
    "{raw}",
)


@cache
def _parents() -> tuple[str, ...]:
    return tuple(mint_warrant(c, root_private_key=WARRANT_KEY.private_bytes()) for c in WARRANT_CLAIMS)


def _date(r: Reader) -> dt.datetime:
    return dt.datetime.fromtimestamp(NOW + r.integer(-200, 3000), tz=dt.UTC)


def _string(r: Reader, fitting: str) -> str:
    return r.choice((fitting, "/bin/evil", "prod", "dev", "", _OTHER_DIGEST, r.text()))


def _block(token: str, r: Reader) -> str:
    lines: list[str] = []
    parameters: dict[str, Any] = {}
    for i in range(r.integer(1, 4)):
        piece = r.choice(_PIECES)
        piece = piece.replace("{date}", f"{{date{i}}}").replace("{text}", f"{{text{i}}}")
        parameters[f"date{i}"] = _date(r)
        parameters[f"text{i}"] = _string(r, "/bin/echo")
        lines.append(piece.replace("{raw}", r.text(30)))
    source = "\n".join(lines)
    used = {k: v for k, v in parameters.items() if "{" + k + "}" in source}
    biscuit = open_token(token, root_public_key=ROOT)
    try:
        block = BlockBuilder(source, used)
    except Exception:
        return token
    try:
        return str(biscuit.append(block).to_base64())
    except BISCUIT_ERRORS:
        return token


def _narrow(token: str, fitting: WarrantRequest, r: Reader) -> str:
    if r.integer(0, 2) == 0:
        return _block(token, r)
    kwargs: dict[str, Any] = {}
    for name in ("expires", "max_duration_s", "resource", "args_digest", "zone"):
        if r.integer(0, 2):
            continue
        if name == "expires":
            kwargs[name] = NOW + r.integer(-200, 3000)
        elif name == "max_duration_s":
            kwargs[name] = r.integer(-2, 3000)
        else:
            kwargs[name] = _string(r, getattr(fitting, name))
    return attenuate_warrant(token, root_public_key=ROOT, **kwargs)


class _Inconclusive(Exception):  # noqa: N818 - a private signal
    """Datalog's wall-clock limit refused a warrant again and again (a loaded machine)."""


def _verify(token: str, request: WarrantRequest, now: int) -> VerifiedWarrant | None:
    for _ in range(5):
        try:
            return verify_warrant_bounds(token, root_public_key=ROOT, now=now, request=request)
        except WarrantError as e:
            if e.reason != "limit":  # the time limit is wall-clock: only that is retried
                return None
    raise _Inconclusive


def one_input(data: bytes) -> None:
    """One input: which warrant, how it is narrowed, what is asked and when."""
    r = Reader(data)
    which = r.integer(0, len(WARRANT_CLAIMS) - 1)
    parent, fitting = _parents()[which], WARRANT_REQUESTS[which]
    chain = [parent]
    for _ in range(r.integer(1, 3)):
        try:
            chain.append(_narrow(chain[-1], fitting, r))
        except WarrantError:
            break
    try:
        request = WarrantRequest(
            fitting.action,
            r.choice((fitting.resource, fitting.resource, "/bin/evil", r.text())),
            r.choice((fitting.args_digest, fitting.args_digest, _OTHER_DIGEST)),
            r.choice((fitting.zone, "dev", "")),
            fitting.executable_digest,
        )
    except WarrantError:
        return
    now = NOW + r.integer(-100, 2000)
    try:
        results = [_verify(token, request, now) for token in chain]
    except _Inconclusive:
        return
    for parent_result, child_result in itertools.pairwise(results):
        if child_result is None:
            continue
        check(parent_result is not None, f"a narrowed warrant allowed {request} at {now}; its parent did not")
        if parent_result is not None:
            check(
                child_result.expires <= parent_result.expires,
                "a narrowed warrant expires later than its parent",
            )
        bounds = child_result.bounds
        check(not bounds.resources or bounds.resources == {request.resource}, "a resource bound did not hold")
        check(
            not bounds.args_digests or bounds.args_digests == {request.args_digest},
            "an args bound did not hold",
        )
        check(not bounds.zones or bounds.zones == {request.zone}, "a zone bound did not hold")
        check(now < child_result.expires, "a warrant was allowed at or after its expiry")
