"""Write tests/vectors/tlog-cosignature.json: C2SP tlog-cosignature/v1 vectors and the
mutations that must fail.

Usage:
    python scripts/gen_cosignature_vectors.py          # (re)write the file
    python scripts/gen_cosignature_vectors.py --check  # exit 1 if the file differs from a fresh run

Ed25519 signing is deterministic (RFC 8032), so fixed seeds and times give fixed
cosignatures. Two vectors come from elsewhere and are written in here independently:
the spec's example line (its time, 1679315147, is the one the spec's signed message
shows) and a real cosignature by the public witness ``witness.glasklar.is`` on a Sigsum
tree head (Sigsum checkpoints are C2SP checkpoints with the origin
``sigsum.org/v1/tree/<hex SHA-256 of the log key>``). Each mutation records the outcome
proctor's verifier gives (``invalid``: parses, does not verify; ``malformed``: refused
before verifying; ``ignored``: another key's line), and the generator refuses to write
a mutation that verifies.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from proctor.errors import NoteError  # noqa: E402
from proctor.lineage.cosignature import Cosignature, Cosigner, CosignerKey, cosign  # noqa: E402

OUT = ROOT / "tests" / "vectors" / "tlog-cosignature.json"

# A real cosignature: Sigsum log 0ec7e168…, tree size 12851, cosigned at 1754020861 by
# witness.glasklar.is (public key b2106db9…), as published with that tree head.
GLASKLAR_LOG_KEY = "0ec7e16843119b120377a73913ac6acbc2d03d82432e2c36b841b09a95841f25"
GLASKLAR_ROOT = "4ccedda0c3e6afc83cfcddfad7df3d95cbd1e857ecf3cf0569b8f69ce32727f8"
GLASKLAR_KEY = "b2106db9065ec97f25e09c18839216751a6e26d8ed8b41e485a563d3d1498536"
GLASKLAR_TIME = 1754020861
GLASKLAR_SIG = (
    "9ab58c0f6cbfd02549891b3b9d7e68fd7fefd42b6dc22fbbee7ed3119d1ed180"
    "7edc74c8b12fd430e4ee6084b59077d4c8eafe09eefdbbe31666828c34d24702"
)
SPEC_EXAMPLE_LINE = (
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dl"
    "rDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
)
SPEC_EXAMPLE_TIME = 1679315147

CHECKPOINT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def _cosigner(name: str, seed: bytes) -> Cosigner:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    data = base64.b64encode(b"\x04" + seed).decode()
    pub = private.public_key().public_bytes_raw()
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + pub).digest()[:4]
    return Cosigner.from_string(f"PRIVATE+KEY+{name}+{key_id.hex()}+{data}")


def outcome(vkey: str, checkpoint: str, line: str) -> str:
    """What proctor's verifier makes of ``line`` on ``checkpoint`` for the key ``vkey``."""
    key = CosignerKey.from_string(vkey)
    try:
        cosignature = Cosignature.from_line(line)
    except NoteError:
        return "malformed"
    if (cosignature.name, cosignature.key_id) != (key.name, key.key_id):
        return "ignored"
    return "valid" if key.verify(checkpoint, cosignature) else "invalid"


def _mutate(line: str, edit: Any) -> str:
    prefix, _, b64 = line.rstrip("\n").rpartition(" ")
    return f"{prefix} {edit(b64)}\n"


def _raw(edit: Any) -> Any:
    def apply(b64: str) -> str:
        return base64.b64encode(edit(bytearray(base64.b64decode(b64)))).decode()

    return apply


def _flip(index: int) -> Any:
    def edit(raw: bytearray) -> bytes:
        raw[index] ^= 0x01
        return bytes(raw)

    return _raw(edit)


