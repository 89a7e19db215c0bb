"""Fixtures of the governor's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.store.sqlite import SQLiteStore
from proctor.store.state import StateStore


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    """A state store on a fresh SQLite file (with the log's tables, as in a data dir)."""
    SQLiteStore(tmp_path / "p.db", create=True).close()
    s = StateStore(tmp_path / "p.db")
    yield s
    s.close()
