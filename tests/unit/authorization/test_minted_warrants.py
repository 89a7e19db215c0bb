"""A warrant presented back to the process that minted it is checked by its exact bytes
(:mod:`proctor.authorization.minted`): the same answers and errors as a full
verification, and a full verification for any other text."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from proctor.authorization import minted as minted_module
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.minted import MintedWarrants
from proctor.authorization.warrants import (
    WarrantClaims,
    WarrantRequest,
    args_digest,
    attenuate_warrant,
    mint_warrant,
    verify_warrant_bounds,
)
from proctor.errors import WarrantError

ROOT = PrincipalKey.from_private_bytes("admin", bytes(range(32)))
OTHER = PrincipalKey.from_private_bytes("admin", bytes(range(1, 33)))
ARGS = args_digest({"path": "/srv/a"})
TOOL = "sha256:" + "7a" * 32
NB, EXP = 1_700_000_000, 1_700_000_600
NOW = NB + 60
CLAIMS = WarrantClaims(
    warrant_id="wr_0123456789abcdefghijklmnop",
    principal="agent-1",
    action="mcp.call",
    resource="fs/read",
    args_digest=ARGS,
    zone="prod",
    executable_digest=TOOL,
    obligations={"max_duration_s": 30, "network": "none"},
    not_before=NB,
    expires=EXP,
    lease_ttl_ms=30_000,
    decision_index=42,
    parent="",
)
REQUEST = WarrantRequest("mcp.call", "fs/read", ARGS, "prod", TOOL)


@pytest.fixture(scope="module")
def token() -> str:
    return mint_warrant(CLAIMS, root_private_key=ROOT.private_bytes())


class Counted:
    """verify_warrant_bounds, counted (as the cache calls it)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return verify_warrant_bounds(*a, **kw)


@pytest.fixture
def full(monkeypatch: pytest.MonkeyPatch) -> Counted:
    counted = Counted()
    monkeypatch.setattr(minted_module, "verify_warrant_bounds", counted)
    return counted


def _known(token: str, size: int = 16) -> MintedWarrants:
    minted = MintedWarrants(ROOT.public_key, size=size)
    minted.remember(token, CLAIMS)
    return minted


def _outcome(verify: Any, token: str, **kw: Any) -> Any:
    args: dict[str, Any] = {"root_public_key": ROOT.public_key, "now": NOW, "request": REQUEST, **kw}
    try:
        return verify(token, **args)
    except WarrantError as e:
        return ("refused", e.reason, str(e))


def test_a_remembered_warrant_verifies_as_a_full_verification_without_one(token: str, full: Counted) -> None:
    minted = _known(token)
    assert _outcome(minted.verify, token) == _outcome(verify_warrant_bounds, token)
    assert full.calls == 0


@pytest.mark.parametrize(
    "case",
    [
        {"now": NB - 1},  # not yet valid
        {"now": EXP},  # expired
        {"now": EXP - 1},
        {"request": dataclasses.replace(REQUEST, resource="fs/write")},
        {"request": dataclasses.replace(REQUEST, args_digest=args_digest({"path": "/etc/shadow"}))},
        {"request": dataclasses.replace(REQUEST, zone="dev")},
        {"request": dataclasses.replace(REQUEST, executable_digest="sha256:" + "00" * 32)},
        {"request": None},
        {"revoked": {CLAIMS.warrant_id}},
        {"revoked": lambda rid: len(rid) == 128},  # the block's revocation id
    ],
    ids=repr,
)
def test_every_check_that_can_change_after_minting_answers_as_a_full_verification(
    token: str, full: Counted, case: dict[str, Any]
) -> None:
    minted = _known(token)
    assert _outcome(minted.verify, token, **case) == _outcome(verify_warrant_bounds, token, **case)
    assert full.calls == 0


def test_any_other_text_is_verified_in_full(token: str, full: Counted) -> None:
    minted = _known(token)
    attenuated = attenuate_warrant(token, root_public_key=ROOT.public_key, zone="dev")
    assert _outcome(minted.verify, attenuated)[:2] == ("refused", "scope")  # its block's check ran
    assert full.calls == 1
    altered = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
    assert _outcome(minted.verify, altered)[0] == "refused"
    assert full.calls == 2
    other = mint_warrant(CLAIMS, root_private_key=OTHER.private_bytes())
    assert _outcome(minted.verify, other)[:2] == ("refused", "forged")
    assert full.calls == 3


def test_a_token_remembered_for_another_root_key_is_verified_in_full(token: str, full: Counted) -> None:
    minted = MintedWarrants(OTHER.public_key)
    minted.remember(token, CLAIMS)
    assert _outcome(minted.verify, token) == _outcome(verify_warrant_bounds, token)
    assert full.calls == 1


def test_an_attenuated_token_is_never_remembered(token: str, full: Counted) -> None:
    attenuated = attenuate_warrant(token, root_public_key=ROOT.public_key, zone="prod")
    minted = MintedWarrants(ROOT.public_key)
    minted.remember(attenuated, CLAIMS)
    _outcome(minted.verify, attenuated)
    assert full.calls == 1


def test_the_oldest_is_forgotten_past_the_bound_and_an_expired_one_when_looked_up(full: Counted) -> None:
    tokens = [
        mint_warrant(
            dataclasses.replace(CLAIMS, warrant_id=f"wr_{i:026d}"), root_private_key=ROOT.private_bytes()
        )
        for i in range(3)
    ]
    minted = MintedWarrants(ROOT.public_key, size=2)
    for i, t in enumerate(tokens):
        minted.remember(t, dataclasses.replace(CLAIMS, warrant_id=f"wr_{i:026d}"))
    _outcome(minted.verify, tokens[0])
    assert full.calls == 1  # forgotten
    _outcome(minted.verify, tokens[2])
    assert full.calls == 1
    assert _outcome(minted.verify, tokens[2], now=EXP)[:2] == ("refused", "expired")
    _outcome(minted.verify, tokens[2])
    assert full.calls == 2  # forgotten once seen expired


def test_now_must_be_an_integer_time(token: str) -> None:
    with pytest.raises(ValueError, match="unix seconds"):
        _known(token).verify(token, root_public_key=ROOT.public_key, now=NOW + 0.5, request=REQUEST)  # type: ignore[arg-type]
