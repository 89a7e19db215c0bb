"""C2SP signed-note with Ed25519 signatures.

A signed note is UTF-8 text that ends in a newline, a blank line, and one or more
signature lines ``— <key name> <base64(key ID || signature)>``. The key ID is the
first four bytes of ``SHA-256(key name || 0x0A || 0x01 || public key)``, 0x01 being
the Ed25519 signature type (C2SP signed-note, "Signatures" and "Ed25519"). Keys are
written as Go's ``golang.org/x/mod/sumdb/note`` writes them:

- verifier key: ``<name>+<8 hex digits of key ID>+<base64(0x01 || public key)>``;
- signer key:   ``PRIVATE+KEY+<name>+<8 hex digits>+<base64(0x01 || seed)>``.

:func:`open_note` checks signatures against trusted verifier keys only; a note that
carries no valid signature by a trusted key is rejected. Signatures by keys the
caller does not know are kept in the result but not trusted.

A shared primitive at the bottom of the package tree: it imports nothing of proctor but
:mod:`proctor.errors`. The lineage log signs its checkpoints and DSSE statements with a
:class:`NoteSigner`, and the data directory (:mod:`proctor.datadir`) creates and loads
that key, below the log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proctor.errors import KeyFormatError, NoteError

__all__ = [
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "NoteSigner",
    "NoteVerifier",
    "NoteSignature",
    "SignedNote",
    "generate_signer",
    "sign_note",
    "open_note",
    "valid_key_name",
]

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100  # as Go's note package, so a note cannot make a verifier work unboundedly
_SIG_PREFIX = "\u2014 "  # em dash, space


def valid_key_name(name: str) -> bool:
    """A key name is non-empty and has no white space and no ``+`` (C2SP signed-note)."""
    return bool(name) and not any(c.isspace() for c in name) and "+" not in name


def _key_id(name: str, pub: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + pub).digest()[:4]


def _parse_key(text: str, parts_expected: int, what: str) -> tuple[str, bytes, bytes]:
    # Base64 key data may itself contain '+': split only the leading fields off.
    parts = text.strip().split("+", parts_expected - 1)
    if len(parts) != parts_expected:
        raise KeyFormatError(
            f"expected a {what} of {parts_expected} '+'-separated fields, found {len(parts)}"
        )
    name, id_hex, b64 = parts[-3], parts[-2], parts[-1]
    if not valid_key_name(name):
        raise KeyFormatError(f"expected a key name without spaces or '+', found {name!r}")
    try:
        key_id = bytes.fromhex(id_hex)
        data = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error) as e:
        raise KeyFormatError(f"{what}: expected hex key ID and base64 key data: {e}") from e
    if base64.b64encode(data).decode() != b64:
        raise KeyFormatError(f"{what}: expected canonical base64 key data, found {b64[-8:]!r} at its end")
    if len(id_hex) != 8 or len(key_id) != 4:
        raise KeyFormatError(f"{what}: expected an 8-hex-digit key ID, found {id_hex!r}")
    if len(data) != 33 or data[0] != ALG_ED25519:
        raise KeyFormatError(
            f"{what}: expected 0x01 (Ed25519) followed by 32 key bytes, found {len(data)} bytes"
            + (f" starting with 0x{data[0]:02x}" if data else "")
        )
    return name, key_id, data[1:]


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted Ed25519 note verifier key."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def from_string(cls, vkey: str) -> NoteVerifier:
        """Parse ``name+hexid+base64(0x01||pub)``.

        Raises:
            KeyFormatError: malformed, unknown algorithm, or the key ID does not
                match the name and key.
        """
        name, key_id, pub = _parse_key(vkey, 3, "verifier key")
        if not hmac.compare_digest(key_id, _key_id(name, pub)):
            raise KeyFormatError(
                f"verifier key ID {key_id.hex()} does not match its name and key "
                f"(expected {_key_id(name, pub).hex()})"
            )
        return cls(name, key_id, pub)

    def to_string(self) -> str:
        """The verifier key in signed-note form."""
        data = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{data}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 note signing key. Its ``repr`` never shows the secret."""

    name: str
    key_id: bytes
    _private: Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id.hex()})"

    @classmethod
    def from_string(cls, skey: str) -> NoteSigner:
        """Parse ``PRIVATE+KEY+name+hexid+base64(0x01||seed)``.

        Raises:
            KeyFormatError: malformed, or the key ID does not match.
        """
        if not skey.startswith("PRIVATE+KEY+"):
            raise KeyFormatError("expected a signer key starting with 'PRIVATE+KEY+'")
        name, key_id, seed = _parse_key(skey, 5, "signer key")
        private = Ed25519PrivateKey.from_private_bytes(seed)
        pub = private.public_key().public_bytes_raw()
        if not hmac.compare_digest(key_id, _key_id(name, pub)):
            raise KeyFormatError("signer key ID does not match its name and key")
        return cls(name, key_id, private)

    def to_string(self) -> str:
        """The signer key in Go's ``PRIVATE+KEY+…`` form. Keep it secret."""
        seed = self._private.private_bytes_raw()
        data = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{data}"

    @property
    def verifier(self) -> NoteVerifier:
        """The matching verifier key."""
        pub = self._private.public_key().public_bytes_raw()
        return NoteVerifier(self.name, self.key_id, pub)

    def sign(self, message: bytes) -> bytes:
        """The raw Ed25519 signature of ``message``."""
        return self._private.sign(message)


