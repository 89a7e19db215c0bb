"""RFC 9162 Merkle tree hashing, proof construction and proof verification.

Pure functions, no I/O. The tree is the one of RFC 9162 §2.1.1 over 0-based leaf
indices: a leaf hashes as ``SHA-256(0x00 || data)``, an interior node as
``SHA-256(0x01 || left || right)``, and a range of ``n > 1`` leaves splits at the
largest power of two smaller than ``n``. Proofs list their hashes from the leaf
towards the root, as RFC 9162 §2.1.3 and §2.1.4 define them.

Proof construction asks a :class:`NodeSource` for the hashes of complete, aligned
subtrees (``level``, ``index``: the node covering leaves
``[index * 2**level, (index + 1) * 2**level)``), so a store that keeps interior
hashes answers in O(log n) reads, never rehashing the tree.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Protocol

from proctor.errors import ProofError

__all__ = [
    "HASH_SIZE",
    "EMPTY_ROOT",
    "leaf_hash",
    "node_hash",
    "NodeSource",
    "range_hash",
    "root_hash",
    "inclusion_path",
    "consistency_path",
    "verify_inclusion",
    "verify_consistency",
    "root_from_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree: the hash of the empty string (RFC 9162 §2.1.1)."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one leaf (RFC 9162 §2.1.1)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node (RFC 9162 §2.1.1)."""
    return _sha256(b"\x01" + left + right).digest()


