"""Write tests/vectors/jcs-numbers.json: RFC 8785 number vectors and the texts that must fail.

Usage:
    python scripts/gen_number_vectors.py          # (re)write the file
    python scripts/gen_number_vectors.py --check  # exit 1 if the file differs from a fresh run

For another implementation of proctor's canonical JSON (ADR 0001): each ``numbers``
vector is an IEEE 754 double (big-endian hex) and its RFC 8785 §3.2.2.3 text; each
``parse`` vector a JSON number as received and either its canonical text or the refusal
(``lossy``: the canonical text would denote another value; ``invalid``: not a finite
JSON number); each ``documents`` vector a JSON text, its canonical bytes and their
SHA-256. The RFC's Appendix B table is written in here independently; every text is
checked against both proctor and the ``rfc8785`` reference package, and the generator
refuses to write a vector on which they disagree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import rfc8785  # noqa: E402

from proctor.canonical import canonicalize, loads, number_text  # noqa: E402
from proctor.errors import CanonicalizationError  # noqa: E402

OUT = ROOT / "tests" / "vectors" / "jcs-numbers.json"

# RFC 8785 Appendix B, as published.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]

# Where the format switches, and values tool arguments hold.
BOUNDARIES = [
    0.7, 0.1 + 0.2, 1.0, 100.0, 1e20, 1e21, 1.5e21, 2.0**53 + 2, 2.0**60, 1e-6, 1e-7, 1.5e-7,
    1e-4, 1e-5, 123.456, -2.5, 1e16, 1e300, 2.2250738585072014e-308, 2.225073858507201e-308,
]  # fmt: skip

PARSE = [
    "0.7", "0.70", "7e-1", "1.0", "1e2", "1E-7", "-0.0", "-0", "5e-324", "1e+21",
    "0.30000000000000004", "1152921504606847000", "100000000000000000000",
    "9007199254740993", "-9007199254740993", "1152921504606846976", "18446744073709551617",
    "0.30000000000000000001", "0.1000000000000000055511151231257827", "1e-400", "2.5e-324",
    "1e400", "NaN", "Infinity",
]  # fmt: skip

DOCUMENTS = [
    '{"temperature": 0.7, "top_p": 1.0, "max_tokens": 256, "stop": ["\\n"]}',
    '{"b": [1e21, 1e-7, -0.0], "a": {"z": 2.5, "y": 1e16}}',
]


def _hex(value: float) -> str:
    return struct.pack(">d", value).hex()


def _double(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


def _agreed(value: float) -> str:
    ours, reference = number_text(value), rfc8785.dumps(value).decode()
    if ours != reference:
        raise SystemExit(f"proctor writes {value!r} as {ours}, rfc8785 as {reference}: not written")
    return ours


def build() -> dict[str, Any]:
    """The vectors document."""
    numbers = []
    for bits, text in APPENDIX_B:
        if _agreed(_double(bits)) != text:
            raise SystemExit(f"Appendix B {bits}: expected {text}, found {number_text(_double(bits))}")
        numbers.append({"ieee754": bits, "json": text, "source": "RFC 8785 Appendix B"})
    numbers += [{"ieee754": _hex(v), "json": _agreed(v), "source": "boundary"} for v in BOUNDARIES]
    parse = []
    for text in PARSE:
        try:
            value = loads(text)
        except CanonicalizationError as e:
            parse.append({"text": text, "error": "lossy" if "IEEE 754 double" in str(e) else "invalid"})
            continue
        canonical = canonicalize(value)
        if canonical != rfc8785.dumps(value):
            raise SystemExit(f"{text}: proctor and rfc8785 disagree")
        parse.append({"text": text, "json": canonical.decode()})
    documents = []
    for text in DOCUMENTS:
        canonical = canonicalize(loads(text))
        if canonical != rfc8785.dumps(json.loads(text)):
            raise SystemExit(f"{text}: proctor and rfc8785 disagree")
        documents.append(
            {"text": text, "json": canonical.decode(), "sha256": hashlib.sha256(canonical).hexdigest()}
        )
    return {
        "description": "RFC 8785 §3.2.2.3 numbers and proctor's lossless-number rule (ADR 0001)",
        "numbers": numbers,
        "parse": parse,
        "documents": documents,
    }


def render() -> str:
    """The file's text."""
    return json.dumps(build(), indent=1) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/gen_number_vectors.py", file=sys.stderr)
            return 1
        print(f"{OUT.relative_to(ROOT)} is up to date")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
