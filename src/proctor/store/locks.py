"""Who may append to a log right now: the sequencer lock.

A log's indices are assigned by the one writer that holds its sequencer lock
(:mod:`proctor.lineage._writer`). Two ways to hold it:

- **exclusive** (the default for a data directory): the first append takes it and the
  log keeps it until it closes. A second process that tries to append fails at once
  with :class:`~proctor.errors.LogLockedError`. One ``proctor serve`` per data
  directory works this way.
- **shared**: several writers (worker processes on one host, governor nodes on one
  database) take turns. A writer takes the lock when it has something to append,
  reloads the tree's right edge from the store (another writer may have appended),
  and gives the lock back once everything it sequenced is durable and it has been
  idle for a moment, or when it has held the lock too long while others wait.

The lock is an optimisation of *liveness*, not what keeps the log consistent: every
store's ``append`` checks, inside its own transaction, that the stored size is the
first index it was given (:class:`~proctor.store.base.LogStore`), so a writer that lost
the lock without knowing (a dropped database session) fails its commit instead of
forking the log.

:class:`FileSequencer` is the ``flock`` on the data directory's lock file. The
PostgreSQL store has its own (a session advisory lock).
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path
from typing import IO, Protocol

from proctor.errors import LogLockedError

__all__ = ["FileSequencer", "Sequencer"]


class Sequencer(Protocol):
    """The lock that makes one writer at a time assign a log's indices."""

    @property
    def shared(self) -> bool:
        """Whether writers take turns (``True``) or the first one keeps it (``False``)."""
        ...

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting at most ``timeout`` seconds (0: do not wait).

        Raises:
            LogLockedError: another writer holds it (past the timeout).
            StoreError: the lock cannot be taken for another reason.
        """
        ...

    def release(self) -> None:
        """Give the lock back (nothing if not held)."""
        ...

    def close(self) -> None:
        """Release and free what the lock holds."""
        ...


class FileSequencer:
    """``flock`` on a lock file: between processes on one host (and between two
    opens in one process, since each :class:`FileSequencer` opens its own file)."""

    def __init__(self, path: str | Path, *, shared: bool = False) -> None:
        self._path = Path(path)
        self._shared = shared
        self._file: IO[bytes] | None = None
        self._held = False

    @property
    def shared(self) -> bool:
        return self._shared

    def acquire(self, timeout: float) -> None:
        if self._held:
            return
        if self._file is None:
            self._file = open(self._path, "a+b")  # noqa: SIM115 - kept open between holds
        deadline = time.monotonic() + timeout
        pause = 0.0002
        while True:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LogLockedError(
                        f"another process is appending to this log (lock {self._path} is held)"
                    ) from None
                # flock has no timed wait: poll, backing off to 5 ms.
                time.sleep(pause)
                pause = min(pause * 2, 0.005)
                continue
            self._held = True
            return

    def release(self) -> None:
        if self._held and self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._held = False

    def close(self) -> None:
        self.release()
        if self._file is not None:
            self._file.close()
            self._file = None
