"""Properties held for any input Hypothesis draws: RFC 9162 proofs against the naive
reference tree, warrant attenuation (nothing widens), RFC 8785 canonical encoding
against the ``rfc8785`` reference at the edge of the accepted subset, and checkpoints
through their signed-note text.

What the unit tests already draw is not drawn again here: ``tests/unit/lineage/
test_merkle.py`` (paths equal the naive tree's, a flipped first bit fails),
``tests/unit/test_canonical*.py`` (bytes equal the reference inside the subset),
``tests/unit/test_note.py`` (note text round trip). These draw the rest: every byte of
a proof, leaf or root, wrong sizes and indices judged by the naive tree; attenuation
chains and widening attempts; values outside the subset; signed checkpoints.

Each test counts the examples it ran (figures, section "Property tests"). Hypothesis
draws from ``PROCTOR_PROPERTY_SEED`` when it is set (a failure names the seed).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
from collections import Counter
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import naive_merkle as naive
from figures import record
from proctor.authorization.claims import MAX_TIME, WarrantClaims, WarrantRequest, args_digest
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.tokens import open_token
from proctor.authorization.warrants import (
    VerifiedWarrant,
    attenuate_warrant,
    mint_warrant,
    verify_warrant_bounds,
)
from proctor.canonical import MAX_DEPTH, MAX_SAFE_INTEGER, canonicalize, loads
from proctor.errors import CanonicalizationError, CheckpointError, NoteError, ProofError, WarrantError
from proctor.lineage.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from proctor.lineage.merkle import consistency_path, inclusion_path, leaf_hash, root_hash
from proctor.lineage.proofs import ConsistencyProof, InclusionProof
from proctor.note import generate_signer, open_note

SEED = int(os.environ.get("PROCTOR_PROPERTY_SEED", str(random.SystemRandom().randrange(2**32))))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1767225600  # 2026-01-01T00:00:00Z
ROOT_KEY = PrincipalKey.from_private_bytes("warrant-root", bytes(range(32)))
ROGUE_KEY = PrincipalKey.from_private_bytes("warrant-root", bytes(range(1, 33)))


def run(name: str, prop: Callable[[], None], counts: Counter[str], *, what: str) -> None:
    """Run a Hypothesis property under :data:`SEED`, then record how many examples ran."""
    try:
        seed(SEED)(prop)()
    except BaseException as e:
        e.add_note(f"PROCTOR_PROPERTY_SEED={SEED} draws these examples again")
        raise
    assert counts["examples"] > 0
    record(
        f"property-{name}",
        section="Property tests",
        columns=["property", "examples run", "checked"],
        rows=[(name, counts["examples"], what.format_map(counts))],
    )


# -- proofs: RFC 9162 against the naive reference tree ----------------------------------------


@cache
def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def _changed(value: bytes, at: int, xor: int) -> bytes:
    return value[:at] + bytes([value[at] ^ xor]) + value[at + 1 :]


def _fails(check: Callable[[], None]) -> bool:
    try:
        check()
    except ProofError:
        return True
    return False


def test_an_inclusion_proof_verifies_and_fails_after_any_change() -> None:
    """An inclusion proof for any leaf of any tree verifies under the naive tree's root, and
    fails after any one byte of its hashes, the leaf or the root changes, after a hash is
    dropped or added, and at any other index or size unless the naive tree gives that
    very proof there."""
    counts: Counter[str] = Counter()

    @SETTINGS
    @given(st.data())
    def prop(data: st.DataObject) -> None:
        n = data.draw(st.integers(1, 300), label="tree size")
        m = data.draw(st.integers(0, n - 1), label="leaf index")
        leaves = _leaves(n)
        root = naive.mth(leaves)
        assert root_hash(naive.NaiveNodes(leaves), n) == root
        proof = InclusionProof(m, n, tuple(inclusion_path(naive.NaiveNodes(leaves), m, n)))
        assert InclusionProof.from_json(proof.to_json()) == proof
        proof.verify(leaves[m], root)
        hashes = list(proof.hashes)
        # One byte of any of the hashes involved.
        which = data.draw(st.integers(0, len(hashes) + 1), label="which hash")
        at, xor = data.draw(st.integers(0, 31), label="byte"), data.draw(st.integers(1, 255), label="xor")
        if which < len(hashes):
            bad = [*hashes[:which], _changed(hashes[which], at, xor), *hashes[which + 1 :]]
            assert _fails(lambda: InclusionProof(m, n, tuple(bad)).verify(leaves[m], root))
        elif which == len(hashes):
            assert _fails(lambda: proof.verify(_changed(leaves[m], at, xor), root))
        else:
            assert _fails(lambda: proof.verify(leaves[m], _changed(root, at, xor)))
        # A hash too few or too many.
        if hashes:
            assert _fails(lambda: InclusionProof(m, n, tuple(hashes[:-1])).verify(leaves[m], root))
        assert _fails(lambda: InclusionProof(m, n, (*hashes, root)).verify(leaves[m], root))
        # Another index (the same leaf claimed there), another size (with that tree's root).
        other = data.draw(st.integers(0, 2 * n), label="other index")
        if other != m:
            assert _fails(lambda: InclusionProof(other, n, proof.hashes).verify(leaves[m], root))
        size = data.draw(st.integers(1, 2 * n + 2), label="other size")
        if size != n:
            leaves2 = _leaves(size)
            claimed = InclusionProof(m, size, proof.hashes)
            verified = not _fails(
                lambda: claimed.verify(leaves2[m] if m < size else leaves[m], naive.mth(leaves2))
            )
            assert verified == (m < size and hashes == naive.path(m, leaves2)), (m, n, size)
            counts["same proof at another size"] += verified
        counts["examples"] += 1

    run(
        "inclusion-proofs",
        prop,
        counts,
        what="every changed byte, hash count, index and size: fails unless the naive tree gives "
        "the same proof ({same proof at another size} such sizes)",
    )


def test_a_consistency_proof_verifies_and_fails_after_any_change() -> None:
    """A consistency proof between any two sizes verifies under the naive trees' roots, and
    fails after any one byte of its hashes or either root changes, after a hash is dropped
    or added, and between any other sizes unless the naive trees give that very proof."""
    counts: Counter[str] = Counter()

    @SETTINGS
    @given(st.data())
    def prop(data: st.DataObject) -> None:
        new = data.draw(st.integers(2, 300), label="new size")
        old = data.draw(st.integers(1, new - 1), label="old size")
        leaves = _leaves(new)
        old_root, new_root = naive.mth(leaves[:old]), naive.mth(leaves)
        proof = ConsistencyProof(old, new, tuple(consistency_path(naive.NaiveNodes(leaves), old, new)))
        assert list(proof.hashes) == naive.proof(old, leaves)
        assert ConsistencyProof.from_json(proof.to_json()) == proof
        proof.verify(old_root, new_root)
        hashes = list(proof.hashes)
        which = data.draw(st.integers(0, len(hashes) + 1), label="which hash")
        at, xor = data.draw(st.integers(0, 31), label="byte"), data.draw(st.integers(1, 255), label="xor")
        if which < len(hashes):
            bad = [*hashes[:which], _changed(hashes[which], at, xor), *hashes[which + 1 :]]
            assert _fails(lambda: ConsistencyProof(old, new, tuple(bad)).verify(old_root, new_root))
        elif which == len(hashes):
            assert _fails(lambda: proof.verify(_changed(old_root, at, xor), new_root))
        else:
            assert _fails(lambda: proof.verify(old_root, _changed(new_root, at, xor)))
        if hashes:
            assert _fails(lambda: ConsistencyProof(old, new, tuple(hashes[:-1])).verify(old_root, new_root))
        assert _fails(lambda: ConsistencyProof(old, new, (*hashes, new_root)).verify(old_root, new_root))
        # Other sizes, each with its own tree's root.
        old2 = data.draw(st.integers(1, new + 3), label="other old size")
        new2 = data.draw(st.integers(old2, new + 3), label="other new size")
        if (old2, new2) != (old, new):
            more = _leaves(new2)
            claimed = ConsistencyProof(old2, new2, proof.hashes)
            verified = not _fails(lambda: claimed.verify(naive.mth(more[:old2]), naive.mth(more)))
            assert verified == (hashes == naive.proof(old2, more)), (old, new, old2, new2)
            counts["same proof between other sizes"] += verified
        counts["examples"] += 1

    run(
        "consistency-proofs",
        prop,
        counts,
        what="every changed byte, hash count and pair of sizes: fails unless the naive trees give "
        "the same proof ({same proof between other sizes} such pairs)",
    )


# -- warrant attenuation: nothing widens --------------------------------------------------------

RESOURCES = ("/bin/echo", "/usr/bin/env", "/opt/tool/run")
ZONES = ("", "prod", "dev")
ARGVS = (["echo", "hi"], ["env"], ["run", "--all"])
EXE = "sha256:" + "ab" * 32


@st.composite
def parents(draw: st.DrawFn) -> tuple[WarrantClaims, str]:
    not_before = NOW - draw(st.integers(0, 600))
    claims = WarrantClaims(
        warrant_id=f"wr_prop{draw(st.integers(0, 9999)):04d}",
        principal="agent-1",
        action="exec",
        resource=draw(st.sampled_from(RESOURCES)),
        args_digest=args_digest(draw(st.sampled_from(ARGVS))),
        zone=draw(st.sampled_from(ZONES)),
        executable_digest=draw(st.sampled_from(("", EXE))),
        obligations={},
        not_before=not_before,
        expires=NOW + draw(st.integers(1, 1800)),
        lease_ttl_ms=5000,
        decision_index=draw(st.integers(0, 1000)),
    )
    return claims, mint_warrant(claims, root_private_key=ROOT_KEY.private_bytes())


def narrowings(claims: WarrantClaims) -> st.SearchStrategy[dict[str, Any]]:
    """One narrowing step: the warrant's own values half the time, others the rest."""
    own_zone = claims.zone or "prod"
    return st.fixed_dictionaries(
        {},
        optional={
            "expires": st.integers(NOW - 100, NOW + 2400),
            "max_duration_s": st.integers(1, 2400),
            "resource": st.sampled_from((claims.resource, claims.resource, claims.resource, *RESOURCES)),
            "args_digest": st.sampled_from((claims.args_digest,) * 3 + tuple(args_digest(a) for a in ARGVS)),
            "zone": st.sampled_from((own_zone, own_zone, own_zone, "prod", "dev", "qa")),
        },
    ).filter(bool)


