"""Per-principal limits on concurrent work, so that one principal's requests wait
behind each other instead of taking every worker from everyone else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["PerPrincipal"]


class PerPrincipal:
    """At most ``limit`` concurrent slots per principal, on one event loop."""

    def __init__(self, limit: int) -> None:
        """Args:
        limit: slots per principal (at least 1).
        """
        self._limit = max(1, limit)
        # principal → (its semaphore, how many hold or wait for it)
        self._gates: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, principal: str) -> AsyncIterator[None]:
        """Hold one of ``principal``'s slots for the ``async with`` block."""
        gate, users = self._gates.get(principal, (None, 0))
        if gate is None:
            gate = asyncio.Semaphore(self._limit)
        self._gates[principal] = (gate, users + 1)
        try:
            async with gate:
                yield
        finally:
            gate, users = self._gates[principal]
            if users == 1:
                del self._gates[principal]
            else:
                self._gates[principal] = (gate, users - 1)
