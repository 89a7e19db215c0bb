"""Tiles: the builder's right edge, stored tiles and node lookups agree with the naive tree."""

from __future__ import annotations

import pytest

import naive_merkle as naive
from proctor.errors import LogIntegrityError
from proctor.lineage.merkle import HASH_SIZE, inclusion_path, leaf_hash, range_hash
from proctor.lineage.tiles import TILE_WIDTH, Tile, TreeBuilder, node_location
from proctor.store import base as store_base


class TileNodes:
    def __init__(self, tiles: dict[tuple[int, int], Tile]) -> None:
        self.tiles = tiles

    def node(self, level: int, index: int) -> bytes:
        tl, ti, row, pos = node_location(level, index)
        h = self.tiles[(tl, ti)].hash_at(row, pos)
        if h is None:
            raise KeyError((level, index))
        return h


def build(n: int) -> tuple[TreeBuilder, dict[tuple[int, int], Tile], list[bytes]]:
    b = TreeBuilder()
    tiles: dict[tuple[int, int], Tile] = {}
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    for i, lf in enumerate(leaves):
        b.append(lf)
        if i % 97 == 0:  # take dirty tiles at odd moments, as batches do
            tiles.update({(t.level, t.index): t for t in b.take_dirty()})
    tiles.update({(t.level, t.index): t for t in b.take_dirty()})
    return b, tiles, leaves


@pytest.mark.parametrize("n", [0, 1, 2, 3, 255, 256, 257, 511, 512, 513, 1000, 65535, 65536, 65537])
def test_builder_root_and_stored_nodes_match_naive(n: int) -> None:
    b, tiles, leaves = build(n)
    assert b.size == n
    if n <= 1000:
        assert b.root() == naive.mth(leaves)
    nodes = TileNodes(tiles)
    assert range_hash(nodes, 0, n) == b.root()
    if n:
        for m in {0, n // 2, n - 1}:
            if n <= 1000:
                assert inclusion_path(nodes, m, n) == naive.path(m, leaves)


@pytest.mark.parametrize("n", [1, 255, 256, 300, 65536 + 300])
def test_resume_from_partial_tiles_continues_identically(n: int) -> None:
    b, tiles, _ = build(n)
    partial: list[Tile | None] = []
    level = 0
    while n >> (8 * level):
        nodes = n >> (8 * level)
        partial.append(tiles[(level, nodes // TILE_WIDTH)] if nodes % TILE_WIDTH else None)
        level += 1
    resumed = TreeBuilder.resume(n, partial)
    assert resumed.root() == b.root()
    extra = leaf_hash(b"extra")
    resumed.append(extra)
    b.append(extra)
    assert resumed.root() == b.root()


def test_resume_rejects_a_wrong_partial_tile() -> None:
    _, tiles, _ = build(300)
    with pytest.raises(LogIntegrityError, match="expected partial tile"):
        TreeBuilder.resume(301, [tiles[(0, 1)]])
    with pytest.raises(LogIntegrityError):
        TreeBuilder.resume(300, [None])


def test_tile_shape_is_checked() -> None:
    with pytest.raises(LogIntegrityError, match="expected width"):
        Tile(0, 0, 0, b"")
    with pytest.raises(LogIntegrityError, match="bytes of hashes"):
        Tile(0, 0, 2, b"\x00" * 32)


def test_c2sp_bottom_row_is_the_level_hashes() -> None:
    _, tiles, leaves = build(260)
    assert tiles[(0, 0)].bottom_row() == b"".join(leaves[:256])
    assert tiles[(0, 1)].bottom_row() == b"".join(leaves[256:260])
    assert tiles[(1, 0)].bottom_row() == naive.mth(leaves[:256])


def test_snapshot_restore_rolls_back() -> None:
    b, _, _ = build(10)
    root, state = b.root(), b.snapshot()
    for i in range(300):
        b.append(leaf_hash(bytes([i % 256])))
    b.restore(state)
    assert b.size == 10
    assert b.root() == root
    assert b.take_dirty() == []


def test_stored_tiles_hold_tree_hashes() -> None:
    """The store's record (below the log, so it cannot import merkle) sizes hashes as the tree does."""
    assert store_base.HASH_SIZE == HASH_SIZE
    assert Tile is store_base.Tile
