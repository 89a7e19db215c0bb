"""The lineage log: appends, proofs, and every fail-closed rule, on a real SQLite file."""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from proctor.errors import (
    ConfigError,
    EventError,
    LogAppendError,
    LogClosedError,
    LogIntegrityError,
    LogLockedError,
    ProofRequestError,
    StoreError,
)
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.log import Log
from proctor.lineage.merkle import leaf_hash
from proctor.lineage.proofs import ConsistencyProof, InclusionProof
from proctor.lineage.tiles import Tile
from proctor.store.sqlite import SQLiteStore

ORIGIN = "test.example/log"


def ev(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "type": "decision", "time": "2026-11-26T06:00:00Z", "n": i, **extra}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    Log.initialize(tmp_path / "d", origin=ORIGIN).close()
    return tmp_path / "d"


@pytest.fixture
def log(data: Path) -> Iterator[Log]:
    with Log.open(data) as lg:
        yield lg


def db(data: Path) -> sqlite3.Connection:
    return sqlite3.connect(data / "proctor.db", isolation_level=None)


def test_initialize_signs_the_empty_tree(log: Log) -> None:
    cp = open_checkpoint(log.checkpoint(), log.verifier)
    assert (cp.origin, cp.size) == (ORIGIN, 0)
    assert log.verifier_key().startswith(ORIGIN + "+")


def test_initialize_refuses_an_initialised_directory(data: Path) -> None:
    with pytest.raises(ConfigError, match="already initialised"):
        Log.initialize(data)


def test_open_refuses_an_uninitialised_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="proctor init"):
        Log.open(tmp_path)


def test_appends_get_consecutive_indices_and_survive_reopen(data: Path) -> None:
    with Log.open(data) as log:
        assert log.append(ev(0)) == 0
        assert log.append_many([ev(1), ev(2), ev(3)]) == [1, 2, 3]
        assert log.append_many([]) == []
        note = log.checkpoint()
    with Log.open(data) as log:
        assert log.size == 4
        assert log.checkpoint() == note
        assert log.leaf(2) == b'{"n":2,"time":"2026-11-26T06:00:00Z","type":"decision","v":1}'
        assert log.append(ev(4)) == 4


