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
   writer signs them when it next starts) are replayed unbound. Every stored tile must
   equal the one the entries make, and no other tile be stored: proofs are served from
   the tiles, and the writer extends the tree from them, so a damaged hash there is
   damage to the log even where the entries are intact.
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
from proctor.lineage.merkle import EMPTY_ROOT, HASH_SIZE, node_hash
from proctor.lineage.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, TreeBuilder
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
    tree = _Tiles(snapshot)
    if signed_size == 0 and root != EMPTY_ROOT:
        raise LogIntegrityError("the checkpoint of size 0 does not have the empty root", index=0)
    expected = 0
    for idx, raw in snapshot.entries(size):
        if idx != expected:
            raise LogIntegrityError(f"entry {expected} is missing", index=expected)
        tree.add(sha256(b"\x00" + raw).digest())
        expected += 1
        if expected == signed_size and tree.root() != root:
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
    tree.finish()


class _Tiles:
    """Step 3's tree: the tiles the entries make, built a tile at a time (RFC 9162 §2.1.1
    node hashes), each compared with the stored tile once complete, the partial ones of
    the right edge at the end, then the count of stored tiles."""

    def __init__(self, snapshot: StateSnapshot) -> None:
        self._snapshot = snapshot
        self._bottom: list[list[bytes]] = [[]]  # per tile level: the bottom row being filled
        self._done: list[int] = [0]  # per tile level: complete tiles so far
        self._size = 0
        self._compared = 0

    def add(self, leaf: bytes) -> None:
        """Append one leaf hash; compare every tile it completes."""
        self._size += 1
        level, h = 0, leaf
        while True:
            row = self._bottom[level]
            row.append(h)
            if len(row) < TILE_WIDTH:
                return
            tile = _tile(level, self._done[level], row)
            self._check(tile)
            self._done[level] += 1
            row.clear()
            if level + 1 == len(self._bottom):
                self._bottom.append([])
                self._done.append(0)
            top = tile.data[-2 * HASH_SIZE :]  # the top row: the two halves of the tile's subtree
            level, h = level + 1, node_hash(top[:HASH_SIZE], top[HASH_SIZE:])

    def _edge(self) -> list[Tile | None]:
        return [
            _tile(level, self._done[level], row) if row else None for level, row in enumerate(self._bottom)
        ]

    def root(self) -> bytes:
        """The root of the tree of the leaves added so far."""
        return TreeBuilder.resume(self._size, self._edge()).root()

    def finish(self) -> None:
        """Compare the partial tiles, then the number of tiles stored."""
        for tile in self._edge():
            if tile is not None:
                self._check(tile)
        stored = self._snapshot.tile_count()
        if stored != self._compared:
            raise LogIntegrityError(f"expected {self._compared} stored tiles for the entries, found {stored}")

    def _check(self, tile: Tile) -> None:
        stored = self._snapshot.tile(tile.level, tile.index)
        if stored != (tile.width, tile.data):
            first = (tile.index * TILE_WIDTH) << (TILE_HEIGHT * tile.level)
            if tile.level == 0 and stored is not None and stored[0] == tile.width:
                # A leaf hash that differs names its entry (damaged entry, or damaged hash).
                for pos in range(tile.width):
                    at = slice(pos * HASH_SIZE, (pos + 1) * HASH_SIZE)
                    if stored[1][at] != tile.data[at]:
                        raise LogIntegrityError(
                            f"entry {first + pos} does not match its stored leaf hash", index=first + pos
                        )
            raise LogIntegrityError(
                f"stored tile {tile.level}/{tile.index} does not match the entries (leaves from {first})",
                index=first,
            )
        self._compared += 1


def _tile(level: int, index: int, bottom: list[bytes]) -> Tile:
    """The tile whose bottom row is ``bottom``, with every row above it that is complete."""
    sha256 = hashlib.sha256
    rows = [bottom]
    for _ in range(TILE_HEIGHT - 1):
        below = rows[-1]
        rows.append([sha256(b"\x01" + below[i] + below[i + 1]).digest() for i in range(0, len(below) - 1, 2)])
    return Tile(level, index, len(bottom), b"".join(b"".join(row) for row in rows))
