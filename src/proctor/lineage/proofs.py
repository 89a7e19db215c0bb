"""Proof documents: the JSON shapes proofs travel in, parsed strictly.

::

    {"leaf_index": N, "tree_size": T, "hashes": ["<base64>", ...]}   inclusion
    {"old_size": M, "new_size": T, "hashes": ["<base64>", ...]}      consistency

Parsing checks shape only (exact keys, integer types, canonical base64 of 32-byte
hashes, at most 64 hashes); :meth:`verify` runs the RFC 9162 algorithm.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from proctor.errors import ProofError
from proctor.lineage.merkle import HASH_SIZE, verify_consistency, verify_inclusion

__all__ = ["MAX_PROOF_HASHES", "InclusionProof", "ConsistencyProof"]

MAX_PROOF_HASHES = 64  # a tree of 2**64 leaves needs at most 64 (inclusion) or 65 hashes


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc[key]
    if type(value) is not int or value < 0 or value >= 1 << 64:
        raise ProofError(f"{key}: expected an integer in [0, 2**64), found {value!r}")
    return value


def _hashes(doc: dict[str, Any]) -> tuple[bytes, ...]:
    items = doc["hashes"]
    if type(items) is not list:
        raise ProofError(f"hashes: expected an array, found {type(items).__name__}")
    if len(items) > MAX_PROOF_HASHES + 1:
        raise ProofError(f"hashes: expected at most {MAX_PROOF_HASHES + 1}, found {len(items)}")
    out = []
    for i, item in enumerate(items):
        if type(item) is not str:
            raise ProofError(f"hashes[{i}]: expected a base64 string, found {item!r}")
        try:
            raw = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ProofError(f"hashes[{i}]: expected base64, found {item!r}") from e
        if len(raw) != HASH_SIZE or base64.b64encode(raw).decode() != item:
            raise ProofError(f"hashes[{i}]: expected the base64 of {HASH_SIZE} bytes, found {item!r}")
        out.append(raw)
    return tuple(out)


def _shape(doc: Any, keys: set[str], what: str) -> dict[str, Any]:
    if type(doc) is not dict:
        raise ProofError(f"expected a {what} object, found {type(doc).__name__}")
    if set(doc) != keys:
        raise ProofError(f"expected a {what} with keys {sorted(keys)}, found {sorted(doc)}")
    return doc


@dataclass(frozen=True)
class InclusionProof:
    """An RFC 9162 inclusion proof of one leaf in a tree of ``tree_size`` leaves."""

    leaf_index: int
    tree_size: int
    hashes: tuple[bytes, ...]

    @classmethod
    def from_json(cls, doc: Any) -> InclusionProof:
        """Parse the JSON shape. Raises :class:`ProofError` when it is malformed."""
        d = _shape(doc, {"leaf_index", "tree_size", "hashes"}, "inclusion proof")
        return cls(_int(d, "leaf_index"), _int(d, "tree_size"), _hashes(d))

    def to_json(self) -> dict[str, Any]:
        """The JSON shape."""
        return {
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "hashes": [base64.b64encode(h).decode() for h in self.hashes],
        }

    def verify(self, leaf_hash: bytes, root: bytes) -> None:
        """Check the proof for ``leaf_hash`` against ``root``. Raises :class:`ProofError`."""
        verify_inclusion(self.leaf_index, self.tree_size, leaf_hash, self.hashes, root)


@dataclass(frozen=True)
class ConsistencyProof:
    """An RFC 9162 consistency proof between tree sizes ``old_size`` and ``new_size``."""

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]

    @classmethod
    def from_json(cls, doc: Any) -> ConsistencyProof:
        """Parse the JSON shape. Raises :class:`ProofError` when it is malformed."""
        d = _shape(doc, {"old_size", "new_size", "hashes"}, "consistency proof")
        return cls(_int(d, "old_size"), _int(d, "new_size"), _hashes(d))

    def to_json(self) -> dict[str, Any]:
        """The JSON shape."""
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "hashes": [base64.b64encode(h).decode() for h in self.hashes],
        }

    def verify(self, old_root: bytes, new_root: bytes) -> None:
        """Check that ``new_root`` extends ``old_root``. Raises :class:`ProofError`."""
        verify_consistency(self.old_size, self.new_size, old_root, new_root, self.hashes)
