"""``containment._exited``: whether a process has exited, without reaping it (the pid
namespace check of a command that ended at once relies on it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from proctor.enforcement.containment import _exited


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
