"""Several writers on one log, taking turns with a shared sequencer lock
(:mod:`proctor.store.locks`): one tree, no gaps, no duplicate indices, every checkpoint
consistent with every later one; and the store, not the lock, is what keeps a writer
that lost the lock from forking the log."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proctor.errors import LogAppendError, LogLockedError
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.log import Log
from proctor.lineage.merkle import leaf_hash
from proctor.lineage.proofs import ConsistencyProof, InclusionProof
from proctor.store.locks import FileSequencer

ORIGIN = "test.example/shared"


def ev(writer: str, i: int) -> dict[str, Any]:
    return {"v": 1, "type": "decision", "time": "2026-12-03T13:00:00Z", "writer": writer, "n": i}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    Log.initialize(tmp_path / "d", origin=ORIGIN).close()
    return tmp_path / "d"


@pytest.fixture
def pair(data: Path) -> Iterator[tuple[Log, Log]]:
    with Log.open(data, shared=True) as a, Log.open(data, shared=True) as b:
        yield a, b


def check_one_tree(data: Path, expected: int) -> list[tuple[int, str]]:
    """Every entry once, the log verifies, and every stored checkpoint is consistent
    with the latest one (RFC 9162 §2.1.4.2, through our own proof check)."""
    with Log.open(data) as log:
        assert log.size == expected
        log.verify_all()
        latest = open_checkpoint(log.checkpoint(), log.verifier)
        assert latest.size == expected
        checkpoints = list(log._store.checkpoints())
        for size, note in checkpoints:
            cp = open_checkpoint(note, log.verifier)
            proof = ConsistencyProof.from_json(log.consistency_proof(size, expected))
            proof.verify(cp.root_hash, latest.root_hash)
        return checkpoints


def test_two_writers_take_turns_on_one_tree(data: Path, pair: tuple[Log, Log]) -> None:
    a, b = pair
    indices = []
    for i in range(20):
        indices.append(a.append(ev("a", i)))
        indices.append(b.append(ev("b", i)))
    assert indices == list(range(40))
    check_one_tree(data, 40)


def test_a_writer_reads_what_the_other_appended(pair: tuple[Log, Log]) -> None:
    a, b = pair
    a.append(ev("a", 0))
    index = b.append(ev("b", 0))
    time.sleep(a.hold_idle * 5)  # b gives the lock back once idle
    assert a.size == 2
    raw = a.leaf(index)
    assert b'"writer":"b"' in raw
    cp = open_checkpoint(a.checkpoint(), a.verifier)
    assert cp.size == 2
    InclusionProof.from_json(a.inclusion_proof(index)).verify(leaf_hash(raw), cp.root_hash)


def test_concurrent_writers_threads_make_one_gapless_tree(data: Path, pair: tuple[Log, Log]) -> None:
    per_thread, threads_per_log = 60, 3
    seen: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(log: Log, name: str) -> None:
        try:
            for i in range(per_thread):
                index = log.append(ev(name, i))
                with lock:
                    seen.append(index)
        except BaseException as e:
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=(log, f"{tag}{t}"))
        for tag, log in zip("ab", pair, strict=True)
        for t in range(threads_per_log)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    total = per_thread * threads_per_log * 2
    assert sorted(seen) == list(range(total))
    check_one_tree(data, total)


def _process_writer(data: str, name: str, count: int, start: Any) -> None:
    start.wait(30)
    with Log.open(data, shared=True) as log:
        for i in range(count):
            log.append(ev(name, i))


def test_three_processes_append_to_one_tree(data: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_process_writer, args=(str(data), f"p{n}", 80, start)) for n in range(3)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    check_one_tree(data, 240)
    with Log.open(data) as log:
        writers = [log.leaf(i).split(b'"writer":"')[1][:2] for i in range(240)]
    assert {w: writers.count(w) for w in set(writers)} == {b"p0": 80, b"p1": 80, b"p2": 80}


def test_a_busy_writer_gives_the_lock_back_so_another_is_not_starved(pair: tuple[Log, Log]) -> None:
    a, b = pair
    a.hold_max = 0.01
    b.sequencer_timeout = 10.0
    stop = threading.Event()

    def flood() -> None:
        i = 0
        while not stop.is_set():
            a.submit([ev("a", i)])
            i += 1

    flooders = [threading.Thread(target=flood) for _ in range(2)]
    for t in flooders:
        t.start()
    try:
        time.sleep(0.1)
        index = b.append(ev("b", 0))  # would time out if a never yielded
    finally:
        stop.set()
        for t in flooders:
            t.join(30)
    assert index > 0


def test_a_writer_waits_at_most_its_timeout_for_the_lock(data: Path, pair: tuple[Log, Log]) -> None:
    a = pair[0]
    holder = FileSequencer(data / "log.lock", shared=True)
    holder.acquire(0)
    try:
        time.sleep(a.hold_idle * 5)
        a.sequencer_timeout = 0.2
        with pytest.raises(LogLockedError, match="another process is appending"):
            a.append(ev("a", 0))
    finally:
        holder.close()
    assert a.append(ev("a", 1)) == 0  # nothing of the refused append was kept


class _NoLock:
    """A shared sequencer that never excludes anyone: a writer that lost its lock
    without knowing (same interface as :class:`FileSequencer`)."""

    shared = True

    def acquire(self, timeout: float) -> None:
        return None

    def release(self) -> None:
        return None

    def contended(self) -> bool:
        return False

    def close(self) -> None:
        return None


def test_a_writer_that_lost_the_lock_cannot_fork_the_log(data: Path) -> None:
    from proctor.datadir import DataDir
    from proctor.store.sqlite import SQLiteStore

    dd = DataDir.open(data)
    rogue = Log(SQLiteStore(dd.db_path), dd.log_signer(), sequencer=_NoLock())
    rogue.hold_idle = rogue.hold_max = 60.0  # it keeps believing it holds the lock
    try:
        with Log.open(data, shared=True) as honest:
            assert rogue.append(ev("rogue", 0)) == 0  # rogue now holds index 1 as its next
            assert honest.append(ev("honest", 0)) == 1
            # The rogue still believes it holds the sequence at 1: the store refuses.
            with pytest.raises(LogAppendError, match="not committed"):
                rogue.append(ev("rogue", 1))
            # It dropped its stale state: the next append reloads and lands at 2.
            assert rogue.append(ev("rogue", 2)) == 2
    finally:
        rogue.close()
    check_one_tree(data, 3)


def test_exclusive_mode_still_refuses_a_second_writer(data: Path) -> None:
    with Log.open(data) as first:
        first.append(ev("first", 0))
        with Log.open(data, shared=True) as second:
            second.sequencer_timeout = 0.1
            with pytest.raises(LogLockedError):
                second.append(ev("second", 0))


class _CountingSequencer(FileSequencer):
    """A :class:`FileSequencer` that counts its acquisitions."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, shared=True)
        self.taken = 0

    def acquire(self, timeout: float) -> None:
        self.taken += 1
        super().acquire(timeout)


def test_a_busy_writer_alone_keeps_the_lock(data: Path) -> None:
    from proctor.datadir import DataDir
    from proctor.store.sqlite import SQLiteStore

    dd = DataDir.open(data)
    sequencer = _CountingSequencer(data / "log.lock")
    log = Log(SQLiteStore(dd.db_path), dd.log_signer(), sequencer=sequencer)
    log.hold_max = 0.0  # it would yield on every append if yielding did not ask who waits
    log.hold_idle = 60.0  # and never for being idle
    try:
        for i in range(30):
            log.append(ev("alone", i))
        assert sequencer.taken <= 2  # the start-up check, and the first append's hold
    finally:
        log.close()
    check_one_tree(data, 30)
