"""Layer 5, execution lineage: canonical events, the Merkle log, checkpoints, proofs.

The pure parts (:mod:`.events`, :mod:`.merkle`, :mod:`.checkpoint`, :mod:`.tiles`,
:mod:`.proofs`, :mod:`.dsse`) do no I/O and read no clock; :mod:`.log` puts them on a
store. Lineage imports only what sits below it: the shared primitives
(:mod:`proctor.canonical`, :mod:`proctor.note`, :mod:`proctor.errors`), the store and
the data directory. Receipts, which also need warrants and policy, are
:mod:`proctor.receipts`, above this package.
"""

from proctor.lineage.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from proctor.lineage.events import Event, ParentLink
from proctor.lineage.merkle import leaf_hash, node_hash, verify_consistency, verify_inclusion
from proctor.lineage.proofs import (
    ConsistencyProof,
    InclusionProof,
)
from proctor.note import NoteSigner, NoteVerifier, open_note, sign_note

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
    # Imported lazily: the log loads the store and the data directory, which a user of
    # the pure modules above (a verifier of proofs) does not need.
    if name in ("Log", "LogReport"):
        from proctor.lineage import log  # noqa: PLC0415

        return getattr(log, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
