"""C2SP tlog-cosignature/v1 (Ed25519): a witness's timestamped cosignature on a checkpoint.

Pure: no I/O, no clock (the signer is given the time). What the spec fixes, and where
it is enforced here (c2sp.org/tlog-cosignature, "Format" and "Ed25519 signed message"):

- A cosignature is a signed-note signature line, ``— <name> base64(key ID || signature)``
  (c2sp.org/signed-note), appended to a checkpoint note beside the log's own signature.
- Its key ID is ``SHA-256(<name> || "\\n" || 0x04 || 32-byte public key)[:4]``: signature
  type 0x04, so a cosigner key can never pass for a log key (type 0x01) or back.
- Its signature is a ``timestamped_signature``: a big-endian u64 POSIX time (below
  2**63, and not zero for a checkpoint cosignature, c2sp.org/tlog-witness) followed by
  the 64-byte Ed25519 signature of::

      cosignature/v1
      time <timestamp, decimal without leading zeros>
      <the whole checkpoint body, extension lines included>

  The message does not commit to the cosigner's name, so one key must serve one
  cosigner (the spec's rule; a policy that lists a key twice is refused in
  :mod:`proctor.lineage.witness_policy`).
- Keys are written as vkeys: ``<name>+<8 hex key ID>+base64(0x04 || public key)``; the
  secret as ``PRIVATE+KEY+<name>+<8 hex>+base64(0x04 || seed)``, as Go's note package
  writes Ed25519 keys, with the cosignature type byte.

:func:`cosignatures_in` picks, from a checkpoint note the log's key already opened, the
signature lines of the cosigners a caller trusts and verifies each; a line whose name
and key ID match a trusted cosigner but whose signature does not verify is an error
(such a note is malformed, c2sp.org/tlog-witness), never an absent cosignature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proctor.errors import KeyFormatError, NoteError
from proctor.lineage.checkpoint import Checkpoint
from proctor.note import NoteSignature, valid_key_name

__all__ = [
    "ALG_COSIGNATURE_V1",
    "MAX_TIMESTAMP",
    "CosignerKey",
    "Cosigner",
    "Cosignature",
    "generate_cosigner",
    "cosignature_message",
    "cosign",
    "cosignatures_in",
]

ALG_COSIGNATURE_V1 = 0x04
"""The signed-note signature type of an Ed25519 tlog-cosignature/v1 (c2sp.org/signed-note)."""
MAX_TIMESTAMP = (1 << 63) - 1
"""The largest timestamp a cosignature may carry (c2sp.org/tlog-cosignature)."""

_SIG_PREFIX = "\u2014 "  # em dash, space
_TIMESTAMPED_BYTES = 8 + 64


def _key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key).digest()[:4]


def _parse(text: str, fields: int, what: str) -> tuple[str, bytes, bytes]:
    # The base64 part may contain '+': split off only the leading fields.
    parts = text.strip().split("+", fields - 1)
    if len(parts) != fields:
        raise KeyFormatError(f"expected a {what} of {fields} '+'-separated fields, found {len(parts)}")
    name, id_hex, b64 = parts[-3], parts[-2], parts[-1]
    if not valid_key_name(name):
        raise KeyFormatError(f"{what}: expected a key name without spaces or '+', found {name!r}")
    if len(id_hex) != 8:
        raise KeyFormatError(f"{what}: expected an 8-hex-digit key ID, found {id_hex!r}")
    try:
        key_id = bytes.fromhex(id_hex)
        data = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error) as e:
        raise KeyFormatError(f"{what}: expected a hex key ID and base64 key data: {e}") from e
    if len(data) != 33 or data[0] != ALG_COSIGNATURE_V1:
        raise KeyFormatError(
            f"{what}: expected 0x04 (Ed25519 cosignature/v1) followed by 32 key bytes, found "
            f"{len(data)} bytes" + (f" starting with 0x{data[0]:02x}" if data else "")
        )
    return name, key_id, data[1:]


@dataclass(frozen=True)
class CosignerKey:
    """A cosigner's (a witness's) public key: the vkey a policy trusts.

    Attributes:
        name: the key name, the cosignature line's name.
        key_id: the 4-byte key ID (signature type 0x04).
        public_key: the 32-byte Ed25519 public key.
    """

    name: str
    key_id: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        if not valid_key_name(self.name):
            raise KeyFormatError(f"expected a key name without spaces or '+', found {self.name!r}")
        if len(self.public_key) != 32:
            raise KeyFormatError(f"expected a 32-byte Ed25519 public key, found {len(self.public_key)} bytes")
        if not hmac.compare_digest(self.key_id, _key_id(self.name, self.public_key)):
            raise KeyFormatError(
                f"cosigner key ID {self.key_id.hex()} does not match its name and key "
                f"(expected {_key_id(self.name, self.public_key).hex()})"
            )

    @classmethod
    def from_string(cls, vkey: str) -> CosignerKey:
        """Parse ``name+hexid+base64(0x04||pub)``.

        Raises:
            KeyFormatError: malformed, not signature type 0x04, or a key ID that does not
                match the name and key.
        """
        return cls(*_parse(vkey, 3, "cosigner verifier key"))

    def to_string(self) -> str:
        """The vkey: ``name+hexid+base64(0x04||pub)``."""
        data = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{data}"

    def verify(self, checkpoint_text: str, cosignature: Cosignature) -> bool:
        """Whether ``cosignature`` is this key's cosignature of ``checkpoint_text``.

        A cosignature by another name or key ID, or with a timestamp of zero or beyond
        :data:`MAX_TIMESTAMP`, is not.
        """
        if cosignature.name != self.name or not hmac.compare_digest(cosignature.key_id, self.key_id):
            return False
        if not 0 < cosignature.timestamp <= MAX_TIMESTAMP:
            return False
        message = cosignature_message(checkpoint_text, cosignature.timestamp)
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(cosignature.signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Cosignature:
    """One tlog-cosignature/v1: who, when, and the Ed25519 signature.

    Attributes:
        name: the cosigner's key name.
        key_id: the cosigner's 4-byte key ID.
        timestamp: the POSIX time the cosigner signed at.
        signature: the 64-byte Ed25519 signature.
    """

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    def __post_init__(self) -> None:
        if not valid_key_name(self.name):
            raise NoteError(f"expected a cosigner name without spaces or '+', found {self.name!r}")
        if len(self.key_id) != 4 or len(self.signature) != 64:
            raise NoteError(
                f"expected a 4-byte key ID and a 64-byte signature, found {len(self.key_id)} "
                f"and {len(self.signature)} bytes"
            )
        if not 0 <= self.timestamp <= MAX_TIMESTAMP:
            raise NoteError(f"expected a cosignature time in [0, 2**63), found {self.timestamp}")

    @classmethod
    def from_note_signature(cls, sig: NoteSignature) -> Cosignature:
        """Read a signature line's payload (after the key ID) as a ``timestamped_signature``.

        Raises:
            NoteError: the payload is not 8 + 64 bytes, or the time is beyond 2**63 - 1.
        """
        if len(sig.signature) != _TIMESTAMPED_BYTES:
            raise NoteError(
                f"cosignature of {sig.name!r}: expected an 8-byte time and a 64-byte signature, "
                f"found {len(sig.signature)} bytes"
            )
        return cls(sig.name, sig.key_id, int.from_bytes(sig.signature[:8], "big"), sig.signature[8:])

    @classmethod
    def from_line(cls, line: str) -> Cosignature:
        """Parse one signature line, ``— name base64(...)``, with or without its newline.

        Raises:
            NoteError: not a signature line, or not a well-formed cosignature.
        """
        line = line.removesuffix("\n")
        if not line.startswith(_SIG_PREFIX) or "\n" in line:
            raise NoteError(f"expected one signature line starting with '— ', found {line[:40]!r}")
        name, sep, b64 = line[len(_SIG_PREFIX) :].rpartition(" ")
        if not sep:
            raise NoteError(f"expected '— <key name> <base64>', found {line[:80]!r}")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error) as e:
            raise NoteError(f"cosignature of {name!r} is not base64") from e
        if base64.b64encode(raw).decode() != b64:
            raise NoteError(f"cosignature of {name!r}: expected canonical base64")
        if len(raw) != 4 + _TIMESTAMPED_BYTES:
            raise NoteError(
                f"cosignature of {name!r}: expected {4 + _TIMESTAMPED_BYTES} bytes, found {len(raw)}"
            )
        return cls.from_note_signature(NoteSignature(name, raw[:4], raw[4:]))

    def to_line(self) -> str:
        """The signature line, ``— name base64(key ID || u64 time || signature)``, with its newline."""
        raw = self.key_id + self.timestamp.to_bytes(8, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {base64.b64encode(raw).decode()}\n"


@dataclass(frozen=True)
class Cosigner:
    """A cosigner's signing key. Its ``repr`` never shows the secret."""

    name: str
    key_id: bytes
    _private: Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"Cosigner(name={self.name!r}, key_id={self.key_id.hex()})"

    @classmethod
    def from_string(cls, skey: str) -> Cosigner:
        """Parse ``PRIVATE+KEY+name+hexid+base64(0x04||seed)``.

        Raises:
            KeyFormatError: malformed, not type 0x04, or the key ID does not match.
        """
        if not skey.startswith("PRIVATE+KEY+"):
            raise KeyFormatError("expected a cosigner key starting with 'PRIVATE+KEY+'")
        name, key_id, seed = _parse(skey, 5, "cosigner key")
        private = Ed25519PrivateKey.from_private_bytes(seed)
        if not hmac.compare_digest(key_id, _key_id(name, private.public_key().public_bytes_raw())):
            raise KeyFormatError("cosigner key ID does not match its name and key")
        return cls(name, key_id, private)

    def to_string(self) -> str:
        """The secret key in ``PRIVATE+KEY+…`` form. Keep it secret."""
        data = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self._private.private_bytes_raw()).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{data}"

    @property
    def verifier(self) -> CosignerKey:
        """The matching public key."""
        return CosignerKey(self.name, self.key_id, self._private.public_key().public_bytes_raw())

    def sign(self, message: bytes) -> bytes:
        """The raw Ed25519 signature of ``message`` (use :func:`cosign` for a cosignature)."""
        return self._private.sign(message)


