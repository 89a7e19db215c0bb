"""``_tree.exited``: whether a process has exited, without reaping it (the pid
namespace check of a command that ended at once relies on it); and
``_tree.settled_pidns``, that check's read of the namespace."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from proctor.enforcement import _tree
from proctor.enforcement._linux import pidns_of
from proctor.enforcement._tree import exited as _exited
from proctor.enforcement._tree import settled_pidns as _settled_pidns


def test_an_exited_process_is_seen_as_exited_and_stays_unreaped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    pidfd = os.pidfd_open(proc.pid)
    try:
        deadline = time.monotonic() + 30
        while not _exited(pidfd) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _exited(pidfd)
        assert _exited(pidfd)  # WNOWAIT: still there to be reaped
        assert proc.wait(timeout=10) == 0
    finally:
        os.close(pidfd)


def test_a_running_process_is_not_exited_and_a_bad_descriptor_is_not_either() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pidfd = os.pidfd_open(proc.pid)
    try:
        assert not _exited(pidfd)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(pidfd)
    assert not _exited(pidfd)  # closed: cannot tell, so the caller refuses as before


def test_a_namespace_unreadable_while_exiting_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay of a command that ended at once can have lost its namespaces without
    being waitable yet: the check waits for one or the other instead of refusing a
    start that was sound (seen under load as "did not get a pid namespace of its own")."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pidfd = os.pidfd_open(proc.pid)
    reads: list[int] = []
    real = pidns_of

    def first_unreadable(pid: int, *, for_children: bool = False) -> tuple[int, int] | None:
        reads.append(pid)
        return None if len(reads) == 1 else real(pid, for_children=for_children)

    monkeypatch.setattr(_tree, "pidns_of", first_unreadable)
    try:
        assert _settled_pidns(proc.pid, pidfd, for_children=False) == real(proc.pid)
        assert reads == [proc.pid, proc.pid]
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(pidfd)


def test_a_namespace_that_stays_unreadable_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: a live process whose namespace cannot be read is not taken for one
    in a namespace of its own (the caller refuses), after one bounded wait."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pidfd = os.pidfd_open(proc.pid)
    monkeypatch.setattr(_tree, "pidns_of", lambda pid, *, for_children=False: None)
    try:
        started = time.monotonic()
        assert _settled_pidns(proc.pid, pidfd, for_children=True) is None
        assert not _exited(pidfd)
        assert time.monotonic() - started < 5  # bounded, not a hang
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(pidfd)


def test_an_exiting_process_is_waited_for_until_it_exited() -> None:
    """The wait ends as soon as the process exited (its pidfd polls readable)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.05)"])
    pidfd = os.pidfd_open(proc.pid)
    try:
        deadline = time.monotonic() + 30
        while not _exited(pidfd) and time.monotonic() < deadline:
            _settled_pidns(proc.pid, pidfd, for_children=False)
        assert _exited(pidfd)
    finally:
        proc.wait(timeout=10)
        os.close(pidfd)