def build() -> dict[str, Any]:
    """The whole vector document."""
    cosigner = _cosigner("witness.example/w1", bytes(range(32)))
    vkey = cosigner.verifier.to_string()
    extended = CHECKPOINT + "extension line\n"
    vectors = []
    for name, checkpoint, timestamp in [
        ("checkpoint", CHECKPOINT, 1679315147),
        ("checkpoint with an extension line", extended, 1700000000),
        ("largest time", CHECKPOINT, (1 << 63) - 1),
        ("empty tree", "example.com/empty\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", 1),
    ]:
        line = cosign(checkpoint, cosigner, timestamp=timestamp).to_line()
        vectors.append(
            {"name": name, "vkey": vkey, "checkpoint": checkpoint, "line": line, "outcome": "valid"}
        )
    good = vectors[0]["line"]
    zero_time = Cosignature(
        cosigner.name, cosigner.key_id, 0, cosigner.sign(b"cosignature/v1\ntime 0\n" + CHECKPOINT.encode())
    ).to_line()
    mutations = [
        ("signature bit flipped", CHECKPOINT, _mutate(good, _flip(-1))),
        ("time changed", CHECKPOINT, _mutate(good, _flip(11))),
        ("key ID changed", CHECKPOINT, _mutate(good, _flip(0))),
        ("name changed", CHECKPOINT, good.replace("witness.example/w1", "witness.example/w2")),
        ("truncated", CHECKPOINT, _mutate(good, _raw(lambda raw: bytes(raw[:-1])))),
        ("trailing byte", CHECKPOINT, _mutate(good, _raw(lambda raw: bytes(raw) + b"\x00"))),
        ("non-canonical base64", CHECKPOINT, _mutate(good, lambda b64: b64[:-2] + "x=")),
        ("no em dash", CHECKPOINT, "- " + good[2:]),
        ("time zero", CHECKPOINT, zero_time),
        ("other tree size", CHECKPOINT.replace("20852163", "20852164"), good),
        ("extension line added", extended, good),
        ("extension line dropped", CHECKPOINT, vectors[1]["line"]),
    ]
    failing = []
    for name, checkpoint, line in mutations:
        found = outcome(vkey, checkpoint, line)
        if found == "valid":
            raise SystemExit(f"mutation {name!r} verifies; refusing to write it")
        failing.append({"name": name, "vkey": vkey, "checkpoint": checkpoint, "line": line, "outcome": found})
    for v in vectors:
        if outcome(v["vkey"], v["checkpoint"], v["line"]) != "valid":
            raise SystemExit(f"vector {v['name']!r} does not verify")

    glasklar_pub = bytes.fromhex(GLASKLAR_KEY)
    glasklar_id = hashlib.sha256(b"witness.glasklar.is\n\x04" + glasklar_pub).digest()[:4]
    glasklar_vkey = CosignerKey("witness.glasklar.is", glasklar_id, glasklar_pub).to_string()
    origin = "sigsum.org/v1/tree/" + hashlib.sha256(bytes.fromhex(GLASKLAR_LOG_KEY)).hexdigest()
    sigsum = f"{origin}\n12851\n{base64.b64encode(bytes.fromhex(GLASKLAR_ROOT)).decode()}\n"
    glasklar_line = Cosignature(
        "witness.glasklar.is", glasklar_id, GLASKLAR_TIME, bytes.fromhex(GLASKLAR_SIG)
    ).to_line()
    external = [
        {
            "name": "witness.glasklar.is on a Sigsum tree head",
            "vkey": glasklar_vkey,
            "checkpoint": sigsum,
            "line": glasklar_line,
            "outcome": outcome(glasklar_vkey, sigsum, glasklar_line),
        },
        {
            "name": "witness.glasklar.is, its time a second off",
            "vkey": glasklar_vkey,
            "checkpoint": sigsum,
            "line": _mutate(glasklar_line, _flip(11)),
            "outcome": outcome(glasklar_vkey, sigsum, _mutate(glasklar_line, _flip(11))),
        },
    ]
    if [e["outcome"] for e in external] != ["valid", "invalid"]:
        raise SystemExit(f"the external vectors do not behave as published: {external}")
    spec = Cosignature.from_line(SPEC_EXAMPLE_LINE)
    if spec.timestamp != SPEC_EXAMPLE_TIME:
        raise SystemExit(f"the spec's example line has time {spec.timestamp}, expected {SPEC_EXAMPLE_TIME}")
    return {
        "description": "C2SP tlog-cosignature/v1 (Ed25519) vectors: vkey, checkpoint body, signature "
        "line, and what a verifier must make of it (valid, invalid, malformed, ignored). Generated by "
        "scripts/gen_cosignature_vectors.py; do not edit.",
        "vectors": vectors,
        "mutations": failing,
        "external": external,
        "spec_example": {
            "line": SPEC_EXAMPLE_LINE,
            "timestamp": SPEC_EXAMPLE_TIME,
            "key_id": spec.key_id.hex(),
        },
    }


def render() -> str:
    """The file's text."""
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python scripts/gen_cosignature_vectors.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
