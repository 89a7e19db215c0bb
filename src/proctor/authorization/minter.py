"""Minting warrants in a helper process, so that the governor's event loop does not.

Building and signing a Biscuit holds the GIL for 80-190 µs per warrant, the largest
single cost of an authorization (docs/benchmarks-history.md). :class:`MintHelper` hands the
claims to one long-lived child process (``python -m proctor.authorization.minter``)
over a pipe and gets the token back on another; the caller's thread only writes a
line. Answers come back in the order the claims were sent (one process, one pipe), and
each answer is delivered to the callback given with its claims, on a reader thread.

Protocol (one line each way, UTF-8 JSON): the parent writes the 32-byte root seed as
hex on the first line, then one claims object per line; the helper answers each with
``{"token": ...}`` or ``{"error": ...}``. The seed never appears in an argument list or
the environment.

Fail closed: if the helper dies or answers garbage, every outstanding and later call
gets an error (the governor then records ``warrant.failed`` and denies) until the next
call starts a fresh helper.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, cast

import orjson

from proctor.authorization.claims import WarrantClaims
from proctor.authorization.warrants import mint_warrant
from proctor.errors import WarrantError

__all__ = ["STALL_S", "STARTUP_S", "MintHelper", "Minted", "claims_to_json"]

_WRITE_TIMEOUT = 0.5
STALL_S = 0.25
"""A helper that owes answers and has answered nothing for this long is stalled: it is
stopped and what it owes fails at once, so the log's reserved slots take their
``warrant.failed`` fallback now, not at the log's deferred timeout (a revocation queued
behind them waits this long at most)."""
STARTUP_S = 10.0
"""How long a fresh helper may take to start and answer its first request."""

Minted = Callable[[str | None, BaseException | None], None]
"""Receives ``(token, None)`` or ``(None, error)``, on the helper's reader thread."""


def claims_to_json(claims: WarrantClaims) -> dict[str, Any]:
    """The claims as the helper reads them (``WarrantClaims(**fields)``)."""
    fields = {f.name: getattr(claims, f.name) for f in dataclasses.fields(claims)}
    fields["obligations"] = dict(claims.obligations)
    return fields


class _Process:
    """One running helper and the callbacks waiting for its answers, in order."""

    def __init__(self, seed: bytes) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proctor.authorization.minter"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self.waiting: collections.deque[Minted] = collections.deque()
        self.dead: BaseException | None = None
        self.lock = threading.Lock()
        stdin = self.proc.stdin
        if stdin is None:  # cannot happen: stdin=PIPE
            raise WarrantError("the minting helper has no input pipe")
        self.stdin_fd = stdin.fileno()
        os.set_blocking(self.stdin_fd, False)
        self._write(seed.hex().encode() + b"\n")
        # Requests go out on a sender thread: the caller (which holds the log's
        # sequencing lock) only queues a line, and never waits on the helper's pipe.
        self._outbox: list[bytes] = []
        self._io = threading.Lock()  # held while writing: stop() never closes the pipe under a write
        self._ready = threading.Condition(self.lock)
        self.sender = threading.Thread(target=self._send_loop, name="proctor-mint-sender", daemon=True)
        self.sender.start()
        # Progress: the last answer, or when answers started being owed; a fresh
        # helper is given its start-up time.
        self.progress = time.monotonic() + STARTUP_S
        self.reader = threading.Thread(target=self._read, name="proctor-mint-reader", daemon=True)
        self.reader.start()
        self.watchdog = threading.Thread(target=self._watch, name="proctor-mint-watchdog", daemon=True)
        self.watchdog.start()

    def _watch(self) -> None:
        while True:
            time.sleep(STALL_S / 5)
            with self.lock:
                if self.dead is not None:
                    return
                stalled = bool(self.waiting) and time.monotonic() - self.progress > STALL_S
            if stalled:
                self._fail(WarrantError(f"the minting helper answered nothing for {STALL_S} s (stalled)"))
                return

    def _send_loop(self) -> None:
        while True:
            with self._ready:
                while not self._outbox and self.dead is None:
                    self._ready.wait()
                if self.dead is not None:
                    return
                lines, self._outbox = self._outbox, []
            try:
                with self._io:
                    if self.proc.stdin is None or self.proc.stdin.closed:
                        raise OSError("the helper's input is closed")
                    self._write(b"".join(lines))
            except OSError as e:
                self._fail(WarrantError(f"cannot reach the minting helper: {e}"))
                return

    def _fail(self, error: BaseException) -> None:
        """Everything waiting, and everything sent later, gets ``error``; the helper stops."""
        with self.lock:
            if self.dead is None:
                self.dead = error
            waiting, self.waiting = list(self.waiting), collections.deque()
            self._ready.notify_all()
        for done in waiting:
            done(None, error)
        self.stop()

    def _write(self, data: bytes) -> None:
        # Non-blocking: a helper that stopped reading is given up after half a second
        # of backlog (what it owes then fails at once, not at the log's deferred timeout).
        view = memoryview(data)
        deadline = time.monotonic() + _WRITE_TIMEOUT
        while view:
            try:
                view = view[os.write(self.stdin_fd, view) :]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [self.stdin_fd], [], left)[1]:
                    raise OSError("the minting helper is not reading its requests") from None

    def send(self, claims: WarrantClaims, done: Minted) -> None:
        line = orjson.dumps(claims_to_json(claims)) + b"\n"
        with self.lock:
            if self.dead is not None:
                raise WarrantError(f"the minting helper is gone: {self.dead}")
            if not self.waiting:
                self.progress = max(self.progress, time.monotonic())
            self.waiting.append(done)
            self._outbox.append(line)
            self._ready.notify()

    def _read(self) -> None:
        raw: IO[bytes] | None = self.proc.stdout
        error: BaseException = WarrantError("the minting helper exited")
        try:
            if raw is None:
                return
            # Buffered: the pipe is unbuffered (bufsize=0, for the writes), and a raw
            # readline would read one byte per system call.
            out = io.BufferedReader(cast("io.RawIOBase", raw), buffer_size=1 << 16)
            for line in out:
                with self.lock:
                    done = self.waiting.popleft() if self.waiting else None
                    self.progress = time.monotonic()
                if done is None:
                    error = WarrantError("the minting helper answered a request it was not sent")
                    break
                try:
                    answer = orjson.loads(line)
                    token = answer.get("token") if type(answer) is dict else None
                except orjson.JSONDecodeError:
                    answer, token = None, None
                if type(token) is str:
                    done(token, None)
                else:
                    message = answer.get("error") if type(answer) is dict else None
                    done(None, WarrantError(f"the minting helper refused: {message or line[:200]!r}"))
        except Exception as e:  # noqa: BLE001 - any failure of the reader: fail what waits
            error = WarrantError(f"the minting helper's answers cannot be read: {e}")
        finally:
            self._fail(error)

    def stop(self) -> None:
        with self.lock:
            if self.dead is None:
                self.dead = WarrantError("the minting helper was stopped")
            self._ready.notify_all()
        if self.proc.poll() is None:
            self.proc.kill()  # first: a write blocked on its pipe then fails at once
        self.proc.wait()
        with self._io:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()


