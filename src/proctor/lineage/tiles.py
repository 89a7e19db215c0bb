"""Hash tiles: how the log keeps interior hashes so that proofs never rehash the tree.

Coordinates follow C2SP tlog-tiles: tiles are 8 levels tall and 256 hashes wide;
tile ``(L, N)`` has as its bottom row the level-``8L`` tree nodes
``[256 N, 256 N + 256)``. A C2SP tile holds only that bottom row. proctor stores the
seven rows above it too (128, 64, …, 2 hashes) so that any complete aligned subtree
is one slice of one tile, read without hashing (ADR 0002). :func:`c2sp_tile` gives the
standard bottom-row bytes for serving tiles.

A partial tile (width < 256) lives at the right edge of a level; it is rewritten as
it grows and its rows hold only complete nodes. This module is pure: the
:class:`TreeBuilder` is the in-memory right edge of the tree, and the log persists
the tiles it reports dirty. A :class:`Tile` itself, the stored record that checks its
own shape, is defined by the store (:mod:`proctor.store.base`) and re-exported here.
"""

from __future__ import annotations

from proctor.errors import LogIntegrityError
from proctor.lineage.merkle import EMPTY_ROOT, node_hash

# The stored record and its dimensions belong to the store, which sits below the log
# (it persists tiles and knows nothing of hashing); they are re-exported here.
from proctor.store.base import TILE_HEIGHT, TILE_WIDTH, Tile

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Tile",
    "node_location",
    "TreeBuilder",
]


def node_location(level: int, index: int) -> tuple[int, int, int, int]:
    """Where tree node (``level``, ``index``) lives: (tile level, tile index, row, position)."""
    tile_level, row = divmod(level, TILE_HEIGHT)
    per_tile = TILE_WIDTH >> row
    return tile_level, index // per_tile, row, index % per_tile


class TreeBuilder:
    """The right edge of the tree: the partial tile of every tile level.

    Appending a leaf hash updates the partial tiles and records which tiles changed;
    :meth:`take_dirty` hands them over for storing. :meth:`snapshot` and
    :meth:`restore` let a writer roll back a batch that failed to commit.
    """

    def __init__(self) -> None:
        self.size = 0
        # _rows[L][r] is row r of the partial tile at tile level L.
        self._rows: list[list[list[bytes]]] = []
        # A complete tile is stored when it completes; None marks the partial tile
        # of a level, built from the rows when taken.
        self._dirty: dict[tuple[int, int], Tile | None] = {}

    @classmethod
    def resume(cls, size: int, partial: list[Tile | None]) -> TreeBuilder:
        """Rebuild the right edge of a tree of ``size`` leaves from its partial tiles.

        Args:
            size: the number of leaves.
            partial: for each tile level, the stored partial tile (``None`` where the
                level has no partial tile).

        Raises:
            LogIntegrityError: a tile is missing or has the wrong width for ``size``.
        """
        builder = cls()
        builder.size = size
        level = 0
        while size >> (TILE_HEIGHT * level):
            nodes = size >> (TILE_HEIGHT * level)
            width = nodes % TILE_WIDTH
            tile = partial[level] if level < len(partial) else None
            rows: list[list[bytes]] = [[] for _ in range(TILE_HEIGHT)]
            if width:
                if tile is None or tile.width != width or tile.index != nodes // TILE_WIDTH:
                    found = "none" if tile is None else f"{tile.index} of width {tile.width}"
                    raise LogIntegrityError(
                        f"tree of size {size}: expected partial tile {level}/"
                        f"{nodes // TILE_WIDTH} of width {width}, found {found}"
                    )
                for r in range(TILE_HEIGHT):
                    rows[r] = [tile.hash_at(r, p) or b"" for p in range(width >> r)]
                # The upper rows must follow from the bottom row, or a tampered
                # bottom row would live on unseen beside the right edge.
                for r in range(1, TILE_HEIGHT):
                    below = rows[r - 1]
                    for p, h in enumerate(rows[r]):
                        if node_hash(below[2 * p], below[2 * p + 1]) != h:
                            first = (tile.index * TILE_WIDTH + (p << r)) << (TILE_HEIGHT * level)
                            raise LogIntegrityError(
                                f"partial tile {level}/{tile.index} is not internally consistent "
                                f"at row {r}, position {p}",
                                index=first,
                            )
            builder._rows.append(rows)
            level += 1
        return builder

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash at index ``size``."""
        self._push(0, leaf)
        self.size += 1

    def _push(self, level: int, h: bytes) -> None:
        while True:
            if level == len(self._rows):
                self._rows.append([[] for _ in range(TILE_HEIGHT)])
            rows = self._rows[level]
            rows[0].append(h)
            r = 0
            while len(rows[r]) % 2 == 0 and r < TILE_HEIGHT - 1:
                rows[r + 1].append(node_hash(rows[r][-2], rows[r][-1]))
                r += 1
            tile_index = (self.size >> (TILE_HEIGHT * level)) // TILE_WIDTH
            if len(rows[0]) < TILE_WIDTH:
                # Built once per batch, in take_dirty, not once per leaf.
                self._dirty[(level, tile_index)] = None
                return
            # The tile is complete: keep it whole and carry its root one level up.
            self._dirty[(level, tile_index)] = self._tile(level, tile_index)
            top = node_hash(rows[TILE_HEIGHT - 1][0], rows[TILE_HEIGHT - 1][1])
            self._rows[level] = [[] for _ in range(TILE_HEIGHT)]
            level += 1
            h = top

    def _tile(self, level: int, index: int) -> Tile:
        rows = self._rows[level]
        return Tile(level, index, len(rows[0]), b"".join(b"".join(row) for row in rows))

    def take_dirty(self) -> list[Tile]:
        """The tiles changed since the last call (the latest version of each)."""
        dirty = [
            tile if tile is not None else self._tile(level, index)
            for (level, index), tile in self._dirty.items()
        ]
        self._dirty = {}
        return dirty

    def root(self) -> bytes:
        """The root of the current tree (RFC 9162 §2.1.1), from the right edge."""
        # The maximal complete subtrees, highest (leftmost) first, are the odd-length
        # rows read from the top tile level down; fold them from the right.
        parts: list[bytes] = []
        for rows in reversed(self._rows):
            for row in reversed(rows):
                if len(row) % 2:
                    parts.append(row[-1])
        if not parts:
            return EMPTY_ROOT
        acc = parts[-1]
        for h in reversed(parts[:-1]):
            acc = node_hash(h, acc)
        return acc

    def snapshot(self) -> tuple[int, list[list[list[bytes]]]]:
        """A copy of the state, for :meth:`restore` after a failed commit."""
        return self.size, [[list(row) for row in rows] for rows in self._rows]

    def restore(self, state: tuple[int, list[list[list[bytes]]]]) -> None:
        """Return to a :meth:`snapshot`, dropping dirty tiles."""
        self.size, rows = state
        self._rows = [[list(row) for row in level] for level in rows]
        self._dirty = {}
