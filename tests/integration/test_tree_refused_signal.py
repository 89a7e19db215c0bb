"""A process of the tree that may not be signalled (EPERM: another user's, a set-user-ID
program's) does not stop the kill of the rest: what was stopped is killed, and the scan
goes on past it. Real processes; only the answer for one pid is made EPERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from proctor.enforcement._linux import read_stat
from proctor.enforcement._linux import signal_process as real_signal
from proctor.enforcement._tree import ProcessTree, TreeSpec

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        try:
            text = Path(f"/proc/{current}/task/{current}/children").read_text()
        except OSError:
            continue
        for child in map(int, text.split()):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    st = read_stat(pid)
    return st is not None and not st.zombie


def test_one_process_that_refuses_signals_does_not_save_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    child = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 30 & sleep 30 & sleep 30 & wait"], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while len(_descendants(child.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        sleepers = sorted(_descendants(child.pid))
        assert len(sleepers) == 3, sleepers
        st = read_stat(child.pid)
        assert st is not None
        protected = sleepers[0]

        def signal_process(pid: int, starttime: int, sig: int) -> bool:
            if pid == protected:
                raise PermissionError(1, "Operation not permitted")
            return real_signal(pid, starttime, sig)

        monkeypatch.setattr("proctor.enforcement._tree.signal_process", signal_process)
        spec = TreeSpec(
            child=child.pid,
            child_start=st.starttime,
            session=False,  # not by its group: by the scan alone
            pidns_mode="",
            groups=[],
            pidns=None,
            direct_children=set,
        )
        ProcessTree(spec).kill()
        gone = [pid for pid in sleepers[1:] if not _wait_dead(pid)]
        assert gone == [], f"left alive (or stopped) after the kill: {gone}"
        assert _alive(protected)  # the one it may not signal (here: the test's stand-in)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _wait_dead(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _alive(pid)