def generate_cosigner(name: str) -> Cosigner:
    """A fresh Ed25519 cosigner named ``name``.

    Raises:
        KeyFormatError: ``name`` is not a valid key name.
    """
    if not valid_key_name(name):
        raise KeyFormatError(f"expected a key name without spaces or '+', found {name!r}")
    private = Ed25519PrivateKey.generate()
    return Cosigner(name, _key_id(name, private.public_key().public_bytes_raw()), private)


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The signed message: ``cosignature/v1``, ``time <t>``, then the checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


def cosign(checkpoint_text: str, cosigner: Cosigner, *, timestamp: int) -> Cosignature:
    """Cosign a checkpoint body at ``timestamp``.

    Args:
        checkpoint_text: the note text of a C2SP checkpoint (no signature lines).
        cosigner: the key.
        timestamp: POSIX seconds; not zero (c2sp.org/tlog-witness) and below 2**63.

    Raises:
        CheckpointError: the text is not a checkpoint body.
        NoteError: the timestamp is zero or out of range.
    """
    Checkpoint.from_text(checkpoint_text)  # a cosigner signs checkpoints, nothing else
    if not 0 < timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"expected a cosignature time in (0, 2**63), found {timestamp}")
    signature = cosigner.sign(cosignature_message(checkpoint_text, timestamp))
    return Cosignature(cosigner.name, cosigner.key_id, timestamp, signature)


