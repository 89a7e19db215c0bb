"""Fixtures of the integration tests (shared with the conformance suite)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import pytest

from gov_fixtures import gov_data, governor
from proc_support import kill_marked
from proctor.enforcement.containment import Contained

__all__ = ["closing", "gov_data", "governor", "marker"]


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique argv marker; everything carrying it is killed at teardown."""
    tag = f"proctor-test-{os.getpid()}-{time.monotonic_ns()}"
    yield tag
    kill_marked(tag)


@pytest.fixture
def closing() -> Iterator[list[Contained]]:
    """Contained trees to close (kill and clean up) at teardown."""
    trees: list[Contained] = []
    yield trees
    for tree in trees:
        with contextlib.suppress(Exception):
            tree.close()