def generate_signer(name: str) -> NoteSigner:
    """A fresh Ed25519 signer named ``name``.

    Raises:
        KeyFormatError: ``name`` is not a valid key name.
    """
    if not valid_key_name(name):
        raise KeyFormatError(f"expected a key name without spaces or '+', found {name!r}")
    private = Ed25519PrivateKey.generate()
    pub = private.public_key().public_bytes_raw()
    return NoteSigner(name, _key_id(name, pub), private)


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class SignedNote:
    """A parsed note: its text, the signatures verified by trusted keys, and the rest."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("expected note text ending in a newline")
    for c in text:
        if (c < " " and c != "\n") or c == "\x7f":
            raise NoteError(f"expected note text without control characters, found {c!r}")


def sign_note(text: str, signer: NoteSigner) -> str:
    """Sign ``text`` and return the whole signed note.

    Raises:
        NoteError: ``text`` does not end in a newline or contains control characters.
    """
    _check_text(text)
    sig = signer.sign(text.encode())
    b64 = base64.b64encode(signer.key_id + sig).decode()
    return f"{text}\n{_SIG_PREFIX}{signer.name} {b64}\n"


def open_note(note: str | bytes, verifiers: list[NoteVerifier]) -> SignedNote:
    """Parse a signed note and verify its signatures.

    Steps (C2SP signed-note):
      1. The note is UTF-8; text and signatures are separated by the last blank line.
      2. Each signature line is ``— name base64``, in canonical base64 (RFC 4648 §3.5:
         the pad bits are zero, so one signature has one text), and decodes to a 4-byte
         key ID followed by the signature; at most :data:`MAX_SIGNATURES` lines.
      3. A signature whose name and key ID match a trusted verifier must verify;
         one that does not is an error, not an unknown signature.
      4. At least one signature by a trusted key must have verified.

    Raises:
        NoteError: malformed, a bad signature by a trusted key, or no trusted signature.
    """
    if not verifiers:
        raise NoteError("no trusted verifier keys given; refusing to accept any note")
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteError(f"expected a UTF-8 note: {e}") from e
    # Step 1
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("expected note text, a blank line, then signature lines; found no blank line")
    text, sig_block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    if not sig_block.endswith("\n"):
        raise NoteError("expected the signature block to end in a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"expected at most {MAX_SIGNATURES} signatures, found {len(lines)}")
    by_id = {(v.name, v.key_id): v for v in verifiers}
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    message = text.encode()
    for line in lines:
        # Step 2
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(f"expected a signature line starting with '— ', found {line[:40]!r}")
        name, sep, b64 = line[len(_SIG_PREFIX) :].rpartition(" ")
        if not sep or not valid_key_name(name):
            raise NoteError(f"expected '— <key name> <base64>', found {line[:80]!r}")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error) as e:
            raise NoteError(f"signature of {name!r} is not base64") from e
        if base64.b64encode(raw).decode() != b64:  # one text per signature: no malleable notes
            raise NoteError(f"signature of {name!r}: expected canonical base64, found {b64[-8:]!r} ending it")
        if len(raw) < 5:
            raise NoteError(f"signature of {name!r} is {len(raw)} bytes, expected at least 5")
        sig = NoteSignature(name, raw[:4], raw[4:])
        verifier = by_id.get((name, sig.key_id))
        if verifier is None:
            unverified.append(sig)
            continue
        # Step 3
        if not verifier.verify(message, sig.signature):
            raise NoteError(f"invalid signature by trusted key {name}+{sig.key_id.hex()}")
        verified.append(sig)
    # Step 4
    if not verified:
        names = ", ".join(f"{v.name}+{v.key_id.hex()}" for v in verifiers)
        raise NoteError(f"no signature by a trusted key ({names}) on this note")
    return SignedNote(text, tuple(verified), tuple(unverified))
