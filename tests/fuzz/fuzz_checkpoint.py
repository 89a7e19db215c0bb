"""Fuzz C2SP checkpoints (``proctor.lineage.checkpoint``): signed checkpoints, and
checkpoint bodies on their own.

Refusals allowed: ``NoteError``, ``CheckpointError``. Oracles:

- a signed checkpoint that opens under the test key is one the key signed, and with one
  signature line re-serializes (``sign_checkpoint``) to the same bytes;
- a body that parses prints (``to_text``) the same text, and a ``Checkpoint`` built from
  its fields parses back equal.
"""

from __future__ import annotations

from fuzz.fuzz_support import NOTE_SIGNER, NOTE_TEXTS, check
from proctor.errors import CheckpointError, NoteError
from proctor.lineage.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint

__all__ = ["INSTRUMENT", "one_input"]

INSTRUMENT = ("proctor.note", "proctor.lineage.checkpoint")
"""The modules atheris instruments for coverage (run_harness.py reads this line)."""

VERIFIER = NOTE_SIGNER.verifier


def _open(data: bytes) -> None:
    try:
        cp = open_checkpoint(data, VERIFIER)
    except (NoteError, CheckpointError):
        return
    check(cp.to_text() in NOTE_TEXTS, f"a checkpoint opened that the test key never signed: {cp}")
    check(cp.origin == VERIFIER.name, "a checkpoint of another origin opened")
    if data.count(b"\n\xe2\x80\x94 ") == 1:
        check(sign_checkpoint(cp, NOTE_SIGNER).encode() == data, "a checkpoint does not re-serialize")


def _body(text: str) -> None:
    try:
        cp = Checkpoint.from_text(text)
    except CheckpointError:
        return
    check(cp.to_text() == text, f"a checkpoint body does not print as it was read: {text[:200]!r}")
    rebuilt = Checkpoint(cp.origin, cp.size, cp.root_hash, cp.extensions)
    check(Checkpoint.from_text(rebuilt.to_text()) == cp, "a checkpoint does not parse back equal")


def one_input(data: bytes) -> None:
    """One input: as a signed checkpoint, and as a checkpoint body."""
    _open(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    _body(text)
