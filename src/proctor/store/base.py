"""The storage interface of the lineage log.

A store keeps three things for the log, and nothing about what the events mean:
entries (canonical event bytes by index), hash tiles (:class:`Tile`, the stored
record; their geometry is :mod:`proctor.lineage.tiles`) and signed checkpoints. Every
implementation passes the same test suite (``tests/unit/store``).

Contract:
- :meth:`LogStore.append` is all-or-nothing and durable when it returns: the entries,
  the tiles and the new tree size commit in one transaction. It fails with
  :class:`~proctor.errors.StoreConflictError` if the stored size is not
  ``first_index`` (someone else appended), changing nothing.
- Checkpoints may be stored without waiting for durability: a lost checkpoint is
  re-signed from durable entries, and Ed25519 signing is deterministic, so it comes
  back byte-identical.
- Every driver exception is wrapped in :class:`~proctor.errors.StoreError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from proctor.errors import LogIntegrityError

__all__ = ["HASH_SIZE", "TILE_HEIGHT", "TILE_WIDTH", "Tile", "LogStore"]

HASH_SIZE = 32
"""Bytes per stored hash: SHA-256, as :data:`proctor.lineage.merkle.HASH_SIZE` (a test
holds them equal; the store sits below the log, so it does not import it)."""
TILE_HEIGHT = 8
"""Rows per tile (C2SP tlog-tiles)."""
TILE_WIDTH = 1 << TILE_HEIGHT
"""Hashes in the bottom row of a full tile (C2SP tlog-tiles)."""


def _row_offsets(width: int) -> list[int]:
    offsets, total = [], 0
    for r in range(TILE_HEIGHT):
        offsets.append(total)
        total += width >> r
    offsets.append(total)
    return offsets


# Row offsets for every width, computed once: tiles are read on every proof.
_OFFSETS = [_row_offsets(w) for w in range(TILE_WIDTH + 1)]


@dataclass(frozen=True, slots=True)
class Tile:
    """One stored tile: its coordinates, width and every row's hashes, concatenated.

    Its shape is checked when it is made, so a malformed row read back from a store
    raises :class:`~proctor.errors.LogIntegrityError` instead of reaching a proof.
    """

    level: int
    index: int
    width: int
    data: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.width <= TILE_WIDTH:
            raise LogIntegrityError(
                f"tile {self.level}/{self.index}: expected width 1..{TILE_WIDTH}, found {self.width}"
            )
        expected = _OFFSETS[self.width][-1] * HASH_SIZE
        if len(self.data) != expected:
            raise LogIntegrityError(
                f"tile {self.level}/{self.index} of width {self.width}: expected "
                f"{expected} bytes of hashes, found {len(self.data)}"
            )

    def hash_at(self, row: int, pos: int) -> bytes | None:
        """The hash at ``pos`` of row ``row``, or ``None`` if not yet complete."""
        if pos >= self.width >> row:
            return None
        start = (_OFFSETS[self.width][row] + pos) * HASH_SIZE
        return self.data[start : start + HASH_SIZE]

    def bottom_row(self) -> bytes:
        """The C2SP tlog-tiles bytes of this tile: its bottom row only."""
        return self.data[: self.width * HASH_SIZE]


class LogStore(Protocol):
    """Persistence for one lineage log."""

    def tree_size(self) -> int:
        """The number of committed entries."""
        ...

    def append(
        self,
        first_index: int,
        entries: Sequence[bytes],
        tiles: Sequence[Tile],
        *,
        also: Sequence[Callable[[Any], None]] = (),
        checkpoint: tuple[int, str] | None = None,
    ) -> None:
        """Commit ``entries`` at ``first_index…`` with the changed ``tiles``, durably.

        ``also`` are writes to run with the store's connection inside the same
        transaction (derived state rows); if one raises, nothing commits.
        ``checkpoint`` is the signed checkpoint ``(size, note)`` of the tree these entries
        make, stored in the same transaction (idempotent, as :meth:`put_checkpoint`).
        """
        ...

    def entry(self, index: int) -> bytes | None:
        """The stored bytes of entry ``index``, or ``None`` if there is none."""
        ...

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """Stored ``(index, bytes)`` pairs with ``start <= index < end``, in index order."""
        ...

    def tile(self, level: int, index: int) -> Tile | None:
        """The stored tile at these coordinates, or ``None``."""
        ...

    def tiles(self) -> Iterator[Tile]:
        """Every stored tile, ordered by level then index."""
        ...

    def put_checkpoint(self, size: int, note: str) -> None:
        """Store the signed checkpoint for tree size ``size`` (idempotent)."""
        ...

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The stored checkpoint with the largest size, or ``None``."""
        ...

    def checkpoint_at(self, size: int) -> str | None:
        """The stored checkpoint for exactly ``size``, or ``None``."""
        ...

    def checkpoints(self) -> Iterator[tuple[int, str]]:
        """Every stored checkpoint, by increasing size."""
        ...

    def close(self) -> None:
        """Release every connection."""
        ...