requests = st.builds(
    WarrantRequest,
    action=st.just("exec"),
    resource=st.sampled_from(RESOURCES),
    args_digest=st.sampled_from([args_digest(a) for a in ARGVS]),
    zone=st.sampled_from(("prod", "dev", "qa", "")),
    executable_digest=st.sampled_from(("", EXE)),
)


def _verified(token: str, request: WarrantRequest, now: int) -> VerifiedWarrant | None:
    for _ in range(5):  # Datalog's time limit is wall-clock: a refusal for it alone is retried
        try:
            return verify_warrant_bounds(token, root_public_key=ROOT_KEY.public_key, now=now, request=request)
        except WarrantError as e:
            if e.reason != "limit":
                return None
    raise AssertionError(f"verification hit the Datalog time limit 5 times in a row for {request}")


def test_a_narrowed_warrant_never_allows_a_request_its_parent_does_not() -> None:
    """For any warrant and any chain of narrowing steps, each narrowed warrant allows a
    request at a time only if the warrant it was narrowed from allows it then, and never
    expires later."""
    counts: Counter[str] = Counter()

    @SETTINGS
    @given(parents(), st.data())
    def prop(parent: tuple[WarrantClaims, str], data: st.DataObject) -> None:
        claims, token = parent
        steps = data.draw(st.lists(narrowings(claims), min_size=1, max_size=3), label="steps")
        chain = [token]
        for step in steps:
            chain.append(attenuate_warrant(chain[-1], root_public_key=ROOT_KEY.public_key, **step))
        fitting = WarrantRequest("exec", claims.resource, claims.args_digest, claims.zone or "prod", EXE)
        for request in [fitting, *data.draw(st.lists(requests, min_size=1, max_size=4), label="requests")]:
            now = data.draw(st.integers(NOW - 700, NOW + 2500) | st.just(NOW), label="now")
            results = [_verified(t, request, now) for t in chain]
            for before, after in itertools.pairwise(results):
                if after is not None:
                    assert before is not None, (request, now, steps)
                    assert after.expires <= before.expires
                    counts["allowed by a narrowed warrant"] += 1
            counts["requests"] += 1
        counts["examples"] += 1

    run(
        "warrant-attenuation-never-widens",
        prop,
        counts,
        what="{requests} requests at random times against every link of the chain; "
        "{allowed by a narrowed warrant} allowed by a narrowed warrant, each also by its parent",
    )
    assert counts["allowed by a narrowed warrant"] > 0, "no narrowed warrant allowed anything: vacuous"


