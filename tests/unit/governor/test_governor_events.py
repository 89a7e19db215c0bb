"""Timestamps of governor events."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from proctor.governor._events import rfc3339


def test_rfc3339_matches_datetime_formatting_to_the_millisecond() -> None:
    rng = random.Random(7)
    times = [rng.uniform(0, 4e9) for _ in range(20_000)] + [1795680000.0, 1795680000.999, 1795680001.0]
    for t in sorted(times) + times:  # in order (cache hits) and shuffled (misses)
        dt = datetime.fromtimestamp(int(t * 1000) / 1000, UTC)
        assert rfc3339(t) == dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
