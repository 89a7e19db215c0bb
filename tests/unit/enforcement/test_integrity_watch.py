"""The integrity watch: a measured file changed while its execution runs is reported
once, and stopping the watch ends its thread at once (every ``proctor run`` stops one
as it finishes: a thread left polling would hold up each run's exit)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from proc_support import held
from proctor.enforcement.integrity import IntegrityWatch, file_digest


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_changed_file_is_reported_once(tmp_path: Path) -> None:
    f = tmp_path / "job.sh"
    f.write_bytes(b"echo one\n")
    seen: list[tuple[str, str]] = []
    fired = threading.Event()

    def on_violation(path: str, detail: str) -> None:
        seen.append((path, detail))
        fired.set()

    watch = IntegrityWatch({str(f): _digest(b"echo one\n")}, on_violation)
    watch.start()
    try:
        f.write_bytes(b"echo two\n")
        if watch.backend == "inotify+rehash":
            assert fired.wait(10), "inotify saw no change"
        else:
            assert watch.recheck() is False
        f.write_bytes(b"echo three\n")
        assert watch.recheck() is False
    finally:
        watch.stop()
    assert [p for p, _ in seen] == [str(f)]
    assert "changed" in seen[0][1]


def test_an_unchanged_file_passes_a_recheck_and_a_removed_one_fails(tmp_path: Path) -> None:
    f = tmp_path / "tool"
    f.write_bytes(b"\x7fELF")
    seen: list[str] = []
    watch = IntegrityWatch({str(f): _digest(b"\x7fELF")}, lambda p, d: seen.append(d))
    assert watch.recheck() is True
    f.unlink()
    assert file_digest(str(f)) is None
    assert watch.recheck() is False
    assert seen == [f"{f} was removed or unreadable"]


def _inotify_watches(path: Path) -> int:
    """How many inotify watches of this process are on ``path``'s inode: the kernel lists
    each in the descriptor's fdinfo (an earlier test's watch, still being closed by its
    own thread, watches another file)."""
    ino = f" ino:{os.stat(path).st_ino:x} "
    count = 0
    for name in os.listdir("/proc/self/fdinfo"):
        try:
            with open(f"/proc/self/fdinfo/{name}", encoding="ascii") as f:
                count += sum(line.startswith("inotify wd:") and ino in line for line in f)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return count


def test_stop_ends_the_watch_thread_without_waiting_for_a_poll(tmp_path: Path) -> None:
    f = tmp_path / "job.sh"
    f.write_bytes(b"x")
    watch = IntegrityWatch({str(f): _digest(b"x")}, lambda p, d: None)
    watch.start()
    thread = watch._thread
    if thread is None:  # no inotify here: nothing to stop
        return
    assert watch._wake is not None
    pipe = {os.readlink(f"/proc/self/fd/{fd}") for fd in watch._wake}
    assert _inotify_watches(f) == 1
    # The thread waits up to 5 s per poll; stop() joins for 1 s at most, so only a stop
    # that wakes the thread leaves it ended here.
    watch.stop()
    assert not thread.is_alive()
    assert watch.closing is not None  # the inotify descriptor is closed by a thread of its own
    watch.closing.join(timeout=5)
    assert pipe.isdisjoint(held(("pipe:",))), "the wake pipe is still open"
    assert _inotify_watches(f) == 0, "the inotify descriptor is still open"
