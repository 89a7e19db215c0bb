"""Check a data directory's governance state against its lineage log.

:func:`audit_state` does the reading for the pure check
(:func:`proctor.governor.consistency.check_state`); the governor runs it when it
starts, ``proctor log verify`` after the log's own audit. Nothing stored beside the
log is trusted to shorten it (an attacker who can edit the tables can edit any summary
kept with them): the log is replayed every time, reading only what it must.

Steps:

1. One read transaction on the data directory's SQLite file, so that the entries,
   the checkpoint and the state rows all come from the same snapshot (an admin change
   commits its event and its rows together: a snapshot has both or neither).
2. The latest stored checkpoint verifies under the log's key and is no larger than
   the tree.
3. The entries are read in bulk, in index order, each hashed (RFC 9162 §2.1.1) and
   folded into the Merkle tree hash; at the checkpoint's size the hash must equal the
   signed root (RFC 9162 §2.1.1, MTH). So the events replayed are the ones the log
   signed, whatever else the database says. Entries after the latest checkpoint (the
   writer signs them when it next starts) are replayed unbound.
4. Only entries whose text names a state event type are parsed: canonical JSON
   (RFC 8785) writes the top-level member as ``"type":"<name>"``, so a byte search
   finds every candidate; the parse confirms the type. Unsigned entries are all parsed.
5. The rows are checked against the replayed events.

The queries live in the store (:class:`~proctor.store.snapshot.StateSnapshot`); this
module verifies what they return.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from proctor.errors import CheckpointError, LogIntegrityError, NoteError
from proctor.governor.consistency import EVENT_TYPES, StateReport, check_state
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.merkle import EMPTY_ROOT
from proctor.note import NoteVerifier
from proctor.store.snapshot import StateSnapshot, has_state

__all__ = ["audit_state", "has_state"]

_MARKER = re.compile(
    b'"type":(?:' + b"|".join(re.escape(orjson.dumps(t)) for t in sorted(EVENT_TYPES)) + b")"
)


def audit_state(db_path: str | Path | StateSnapshot, verifier: NoteVerifier) -> StateReport:
    """Check the state tables of ``db_path`` against its log, in one snapshot.

    Args:
        db_path: the data directory's SQLite file, or a snapshot already open (any
            store: :func:`proctor.store.open.open_snapshot`), which this closes.
        verifier: the log's checkpoint key.

    Returns:
        The report (:class:`~proctor.governor.consistency.StateReport`).

    Raises:
        LogIntegrityError: the log itself fails: no checkpoint, a checkpoint that does
            not verify, a missing entry, or entries that do not hash to the signed root.
        StoreError: the database cannot be read, or a row holds a value of the wrong
            type where an integer belongs.
    """
    opened = db_path if isinstance(db_path, StateSnapshot) else StateSnapshot(db_path)
    with opened as snapshot:  # step 1
        size = snapshot.tree_size()
        signed_size, root = _checkpoint(snapshot, verifier, size)
        return check_state(_events(snapshot, size, signed_size, root), snapshot.rows())


def _checkpoint(snapshot: StateSnapshot, verifier: NoteVerifier, size: int) -> tuple[int, bytes]:
    """Step 2: the latest checkpoint's (size, root), verified."""
    stored = snapshot.latest_checkpoint()
    if stored is None:
        raise LogIntegrityError("no checkpoint is stored")
    stored_size, note = stored
    try:
        cp = open_checkpoint(note, verifier)
    except (NoteError, CheckpointError) as e:
        raise LogIntegrityError(f"the latest stored checkpoint does not verify: {e}") from e
    if cp.size != stored_size or cp.size > size:
        raise LogIntegrityError(
            f"expected a checkpoint no larger than the tree ({size} entries), found one of size {cp.size} "
            f"(stored as {stored_size})"
        )
    return cp.size, cp.root_hash


def _events(
    snapshot: StateSnapshot, size: int, signed_size: int, root: bytes
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Steps 3 and 4: the state events of entries ``[0, size)``, bound to ``root``."""
    sha256 = hashlib.sha256
    marked = _MARKER.search
    stack: list[bytes] = []  # roots of the complete subtrees so far, largest first
    if signed_size == 0 and root != EMPTY_ROOT:
        raise LogIntegrityError("the checkpoint of size 0 does not have the empty root", index=0)
    expected = 0
    for idx, raw in snapshot.entries(size):
        if idx != expected:
            raise LogIntegrityError(f"entry {expected} is missing", index=expected)
        node = sha256(b"\x00" + raw).digest()
        expected += 1
        n = expected
        while not n & 1:  # fold the subtrees this leaf completes
            node = sha256(b"\x01" + stack.pop() + node).digest()
            n >>= 1
        stack.append(node)
        if expected == signed_size and _fold(stack) != root:
            raise LogIntegrityError(
                f"the entries do not hash to the root of the signed checkpoint of size {signed_size}",
                index=signed_size - 1,
            )
        if idx < signed_size and marked(raw) is None:
            continue
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise LogIntegrityError(f"entry {idx} is not JSON: {e}", index=idx) from e
        if isinstance(event, dict) and event.get("type") in EVENT_TYPES:
            yield idx, event
    if expected < size:
        raise LogIntegrityError(f"entry {expected} is missing", index=expected)


def _fold(stack: list[bytes]) -> bytes:
    """The tree hash from the complete subtrees, folded from the right (RFC 9162 §2.1.1)."""
    acc = stack[-1]
    for left in reversed(stack[:-1]):
        acc = hashlib.sha256(b"\x01" + left + acc).digest()
    return acc
