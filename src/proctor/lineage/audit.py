"""The full audit of a stored log: recompute everything, trust nothing stored.

:func:`check_log` reads every entry, tile and checkpoint through the
:class:`~proctor.store.base.LogStore` interface and reports the first broken index it
can name. :meth:`proctor.lineage.log.Log.check_all` and ``proctor log verify`` use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proctor.errors import EventError, LogIntegrityError
from proctor.lineage.checkpoint import Checkpoint
from proctor.lineage.events import Event
from proctor.lineage.merkle import leaf_hash
from proctor.lineage.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, TreeBuilder
from proctor.store.base import LogStore

__all__ = ["LogReport", "check_log"]


@dataclass(frozen=True)
class LogReport:
    """The result of :meth:`Log.check_all`.

    Attributes:
        ok: whether every check passed.
        size: the stored tree size.
        checkpoints: how many stored checkpoints were verified.
        index: the first broken index, when one can be named.
        error: what was found broken.
    """

    ok: bool
    size: int
    checkpoints: int
    index: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object."""
        out: dict[str, Any] = {"ok": self.ok, "size": self.size, "checkpoints": self.checkpoints}
        if not self.ok:
            out["index"] = self.index
            out["error"] = self.error
        return out


def check_log(store: LogStore, open_cp: Callable[[str], Checkpoint]) -> LogReport:
    """Audit ``store``; ``open_cp`` verifies a signed checkpoint (raising
    :class:`~proctor.errors.LogIntegrityError`) and returns its body.

    Steps:
      1. Every stored checkpoint verifies under the log's key, names this log's
         origin, and is no larger than the stored tree.
      2. Entries ``0 … size-1`` are all present, each a canonical event whose
         parent link names an earlier entry by its true leaf hash.
      3. Each entry's leaf hash equals the stored hash; every stored tile equals
         the one recomputed from the entries.
      4. The recomputed root at every checkpoint's size equals that checkpoint's
         root (so all checkpoints are mutually consistent).
    """
    size = store.tree_size()
    n_cps = 0
    # Step 1
    cps: dict[int, bytes] = {}
    for stored_size, note in store.checkpoints():
        try:
            cp = open_cp(note)
        except LogIntegrityError as e:
            return LogReport(False, size, n_cps, None, f"checkpoint of size {stored_size}: {e}")
        if cp.size != stored_size or cp.size > size:
            return LogReport(
                False,
                size,
                n_cps,
                min(cp.size, size),
                f"checkpoint of size {cp.size} (stored as {stored_size}) but the tree has {size} entries",
            )
        cps[cp.size] = cp.root_hash
        n_cps += 1
    if not cps:
        return LogReport(False, size, 0, None, "no checkpoint is stored")
    builder = TreeBuilder()
    expected = 0
    all_leaves = bytearray()
    stored_leaf_tile: Tile | None = None
    first_bad: tuple[int, str] | None = None

    def note_bad(index: int, message: str) -> None:
        nonlocal first_bad
        if first_bad is None or index < first_bad[0]:
            first_bad = (index, message)

    if 0 in cps and cps[0] != builder.root():
        note_bad(0, "checkpoint of size 0 does not have the empty root")
    for index, raw in store.entries(0, size):
        # Step 2
        if index != expected:
            note_bad(expected, f"entry {expected} is missing")
            break
        h = leaf_hash(raw)
        try:
            ev = Event.from_bytes(raw, strict=True)
            link = ev.parent
            if link is not None:
                if link.index >= index:
                    raise EventError(f"parent {link.index} is not earlier")
                parent = bytes(all_leaves[link.index * 32 : link.index * 32 + 32])
                if parent != link.leaf_hash:
                    raise EventError(f"parent {link.index} has another leaf hash")
        except EventError as e:
            note_bad(index, f"entry {index} is not a valid event: {e}")
            break
        # Step 3: against the stored leaf hash.
        tile_index = index // TILE_WIDTH
        if stored_leaf_tile is None or stored_leaf_tile.index != tile_index:
            stored_leaf_tile = store.tile(0, tile_index)
        stored = None if stored_leaf_tile is None else stored_leaf_tile.hash_at(0, index % TILE_WIDTH)
        if stored != h:
            note_bad(index, f"entry {index} does not match its stored leaf hash")
            break
        all_leaves += h
        builder.append(h)
        expected += 1
        # Step 4
        root = cps.get(expected)
        if root is not None and root != builder.root():
            note_bad(index, f"the root at checkpoint size {expected} does not match")
            break
    if first_bad is None and expected < size:
        note_bad(expected, f"entry {expected} is missing")
    if first_bad is None:
        # Step 3: every stored tile must equal the recomputed one.
        recomputed = {(t.level, t.index): t for t in builder.take_dirty()}
        for stored_tile in store.tiles():
            mine = recomputed.pop((stored_tile.level, stored_tile.index), None)
            if mine is None or mine != stored_tile:
                first_leaf = (stored_tile.index * TILE_WIDTH) << (TILE_HEIGHT * stored_tile.level)
                note_bad(
                    min(first_leaf, size),
                    f"stored tile {stored_tile.level}/{stored_tile.index} does not match the entries",
                )
                break
        if first_bad is None and recomputed:
            level, idx = min(recomputed)
            note_bad((idx * TILE_WIDTH) << (TILE_HEIGHT * level), f"tile {level}/{idx} is missing")
    if first_bad is not None:
        return LogReport(False, size, n_cps, first_bad[0], first_bad[1])
    return LogReport(True, size, n_cps)
