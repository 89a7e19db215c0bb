"""Helpers shared by the governor tests (importable: tests/ is on the path)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
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


@contextlib.contextmanager
def held_commits(store: Any) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold back every commit of the log ``store`` (a real store: its ``append`` waits)
    until the test sets ``release``; ``holding`` is set once a commit waits. Yields
    ``(holding, release)``; the store is itself again afterwards, released either way."""
    release, holding = threading.Event(), threading.Event()
    commit = store.append

    def held(*args: Any, **kwargs: Any) -> None:
        holding.set()
        if not release.wait(30):
            raise AssertionError("the test did not release the commit")
        commit(*args, **kwargs)

    store.append = held
    try:
        yield holding, release
    finally:
        release.set()
        store.append = commit
