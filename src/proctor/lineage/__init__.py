"""Layer 5, execution lineage: canonical events, the Merkle log, checkpoints, proofs.

The pure parts (:mod:`.canonical`, :mod:`.events`, :mod:`.merkle`, :mod:`.note`,
:mod:`.checkpoint`, :mod:`.tiles`) do no I/O and read no clock; :mod:`.log` puts them
on a store.
"""

from proctor.lineage.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from proctor.lineage.events import Event, ParentLink
from proctor.lineage.merkle import leaf_hash, node_hash, verify_consistency, verify_inclusion
from proctor.lineage.note import NoteSigner, NoteVerifier, open_note, sign_note
from proctor.lineage.proofs import (
    ConsistencyProof,
    InclusionProof,
)

__all__ = [
    "Log",
    "LogReport",
    "Event",
    "ParentLink",
    "Checkpoint",
    "sign_checkpoint",
    "open_checkpoint",
    "NoteSigner",
    "NoteVerifier",
    "sign_note",
    "open_note",
    "leaf_hash",
    "node_hash",
    "verify_inclusion",
    "verify_consistency",
    "InclusionProof",
    "ConsistencyProof",
]


def __getattr__(name: str) -> object:
    # The log sits on the store and the data directory, which themselves use the
    # pure modules above; importing it lazily keeps that one-way.
    if name in ("Log", "LogReport"):
        from proctor.lineage import log  # noqa: PLC0415

        return getattr(log, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
