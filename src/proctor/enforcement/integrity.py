"""Integrity watch: the measured files must stay what was measured while the command runs.

inotify (through libc, no extra dependency) watches every measured file and its
directory, so an in-place edit, an append, a rename over the file or its deletion is
seen at once; each event re-hashes the affected path and compares with the measured
digest. :meth:`IntegrityWatch.recheck` re-hashes everything and is also called at
every lease renewal, so a change inotify cannot see (another mount namespace, a
filesystem without inotify) is still caught within one renewal period.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import select
import struct
import threading
from collections.abc import Callable, Mapping

__all__ = ["IntegrityWatch", "file_digest"]

_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_MASK = (
    _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
    | _IN_DELETE_SELF | _IN_MOVE_SELF
)  # fmt: skip
_EVENT = struct.Struct("iIII")


def file_digest(path: str) -> str | None:
    """``sha256:<hex>`` of the file now, or ``None`` if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


class IntegrityWatch:
    """Watches measured files; calls ``on_violation(path, detail)`` once on the first change."""

    def __init__(self, files: Mapping[str, str], on_violation: Callable[[str, str], None]) -> None:
        """Args:
        files: absolute path → measured ``sha256:<hex>`` digest.
        on_violation: called (from the watch thread) when a file no longer matches.
        """
        self._files = dict(files)
        self._on_violation = on_violation
        self._fired = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fd = -1
        self._wake: tuple[int, int] | None = None  # a pipe: stop() wakes the thread at once
        self._watches: dict[int, str] = {}
        self._thread: threading.Thread | None = None
        self.closing: threading.Thread | None = None
        """The thread closing the inotify descriptor, once :meth:`stop` started it."""
        self.backend = "rehash"

    def start(self) -> None:
        """Begin watching (inotify when available; re-hashing at renewals regardless)."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)  # this process's libc (no ldconfig run)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            fd = -1
        if fd < 0:
            return
        self._fd = fd
        for target in {*self._files, *(os.path.dirname(p) for p in self._files)}:
            wd = libc.inotify_add_watch(fd, os.fsencode(target), _MASK)
            if wd >= 0:
                self._watches[wd] = target
        self.backend = "inotify+rehash"
        self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="proctor-integrity", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wake = self._wake[0] if self._wake is not None else -1
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd, wake] if wake >= 0 else [self._fd], [], [], 5.0)
            if not ready or self._fd not in ready:
                continue
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            touched: set[str] = set()
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                base = self._watches.get(wd, "")
                path = os.path.join(base, os.fsdecode(name)) if name else base
                if path in self._files:
                    touched.add(path)
                elif base in self._files:
                    touched.add(base)
            for path in touched:
                self._check(path)

    def _check(self, path: str) -> bool:
        now = file_digest(path)
        if now == self._files[path]:
            return True
        detail = f"{path} was removed or unreadable" if now is None else f"{path} changed (now {now})"
        with self._lock:
            if self._fired:
                return False
            self._fired = True
        self._on_violation(path, detail)
        return False

    def recheck(self) -> bool:
        """Re-hash every measured file now; ``False`` (and the callback) on a mismatch."""
        return all(self._check(path) for path in list(self._files))

    def stop(self) -> None:
        """Stop the watch thread and close the inotify descriptor."""
        self._stop.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join(timeout=1)
        if self._fd >= 0:
            # Closing an inotify descriptor waits for the kernel to free its watches (a
            # grace period, 0-25 ms here): a thread of its own closes it, so the end of
            # the run is reported meanwhile (ADR 0022).
            self.closing = threading.Thread(target=os.close, args=(self._fd,), daemon=True)
            self.closing.start()
            self._fd = -1
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None
