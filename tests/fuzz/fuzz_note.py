"""Fuzz C2SP signed notes (``proctor.note``): opening a note, signing text, and the
verifier and signer key strings.

Refusals allowed: ``NoteError`` (notes), ``KeyFormatError`` (keys). Oracles:

- a note that opens under the test key carries a text that key signed (one of the
  seeds' texts), and with one signature line re-serializes to the same bytes;
- text that ``sign_note`` accepts opens again to the same text;
- a key string that parses prints a string that parses to the same key.
"""

from __future__ import annotations

from fuzz.fuzz_support import NOTE_SIGNER, NOTE_TEXTS, check
from proctor.errors import KeyFormatError, NoteError
from proctor.note import NoteSigner, NoteVerifier, open_note, sign_note

__all__ = ["INSTRUMENT", "one_input"]

INSTRUMENT = ("proctor.note",)
"""The modules atheris instruments for coverage (run_harness.py reads this line)."""

VERIFIER = NOTE_SIGNER.verifier
SIGNED = frozenset(t for t in NOTE_TEXTS if "\t" not in t)


def _open(data: bytes) -> None:
    try:
        opened = open_note(data, [VERIFIER])
    except NoteError:
        return
    check(opened.text in SIGNED, f"a note opened whose text the test key never signed: {opened.text[:200]!r}")
    check(len(opened.verified) >= 1, "opened with no verified signature")
    if len(opened.verified) == 1 and not opened.unverified:
        again = sign_note(opened.text, NOTE_SIGNER).encode()
        check(again == data, f"a note with one signature does not re-serialize to its bytes: {data[:200]!r}")


def _sign(text: str) -> None:
    try:
        note = sign_note(text, NOTE_SIGNER)
    except NoteError:
        return
    opened = open_note(note.encode(), [VERIFIER])
    check(opened.text == text, "a signed note opens to another text")
    check(open_note(note, [VERIFIER]).text == text, "a signed note opens to another text as str")


def _keys(text: str) -> None:
    for parse in (NoteVerifier.from_string, NoteSigner.from_string):
        try:
            key = parse(text)
        except KeyFormatError:
            continue
        again = parse(key.to_string())
        same = again == key if isinstance(key, NoteVerifier) else again.to_string() == key.to_string()
        check(same, f"a key string does not round-trip: {text[:120]!r}")


def one_input(data: bytes) -> None:
    """One input: as a signed note, as text to sign, and as a key string."""
    _open(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    _sign(text)
    _keys(text)
