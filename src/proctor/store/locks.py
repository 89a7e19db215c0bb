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

Taking turns well needs two things of the lock (ADR 0016, "Scaling"): the holder must
know whether anyone waits (:meth:`Sequencer.contended`), so that a busy writer alone
keeps the lock instead of draining its pipeline every ``hold_max`` for nobody; and a
waiter must get the lock as soon as it is given back, not at its next poll.
:class:`FileSequencer` announces a waiter with a shared ``flock`` on a second file
(``NAME.wait``), which the holder probes with a non-blocking exclusive one, and waits
for the lock itself in a blocking ``flock`` (the kernel wakes it on release).
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
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

    def contended(self) -> bool:
        """Whether another writer is waiting for the lock now (the holder asks, to
        decide whether to give it back). ``False`` when unsure costs a waiter at most
        one more ``hold_max``; ``True`` when unsure costs the holder a hand-off."""
        ...

    def close(self) -> None:
        """Release and free what the lock holds."""
        ...


class FileSequencer:
    """``flock`` on a lock file: between processes on one host (and between two
    opens in one process, since each :class:`FileSequencer` opens its own file).

    A shared sequencer announces that it waits with a shared ``flock`` on ``NAME.wait``
    (:meth:`contended` probes it) and waits in a blocking ``flock`` on a thread of its
    own, so that it wakes as soon as the lock is released; a wait that times out leaves
    that thread to give back whatever it then gets (closing its own open of the file).
    """

    def __init__(self, path: str | Path, *, shared: bool = False) -> None:
        self._path = Path(path)
        self._wait_path = self._path.with_name(self._path.name + ".wait")
        self._shared = shared
        self._file: IO[bytes] | None = None
        self._probe: IO[bytes] | None = None
        self._held = False

    @property
    def shared(self) -> bool:
        return self._shared

    def acquire(self, timeout: float) -> None:
        if self._held:
            return
        if self._file is None:
            self._file = open(self._path, "a+b")  # noqa: SIM115 - kept open between holds
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if timeout <= 0:
                raise self._locked() from None
            self._file.close()
            self._file = None
            self._file = self._wait(timeout)
        self._held = True

    def _locked(self) -> LogLockedError:
        return LogLockedError(f"another process is appending to this log (lock {self._path} is held)")

    def _wait(self, timeout: float) -> IO[bytes]:
        """Wait for the lock (announced on ``NAME.wait``); the open file holding it.

        ``flock`` has no timed wait, so a thread blocks in it on an open of its own;
        if the wait times out first, that thread closes its open once it has the lock,
        which gives the lock back at once.
        """
        with open(self._wait_path, "a+b") as waiting:
            fcntl.flock(waiting.fileno(), fcntl.LOCK_SH)  # "a writer waits" (contended)
            handle = open(self._path, "a+b")  # noqa: SIM115 - returned, or closed by the thread
            got = threading.Event()
            gate = threading.Lock()
            abandoned = False

            def take() -> None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                except OSError:
                    handle.close()
                    return
                with gate:
                    if abandoned:
                        handle.close()  # releases the lock this wait no longer wants
                        return
                    got.set()

            threading.Thread(target=take, name="proctor-sequencer-wait", daemon=True).start()
            got.wait(timeout)
            with gate:
                if got.is_set():
                    return handle
                abandoned = True
            raise self._locked()

    def release(self) -> None:
        if self._held and self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._held = False

    def contended(self) -> bool:
        """Whether a shared sequencer waits for the lock (holds ``NAME.wait`` shared)."""
        if not self._shared:
            return False
        try:
            if self._probe is None:
                self._probe = open(self._wait_path, "a+b")  # noqa: SIM115 - kept open for probes
            fcntl.flock(self._probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return True  # cannot tell: hand the lock on rather than starve a waiter
        fcntl.flock(self._probe.fileno(), fcntl.LOCK_UN)
        return False

    def close(self) -> None:
        self.release()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._probe is not None:
            with contextlib.suppress(OSError):
                self._probe.close()
            self._probe = None
