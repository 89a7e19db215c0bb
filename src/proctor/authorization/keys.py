"""Ed25519 keys of principals, and the key file that holds one.

A principal (an agent, a service, a person, an enforcer node, or ``admin``) is known
by a name and holds one Ed25519 key. The name is 1-64 characters of
``[A-Za-z0-9._-]`` and starts with a letter or digit, so it can stand unquoted in a
signature's ``keyid`` parameter, a Datalog string and a file name.

The key file is one JSON object::

    {"kind": "proctor-principal-key", "v": 1, "name": "...",
     "public_key": "<base64>", "private_key": "<base64 of the 32-byte seed>"}

Invariants:

- :meth:`PrincipalKey.save` creates the file with mode ``0600`` (never wider, whatever
  the umask), refuses to replace an existing file unless asked, and fsyncs it.
- :meth:`PrincipalKey.load` refuses a file that group or others may read or write
  (``mode & 0o077``), as OpenSSH refuses such private keys, and any unknown kind,
  version or field, and a public key that does not match the private key.
- ``repr`` never shows the secret.

Public keys travel as standard base64 (RFC 4648 §4) of the 32 raw bytes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import stat
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proctor.errors import KeyFormatError, PrincipalError

__all__ = [
    "KEY_FILE_KIND",
    "KEY_FILE_VERSION",
    "PrincipalKey",
    "valid_principal_name",
    "load_public_key",
    "encode_public_key",
]

KEY_FILE_KIND = "proctor-principal-key"
KEY_FILE_VERSION = 1
_KEY_FILE_FIELDS = frozenset({"kind", "v", "name", "public_key", "private_key"})
_MAX_KEY_FILE_BYTES = 4096  # a key file is ~200 bytes; anything much larger is not one
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def valid_principal_name(name: str) -> bool:
    """Whether ``name`` is a valid principal name.

    Args:
        name: the candidate name.

    Returns:
        ``True`` for 1-64 characters of ``[A-Za-z0-9._-]`` starting with a letter or digit.
    """
    return type(name) is str and _NAME.fullmatch(name) is not None


def _b64decode_32(text: object, what: str) -> bytes:
    # Strict standard base64: the alphabet only, canonical padding, exactly 32 bytes.
    if type(text) is not str:
        raise KeyFormatError(f"{what}: expected a base64 string, found {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as e:
        raise KeyFormatError(f"{what}: expected base64 (RFC 4648 §4): {e}") from e
    if len(raw) != 32:
        raise KeyFormatError(f"{what}: expected 32 bytes of Ed25519 key, found {len(raw)}")
    if base64.b64encode(raw).decode() != text:
        raise KeyFormatError(f"{what}: expected the canonical base64 encoding of the key")
    return raw


def load_public_key(b64: str) -> bytes:
    """Decode a principal's public key from standard base64.

    Args:
        b64: base64 (RFC 4648 §4, padded) of the 32 raw Ed25519 public key bytes.

    Returns:
        The 32 raw public key bytes.

    Raises:
        KeyFormatError: not canonical base64, or not 32 bytes.
    """
    return _b64decode_32(b64, "public key")


def encode_public_key(public_key: bytes) -> str:
    """Encode 32 raw Ed25519 public key bytes as standard base64.

    Args:
        public_key: the raw public key.

    Returns:
        The padded base64 text that :func:`load_public_key` reads.

    Raises:
        KeyFormatError: ``public_key`` is not 32 bytes.
    """
    if type(public_key) is not bytes or len(public_key) != 32:
        raise KeyFormatError("expected 32 bytes of Ed25519 public key")
    return base64.b64encode(public_key).decode()


class PrincipalKey:
    """The Ed25519 private key of one principal. Immutable; ``repr`` hides the secret.

    Attributes:
        name: the principal's name (see :func:`valid_principal_name`).
    """

    __slots__ = ("_private", "_public", "name")

    name: str
    _private: Ed25519PrivateKey
    _public: bytes

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        """Wrap an existing key; prefer :meth:`generate`, :meth:`load` or :meth:`from_private_bytes`.

        Args:
            name: the principal's name.
            private_key: the principal's Ed25519 private key.

        Raises:
            PrincipalError: ``name`` is not a valid principal name.
        """
        if not valid_principal_name(name):
            raise PrincipalError(
                f"expected a principal name of 1-64 characters [A-Za-z0-9._-] starting with a "
                f"letter or digit, found {name!r}"
            )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_private", private_key)
        object.__setattr__(self, "_public", private_key.public_key().public_bytes_raw())

    def __setattr__(self, attr: str, value: object) -> None:
        raise AttributeError(f"PrincipalKey is immutable; cannot set {attr}")

    def __repr__(self) -> str:
        return f"PrincipalKey(name={self.name!r}, public_key={self.public_key_b64!r})"

    @classmethod
    def generate(cls, name: str) -> PrincipalKey:
        """A fresh random key for principal ``name``.

        Args:
            name: the principal's name.

        Returns:
            The new key.

        Raises:
            PrincipalError: ``name`` is not a valid principal name.
        """
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, name: str, seed: bytes) -> PrincipalKey:
        """The key of principal ``name`` from its 32-byte Ed25519 seed.

        Args:
            name: the principal's name.
            seed: the 32-byte private key seed (RFC 8032 §5.1.5).

        Returns:
            The key.

        Raises:
            KeyFormatError: ``seed`` is not 32 bytes.
            PrincipalError: ``name`` is not a valid principal name.
        """
        if type(seed) is not bytes or len(seed) != 32:
            raise KeyFormatError("expected a 32-byte Ed25519 private key seed")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_key(self) -> bytes:
        """The 32 raw bytes of the public key."""
        return self._public

    @property
    def public_key_b64(self) -> str:
        """The public key as standard base64, as :func:`load_public_key` reads it."""
        return base64.b64encode(self._public).decode()

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``.

        Args:
            message: the bytes to sign.

        Returns:
            The 64-byte Ed25519 signature (RFC 8032 §5.1.6).
        """
        return self._private.sign(message)

    def private_bytes(self) -> bytes:
        """The 32-byte seed, for a Biscuit ``KeyPair``. Keep it secret.

        Returns:
            The raw private key seed.
        """
        return self._private.private_bytes_raw()

    def to_json(self) -> dict[str, Any]:
        """The key-file object, secret included. Keep it secret.

        Returns:
            ``{"kind", "v", "name", "public_key", "private_key"}``.
        """
        return {
            "kind": KEY_FILE_KIND,
            "v": KEY_FILE_VERSION,
            "name": self.name,
            "public_key": self.public_key_b64,
            "private_key": base64.b64encode(self.private_bytes()).decode(),
        }

    @classmethod
    def from_json(cls, data: object) -> PrincipalKey:
        """Parse a key-file object.

        Steps:
          1. It is an object with exactly the fields kind, v, name, public_key, private_key.
          2. ``kind`` is ``proctor-principal-key`` and ``v`` is 1.
          3. ``name`` is a valid principal name.
          4. Both keys are canonical base64 of 32 bytes, and the public key is the one
             the private key derives (compared in constant time).

        Args:
            data: the decoded JSON value.

        Returns:
            The key.

        Raises:
            KeyFormatError: any step fails.
        """
        # Step 1
        if type(data) is not dict:
            raise KeyFormatError("key file: expected a JSON object")
        if set(data) != _KEY_FILE_FIELDS:
            raise KeyFormatError(
                f"key file: expected exactly the fields {sorted(_KEY_FILE_FIELDS)}, found {sorted(data)}"
            )
        # Step 2
        if data["kind"] != KEY_FILE_KIND:
            raise KeyFormatError(f"key file: expected kind {KEY_FILE_KIND!r}, found {data['kind']!r}")
        if type(data["v"]) is not int or data["v"] != KEY_FILE_VERSION:
            raise KeyFormatError(f"key file: expected version {KEY_FILE_VERSION}, found {data['v']!r}")
        # Step 3
        name = data["name"]
        if not valid_principal_name(name):
            raise KeyFormatError(f"key file: expected a valid principal name, found {name!r}")
        # Step 4
        seed = _b64decode_32(data["private_key"], "key file private_key")
        public = _b64decode_32(data["public_key"], "key file public_key")
        key = cls.from_private_bytes(name, seed)
        if not hmac.compare_digest(public, key.public_key):
            raise KeyFormatError("key file: public_key does not match private_key")
        return key

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrincipalKey:
        """Read a key file.

        Steps:
          1. Open the file and fstat what was opened, so the mode checked is the mode of
             the file read (no race between check and read). Symlinks are followed, as
             OpenSSH does (Kubernetes mounts secrets through them); the target's mode
             counts. (The keys inside a data directory are held to more: see
             :meth:`proctor.datadir.DataDir.open`.) ``O_NONBLOCK``: a FIFO in place of
             the key is refused, not waited on.
          2. It is a regular file that neither group nor others may access
             (``mode & 0o077 == 0``, as OpenSSH requires of private keys).
          3. At most 4 KiB of JSON, parsed by :meth:`from_json`.

        Args:
            path: the key file.

        Returns:
            The key.

        Raises:
            KeyFormatError: the file is missing ("key file X not found"), cannot be
                read, is too open, is not a regular file, or is malformed.
        """
        shown = os.fspath(path)
        # Step 1
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError as e:
            raise KeyFormatError(f"key file {shown!r} not found") from e
        except OSError as e:
            raise KeyFormatError(f"cannot read key file {shown!r}: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            # Step 2
            if not stat.S_ISREG(st.st_mode):
                raise KeyFormatError(f"key file {shown!r}: expected a regular file")
            if os.name == "posix" and st.st_mode & 0o077:
                raise KeyFormatError(
                    f"key file {shown!r} has mode {stat.S_IMODE(st.st_mode):04o}: "
                    "expected no access for group and others (chmod 600)"
                )
            # Step 3
            if st.st_size > _MAX_KEY_FILE_BYTES:
                raise KeyFormatError(
                    f"key file {shown!r}: expected at most {_MAX_KEY_FILE_BYTES} bytes, found {st.st_size}"
                )
            chunks: list[bytes] = []
            remaining = _MAX_KEY_FILE_BYTES + 1
            while remaining > 0 and (chunk := os.read(fd, remaining)):
                chunks.append(chunk)
                remaining -= len(chunk)
            raw = b"".join(chunks)
        except OSError as e:
            raise KeyFormatError(f"cannot read key file {shown!r}: {e.strerror}") from e
        finally:
            os.close(fd)
        if len(raw) > _MAX_KEY_FILE_BYTES:
            raise KeyFormatError(f"key file {shown!r}: expected at most {_MAX_KEY_FILE_BYTES} bytes")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise KeyFormatError(f"key file {shown!r}: expected JSON: {e}") from e
        return cls.from_json(data)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key file with mode ``0600``, durably.

        Without ``overwrite`` the file is created exclusively (``O_EXCL``). With it, the
        key is written to a fresh ``0600`` file beside ``path`` and renamed over it, so
        a crash leaves either the old key or the new one, never a torn file.

        Args:
            path: where to write.
            overwrite: replace an existing file.

        Raises:
            OSError: the file exists (without ``overwrite``) or cannot be written.
        """
        data = orjson.dumps(self.to_json()) + b"\n"
        target = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(target))
        write_to = f"{target}.{os.urandom(6).hex()}.tmp" if overwrite else target
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        )
        fd = os.open(write_to, flags, 0o600)
        try:
            try:
                # The umask can only narrow 0600, but be exact whatever it is.
                os.fchmod(fd, 0o600)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.replace(write_to, target)
        except BaseException:
            os.unlink(write_to)
            raise
        _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    # Make the new directory entry durable; not every platform can open a directory.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
