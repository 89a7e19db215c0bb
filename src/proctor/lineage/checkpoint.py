"""C2SP tlog-checkpoint bodies.

A checkpoint is the signed-note text::

    <origin>
    <tree size, decimal>
    <base64 root hash>
    [extension lines]

proctor writes no extension lines. Parsing is strict: the size has no sign and no
leading zeros, the root is standard base64 of exactly 32 bytes, and there is no text
after the last newline.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from proctor.errors import CheckpointError
from proctor.lineage.merkle import HASH_SIZE
from proctor.note import NoteSigner, NoteVerifier, open_note, sign_note

__all__ = ["Checkpoint", "sign_checkpoint", "open_checkpoint"]

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: which log, how many entries, and their Merkle root."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or any(c.isspace() and c != " " for c in self.origin):
            raise CheckpointError(f"expected a one-line non-empty origin, found {self.origin!r}")
        if self.size < 0 or self.size >= 1 << 64:
            raise CheckpointError(f"expected a tree size in [0, 2**64), found {self.size}")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"expected a {HASH_SIZE}-byte root hash, found {len(self.root_hash)} bytes")
        for line in self.extensions:
            if not line or "\n" in line:
                raise CheckpointError(f"expected non-empty one-line extensions, found {line!r}")

    def to_text(self) -> str:
        """The checkpoint body, the text of the signed note."""
        root = base64.b64encode(self.root_hash).decode()
        ext = "".join(f"{line}\n" for line in self.extensions)
        return f"{self.origin}\n{self.size}\n{root}\n{ext}"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body.

        Raises:
            CheckpointError: the text is not a well-formed checkpoint.
        """
        if not text.endswith("\n"):
            raise CheckpointError("expected a checkpoint ending in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(f"expected origin, size and root hash lines, found {len(lines)} lines")
        origin, size_text, root_text = lines[0], lines[1], lines[2]
        if not _SIZE.fullmatch(size_text):
            raise CheckpointError(f"expected a decimal tree size, found {size_text!r}")
        try:
            root = base64.b64decode(root_text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise CheckpointError(f"expected a base64 root hash, found {root_text!r}") from e
        if base64.b64encode(root).decode() != root_text:
            raise CheckpointError(f"expected canonical base64 for the root, found {root_text!r}")
        return cls(origin, int(size_text), root, tuple(lines[3:]))


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The checkpoint as a signed note."""
    return sign_note(checkpoint.to_text(), signer)


def open_checkpoint(note: str | bytes, verifier: NoteVerifier, *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint and parse its body.

    Steps:
      1. The signed note carries a valid signature by ``verifier`` (C2SP signed-note).
      2. The body parses as a C2SP tlog-checkpoint.
      3. The origin is the expected one (by default the verifier key's name).

    Raises:
        NoteError: the signature does not verify.
        CheckpointError: the body is malformed or from another log.
    """
    opened = open_note(note, [verifier])
    cp = Checkpoint.from_text(opened.text)
    expected = verifier.name if origin is None else origin
    if cp.origin != expected:
        raise CheckpointError(f"expected a checkpoint of log {expected!r}, found {cp.origin!r}")
    return cp
