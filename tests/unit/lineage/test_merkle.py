"""RFC 9162 proofs: file vectors, their mutations, and properties against a naive tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive_merkle as naive
from proctor.errors import ProofError
from proctor.lineage.merkle import (
    EMPTY_ROOT,
    consistency_path,
    inclusion_path,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from proctor.lineage.proofs import ConsistencyProof, InclusionProof

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "rfc9162.json").read_text())
LEAVES = [leaf_hash(bytes.fromhex(x)) for x in VECTORS["leaves"]]


def h(x: str) -> bytes:
    return bytes.fromhex(x)


def test_hashing_primitives() -> None:
    assert EMPTY_ROOT.hex() == VECTORS["roots"][0]
    assert leaf_hash(b"").hex() == VECTORS["roots"][1]
    assert node_hash(b"\x00" * 32, b"\x01" * 32) == naive.node(b"\x00" * 32, b"\x01" * 32)


@pytest.mark.parametrize("size", range(9))
def test_reference_roots(size: int) -> None:
    assert root_hash(naive.NaiveNodes(LEAVES), size).hex() == VECTORS["roots"][size]


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: f"{c['leaf_index']}-of-{c['tree_size']}")
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    nodes = naive.NaiveNodes(LEAVES)
    path = inclusion_path(nodes, case["leaf_index"], case["tree_size"])
    assert [p.hex() for p in path] == case["hashes"]
    verify_inclusion(case["leaf_index"], case["tree_size"], h(case["leaf_hash"]), path, h(case["root"]))


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: f"{c['old_size']}-to-{c['new_size']}")
def test_consistency_vectors(case: dict[str, Any]) -> None:
    nodes = naive.NaiveNodes(LEAVES)
    path = consistency_path(nodes, case["old_size"], case["new_size"])
    assert [p.hex() for p in path] == case["hashes"]
    verify_consistency(case["old_size"], case["new_size"], h(case["old_root"]), h(case["new_root"]), path)


def _mutation_id(m: dict[str, Any]) -> str:
    where = (
        f"{m['leaf_index']}-of-{m['tree_size']}"
        if m["kind"] == "inclusion"
        else f"{m['old_size']}-to-{m['new_size']}"
    )
    return f"{m['kind']}-{m['mutation']}-{where}"


def _verify_vector(m: dict[str, Any]) -> None:
    if m["kind"] == "inclusion":
        verify_inclusion(
            m["leaf_index"], m["tree_size"], h(m["leaf_hash"]), [h(x) for x in m["hashes"]], h(m["root"])
        )
    else:
        verify_consistency(
            m["old_size"], m["new_size"], h(m["old_root"]), h(m["new_root"]), [h(x) for x in m["hashes"]]
        )


@pytest.mark.parametrize("m", VECTORS["mutations"], ids=_mutation_id)
def test_mutated_proofs_fail_with_the_expected_error(m: dict[str, Any]) -> None:
    with pytest.raises(ProofError) as err:
        _verify_vector(m)
    assert err.value.reason == m["error"]


def test_every_mutation_kind_is_covered() -> None:
    kinds = {m["mutation"] for m in VECTORS["mutations"]}
    assert {"bit-flip", "truncated", "extra-hash", "wrong-index", "wrong-size"} <= kinds


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=600).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1)))
)
def test_inclusion_matches_naive_tree(case: tuple[int, int]) -> None:
    n, m = case
    leaves = _leaves(n)
    nodes = naive.NaiveNodes(leaves)
    path = inclusion_path(nodes, m, n)
    assert path == naive.path(m, leaves)
    root = naive.mth(leaves)
    verify_inclusion(m, n, leaves[m], path, root)
    # Any other leaf, or any flipped bit of the path, fails.
    other = leaves[(m + 1) % n] if n > 1 else leaf_hash(b"other")
    with pytest.raises(ProofError):
        verify_inclusion(m, n, other, path, root)
    for i in range(len(path)):
        bad = list(path)
        bad[i] = bytes([bad[i][0] ^ 0x80]) + bad[i][1:]
        with pytest.raises(ProofError):
            verify_inclusion(m, n, leaves[m], bad, root)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=600).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_consistency_matches_naive_tree(case: tuple[int, int]) -> None:
    old, new = case
    leaves = _leaves(new)
    nodes = naive.NaiveNodes(leaves)
    path = consistency_path(nodes, old, new)
    assert path == naive.proof(old, leaves)
    old_root, new_root = naive.mth(leaves[:old]), naive.mth(leaves)
    verify_consistency(old, new, old_root, new_root, path)
    if 0 < old < new:
        with pytest.raises(ProofError):
            verify_consistency(old, new, naive.mth(_leaves(old + 1)[1:]), new_root, path)
        for i in range(len(path)):
            bad = list(path)
            bad[i] = bytes([bad[i][0] ^ 0x01]) + bad[i][1:]
            with pytest.raises(ProofError):
                verify_consistency(old, new, old_root, new_root, bad)


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"leaf_index": 0, "tree_size": 1},
        {"leaf_index": 0, "tree_size": 1, "hashes": [], "extra": 1},
        {"leaf_index": -1, "tree_size": 1, "hashes": []},
        {"leaf_index": "0", "tree_size": 1, "hashes": []},
        {"leaf_index": 0, "tree_size": 1, "hashes": "x"},
        {"leaf_index": 0, "tree_size": 1, "hashes": ["AAAA"]},
        {"leaf_index": 0, "tree_size": 1, "hashes": [1]},
        {"leaf_index": 0, "tree_size": 1, "hashes": ["!" * 44]},
        {"leaf_index": 0, "tree_size": 1, "hashes": ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"]},
    ],
    ids=[
        "not-object",
        "missing-hashes",
        "extra-key",
        "negative",
        "string-int",
        "hashes-not-list",
        "short-hash",
        "hash-not-string",
        "hash-not-b64",
        "hash-trailing-garbage",
    ],
)
def test_malformed_proof_documents_are_rejected(doc: Any) -> None:
    with pytest.raises(ProofError):
        InclusionProof.from_json(doc)


def test_proof_documents_round_trip() -> None:
    leaves = _leaves(11)
    nodes = naive.NaiveNodes(leaves)
    p = InclusionProof(3, 11, tuple(inclusion_path(nodes, 3, 11)))
    assert InclusionProof.from_json(p.to_json()) == p
    p.verify(leaves[3], naive.mth(leaves))
    c = ConsistencyProof(5, 11, tuple(consistency_path(nodes, 5, 11)))
    assert ConsistencyProof.from_json(c.to_json()) == c
    c.verify(naive.mth(leaves[:5]), naive.mth(leaves))
    with pytest.raises(ProofError):
        ConsistencyProof.from_json({"old_size": 1, "new_size": 2})