class NodeSource(Protocol):
    """Where proof construction reads the hashes of complete aligned subtrees."""

    def node(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree of height ``level`` at position ``index``."""
        ...


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_hash(source: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range that occurs in RFC 9162 recursion.

    ``start`` must be a multiple of the smallest power of two that is >= the length,
    as is every range the §2.1.3 and §2.1.4 algorithms visit, so the range is a run
    of complete aligned subtrees of decreasing size, folded from the right.
    """
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    parts: list[bytes] = []
    while n > 0:
        # The largest power of two <= n: the whole range when n is one, else
        # exactly RFC 9162's split point.
        level = n.bit_length() - 1
        size = 1 << level
        parts.append(source.node(level, start >> level))
        start += size
        n -= size
    acc = parts[-1]
    for h in reversed(parts[:-1]):
        acc = node_hash(h, acc)
    return acc


def root_hash(source: NodeSource, size: int) -> bytes:
    """The root of the tree of the first ``size`` leaves."""
    return range_hash(source, 0, size)


def inclusion_path(source: NodeSource, index: int, size: int) -> list[bytes]:
    """The audit path PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf to root."""
    if not 0 <= index < size:
        raise ValueError(f"expected 0 <= index < size, found index {index} and size {size}")
    path: list[bytes] = []
    start, end, m = 0, size, index
    # Walk down from the root, remembering siblings; the path is read leaf-first.
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            path.append(range_hash(source, start + k, end))
            end = start + k
        else:
            path.append(range_hash(source, start, start + k))
            start += k
            m -= k
    path.reverse()
    return path


def consistency_path(source: NodeSource, old_size: int, new_size: int) -> list[bytes]:
    """The proof PROOF(old_size, D[0:new_size]) of RFC 9162 §2.1.4.1, leaf to root.

    Empty when ``old_size`` is 0 or equals ``new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"expected 0 <= old_size <= new_size, found old {old_size} and new {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, new_size, old_size, True
    # SUBPROOF(m, D[start:end], complete), unrolled; the recursion appends after
    # returning, so siblings are collected top-down and reversed at the end.
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(range_hash(source, start, end))
            break
        k = _split(n)
        if m <= k:
            proof.append(range_hash(source, start + k, end))
            end = start + k
        else:
            proof.append(range_hash(source, start, start + k))
            start += k
            m -= k
            complete = False
    proof.reverse()
    return proof


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """Recompute the root from an inclusion proof (RFC 9162 §2.1.3.2).

    Raises:
        ProofError: the proof's shape does not fit ``index`` and ``size``.
    """
    # Step 1: the index must lie inside the tree.
    if not 0 <= index < size:
        raise ProofError(
            f"leaf index {index} is not inside a tree of size {size}", reason="index-out-of-range"
        )
    _check_hashes([leaf, *path])
    # Step 2: fn = leaf_index, sn = tree_size - 1; step 3: r = leaf hash.
    fn, sn, r = index, size - 1, leaf
    # Step 4: fold each path element in.
    for p in path:
        # 4a: a path longer than the tree is tall.
        if sn == 0:
            raise ProofError(
                f"inclusion proof has {len(path)} hashes, too many for index {index} in tree size {size}",
                reason="too-many-hashes",
            )
        # 4b: p is a left sibling (or we are the last node of a level).
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        # 4c
        fn >>= 1
        sn >>= 1
    # Step 5: every level was consumed.
    if sn != 0:
        raise ProofError(
            f"inclusion proof has {len(path)} hashes, too few for index {index} in a tree of size {size}",
            reason="too-few-hashes",
        )
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> None:
    """Verify that ``leaf`` (a leaf hash) is at ``index`` in the tree with ``root``.

    Raises:
        ProofError: the proof is malformed or leads to another root.
    """
    computed = root_from_inclusion(index, size, leaf, path)
    # Step 5: compare with the root the verifier trusts.
    if not hmac.compare_digest(computed, root):
        raise ProofError(
            f"inclusion proof for index {index} in tree size {size} leads to root "
            f"{computed.hex()}, expected {root.hex()}",
            reason="root-mismatch",
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> None:
    """Verify that the tree ``new_root`` extends the tree ``old_root`` (RFC 9162 §2.1.4.2).

    Raises:
        ProofError: the proof is malformed or the trees are not consistent.
    """
    _check_hashes([old_root, new_root, *path])
    if not 0 <= old_size <= new_size:
        raise ProofError(
            f"expected 0 <= old size <= new size, found old {old_size} and new {new_size}",
            reason="size-order",
        )
    if old_size == new_size:
        if path:
            raise ProofError(
                f"expected an empty proof for equal sizes, found {len(path)} hashes", reason="too-many-hashes"
            )
        if not hmac.compare_digest(old_root, new_root):
            raise ProofError(f"two different roots for the same tree size {old_size}", reason="root-mismatch")
        return
    if old_size == 0:
        # Every tree extends the empty tree; the proof is empty by definition.
        if path:
            raise ProofError(
                f"expected an empty proof from size 0, found {len(path)} hashes", reason="too-many-hashes"
            )
        return
    # Step 1: an empty path proves nothing for 0 < first < second.
    if not path:
        raise ProofError(f"empty consistency proof from size {old_size} to {new_size}", reason="empty-proof")
    # Step 2: a power-of-two old tree is itself a node of the new tree.
    proof = list(path)
    if old_size & (old_size - 1) == 0:
        proof.insert(0, old_root)
    # Step 3
    fn, sn = old_size - 1, new_size - 1
    # Step 4: skip the levels where the old tree's last node is a right child.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5
    fr = sr = proof[0]
    # Step 6
    for c in proof[1:]:
        # 6a
        if sn == 0:
            raise ProofError(
                f"consistency proof from {old_size} to {new_size} has too many hashes",
                reason="too-many-hashes",
            )
        # 6b
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        # 6c
        fn >>= 1
        sn >>= 1
    # Step 7: both roots reproduced and every level consumed.
    if sn != 0:
        raise ProofError(
            f"consistency proof from {old_size} to {new_size} has too few hashes", reason="too-few-hashes"
        )
    if not hmac.compare_digest(fr, old_root):
        raise ProofError(
            f"consistency proof leads to old root {fr.hex()}, expected {old_root.hex()}",
            reason="old-root-mismatch",
        )
    if not hmac.compare_digest(sr, new_root):
        raise ProofError(
            f"consistency proof leads to new root {sr.hex()}, expected {new_root.hex()}",
            reason="new-root-mismatch",
        )


def _check_hashes(hashes: Sequence[bytes]) -> None:
    for h in hashes:
        if type(h) is not bytes or len(h) != HASH_SIZE:
            raise ProofError(f"expected {HASH_SIZE}-byte hashes, found {h!r}")
