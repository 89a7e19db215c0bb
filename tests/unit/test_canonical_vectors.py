"""tests/vectors/jcs-numbers.json (scripts/gen_number_vectors.py): proctor's canonical
JSON gives every number vector's text, parses each parse vector as it says, and encodes
each document to its bytes and digest; the file is what the generator writes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from proctor.canonical import canonicalize, loads, number_text
from proctor.errors import CanonicalizationError

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "tests" / "vectors" / "jcs-numbers.json"
VECTORS: dict[str, Any] = json.loads(FILE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("vector", VECTORS["numbers"], ids=lambda v: f"{v['ieee754']}={v['json']}")
def test_number_vectors(vector: dict[str, str]) -> None:
    value = struct.unpack(">d", bytes.fromhex(vector["ieee754"]))[0]
    assert number_text(value) == vector["json"]
    assert canonicalize([value]) == f"[{vector['json']}]".encode()


@pytest.mark.parametrize("vector", VECTORS["parse"], ids=lambda v: v["text"])
def test_parse_vectors(vector: dict[str, str]) -> None:
    text = '{"n":' + vector["text"] + "}"
    if "error" in vector:
        expected = "IEEE 754 double" if vector["error"] == "lossy" else "invalid JSON"
        with pytest.raises(CanonicalizationError, match=expected):
            loads(text)
    else:
        assert canonicalize(loads(text)) == ('{"n":' + vector["json"] + "}").encode()


@pytest.mark.parametrize("vector", VECTORS["documents"], ids=lambda v: v["sha256"][:12])
def test_document_vectors(vector: dict[str, str]) -> None:
    data = canonicalize(loads(vector["text"]))
    assert data == vector["json"].encode()
    assert hashlib.sha256(data).hexdigest() == vector["sha256"]


def test_the_vectors_file_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_number_vectors", ROOT / "scripts" / "gen_number_vectors.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert FILE.read_text(encoding="utf-8") == module.render(), (
        "tests/vectors/jcs-numbers.json is out of date: run python scripts/gen_number_vectors.py"
    )
