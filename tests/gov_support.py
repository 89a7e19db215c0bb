"""Helpers shared by the governor tests (importable: tests/ is on the path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proctor.authorization.keys import PrincipalKey
from proctor.policy import PolicyBundle

POLICIES = Path(__file__).parent / "integration" / "policies"
EXE = "sha256:" + "e" * 64
"""An executable digest for exec requests made in process (the governor measures nothing)."""


def signed_bundle(data: Path, source: Path, version: int = 1) -> dict[str, Any]:
    """The bundle in ``source``, signed with the data directory's admin key, as JSON."""
    admin = PrincipalKey.load(data / "keys" / "admin.key")
    bundle = PolicyBundle.from_directory(source, version=version)
    return bundle.signed(Ed25519PrivateKey.from_private_bytes(admin.private_bytes()), "admin").to_json()
