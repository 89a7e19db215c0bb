"""``proctor serve --workers N``: N governor processes on one address, under one parent.

One Python process decides on one core (the GIL). To use more, the parent binds the
listening socket once, then starts N ``proctor serve --shared`` processes that inherit
it (its descriptor in :data:`~proctor.governor.server.LISTEN_FD_ENV`) and all accept on
it: the kernel hands each connection to one of them. Each is a whole governor in shared
mode (ADR 0016): it opens the log shared (appends take turns), claims nonces and writes
leases in the store, and follows the trust changes the others record, so any of them
serves any request.

The parent only supervises:

- SIGTERM or SIGINT: it sends SIGTERM to every worker, waits for them (at most
  :data:`STOP_TIMEOUT_S`, then SIGKILL) and exits 0.
- A worker that exits on its own is started again, unless it exited within
  :data:`CRASH_WINDOW_S` of being started (a configuration it cannot run with, a busy
  data directory): then the parent stops them all and exits 3 (unavailable), so a
  broken setup fails at once rather than looping.
- A worker dies with the parent (``PR_SET_PDEATHSIG``): a parent killed outright leaves
  no orphan serving on.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from proctor.errors import ConfigError
from proctor.exitcodes import ExitCode
from proctor.governor.server import LISTEN_FD_ENV, bind

__all__ = ["CRASH_WINDOW_S", "STOP_TIMEOUT_S", "run_workers"]

_log = logging.getLogger("proctor.governor")

STOP_TIMEOUT_S = 15.0
"""How long the parent waits for its workers to stop after SIGTERM before killing them."""
CRASH_WINDOW_S = 5.0
"""A worker that exits this soon after its start is not started again (see the module)."""
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class _Worker:
    def __init__(self, number: int, proc: subprocess.Popen[bytes]) -> None:
        self.number = number
        self.proc = proc
        self.started = time.monotonic()


def run_workers(
    count: int, *, options: Mapping[str, object], flags: Sequence[str] = (), node: str | None = None
) -> int:
    """Bind ``--host:--port`` (from ``options``), run ``count`` shared governors on it
    until SIGTERM or SIGINT.

    Args:
        count: how many worker processes (1 or more).
        options: ``proctor serve`` options every worker gets, by flag (``--host`` and
            ``--port`` are where the parent listens; a ``None`` value is left out).
        flags: flags every worker gets (``--no-mint-helper`` ...).
        node: a node name; worker *i* is then ``NAME-i`` (default: each its ``HOST:PID``).

    Returns:
        The exit status: 0 once stopped by a signal, 3 if a worker could not run.

    Raises:
        ConfigError: ``count`` below 1, or the address cannot be used.
    """
    host, port = str(options.get("--host", "127.0.0.1")), int(str(options.get("--port", 8700)))
    child_args = [*(a for k, v in options.items() if v is not None for a in (k, str(v))), *flags]
    if count < 1:
        raise ConfigError(f"expected --workers of at least 1, found {count}")
    sock = bind(host, port)
    fd = sock.fileno()
    stop = threading.Event()
    reason: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        reason.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def spawn(number: int) -> _Worker:
        named = ["--node", f"{node}-{number}"] if node else []
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "proctor", "serve", "--shared", *child_args, *named],
            pass_fds=(fd,),
            env={**os.environ, LISTEN_FD_ENV: str(fd)},
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads in the parent yet
        )
        return _Worker(number, proc)

    workers = [spawn(n) for n in range(1, count + 1)]
    shown = f"[{host}]" if ":" in host else host
    print(f"proctor: {count} governor workers on http://{shown}:{port}", file=sys.stderr, flush=True)  # noqa: T201
    status = 0
    try:
        while not stop.wait(0.2):
            for i, worker in enumerate(workers):
                code = worker.proc.poll()
                if code is None:
                    continue
                if time.monotonic() - worker.started < CRASH_WINDOW_S:
                    _log.error("governor worker %d exited %s at its start; stopping all", worker.number, code)
                    status = ExitCode.UNAVAILABLE
                    stop.set()
                    break
                _log.warning("governor worker %d exited %s; starting it again", worker.number, code)
                workers[i] = spawn(worker.number)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop_all(workers)
        sock.close()
    why = reason[0] if reason else "a worker could not run"
    _log.warning("governor workers stopped (%s); no longer listening on %s:%d", why, host, port)
    return int(status)


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for worker in workers:
        try:
            worker.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()
