"""The shared ``flock`` sequencer between writers on one host (:class:`FileSequencer`):
a holder sees whether anyone waits, a waiter wakes as soon as the lock is given back,
and a waiter that gave up leaves nothing held."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from proctor.errors import LogLockedError
from proctor.store.locks import FileSequencer


def eventually(check: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def test_the_holder_sees_a_waiting_writer_and_the_waiter_gets_the_lock_on_release(tmp_path: Path) -> None:
    path = tmp_path / "log.lock"
    holder, waiter = FileSequencer(path, shared=True), FileSequencer(path, shared=True)
    try:
        holder.acquire(0)
        assert not holder.contended()  # nobody waits
        got = threading.Event()

        def wait() -> None:
            waiter.acquire(30)
            got.set()

        thread = threading.Thread(target=wait)
        thread.start()
        assert eventually(holder.contended)
        assert not got.is_set()
        holder.release()
        assert got.wait(10)  # woken by the release, not by a poll that may come late
        thread.join(10)
        assert not waiter.contended()  # the waiter is no longer announced
        with pytest.raises(LogLockedError):
            holder.acquire(0)  # the waiter holds it now
    finally:
        holder.close()
        waiter.close()


def test_a_waiter_that_gave_up_leaves_the_lock_free(tmp_path: Path) -> None:
    path = tmp_path / "log.lock"
    holder, quitter = FileSequencer(path, shared=True), FileSequencer(path, shared=True)
    try:
        holder.acquire(0)
        with pytest.raises(LogLockedError, match="another process is appending"):
            quitter.acquire(0.1)
        holder.release()
        # The abandoned wait gets the lock once released, and gives it back at once.
        third = FileSequencer(path, shared=True)

        def free() -> bool:
            try:
                third.acquire(0)
            except LogLockedError:
                return False
            return True

        assert eventually(free)
        assert not third.contended()
        third.close()
    finally:
        holder.close()
        quitter.close()


def test_an_exclusive_sequencer_never_reports_waiters(tmp_path: Path) -> None:
    path = tmp_path / "log.lock"
    holder, second = FileSequencer(path), FileSequencer(path)
    try:
        holder.acquire(0)
        assert not holder.contended()
        with pytest.raises(LogLockedError):
            second.acquire(0)
    finally:
        holder.close()
        second.close()
