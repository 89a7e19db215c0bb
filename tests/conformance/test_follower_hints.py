"""The trust follower's shortcuts on the way from another node's commit to this node's
streams (``governor/follower.py``): a notified log size is read up to without asking the
store first, yet never trusted past the entries stored; a revoked execution reaches the
streams before its row is read for the running count."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proctor.errors import LogIntegrityError
from proctor.governor.follower import FollowedBroadcaster, PollingSignal, TrustFollower
from proctor.governor.service import Governor


class AnnouncingSignal(PollingSignal):
    """A signal whose latest notification announced ``announced`` (as PgNotifySignal's)."""

    announced = 0


def revocation(execution: str) -> bytes:
    event = {"type": "revocation", "target": {"kind": "execution", "id": execution}}
    return orjson.dumps(event)


class Recorded(FollowedBroadcaster):
    def __init__(self, order: list[str]) -> None:
        super().__init__(PollingSignal())
        self.order = order

    def deliver(self, message: dict[str, Any]) -> None:
        self.order.append(f"stream {message['target']}")
        super().deliver(message)


def follower(
    governor: Governor,
    log: list[bytes],
    *,
    stored: int | None = None,
    signal: PollingSignal | None = None,
    order: list[str] | None = None,
    sizes: list[int] | None = None,
) -> TrustFollower:
    """A follower of ``log`` (the first ``stored`` entries in the store; its size read
    is counted in ``sizes``)."""
    stored = len(log) if stored is None else stored
    order = [] if order is None else order
    sizes = [] if sizes is None else sizes

    def size() -> int:
        sizes.append(stored)
        return stored

    def entries(start: int, end: int) -> list[tuple[int, bytes]]:
        return [(i, log[i]) for i in range(start, min(end, stored))]

    return TrustFollower(
        trust=governor.trust,
        state=governor.state,
        size=size,
        entries=entries,
        revoked_execution=lambda ex: order.append(f"marked {ex}"),
        admin_lock=governor.recorder.admin_lock,
        broadcaster=Recorded(order),
        signal=signal or PollingSignal(),
        start=0,
    )


def test_a_revoked_execution_reaches_the_streams_before_its_row_is_read(governor: Governor) -> None:
    order: list[str] = []
    follower(governor, [revocation("ex_1"), revocation("ex_2")], order=order).poll()
    assert order == ["stream ex_1", "stream ex_2", "marked ex_1", "marked ex_2"]


def test_a_notified_size_is_followed_without_reading_the_stored_size(governor: Governor) -> None:
    signal, sizes, order = AnnouncingSignal(), list[int](), list[str]()
    signal.announced = 2
    f = follower(governor, [revocation("ex_1"), revocation("ex_2")], signal=signal, sizes=sizes, order=order)
    assert f.poll() == 2
    assert sizes == []
    assert order[:2] == ["stream ex_1", "stream ex_2"]


def test_a_notified_size_past_the_stored_entries_is_not_trusted(governor: Governor) -> None:
    # Anyone connected may NOTIFY: a size past the log falls back to the stored size,
    # and that hint is not used again.
    signal, sizes = AnnouncingSignal(), list[int]()
    signal.announced = 10**9
    f = follower(governor, [revocation("ex_1")], signal=signal, sizes=sizes)
    assert f.poll() == 1
    assert sizes == [1]
    assert f.poll() == 1
    assert sizes == [1, 1]  # asked the store again, not the hint


@pytest.mark.parametrize("stored", [1, 2], ids=["entries missing below the stored size", "one missing"])
def test_a_notified_size_does_not_hide_missing_entries(governor: Governor, stored: int) -> None:
    log = [revocation("ex_1"), revocation("ex_2"), revocation("ex_3")]
    signal = AnnouncingSignal()
    signal.announced = 3
    f = follower(governor, log, stored=stored, signal=signal)
    f._size = lambda: 3  # the store says 3, holds fewer
    with pytest.raises(LogIntegrityError, match=f"expected entries up to 3, found up to {stored}"):
        f.poll()
    assert f.applied == 0