class MintHelper:
    """Mints warrants in a child process; thread-safe; restarts the child when it died."""

    def __init__(self, root_private_key: bytes) -> None:
        if type(root_private_key) is not bytes or len(root_private_key) != 32:
            raise WarrantError("expected the 32-byte Ed25519 root private key seed", reason="malformed")
        self._seed = root_private_key
        self._lock = threading.Lock()
        self._process: _Process | None = None
        self._closed = False
        self._starting = False

    def start(self) -> None:
        """Start the helper now rather than on the first :meth:`mint` (it takes a
        Python start-up, about a tenth of a second).

        Raises:
            WarrantError: it cannot be started.
        """
        with self._lock:
            self._live()

    @property
    def ready(self) -> bool:
        """Whether a helper process is running and taking requests (none to start first)."""
        process = self._process
        return process is not None and process.dead is None

    def start_in_background(self) -> None:
        """Start a fresh helper on another thread, unless one is running or starting:
        a caller that finds none ready does not pay the start-up (a tenth of a second)."""
        with self._lock:
            if self._closed or self._starting or self.ready:
                return
            self._starting = True

        def start() -> None:
            try:
                with contextlib.suppress(WarrantError):  # the next mint() says why
                    self.start()
            finally:
                with self._lock:
                    self._starting = False

        threading.Thread(target=start, name="proctor-mint-helper-start", daemon=True).start()

    def _live(self) -> _Process:
        """The running helper, started if there is none (the caller holds the lock)."""
        process = self._process
        if process is None or process.dead is not None:
            try:
                process = self._process = _Process(self._seed)
            except OSError as e:
                raise WarrantError(f"cannot start the minting helper: {e}") from e
        return process

    def mint(self, claims: WarrantClaims, done: Minted) -> None:
        """Send ``claims`` to the helper; ``done`` receives the token or the error.

        Raises:
            WarrantError: the helper cannot be started or reached (``done`` is not called).
        """
        with self._lock:
            if self._closed:
                raise WarrantError("the minting helper is closed")
            process = self._live()
        try:
            process.send(claims, done)
        except WarrantError:
            process.stop()  # it stopped reading: what it still owes fails now, not later
            raise

    def restart(self) -> None:
        """Stop the current helper (what waits on it gets an error) and start a fresh
        one now, so that its start-up is not paid by the next warrant."""
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            process.stop()
        with self._lock, contextlib.suppress(WarrantError):
            if not self._closed:
                self._live()  # if it cannot start, the next mint() says why

    @property
    def pid(self) -> int | None:
        """The running helper's pid (for tests and diagnostics)."""
        process = self._process
        return None if process is None or process.dead is not None else process.proc.pid

    def close(self) -> None:
        """Stop the helper; calls still waiting get an error."""
        with self._lock:
            self._closed = True
            process, self._process = self._process, None
        if process is not None:
            process.stop()
            process.reader.join(timeout=5)


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> int:  # pragma: no cover - the helper process
    seed = bytes.fromhex(stdin.readline().decode().strip())
    for line in stdin:
        try:
            fields = orjson.loads(line)
            claims = WarrantClaims(**fields)
            answer = {"token": mint_warrant(claims, root_private_key=seed)}
        except Exception as e:  # noqa: BLE001 - every request gets an answer, in order
            answer = {"error": f"{type(e).__name__}: {e}"[:500]}
        stdout.write(orjson.dumps(answer) + b"\n")
        stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover - the helper process
    sys.exit(_serve(sys.stdin.buffer, sys.stdout.buffer))