def cosignatures_in(
    checkpoint_text: str, signatures: Iterable[NoteSignature], trusted: Sequence[CosignerKey]
) -> dict[CosignerKey, Cosignature]:
    """The valid cosignatures of ``trusted`` keys among a note's signature lines.

    Steps (c2sp.org/tlog-cosignature; c2sp.org/signed-note):
      1. A line whose name and key ID match no trusted key is ignored (the log's own
         signature, cosigners the caller does not know).
      2. A matching line must be a well-formed ``timestamped_signature`` whose
         signature verifies over ``cosignature/v1``, the time, and the body.
      3. A key that signed twice counts once (its latest time).

    Args:
        checkpoint_text: the checkpoint body the note carries.
        signatures: the note's signature lines not by the log (``SignedNote.unverified``).
        trusted: the cosigner keys to look for.

    Returns:
        Each trusted key that cosigned, and its cosignature.

    Raises:
        NoteError: a line by a trusted key is malformed or does not verify.
    """
    by_id = {(k.name, k.key_id): k for k in trusted}
    found: dict[CosignerKey, Cosignature] = {}
    for sig in signatures:
        key = by_id.get((sig.name, sig.key_id))
        if key is None:
            continue
        cosignature = Cosignature.from_note_signature(sig)
        if not key.verify(checkpoint_text, cosignature):
            raise NoteError(
                f"invalid cosignature by trusted witness {key.name}+{key.key_id.hex()} "
                f"(time {cosignature.timestamp}): it does not sign this checkpoint"
            )
        previous = found.get(key)
        if previous is None or cosignature.timestamp > previous.timestamp:
            found[key] = cosignature
    return found
