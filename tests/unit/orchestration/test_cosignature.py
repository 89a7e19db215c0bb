"""C2SP tlog-cosignature/v1 (proctor.lineage.cosignature): the vectors, the keys, the lines."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.errors import CheckpointError, KeyFormatError, NoteError
from proctor.lineage.cosignature import (
    MAX_TIMESTAMP,
    Cosignature,
    Cosigner,
    CosignerKey,
    cosign,
    cosignature_message,
    cosignatures_in,
    generate_cosigner,
)
from proctor.note import NoteVerifier, generate_signer, open_note, sign_note

ROOT = Path(__file__).resolve().parents[3]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "tlog-cosignature.json").read_text(encoding="utf-8"))
CHECKPOINT = "example.com/log\n3\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def _outcome(vector: dict[str, Any]) -> str:
    key = CosignerKey.from_string(vector["vkey"])
    try:
        cosignature = Cosignature.from_line(vector["line"])
    except NoteError:
        return "malformed"
    if (cosignature.name, cosignature.key_id) != (key.name, key.key_id):
        return "ignored"
    return "valid" if key.verify(vector["checkpoint"], cosignature) else "invalid"


@pytest.mark.parametrize(
    "vector",
    VECTORS["vectors"] + VECTORS["mutations"] + VECTORS["external"],
    ids=lambda v: v["name"],
)
def test_cosignature_vectors(vector: dict[str, Any]) -> None:
    assert _outcome(vector) == vector["outcome"]


def test_a_real_witness_cosignature_verifies() -> None:
    """witness.glasklar.is, a public witness running another implementation, signed this."""
    [real, moved] = VECTORS["external"]
    assert (real["outcome"], moved["outcome"]) == ("valid", "invalid")
    assert real["vkey"].startswith("witness.glasklar.is+")


def test_the_spec_example_line_carries_the_spec_example_time() -> None:
    example = VECTORS["spec_example"]
    cosignature = Cosignature.from_line(example["line"])
    assert cosignature.timestamp == example["timestamp"] == 1679315147
    assert cosignature.name == "witness.example.com/w1"


def test_the_vectors_file_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_cosignature_vectors", ROOT / "scripts" / "gen_cosignature_vectors.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.render()
    assert (ROOT / "tests" / "vectors" / "tlog-cosignature.json").read_text(encoding="utf-8") == fresh, (
        "tests/vectors/tlog-cosignature.json is out of date: run python scripts/gen_cosignature_vectors.py"
    )


def test_the_signed_message_is_header_time_and_body() -> None:
    assert cosignature_message(CHECKPOINT, 7) == b"cosignature/v1\ntime 7\n" + CHECKPOINT.encode()


def test_keys_round_trip_and_use_signature_type_4() -> None:
    cosigner = generate_cosigner("witness.example/w1")
    again = Cosigner.from_string(cosigner.to_string())
    assert again.verifier == cosigner.verifier
    vkey = cosigner.verifier.to_string()
    assert CosignerKey.from_string(vkey) == cosigner.verifier
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04
    assert "PRIVATE" not in repr(cosigner)


def test_a_log_key_is_not_a_cosigner_key_and_back() -> None:
    log = generate_signer("example.com/log")
    with pytest.raises(KeyFormatError, match="0x04"):
        CosignerKey.from_string(log.verifier.to_string())
    with pytest.raises(KeyFormatError, match="0x01"):
        NoteVerifier.from_string(generate_cosigner("w").verifier.to_string())


def test_a_key_id_that_does_not_match_is_refused() -> None:
    vkey = generate_cosigner("witness.example/w1").verifier.to_string()
    name, key_id, data = vkey.split("+", 2)
    with pytest.raises(KeyFormatError, match="does not match"):
        CosignerKey.from_string(f"{name}+{'0' * 8 if key_id != '0' * 8 else '1' * 8}+{data}")
    with pytest.raises(KeyFormatError, match="does not match"):
        CosignerKey.from_string(f"witness.example/w2+{key_id}+{data}")


@pytest.mark.parametrize("timestamp", [0, -1, MAX_TIMESTAMP + 1], ids=["zero", "negative", "2**63"])
def test_a_cosigner_never_signs_a_time_of_zero_or_beyond_2_63(timestamp: int) -> None:
    with pytest.raises(NoteError):
        cosign(CHECKPOINT, generate_cosigner("w"), timestamp=timestamp)


def test_a_cosigner_signs_checkpoints_only() -> None:
    with pytest.raises(CheckpointError):
        cosign("not a checkpoint\n", generate_cosigner("w"), timestamp=1)


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(0, 2**64 - 1),
    timestamp=st.integers(1, MAX_TIMESTAMP),
    root=st.binary(min_size=32, max_size=32),
)
def test_cosign_verify_round_trip(size: int, timestamp: int, root: bytes) -> None:
    cosigner = generate_cosigner("witness.example/w1")
    text = f"example.com/log\n{size}\n{base64.b64encode(root).decode()}\n"
    cosignature = cosign(text, cosigner, timestamp=timestamp)
    line = cosignature.to_line()
    assert Cosignature.from_line(line) == cosignature
    assert cosigner.verifier.verify(text, cosignature)
    other = f"example.com/log\n{size ^ 1}\n{base64.b64encode(root).decode()}\n"
    assert not cosigner.verifier.verify(other, cosignature)


def _note(cosigners: list[Cosigner], *, timestamp: int = 100) -> tuple[str, NoteVerifier]:
    log = generate_signer("example.com/log")
    note = sign_note(CHECKPOINT, log)
    note += "".join(cosign(CHECKPOINT, c, timestamp=timestamp).to_line() for c in cosigners)
    return note, log.verifier


def test_cosignatures_in_a_note_are_found_and_unknown_keys_ignored() -> None:
    mine, theirs = generate_cosigner("w1"), generate_cosigner("w2")
    note, log = _note([mine, theirs])
    opened = open_note(note, [log])
    found = cosignatures_in(opened.text, opened.unverified, [mine.verifier])
    assert list(found) == [mine.verifier]
    assert found[mine.verifier].timestamp == 100


def test_an_invalid_cosignature_by_a_trusted_witness_is_an_error_not_an_absence() -> None:
    mine = generate_cosigner("w1")
    log = generate_signer("example.com/log")
    other = CHECKPOINT.replace("\n3\n", "\n4\n")
    note = sign_note(CHECKPOINT, log) + cosign(other, mine, timestamp=5).to_line()
    opened = open_note(note, [log.verifier])
    with pytest.raises(NoteError, match="invalid cosignature by trusted witness w1"):
        cosignatures_in(opened.text, opened.unverified, [mine.verifier])


def test_a_witness_that_cosigned_twice_counts_once_with_its_latest_time() -> None:
    mine = generate_cosigner("w1")
    log = generate_signer("example.com/log")
    note = (
        sign_note(CHECKPOINT, log)
        + cosign(CHECKPOINT, mine, timestamp=5).to_line()
        + cosign(CHECKPOINT, mine, timestamp=9).to_line()
    )
    opened = open_note(note, [log.verifier])
    found = cosignatures_in(opened.text, opened.unverified, [mine.verifier])
    assert [c.timestamp for c in found.values()] == [9]
