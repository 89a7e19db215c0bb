"""Fuzz RFC 9162 proof documents (``proctor.lineage.proofs``) and their verification.

Refusals allowed: ``ProofError``. Oracles, over a tree of leaves ``leaf_hash(i)`` (``i``
as 4 big-endian bytes) compared with the naive reference tree (``tests/naive_merkle.py``):

- a document that parses prints (``to_json``) the same document;
- an inclusion proof verifies against the naive root only for a real leaf of a tree of
  that size, with exactly the naive path; a consistency proof only between real sizes,
  with exactly the naive proof.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

import naive_merkle as naive
from fuzz.fuzz_support import check, json_mutator
from proctor.errors import ProofError
from proctor.lineage.merkle import leaf_hash
from proctor.lineage.proofs import ConsistencyProof, InclusionProof

__all__ = ["INSTRUMENT", "mutate", "one_input"]

INSTRUMENT = ("proctor.lineage.proofs", "proctor.lineage.merkle")
"""The modules atheris instruments for coverage (run_harness.py reads this line)."""

MAX_NAIVE = 300  # larger trees are parsed and verified, but not compared with the naive tree
mutate = json_mutator(share=0.6)


@cache
def _leaves(n: int) -> tuple[bytes, ...]:
    return tuple(leaf_hash(i.to_bytes(4, "big")) for i in range(n))


@cache
def _root(n: int) -> bytes:
    return naive.mth(list(_leaves(n)))


def _inclusion(doc: Any) -> None:
    try:
        proof = InclusionProof.from_json(doc)
    except ProofError:
        return
    check(proof.to_json() == doc, "an inclusion proof does not print as it was read")
    n, m = proof.tree_size, proof.leaf_index
    small = n <= MAX_NAIVE
    leaf = _leaves(n)[m] if small and m < n else leaf_hash(b"x")
    root = _root(n) if small else leaf_hash(b"root")
    try:
        proof.verify(leaf, root)
    except ProofError:
        return
    check(small and m < n, f"an inclusion proof verified for leaf {m} of a tree of {n}")
    check(list(proof.hashes) == naive.path(m, list(_leaves(n))), "a proof other than the naive path verified")


def _consistency(doc: Any) -> None:
    try:
        proof = ConsistencyProof.from_json(doc)
    except ProofError:
        return
    check(proof.to_json() == doc, "a consistency proof does not print as it was read")
    old, new = proof.old_size, proof.new_size
    small = old <= new <= MAX_NAIVE
    old_root = _root(old) if small else leaf_hash(b"old")
    new_root = _root(new) if small else leaf_hash(b"new")
    try:
        proof.verify(old_root, new_root)
    except ProofError:
        return
    if old == 0:  # every tree extends the empty one (RFC 9162 §2.1.4: no proof to give)
        check(not proof.hashes, "a consistency proof from the empty tree carried hashes")
        return
    check(small, f"a consistency proof from {old} to {new} verified against made-up roots")
    check(
        list(proof.hashes) == naive.proof(old, list(_leaves(new))),
        "a proof other than the naive one verified",
    )


def one_input(data: bytes) -> None:
    """One input: a JSON proof document, read as either kind."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    _inclusion(doc)
    _consistency(doc)
