"""Write tests/vectors/rfc9162.json: Merkle proof vectors and the mutations that must fail.

Usage:
    python scripts/gen_vectors.py          # (re)write the file
    python scripts/gen_vectors.py --check  # exit 1 if the file differs from a fresh run

Roots and proofs come from the naive recursive tree (tests/naive_merkle.py); the
published RFC 6962 reference roots for the Certificate Transparency test leaves are
written in here independently and checked against it. Each mutation (bit flip,
truncated, extra hash, wrong index, wrong size) records the error reason proctor's
verifier gives, and the generator refuses to write a mutation that verifies.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import naive_merkle as naive  # noqa: E402
from proctor.errors import ProofError  # noqa: E402
from proctor.lineage.merkle import verify_consistency, verify_inclusion  # noqa: E402

OUT = ROOT / "tests" / "vectors" / "rfc9162.json"

# The RFC 6962 test leaves and their published roots (certificate-transparency).
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
             "606162636465666768696a6b6c6d6e6f"]  # fmt: skip
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _flip(h: str) -> str:
    b = bytearray.fromhex(h)
    b[0] ^= 0x01
    return b.hex()


def _incl_reason(index: int, size: int, leaf: str, path: list[str], root: str) -> str | None:
    try:
        verify_inclusion(index, size, bytes.fromhex(leaf), [bytes.fromhex(h) for h in path],
                         bytes.fromhex(root))  # fmt: skip
    except ProofError as e:
        return e.reason
    return None


def _cons_reason(old: int, new: int, r1: str, r2: str, path: list[str]) -> str | None:
    try:
        verify_consistency(old, new, bytes.fromhex(r1), bytes.fromhex(r2),
                           [bytes.fromhex(h) for h in path])  # fmt: skip
    except ProofError as e:
        return e.reason
    return None


def build() -> dict[str, Any]:
    leaves = [naive.leaf(bytes.fromhex(x)) for x in CT_LEAVES]
    roots = [naive.mth(leaves[:n]).hex() for n in range(len(leaves) + 1)]
    if roots != CT_ROOTS:
        raise SystemExit("the naive tree disagrees with the published RFC 6962 roots")
    inclusion: list[dict[str, Any]] = []
    consistency: list[dict[str, Any]] = []
    mutations: list[dict[str, Any]] = []
    for size in range(1, len(leaves) + 1):
        for index in range(size):
            path = [h.hex() for h in naive.path(index, leaves[:size])]
            leaf = leaves[index].hex()
            inclusion.append({"leaf_index": index, "tree_size": size, "leaf_hash": leaf,
                              "root": roots[size], "hashes": path})  # fmt: skip
            if _incl_reason(index, size, leaf, path, roots[size]) is not None:
                raise SystemExit(f"valid inclusion proof {index}/{size} does not verify")
            cases = {
                "bit-flip": (index, size, leaf, [_flip(path[0]), *path[1:]]) if path else None,
                "leaf-bit-flip": (index, size, _flip(leaf), path),
                "truncated": (index, size, leaf, path[:-1]) if path else None,
                "extra-hash": (index, size, leaf, [*path, roots[size]]),
                "wrong-index": ((index + 1) % size, size, leaf, path) if size > 1 else None,
                "wrong-size": (index, size * 2, leaf, path),
                "index-beyond-size": (size, size, leaf, path),
            }
            for name, case in cases.items():
                if case is None:
                    continue
                i, s, lf, p = case
                root = roots[size]
                reason = _incl_reason(i, s, lf, p, root)
                if reason is None:
                    raise SystemExit(f"mutation {name} of inclusion {index}/{size} verifies")
                mutations.append({"kind": "inclusion", "mutation": name, "leaf_index": i,
                                  "tree_size": s, "leaf_hash": lf, "root": root, "hashes": p,
                                  "error": reason})  # fmt: skip
    for new in range(1, len(leaves) + 1):
        for old in range(new + 1):
            path = [h.hex() for h in naive.proof(old, leaves[:new])]
            consistency.append({"old_size": old, "new_size": new, "old_root": roots[old],
                                "new_root": roots[new], "hashes": path})  # fmt: skip
            if _cons_reason(old, new, roots[old], roots[new], path) is not None:
                raise SystemExit(f"valid consistency proof {old}->{new} does not verify")
            if old in (0, new):
                continue
            ccases: dict[str, tuple[int, int, str, str, list[str]] | None] = {
                "bit-flip": (old, new, roots[old], roots[new], [_flip(path[0]), *path[1:]]),
                "truncated": (old, new, roots[old], roots[new], path[:-1]),
                "extra-hash": (old, new, roots[old], roots[new], [*path, roots[new]]),
                "wrong-old-size": (old - 1 if old > 1 else old + 1, new, roots[old], roots[new], path)
                if old + 1 != new or old > 1
                else None,
                "wrong-new-size": (old, new * 2, roots[old], roots[new], path),
                "wrong-old-root": (old, new, _flip(roots[old]), roots[new], path),
                "sizes-reversed": (new, old, roots[new], roots[old], path),
            }
            for name, ccase in ccases.items():
                if ccase is None:
                    continue
                reason = _cons_reason(*ccase)
                if reason is None:
                    raise SystemExit(f"mutation {name} of consistency {old}->{new} verifies")
                o, n, r1, r2, p = ccase
                mutations.append({"kind": "consistency", "mutation": name, "old_size": o,
                                  "new_size": n, "old_root": r1, "new_root": r2, "hashes": p,
                                  "error": reason})  # fmt: skip
    return {
        "description": "RFC 9162 §2.1 Merkle tree vectors over the RFC 6962 test leaves; "
        "hashes in hex. Generated by scripts/gen_vectors.py; do not edit.",
        "leaves": CT_LEAVES,
        "roots": roots,
        "inclusion": inclusion,
        "consistency": consistency,
        "mutations": mutations,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = json.dumps(build(), indent=1) + "\n"
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/gen_vectors.py", file=sys.stderr)
            return 1
        print(f"{OUT.relative_to(ROOT)} is up to date")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