WIDENINGS = (
    "later-expiry",
    "longer-duration",
    "other-resource",
    "other-args",
    "other-zone",
    "fact-block",
    "rule-block",
    "true-check-block",
    "re-signed",
    "bad-argument",
)


def _append(token: str, source: str) -> str:
    from biscuit_auth import BlockBuilder

    biscuit = open_token(token, root_public_key=ROOT_KEY.public_key)
    return str(biscuit.append(BlockBuilder(source)).to_base64())


def _widen(kind: str, claims: WarrantClaims, token: str, at: int) -> tuple[str, WarrantRequest, int]:
    """A widening attempt: the token it makes, and the request and time it tries to allow
    beyond what ``token`` allows."""
    root = ROOT_KEY.public_key
    own = WarrantRequest("exec", claims.resource, claims.args_digest, claims.zone or "prod", EXE)
    other = next(r for r in RESOURCES if r != claims.resource)
    if kind == "later-expiry":
        return (
            attenuate_warrant(token, root_public_key=root, expires=claims.expires + at),
            own,
            claims.expires,
        )
    if kind == "longer-duration":
        lasts = claims.expires - claims.not_before + at
        return attenuate_warrant(token, root_public_key=root, max_duration_s=lasts), own, claims.expires
    if kind == "other-resource":
        asked = WarrantRequest("exec", other, own.args_digest, own.zone, EXE)
        return attenuate_warrant(token, root_public_key=root, resource=other), asked, NOW
    if kind == "other-args":
        digest = args_digest(["rm", "-rf", "/"])
        asked = WarrantRequest("exec", own.resource, digest, own.zone, EXE)
        return attenuate_warrant(token, root_public_key=root, args_digest=digest), asked, NOW
    if kind == "other-zone":
        zone = "dev" if claims.zone != "dev" else "prod"
        asked = WarrantRequest("exec", own.resource, own.args_digest, zone, EXE)
        if claims.zone == "":  # any zone: narrowing to one is no widening; ask for another
            asked = WarrantRequest("exec", own.resource, own.args_digest, "qa", EXE)
        return attenuate_warrant(token, root_public_key=root, zone=zone), asked, NOW
    if kind == "fact-block":
        source = f'resource("{other}");\nexpires({MAX_TIME});\nzone("");'
        return _append(token, source), WarrantRequest("exec", other, own.args_digest, own.zone, EXE), NOW
    if kind == "rule-block":
        source = f'resource($r) <- req_resource($r);\nwarrant("{claims.warrant_id}");'
        return _append(token, source), WarrantRequest("exec", other, own.args_digest, own.zone, EXE), NOW
    if kind == "true-check-block":
        return _append(token, "check if true;"), own, claims.expires
    if kind == "re-signed":
        wider = WarrantClaims(**{**claims.to_json(), "resource": other, "expires": MAX_TIME})
        forged = mint_warrant(wider, root_private_key=ROGUE_KEY.private_bytes())
        return forged, WarrantRequest("exec", other, own.args_digest, own.zone, EXE), NOW
    # bad-argument: a narrowing that is no narrowing must be refused, not ignored
    return attenuate_warrant(token, root_public_key=root, expires=MAX_TIME + at), own, claims.expires


