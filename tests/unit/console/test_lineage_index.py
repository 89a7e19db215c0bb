"""The lineage explorer's index (proctor.console.lineage_index) and the pages read
through it (proctor.console.lineage_views), on a real log in a temporary directory.

Rules: the index is derived and rebuildable (deleted: rebuilt), never trusted over the
log (a damaged file is rebuilt, a row that lies is caught when the log's event is read
and the whole index is rebuilt), bound to one log, and a page is keyset-paged newest
first.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proctor.console.lineage_index import INDEX_FILE, SYNC_LAG, LineageIndex, Query
from proctor.console.lineage_views import browse, execution_view
from proctor.errors import LogIntegrityError
from proctor.lineage.log import Log
from proctor.lineage.merkle import leaf_hash


def _time(i: int) -> str:
    return f"2026-12-01T10:{i // 60 % 60:02d}:{i % 60:02d}.000Z"


def _runs(log: Log, count: int, *, start: int = 0) -> list[int]:
    """``count`` executions: decision, warrant.issued, execution.started, completed."""
    indices = []
    for n in range(start, start + count):
        who = "alice" if n % 2 == 0 else "bob"
        d = log.append(
            {"v": 1, "type": "decision", "time": _time(4 * n), "principal": who, "decision": "allow"}
        )
        link = {"index": d, "leaf_hash": base64.b64encode(leaf_hash(log.leaf(d))).decode()}
        w = log.append(
            {"v": 1, "type": "warrant.issued", "time": _time(4 * n + 1), "principal": who,
             "warrant": f"wr_{n}", "parent_warrant": f"wr_{n - 1}" if n % 3 == 2 else "",
             "decision_index": d, "parent": link}
        )  # fmt: skip
        link = {"index": w, "leaf_hash": base64.b64encode(leaf_hash(log.leaf(w))).decode()}
        s = log.append(
            {"v": 1, "type": "execution.started", "time": _time(4 * n + 2), "principal": who,
             "execution": f"ex_{n}", "warrant": f"wr_{n}", "parent": link}
        )  # fmt: skip
        link = {"index": s, "leaf_hash": base64.b64encode(leaf_hash(log.leaf(s))).decode()}
        c = log.append(
            {"v": 1, "type": "execution.completed", "time": _time(4 * n + 3), "execution": f"ex_{n}",
             "exit_status": 0, "parent": link}
        )  # fmt: skip
        indices += [d, w, s, c]
    return indices


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    with Log.initialize(tmp_path / "data", origin="test.example/lineage") as opened:
        _runs(opened, 10)
        yield opened


@pytest.fixture
def index(log: Log, tmp_path: Path) -> LineageIndex:
    return LineageIndex(tmp_path / "data" / INDEX_FILE, log)


def _page(log: Log, index: LineageIndex, **asked: Any) -> list[int]:
    paging = {k: asked.pop(k) for k in ("before", "after", "limit") if k in asked}
    listing = browse(log, index, Query(**asked), before=paging.get("before"), after=paging.get("after"),
                     limit=paging.get("limit", 100))  # fmt: skip
    return [r.index for r in listing.rows]


def test_search_by_principal_execution_and_type_reads_each_event_from_the_log(
    log: Log, index: LineageIndex
) -> None:
    # The completed events carry no principal: it is their execution's (read from the log).
    alice = _page(log, index, principal="alice")
    assert len(alice) == 20
    assert alice == sorted(alice, reverse=True)
    assert _page(log, index, execution="ex_3") == [15, 14]
    assert _page(log, index, type="warrant.issued", principal="bob") == [37, 29, 21, 13, 5]
    assert _page(log, index, parent_warrant="wr_1") == [9]
    assert _page(log, index, principal="nobody") == []


def test_time_range_is_a_leaf_range_by_the_logs_clock(log: Log, index: LineageIndex) -> None:
    from proctor.console.lineage_index import time_ms

    since, until = time_ms(_time(8)), time_ms(_time(12))
    assert _page(log, index, since=since, until=until) == [11, 10, 9, 8]


def test_pages_are_keyset_paged_newest_first(log: Log, index: LineageIndex) -> None:
    first = browse(log, index, Query(), before=None, after=None, limit=7)
    assert [r.index for r in first.rows] == list(range(39, 32, -1))
    assert first.newer is None
    assert first.older == 33
    second = browse(log, index, Query(), before=first.older, after=None, limit=7)
    assert [r.index for r in second.rows] == list(range(32, 25, -1))
    back = browse(log, index, Query(), before=None, after=second.rows[0].index, limit=7)
    assert [r.index for r in back.rows] == [r.index for r in first.rows]
    filtered = browse(log, index, Query(principal="bob"), before=None, after=None, limit=3)
    again = browse(log, index, Query(principal="bob"), before=filtered.older, after=None, limit=3)
    assert {r.index for r in filtered.rows}.isdisjoint(r.index for r in again.rows)
    assert max(r.index for r in again.rows) < min(r.index for r in filtered.rows)


def test_index_is_rebuilt_after_deletion(log: Log, index: LineageIndex, tmp_path: Path) -> None:
    assert index.catch_up() == log.size
    index.discard("test")
    (tmp_path / "data" / INDEX_FILE).unlink(missing_ok=True)
    assert index.indexed() == 0
    assert _page(log, index, execution="ex_9") == [39, 38]
    assert index.indexed() == log.size


def test_corrupted_index_file_is_rebuilt_not_trusted(log: Log, tmp_path: Path) -> None:
    path = tmp_path / "data" / INDEX_FILE
    first = LineageIndex(path, log)
    first.catch_up()
    first.close()
    path.write_bytes(b"not a database at all" * 100)
    fresh = LineageIndex(path, log)
    assert _page(log, fresh, execution="ex_2") == [11, 10]
    assert fresh.rebuilds == 1


def test_index_row_that_lies_is_caught_and_the_index_rebuilt(
    log: Log, index: LineageIndex, tmp_path: Path
) -> None:
    index.catch_up()
    with sqlite3.connect(tmp_path / "data" / INDEX_FILE) as db:  # leaf 0 is alice's decision
        db.execute("UPDATE ev SET principal = 'mallory' WHERE leaf = 0")
    with pytest.raises(LogIntegrityError, match="does not match"):
        _page(log, index, principal="mallory")
    assert index.rebuilds == 1
    assert _page(log, index, principal="mallory") == []  # rebuilt from the log
    assert 0 in _page(log, index, principal="alice")


def test_index_of_another_log_is_rebuilt(log: Log, tmp_path: Path) -> None:
    with Log.initialize(tmp_path / "other", origin="other.example/log") as other:
        _runs(other, 3)
        theirs = LineageIndex(tmp_path / "other" / INDEX_FILE, other)
        theirs.catch_up()
        theirs.close()
    path = tmp_path / "data" / INDEX_FILE
    path.write_bytes((tmp_path / "other" / INDEX_FILE).read_bytes())
    index = LineageIndex(path, log)
    assert _page(log, index, execution="ex_9") == [39, 38]
    assert index.rebuilds == 1


def test_index_whose_last_leaf_is_not_the_logs_is_rebuilt(
    log: Log, index: LineageIndex, tmp_path: Path
) -> None:
    index.catch_up()
    with sqlite3.connect(tmp_path / "data" / INDEX_FILE) as db:
        db.execute("UPDATE meta SET v = ? WHERE k = 'last'", ("00" * 32,))
    fresh = LineageIndex(tmp_path / "data" / INDEX_FILE, log)
    assert fresh.indexed() == 0
    assert fresh.rebuilds == 1


def test_far_behind_the_index_catches_up_in_the_background(log: Log, index: LineageIndex) -> None:
    _runs(log, SYNC_LAG // 4 + 10, start=10)
    assert index.refresh() < log.size  # the request does not wait for it
    assert index.wait(120)
    assert index.indexed() == log.size
    assert _page(log, index, execution=f"ex_{SYNC_LAG // 4 + 19}") == [log.size - 1, log.size - 2]


def test_execution_view_follows_parent_links_and_delegation(log: Log, index: LineageIndex) -> None:
    view = execution_view(log, index, "ex_5")  # wr_5 was delegated from wr_4
    assert view is not None
    assert [r.type for r in view.timeline] == [
        "decision",
        "warrant.issued",
        "execution.started",
        "execution.completed",
    ]
    assert view.status == "completed"
    titles = [n.title for n in view.ancestry.nodes]
    assert titles[:2] == ["warrant wr_4", "execution ex_4"]
    assert "warrant wr_5" in titles
    assert [e.label for e in view.ancestry.edges if e.target == "w:wr_5"] == ["delegated"]
    assert execution_view(log, index, "ex_404") is None


def test_index_naming_a_leaf_past_the_logs_end_is_not_shown(
    log: Log, index: LineageIndex, tmp_path: Path
) -> None:
    from proctor.errors import ProofRequestError

    index.catch_up()
    with sqlite3.connect(tmp_path / "data" / INDEX_FILE) as db:
        db.execute("UPDATE ev SET leaf = 999 WHERE leaf = 38")  # ex_9's start, moved past the end
        db.execute("UPDATE meta SET v = '1000' WHERE k = 'next'")
    fresh = LineageIndex(tmp_path / "data" / INDEX_FILE, log)
    assert _page(log, fresh, execution="ex_9") == [39, 38]  # it claimed more than the log has: rebuilt
    assert fresh.rebuilds == 1
    with sqlite3.connect(tmp_path / "data" / INDEX_FILE) as db:
        db.execute("UPDATE ev SET leaf = 999 WHERE leaf = 38")
    with pytest.raises((ProofRequestError, LogIntegrityError)):
        _page(log, fresh, execution="ex_9")
