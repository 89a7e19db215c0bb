"""The storage interface of the lineage log.

A store keeps three things for the log, and nothing about what the events mean:
entries (canonical event bytes by index), hash tiles (see
:mod:`proctor.lineage.tiles`) and signed checkpoints. Every implementation passes the
same test suite (``tests/unit/store``).

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
from typing import Any, Protocol

from proctor.lineage.tiles import Tile

__all__ = ["LogStore"]


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
    ) -> None:
        """Commit ``entries`` at ``first_index…`` with the changed ``tiles``, durably.

        ``also`` are writes to run with the store's connection inside the same
        transaction (derived state rows); if one raises, nothing commits.
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