def test_a_widening_attempt_is_refused_at_attenuation_or_verification() -> None:
    """Every attempt to make a warrant allow more — a later expiry or longer duration,
    another resource, arguments or zone, a block of facts or rules, a check that always
    holds, the claims re-signed by another key, an out-of-range bound — is refused when
    attenuating or when the result is verified for what it tried to allow."""
    counts: Counter[str] = Counter()

    @SETTINGS
    @given(parents(), st.integers(1, 5000))
    def prop(parent: tuple[WarrantClaims, str], at: int) -> None:
        claims, token = parent
        for kind in WIDENINGS:
            try:
                widened, asked, when = _widen(kind, claims, token, at)
            except WarrantError:
                counts["refused when attenuating"] += 1
            else:
                assert _verified(widened, asked, when) is None, (kind, asked, when)
                counts["refused when verified"] += 1
            counts["attempts"] += 1
        counts["examples"] += 1

    run(
        "warrant-widening-refused",
        prop,
        counts,
        what=f"{len(WIDENINGS)} kinds of widening on each warrant, {{attempts}} attempts: "
        "{refused when attenuating} refused when attenuating, {refused when verified} when verified",
    )


# -- canonical encoding at the edge of the subset -----------------------------------------------

keys = st.text(max_size=6)  # ASCII or not: the subset takes ASCII keys only
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)  # beyond ±(2**53 - 1) too
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)  # lone surrogates too
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=24,
)


