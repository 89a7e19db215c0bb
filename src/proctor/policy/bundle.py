"""Policy bundles: content-addressed, signed sets of Cedar policy files.

A :class:`PolicyBundle` is Cedar policy files (name → text), a Cedar JSON schema, a
version number and, optionally, tool catalog fragments (``*.tools.json``, name → text;
:mod:`proctor.policy.tool_catalog`, ADR 0018). Its digest is ``"sha256:<hex>"`` of the
RFC 8785 canonical JSON of ``{"files": {...}, "schema": "...", "version": N}`` (plus
``"tools": {...}`` when it carries catalogs) — exactly :meth:`PolicyBundle.to_json` — so
the same content always has the same digest, and decisions name the bundle that made
them by it; a bundle without catalogs has the digest it always had.

A :class:`SignedBundle` carries an Ed25519 signature over a context prefix
(:data:`BUNDLE_SIGNATURE_CONTEXT`) followed by the UTF-8 bytes of the digest string
(``b"sha256:…"``). Verifying it proves who approved this exact content.

Versions only go forward (:func:`verify_version_forward`, as TUF's rollback
protection for metadata versions): a bundle is accepted only with a version above
every version accepted before, so an older signed bundle can never be re-activated,
and reinstating old content means signing it again under a new version.

Only :meth:`PolicyBundle.from_directory` touches the file system. Whether the
policies parse and validate is for :meth:`~proctor.policy.engine.PolicyEngine.compile`
to say; a bundle only checks its own shape.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proctor.canonical import MAX_SAFE_INTEGER, canonicalize
from proctor.errors import BundleError, CanonicalizationError
from proctor.policy.schema import DEFAULT_SCHEMA
from proctor.policy.tool_catalog import TOOLS_FILE

__all__ = [
    "SCHEMA_FILE",
    "FILE_NAME",
    "BUNDLE_SIGNATURE_CONTEXT",
    "PolicyBundle",
    "SignedBundle",
    "verify_version_forward",
]

BUNDLE_SIGNATURE_CONTEXT = b"proctor policy bundle v1\n"
"""Prefixed to the digest before signing: the admin key also signs HTTP requests,
and a signature made for one purpose must never be valid for another."""


def _signed_message(digest: str) -> bytes:
    return BUNDLE_SIGNATURE_CONTEXT + digest.encode()


SCHEMA_FILE = "schema.json"
"""The optional schema file of a bundle directory."""

FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.cedar")
"""What a policy file name must look like: no directories, no spaces."""


def _check_files(files: Any) -> dict[str, str]:
    if not isinstance(files, Mapping):
        raise BundleError(f"bundle.files: expected an object of file name to text, found {files!r}")
    for name, text in files.items():
        if type(name) is not str or not FILE_NAME.fullmatch(name):
            raise BundleError(f"bundle.files: expected file names like exec.cedar, found {name!r}")
        if type(text) is not str:
            raise BundleError(f"bundle.files[{name!r}]: expected policy text, found {type(text).__name__}")
    return dict(sorted(files.items()))


def _check_tools(tools: Any) -> dict[str, str]:
    if not isinstance(tools, Mapping):
        raise BundleError(f"bundle.tools: expected an object of file name to text, found {tools!r}")
    for name, text in tools.items():
        if type(name) is not str or not TOOLS_FILE.fullmatch(name):
            raise BundleError(f"bundle.tools: expected file names like filesystem.tools.json, found {name!r}")
        if type(text) is not str:
            raise BundleError(f"bundle.tools[{name!r}]: expected catalog text, found {type(text).__name__}")
    return dict(sorted(tools.items()))


@dataclass(frozen=True)
class PolicyBundle:
    """Cedar policy files, their schema and a version, addressed by content.

    Attributes:
        files: file name (``*.cedar``) to Cedar policy text, kept sorted by name.
        schema: Cedar JSON schema text (:data:`~proctor.policy.schema.DEFAULT_SCHEMA`
            by default).
        version: the bundle's version number, an integer ≥ 0.
        tools: tool catalog fragments, file name (``*.tools.json``) to text; empty
            by default.

    Raises:
        BundleError: on construction, when a field has the wrong shape.
    """

    files: Mapping[str, str]
    schema: str = DEFAULT_SCHEMA
    version: int = 1
    tools: Mapping[str, str] = field(default_factory=dict)
    _digest: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        files = _check_files(self.files)
        if type(self.schema) is not str or not self.schema.strip():
            raise BundleError(f"bundle.schema: expected Cedar JSON schema text, found {self.schema!r}")
        if type(self.version) is not int or not 0 <= self.version <= MAX_SAFE_INTEGER:
            raise BundleError(
                f"bundle.version: expected an integer from 0 to {MAX_SAFE_INTEGER}, found {self.version!r}"
            )
        object.__setattr__(self, "files", MappingProxyType(files))
        object.__setattr__(self, "tools", MappingProxyType(_check_tools(self.tools)))
        try:
            raw = canonicalize(self.to_json())
        except CanonicalizationError as e:
            raise BundleError(f"bundle: expected text that is valid Unicode, found {e}") from e
        object.__setattr__(self, "_digest", "sha256:" + hashlib.sha256(raw).hexdigest())

    @property
    def digest(self) -> str:
        """``"sha256:<hex>"`` of the canonical JSON of :meth:`to_json`."""
        return self._digest

    def to_json(self) -> dict[str, Any]:
        """The bundle as a JSON object: ``{"files": {...}, "schema": ..., "version": ...}``,
        and ``"tools": {...}`` only when it carries tool catalogs."""
        doc: dict[str, Any] = {"files": dict(self.files), "schema": self.schema, "version": self.version}
        if self.tools:
            doc["tools"] = dict(self.tools)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PolicyBundle:
        """Parse :meth:`to_json` output.

        Args:
            doc: the JSON object.

        Returns:
            The bundle (with the same digest as the one serialised).

        Raises:
            BundleError: fields missing or unknown, or of the wrong type.
        """
        expected = {"files", "schema", "version"}
        if not isinstance(doc, Mapping) or set(doc) - {"tools"} != expected:
            found = sorted(doc) if isinstance(doc, Mapping) else type(doc).__name__
            raise BundleError(f"bundle: expected the fields {sorted(expected)} (and tools), found {found}")
        tools = doc.get("tools", {})
        if "tools" in doc and not tools:
            raise BundleError(
                "bundle.tools: expected it left out when empty, found {} (one digest per content)"
            )
        return cls(files=doc["files"], schema=doc["schema"], version=doc["version"], tools=tools)

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str], *, version: int) -> PolicyBundle:
        """Read a bundle from a directory: every ``*.cedar`` file, ``schema.json`` if
        present, and every tool catalog fragment ``*.tools.json``.

        Other files and subdirectories are ignored. Files are read as UTF-8.

        Args:
            path: the directory.
            version: the version to give the bundle.

        Returns:
            The bundle.

        Raises:
            BundleError: the directory cannot be read, holds no ``*.cedar`` file, or a
                file cannot be read, is not UTF-8, or has an unacceptable name.
        """
        root = Path(path)
        try:
            entries = sorted(root.iterdir())
        except OSError as e:
            raise BundleError(f"{root}: expected a readable directory of *.cedar files, found: {e}") from e
        files: dict[str, str] = {}
        tools: dict[str, str] = {}
        schema = DEFAULT_SCHEMA
        try:
            for entry in entries:
                if entry.name.endswith(".cedar") and entry.is_file():
                    files[entry.name] = entry.read_text(encoding="utf-8")
                elif entry.name == SCHEMA_FILE and entry.is_file():
                    schema = entry.read_text(encoding="utf-8")
                elif entry.name.endswith(".tools.json") and entry.is_file():
                    tools[entry.name] = entry.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BundleError(f"{root}: cannot read a bundle file: {e}") from e
        if not files:
            raise BundleError(f"{root}: expected at least one *.cedar policy file, found none")
        return cls(files=files, schema=schema, version=version, tools=tools)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, version: int) -> PolicyBundle:
        """Read a bundle from a directory (:meth:`from_directory`) or from one ``*.cedar``
        file (its policies with the default schema).

        Raises:
            BundleError: not a directory nor a ``*.cedar`` file, or unreadable (as
                :meth:`from_directory`).
        """
        source = Path(path)
        if source.is_dir():
            return cls.from_directory(source, version=version)
        if source.suffix != ".cedar":
            raise BundleError(f"{source}: expected a directory of *.cedar files or one *.cedar file")
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BundleError(f"{source}: cannot read the policy file: {e}") from e
        return cls(files={source.name: text}, version=version)

    def signed(self, private_key: Ed25519PrivateKey, signer: str) -> SignedBundle:
        """Sign the bundle's digest.

        Args:
            private_key: the signer's Ed25519 key.
            signer: the signer's name (recorded, not verified).

        Returns:
            The signed bundle.
        """
        signature = private_key.sign(_signed_message(self.digest))
        return SignedBundle(bundle=self, signer=signer, signature=signature)


@dataclass(frozen=True)
class SignedBundle:
    """A bundle with an Ed25519 signature over the UTF-8 bytes of its digest.

    Attributes:
        bundle: the bundle.
        signer: who signed it.
        signature: 64 bytes of Ed25519 signature.

    Raises:
        BundleError: on construction, when a field has the wrong shape.
    """

    bundle: PolicyBundle
    signer: str
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.bundle, PolicyBundle):
            raise BundleError(f"signed bundle: expected a PolicyBundle, found {type(self.bundle).__name__}")
        if type(self.signer) is not str or not self.signer:
            raise BundleError(f"signed bundle: expected a non-empty signer name, found {self.signer!r}")
        if type(self.signature) is not bytes or len(self.signature) != 64:
            raise BundleError("signed bundle: expected a 64-byte Ed25519 signature")

    def verify(self, public_key: Ed25519PublicKey) -> None:
        """Check the signature over the bundle's digest.

        Args:
            public_key: the key the signer is trusted under.

        Raises:
            BundleError: the signature does not verify (wrong key, or the bundle or
                signature was altered).
        """
        try:
            public_key.verify(self.signature, _signed_message(self.bundle.digest))
        except InvalidSignature as e:
            raise BundleError(
                f"bundle {self.bundle.digest}: the signature by {self.signer!r} does not verify"
            ) from e

    def to_json(self) -> dict[str, Any]:
        """``{"bundle": {...}, "signer": ..., "signature": "<base64>"}``."""
        return {
            "bundle": self.bundle.to_json(),
            "signer": self.signer,
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SignedBundle:
        """Parse :meth:`to_json` output (the signature is not verified here).

        Args:
            doc: the JSON object.

        Returns:
            The signed bundle.

        Raises:
            BundleError: malformed.
        """
        expected = {"bundle", "signer", "signature"}
        if not isinstance(doc, Mapping) or set(doc) != expected:
            found = sorted(doc) if isinstance(doc, Mapping) else type(doc).__name__
            raise BundleError(f"signed bundle: expected the fields {sorted(expected)}, found {found}")
        text = doc["signature"]
        try:
            if type(text) is not str:
                raise TypeError
            signature = base64.b64decode(text, validate=True)
        except (TypeError, binascii.Error, ValueError) as e:
            raise BundleError(f"signed bundle.signature: expected base64, found {text!r}") from e
        return cls(bundle=PolicyBundle.from_json(doc["bundle"]), signer=doc["signer"], signature=signature)


def verify_version_forward(bundle: PolicyBundle, *, highest: tuple[int, str] | None) -> None:
    """Refuse a bundle whose version does not go beyond every version accepted before.

    The "check for a rollback attack" steps of TUF's detailed client workflow (a
    new version may not be lower than the trusted one), made strict for policy: an
    old signed bundle replayed with a fresh admin signature, or new content under a
    version already used, would otherwise change which policy governs out of order
    (and re-activating a stored bundle would move its activation in the log). The
    same bundle pushed again is for the caller to recognise first.

    Args:
        bundle: the bundle offered for activation.
        highest: ``(version, digest)`` of the accepted bundle with the highest version,
            or ``None`` if none was ever accepted (then any version is acceptable).

    Raises:
        BundleError: ``bundle.version`` is not greater than ``highest``'s.
    """
    if highest is None:
        return
    version, digest = highest
    if bundle.version > version:
        return
    if bundle.digest == digest:
        what = "is the bundle accepted last"
    elif bundle.version == version:
        what = f"reuses version {version} of bundle {digest} for different content"
    else:
        what = "is older than the bundle accepted last (rollback)"
    raise BundleError(
        f"bundle {bundle.digest} version {bundle.version} {what}: expected a version above "
        f"{version}; versions only go forward, so push old content again under a new version"
    )
