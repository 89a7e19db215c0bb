"""C2SP signed notes and checkpoints, including Go's own published example."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.errors import CheckpointError, KeyFormatError, NoteError
from proctor.lineage.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from proctor.note import NoteSigner, NoteVerifier, generate_signer, open_note, sign_note

# golang.org/x/mod/sumdb/note example_test.go: the same key must give the same bytes.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfq"
    "dngotpRZb6KE6RyyBwJnAM=\n"
)


def test_go_example_signs_identically() -> None:
    signer = NoteSigner.from_string(GO_SKEY)
    assert signer.verifier.to_string() == GO_VKEY
    assert signer.to_string() == GO_SKEY
    assert sign_note(GO_TEXT, signer) == GO_NOTE


def test_go_example_opens() -> None:
    opened = open_note(GO_NOTE, [NoteVerifier.from_string(GO_VKEY)])
    assert opened.text == GO_TEXT
    assert opened.verified[0].name == "PeterNeumann"
    assert opened.verified[0].key_id.hex() == "c74f20a3"


def test_signer_repr_hides_the_secret() -> None:
    assert "AYEK" not in repr(NoteSigner.from_string(GO_SKEY))


@settings(max_examples=50)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, exclude_categories=["Cs", "Cc"]), max_size=200))
def test_sign_open_round_trip(body: str) -> None:
    signer = generate_signer("test.example/log")
    text = body.replace("\n", " ") + "\n"
    opened = open_note(sign_note(text, signer), [signer.verifier])
    assert opened.text == text


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return generate_signer("test.example/log")


def _tamper_sig(note: str) -> str:
    text, sig_line = note.rsplit("\n\n", 1)
    name_part, b64 = sig_line.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    return f"{text}\n\n{name_part} {base64.b64encode(bytes(raw)).decode()}\n"


def test_tampered_text_is_rejected(signer: NoteSigner) -> None:
    note = sign_note("hello\n", signer)
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(note.replace("hello", "hellO"), [signer.verifier])


def test_tampered_signature_is_rejected(signer: NoteSigner) -> None:
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(_tamper_sig(sign_note("hello\n", signer)), [signer.verifier])


def test_a_signature_in_non_canonical_base64_is_rejected(signer: NoteSigner) -> None:
    """68 bytes of key ID and signature leave two pad bits in the last base64 digit: set,
    they decode to the same signature, so the same note would have four texts (found by
    the checkpoint fuzzer). Only the canonical one opens (RFC 4648 §3.5)."""
    note = sign_note("hello\n", signer)
    open_note(note, [signer.verifier])
    b64 = note.rstrip("\n").rsplit(" ", 1)[1]
    assert b64.endswith("=")
    assert not b64.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(b64[-2])
    for bits in (1, 2, 3):
        other = b64[:-2] + alphabet[last | bits] + "="
        assert base64.b64decode(other) == base64.b64decode(b64)
        with pytest.raises(NoteError, match="canonical base64"):
            open_note(note.replace(b64, other), [signer.verifier])


def test_note_by_unknown_key_is_rejected(signer: NoteSigner) -> None:
    other = generate_signer("test.example/log")  # same name, other key: other key ID
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(sign_note("hello\n", other), [signer.verifier])


def test_empty_verifier_list_fails_closed(signer: NoteSigner) -> None:
    with pytest.raises(NoteError, match="no trusted verifier"):
        open_note(sign_note("hello\n", signer), [])


def test_unknown_extra_signatures_are_kept_but_not_trusted(signer: NoteSigner) -> None:
    other = generate_signer("witness.example")
    note = sign_note("hello\n", signer)
    cosig = sign_note("hello\n", other).rsplit("\n\n", 1)[1]
    opened = open_note(note + cosig, [signer.verifier])
    assert [s.name for s in opened.verified] == ["test.example/log"]
    assert [s.name for s in opened.unverified] == ["witness.example"]


@pytest.mark.parametrize(
    "note",
    [
        "no blank line\n— a AAAA\n",
        "text\n\n— name\n",
        "text\n\n- name AAAAAAAA\n",
        "text\n\n— name !!!!\n",
        "text\n\n— name AAAA\n",
        "text\n\n— name AAAAAAAA",
        "te\x01xt\n\n— name AAAAAAAA\n",
        b"\xff\xfe\n\n",
    ],
    ids=[
        "no-blank-line",
        "no-b64",
        "hyphen-not-em-dash",
        "bad-b64",
        "short-sig",
        "no-final-newline",
        "control-char",
        "not-utf8",
    ],
)
def test_malformed_notes_are_rejected(signer: NoteSigner, note: str | bytes) -> None:
    with pytest.raises(NoteError):
        open_note(note, [signer.verifier])


def test_too_many_signatures_are_rejected(signer: NoteSigner) -> None:
    note = sign_note("hello\n", signer)
    line = note.rsplit("\n\n", 1)[1]
    with pytest.raises(NoteError, match="at most 100"):
        open_note(note + line * 100, [signer.verifier])


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpjMhcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
    ids=["missing-key", "wrong-key-id", "short-key", "short-id", "space-in-name", "unknown-algorithm"],
)
def test_malformed_verifier_keys_are_rejected(vkey: str) -> None:
    with pytest.raises(KeyFormatError):
        NoteVerifier.from_string(vkey)


def test_checkpoint_round_trip(signer: NoteSigner) -> None:
    cp = Checkpoint("test.example/log", 12345, b"\x07" * 32)
    assert Checkpoint.from_text(cp.to_text()) == cp
    assert cp.to_text() == "test.example/log\n12345\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"
    assert open_checkpoint(sign_checkpoint(cp, signer), signer.verifier) == cp


@pytest.mark.parametrize(
    "text",
    [
        "origin\n12\n",
        "origin\n012\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        "origin\n-1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        "origin\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBw==\n",
        "origin\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        "\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
    ],
    ids=["missing-root", "leading-zero", "negative", "short-root", "no-final-newline", "empty-origin"],
)
def test_malformed_checkpoints_are_rejected(text: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.from_text(text)


def test_checkpoint_of_another_log_is_rejected(signer: NoteSigner) -> None:
    note = sign_checkpoint(Checkpoint("other.example/log", 1, b"\x00" * 32), signer)
    with pytest.raises(CheckpointError, match="expected a checkpoint of log"):
        open_checkpoint(note, signer.verifier)