def _in_subset(value: Any, depth: int = 0) -> bool:
    """The subset, written out again (canonical.py's docstring), independently of its code."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return abs(value) <= MAX_SAFE_INTEGER
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if depth >= MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(_in_subset(v, depth + 1) for v in value)
    return all(k.isascii() and _in_subset(k) and _in_subset(v, depth + 1) for k, v in value.items())


def _nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


def test_canonical_encoding_equals_the_reference_wherever_the_subset_accepts() -> None:
    """For any JSON value, inside the subset or not, the encoder accepts it exactly when it
    lies in the subset; then its bytes are the rfc8785 reference's, and they — and any
    other spelling of the value (indentation, key order, escapes) — decode to it."""
    counts: Counter[str] = Counter()

    @SETTINGS
    @given(values, st.integers(0, MAX_DEPTH + 2), st.randoms(use_true_random=False))
    def prop(value: Any, depth: int, rng: random.Random) -> None:
        value = _nested(value, rng.choice((0, 0, depth)))
        try:
            encoded = canonicalize(value)
        except CanonicalizationError:
            assert not _in_subset(value), value
            counts["refused"] += 1
        else:
            assert _in_subset(value), value
            assert encoded == rfc8785.dumps(value)
            assert loads(encoded) == value
            spelled = json.dumps(
                value,
                indent=rng.choice((None, 1, 4)),
                ensure_ascii=rng.random() < 0.5,
                sort_keys=rng.random() < 0.5,
            )
            assert loads(spelled) == value
            assert canonicalize(loads(spelled)) == encoded
            counts["accepted"] += 1
        counts["examples"] += 1

    run(
        "canonical-encoding",
        prop,
        counts,
        what="{accepted} accepted (bytes equal rfc8785, decoded back equal, in any spelling), "
        "{refused} refused, each outside the subset",
    )
    assert counts["accepted"], counts
    assert counts["refused"], counts


# -- checkpoints through their signed-note text -------------------------------------------------

SIGNER = generate_signer("prop.example/log")
WITNESS = generate_signer("prop.example/witness")
origins = st.text(st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"]), min_size=1, max_size=30).filter(
    lambda o: not any(c.isspace() and c != " " for c in o)
)
extensions = st.lists(
    st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=20).filter(
        lambda line: "\n" not in line
    ),
    max_size=3,
)


def test_a_checkpoint_round_trips_through_its_signed_note() -> None:
    """Any checkpoint prints a body that parses back equal; signed (also beside a witness's
    signature) it opens to the same checkpoint, its note text is the body, and a note of
    another origin or under another key is refused."""
    counts: Counter[str] = Counter()

    @SETTINGS
    @given(origins, st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32), extensions, st.booleans())
    def prop(origin: str, size: int, root: bytes, ext: list[str], witnessed: bool) -> None:
        cp = Checkpoint(origin, size, root, tuple(ext))
        assert Checkpoint.from_text(cp.to_text()) == cp
        note = sign_checkpoint(cp, SIGNER)
        if witnessed:
            note += sign_checkpoint(cp, WITNESS).split("\n\n", 1)[1]
        opened = open_note(note, [SIGNER.verifier])
        assert opened.text == cp.to_text()
        assert len(opened.verified) == 1
        assert len(opened.unverified) == int(witnessed)
        assert open_checkpoint(note.encode(), SIGNER.verifier, origin=origin) == cp
        with pytest.raises(NoteError):
            open_checkpoint(note, generate_signer("prop.example/log").verifier, origin=origin)
        if origin != SIGNER.name:
            with pytest.raises(CheckpointError):
                open_checkpoint(note, SIGNER.verifier)
        counts["witnessed"] += witnessed
        counts["examples"] += 1

    run(
        "checkpoint-round-trip",
        prop,
        counts,
        what="body and signed note round trips, {witnessed} beside a witness signature; "
        "another key or origin refused",
    )