@pytest.mark.parametrize("size", [1, 2, 3, 255, 256, 257, 600])
def test_every_proof_verifies_against_the_signed_checkpoint(data: Path, size: int) -> None:
    with Log.open(data) as log:
        log.append_many([ev(i) for i in range(size // 2)])
        old_note = log.checkpoint()
        log.append_many([ev(i) for i in range(size // 2, size)])
        cp = open_checkpoint(log.checkpoint(), log.verifier)
        old = open_checkpoint(old_note, log.verifier)
        assert cp.size == size
        for i in range(size):
            proof = InclusionProof.from_json(log.inclusion_proof(i))
            proof.verify(leaf_hash(log.leaf(i)), cp.root_hash)
        ConsistencyProof.from_json(log.consistency_proof(old.size)).verify(old.root_hash, cp.root_hash)
        # Proofs against any earlier size verify against that size's root.
        for t in {1, size // 3 + 1, size}:
            for i in {0, t - 1}:
                InclusionProof.from_json(log.inclusion_proof(i, t)).verify(
                    leaf_hash(log.leaf(i)), log.root(t)
                )


def test_proof_requests_outside_the_tree_are_refused(log: Log) -> None:
    log.append_many([ev(i) for i in range(5)])
    for call in (
        lambda: log.inclusion_proof(5),
        lambda: log.inclusion_proof(0, 6),
        lambda: log.inclusion_proof(-1),
        lambda: log.inclusion_proof(0, 0),
        lambda: log.consistency_proof(6),
        lambda: log.consistency_proof(3, 2),
        lambda: log.leaf(5),
    ):
        with pytest.raises(ProofRequestError):
            call()


def test_parent_links_are_checked_on_append(log: Log) -> None:
    first = log.append(ev(0))
    good = {"index": first, "leaf_hash": base64.b64encode(log.leaf_hash(first)).decode()}
    assert log.append(ev(1, parent=good)) == 1
    # Within one batch, a later event may name an earlier one of the same batch.
    h = base64.b64encode(leaf_hash(log.leaf(1))).decode()
    batch = [ev(2), ev(3, parent={"index": 2, "leaf_hash": ""})]
    from proctor.lineage.events import Event

    e2 = Event.from_dict(batch[0])
    batch[1]["parent"]["leaf_hash"] = base64.b64encode(leaf_hash(e2.raw)).decode()
    assert log.append_many(batch) == [2, 3]
    assert h  # used
    log.verify_all()


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (b"not json", "invalid JSON"),
        (b'{"v":1,"type":"decision","time":"2026-11-26T06:00:00Z","x":NaN}', "invalid JSON"),
        (ev(x=float("inf")), "finite number"),
        (ev(x=float("nan")), "finite number"),
        (ev(x=2**60), "integer within"),
        (ev(x="y" * 70_000), "at most 65536 bytes"),
        ({"v": "1", "type": "decision", "time": "2026-11-26T06:00:00Z"}, "v: expected"),
        (ev(type="nonsense"), "type: expected"),
        (
            ev(parent={"index": 99, "leaf_hash": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}),
            "earlier entry",
        ),
        (ev(parent={"index": 0, "leaf_hash": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}), "leaf hash"),
        ([1, 2], "expected an event object"),
    ],
    ids=[
        "non-json",
        "nan-literal",
        "inf",
        "nan",
        "big-int",
        "oversize",
        "wrong-type-version",
        "unknown-type",
        "parent-in-future",
        "parent-wrong-hash",
        "not-an-object",
    ],
)
def test_bad_input_is_refused_and_leaves_the_log_untouched(log: Log, bad: Any, expected: str) -> None:
    log.append_many([ev(0), ev(1)])
    note, size = log.checkpoint(), log.size
    with pytest.raises(EventError, match=expected):
        log.append(bad)
    with pytest.raises(EventError):
        log.append_many([ev(7), bad, ev(8)])  # one bad event rejects the whole call
    assert (log.size, log.checkpoint()) == (size, note)
    assert log.check_all().ok
    assert log.append(ev(2)) == 2


class FlakyStore(SQLiteStore):
    """A real SQLite store whose appends can be made to fail (and its reads, after)."""

    fail_append = False
    fail_reads = False
    land_then_fail = False  # the commit is durable, but its caller hears of a failure
    calls: list[str]

    def append(
        self,
        first_index: int,
        entries: Sequence[bytes],
        tiles: Sequence[Tile],
        *,
        also: Sequence[Callable[[Any], None]] = (),
        checkpoint: tuple[int, str] | None = None,
    ) -> None:
        with_checkpoint = "" if checkpoint is None else f" with checkpoint {checkpoint[0]}"
        self.calls.append(f"append {first_index}+{len(entries)}{with_checkpoint}")
        if self.fail_append:
            raise StoreError("disk full (simulated)")
        super().append(first_index, entries, tiles, also=also, checkpoint=checkpoint)
        if self.land_then_fail:
            raise StoreError("connection lost after COMMIT was sent (simulated)")

    def put_checkpoint(self, size: int, note: str) -> None:
        self.calls.append(f"checkpoint {size}")
        super().put_checkpoint(size, note)

    def tree_size(self) -> int:
        if self.fail_reads:
            self.calls.append("read refused")
            raise StoreError("database unreachable (simulated)")
        return super().tree_size()

    def wait_for_refused_read(self) -> None:
        """Wait until the writer's reload after a failed commit has been refused (the
        caller hears of the failure before the writer reloads)."""
        deadline = time.monotonic() + 30
        while "read refused" not in self.calls and time.monotonic() < deadline:
            time.sleep(0.005)


@pytest.fixture
def flaky(data: Path) -> Iterator[tuple[Log, FlakyStore]]:
    from proctor.datadir import DataDir

    dd = DataDir.open(data)
    store = FlakyStore(dd.db_path)
    store.calls = []
    log = Log(store, dd.log_signer(), lock_path=dd.lock_path)
    yield log, store
    log.close()


def test_failed_commit_acknowledges_nothing(flaky: tuple[Log, FlakyStore]) -> None:
    log, store = flaky
    log.append_many([ev(0), ev(1)])
    note = log.checkpoint()
    store.fail_append = True
    with pytest.raises(LogAppendError, match="not committed"):
        log.append(ev(2))
    assert log.size == 2
    assert log.checkpoint() == note
    store.fail_append = False
    assert log.append(ev(3)) == 2
    assert log.check_all().ok


def test_a_store_unreachable_after_a_failed_commit_is_retried_not_given_up(
    flaky: tuple[Log, FlakyStore],
) -> None:
    # The database went away: the commit and the reload after it fail. When it is back
    # the log goes on from the stored state, without a restart.
    log, store = flaky
    log.append(ev(0))
    store.fail_append = store.fail_reads = True
    with pytest.raises(LogAppendError):
        log.append(ev(1))
    store.wait_for_refused_read()
    store.fail_append = store.fail_reads = False
    assert log.append(ev(2)) == 1
    assert log.check_all().ok


def test_a_commit_that_landed_unacknowledged_is_never_overwritten(flaky: tuple[Log, FlakyStore]) -> None:
    log, store = flaky
    log.append(ev(0))
    store.land_then_fail = store.fail_reads = True
    with pytest.raises(LogAppendError):
        log.append(ev(1))  # durable at 1, but its caller was told it failed
    store.wait_for_refused_read()
    store.land_then_fail = store.fail_reads = False
    # The writer still thinks the size is 1: the store's size check refuses that index,
    # the writer reloads, and the next append goes after the landed entry.
    with pytest.raises(LogAppendError, match="expected the stored tree size to be 1, found 2"):
        log.append(ev(2))
    assert log.append(ev(3)) == 2
    assert log.check_all().ok


def test_a_tree_that_contradicts_its_checkpoint_after_a_failed_commit_refuses_all_appends(
    flaky: tuple[Log, FlakyStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store = flaky
    log.append(ev(0))
    store.fail_append = True
    monkeypatch.setattr(store, "latest_checkpoint", lambda: (1, "not a signed note\n"))
    with pytest.raises(LogAppendError):
        log.append(ev(1))
    # The caller hears of the failure before the writer reloads: wait for the reload
    # to have read the contradicting checkpoint before the store is mended.
    deadline = time.monotonic() + 30
    while log.writer_error is None and time.monotonic() < deadline:
        time.sleep(0.005)
    store.fail_append = False
    monkeypatch.undo()
    with pytest.raises(LogAppendError, match="state unknown"):
        log.append(ev(2))
    # Every refusal raises the one failure: it keeps no traceback of each (frames and
    # what they hold, for as long as the process lives).
    for i in range(200):
        with pytest.raises(LogAppendError) as refused:
            log.append(ev(3 + i))
    depth, tb = 0, refused.value.__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth < 20, f"the failure carries {depth} traceback entries"


def test_checkpoint_is_stored_in_its_entries_transaction(flaky: tuple[Log, FlakyStore]) -> None:
    log, store = flaky
    log.append_many([ev(0), ev(1), ev(2)])
    log.append(ev(3))
    assert store.calls[-2:] == ["append 0+3 with checkpoint 3", "append 3+1 with checkpoint 4"]
    assert [size for size, _ in store.checkpoints()][-2:] == [3, 4]


def test_a_failed_commit_stores_no_checkpoint_and_hands_none_out(flaky: tuple[Log, FlakyStore]) -> None:
    log, store = flaky
    log.append(ev(0))
    before = list(store.checkpoints())
    note = log.checkpoint()
    store.fail_append = True
    with pytest.raises(LogAppendError):
        log.append(ev(1))
    assert list(store.checkpoints()) == before
    assert log.checkpoint() == note


def test_second_writer_is_locked_out(data: Path) -> None:
    with Log.open(data) as a, Log.open(data) as b:
        a.append(ev(0))
        with pytest.raises(LogLockedError, match="another process"):
            b.append(ev(1))
        # Reading needs no lock.
        assert b.size == 1
        assert b.checkpoint() == a.checkpoint()


def test_never_sign_over_a_tree_that_contradicts_the_checkpoint(data: Path) -> None:
    with Log.open(data) as log:
        log.append_many([ev(i) for i in range(10)])
        note = log.checkpoint()
    with db(data) as conn:
        (blob,) = conn.execute("SELECT hashes FROM tiles WHERE level = 0 AND idx = 0").fetchone()
        conn.execute("UPDATE tiles SET hashes = ? WHERE level = 0 AND idx = 0", (b"\x00" + blob[1:],))
    with Log.open(data) as log:
        with pytest.raises(LogIntegrityError, match="not internally consistent"):
            log.append(ev(10))
        assert log.checkpoint() == note
    # A consistently rewritten tile (as if other events had been logged) contradicts
    # the signed root instead.
    from proctor.lineage.tiles import TreeBuilder

    forged = TreeBuilder()
    for i in range(10):
        forged.append(leaf_hash(b"forged %d" % i))
    (tile,) = forged.take_dirty()
    with db(data) as conn:
        conn.execute("UPDATE tiles SET hashes = ? WHERE level = 0 AND idx = 0", (tile.data,))
    with Log.open(data) as log:
        with pytest.raises(LogIntegrityError, match="signed checkpoint says"):
            log.append(ev(10))
        assert log.checkpoint() == note


def test_entries_lost_after_a_signed_checkpoint_refuse_appends(data: Path) -> None:
    with Log.open(data) as log:
        log.append_many([ev(i) for i in range(10)])
    with db(data) as conn:
        conn.execute("DELETE FROM entries WHERE idx >= 8")
        conn.execute("UPDATE meta SET value = '8' WHERE key = 'tree_size'")
    with Log.open(data) as log, pytest.raises(LogIntegrityError, match="only 8 entries"):
        log.append(ev(10))


def test_lost_checkpoint_is_resigned_byte_identically(data: Path) -> None:
    with Log.open(data) as log:
        log.append_many([ev(i) for i in range(10)])
        note = log.checkpoint()
    with db(data) as conn:
        conn.execute("DELETE FROM checkpoints WHERE size = 10")
    with Log.open(data) as log:
        log.append_many([])  # nothing to write
        assert log.checkpoint() != note  # readers see the older checkpoint...
        log.append(ev(10))
    with db(data) as conn:
        assert conn.execute("SELECT note FROM checkpoints WHERE size = 10").fetchone()[0] == note


def test_concurrent_appends_are_group_committed(log: Log) -> None:
    results: list[list[int]] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        mine = [log.append(ev(w * 1000 + i)) for i in range(150)]
        with lock:
            results.append(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    indices = sorted(i for r in results for i in r)
    assert indices == list(range(1200))
    for r in results:
        assert r == sorted(r)
    report = log.verify_all()
    assert report.size == 1200
    assert report.checkpoints < 1200  # several appends shared a commit and a signature


def test_closed_log_refuses_work(data: Path) -> None:
    log = Log.open(data)
    log.close()
    log.close()  # idempotent
    with pytest.raises(LogClosedError):
        log.append(ev(0))
    with pytest.raises(LogClosedError):
        log.checkpoint()


# -- submit: asynchronous appends with side writes ------------------------------


def _side_table(data: Path) -> None:
    with db(data) as c:
        c.execute("CREATE TABLE side (k TEXT PRIMARY KEY)")


def test_submit_notifies_once_resolved_and_commits_side_writes(data: Path, log: Log) -> None:
    _side_table(data)
    notified = threading.Event()
    pending = log.submit(
        [ev(1), ev(2)],
        side=[lambda conn, index: conn.execute("INSERT INTO side VALUES (?)", (f"a-{index}",))],
        notify=lambda appended: notified.set(),
    )
    assert notified.wait(10)
    assert pending.result() == [0, 1]
    assert db(data).execute("SELECT k FROM side").fetchall() == [("a-0",)]
    assert log.size == 2
    assert open_checkpoint(log.checkpoint(), log.verifier).size == 2


def test_submit_then_may_add_side_writes_bound_to_the_index(data: Path, log: Log) -> None:
    _side_table(data)
    side: list[Callable[[Any, int], None]] = []

    def then(index: int, leaf: bytes) -> dict[str, Any]:
        side.append(lambda conn, index: conn.execute("INSERT INTO side VALUES (?)", (f"after-{index}",)))
        return ev(9, parent={"index": index, "leaf_hash": base64.b64encode(leaf).decode()})

    assert log.submit([ev(1)], then=then, side=side).wait() == [0, 1]
    assert db(data).execute("SELECT k FROM side").fetchall() == [("after-0",)]


def test_a_failing_side_write_fails_the_batch_and_commits_nothing(data: Path, log: Log) -> None:
    _side_table(data)
    log.append(ev(0))
    note = log.checkpoint()

    def broken(conn: Any, index: int) -> None:
        conn.execute("INSERT INTO side VALUES ('x')")
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    pending = log.submit([ev(1)], side=[broken])
    with pytest.raises(LogAppendError, match="not committed"):
        pending.wait()
    assert (log.size, log.checkpoint()) == (1, note)
    assert db(data).execute("SELECT count(*) FROM side").fetchone() == (0,)
    assert log.append(ev(2)) == 1  # the log goes on
    assert log.check_all().ok


def test_a_side_write_alone_commits_without_a_new_checkpoint(data: Path, log: Log) -> None:
    _side_table(data)
    log.append(ev(0))
    rows = db(data).execute("SELECT count(*) FROM checkpoints").fetchone()
    assert (
        log.submit([], side=[lambda conn, index: conn.execute("INSERT INTO side VALUES ('s')")]).wait() == []
    )
    assert db(data).execute("SELECT k FROM side").fetchall() == [("s",)]
    assert db(data).execute("SELECT count(*) FROM checkpoints").fetchone() == rows
    assert log.size == 1


def test_result_before_resolution_is_an_error_not_an_answer(log: Log) -> None:
    from proctor.lineage.log import Append

    with pytest.raises(LogAppendError, match="not resolved"):
        Append([]).result()


def test_a_raising_notify_does_not_stop_the_writer(log: Log) -> None:
    def boom(appended: Any) -> None:
        raise RuntimeError("callback bug")

    log.submit([ev(1)], notify=boom).wait()
    assert log.append(ev(2)) == 1


def test_an_append_failing_in_the_writer_fails_those_queued_after_it_and_the_log_goes_on(data: Path) -> None:
    """Indices are assigned when an append is queued; if one fails in the writer (here a
    parent link with a wrong leaf hash), the appends queued behind it were given indices
    that assumed it, so they fail too (never committed at another index), and the
    sequence restarts from the durable size."""
    with Log.open(data, linger=0.3, always_linger=True) as lg:  # the writer gathers all four into one batch
        bad_parent = ev(2, parent={"index": 0, "leaf_hash": base64.b64encode(b"\x00" * 32).decode()})
        a, b, c, d = (lg.submit([e]) for e in (ev(1), bad_parent, ev(3), ev(4)))
        assert a.wait() == [0]
        with pytest.raises(EventError, match=r"parent\.leaf_hash"):
            b.wait()
        for p in (c, d):
            with pytest.raises(LogAppendError, match="queued before it failed"):
                p.wait()
        assert lg.append(ev(5)) == 1
        assert lg.size == 2
        assert lg.check_all().ok


@pytest.mark.parametrize(("together", "lingers"), [(2, False), (3, False), (4, True), (6, True)])
def test_the_writer_lingers_only_after_a_batch_of_busy_appends_callers(
    data: Path, together: int, lingers: bool
) -> None:
    """A batch that held ``together`` callers' appends makes the next lone append wait
    for company (``linger``) only from ``BUSY_APPENDS`` (4) on: two or three appends
    that meet by chance (a gateway's finish and its next call) never delay the next."""
    held: list[Any] = []

    def later(index: int, leaf: bytes, deferred: Any) -> dict[str, Any]:
        held.append(deferred)  # filled below, once the others are queued behind it
        return ev(99, parent={"index": index, "leaf_hash": base64.b64encode(leaf).decode()})

    waiting = threading.Event()
    with Log.open(data, linger=1.0) as lg:
        take = lg._take_deferred

        def taking(p: Any) -> None:
            waiting.set()
            take(p)

        lg._take_deferred = taking  # type: ignore[method-assign]
        first = lg.submit([ev(0)], later=later)  # the writer waits in its commit for the slot
        assert waiting.wait(10)  # ...and has its batch: the next ones queue behind it
        queued = [lg.submit([ev(i)]) for i in range(1, together + 1)]
        held[0].fill(None)  # the fallback takes the slot; the batch of ``together`` commits next, as one
        first.wait()
        for p in queued:
            p.wait()
        began = time.monotonic()
        lg.append(ev(50))
        waited = time.monotonic() - began
        assert (waited >= 0.9) is lingers, f"waited {waited:.3f} s after a batch of {together}"
        assert lg.check_all().ok


def test_then_runs_before_queueing_with_the_assigned_index(log: Log) -> None:
    seen: list[int] = []

    def then(index: int, leaf: bytes) -> dict[str, Any]:
        seen.append(index)
        return ev(9, parent={"index": index, "leaf_hash": base64.b64encode(leaf).decode()})

    pendings = [log.submit([ev(i)], then=then) for i in range(3)]
    assert seen == [0, 2, 4]  # assigned at submit, before any commit
    assert [p.wait() for p in pendings] == [[0, 1], [2, 3], [4, 5]]
    assert log.check_all().ok


def test_a_writer_that_dies_fails_the_batch_in_hand_and_everything_after(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Log.open(data, linger=0.2, always_linger=True) as lg:
        lg.append(ev(0))

        def bug(self: Log, batch: list[Any]) -> None:
            raise RuntimeError("a bug in the writer (simulated)")

        monkeypatch.setattr(Log, "_commit", bug)
        pendings = [lg.submit([ev(i)]) for i in range(3)]  # one batch, in the writer's hands
        for p in pendings:
            with pytest.raises(LogAppendError, match="the log writer stopped"):
                p.wait()  # failed, not left waiting forever
        assert lg.writer_error is not None
        with pytest.raises(LogAppendError, match="the log writer stopped"):
            lg.append(ev(9))
