"""Running ``proctor`` as a person and as a script would: stdout on a pseudo-terminal
(Python's ``pty``), or piped.

Used by ``integration/test_cli_human.py`` (each data command, both ways) and
``integration/test_readme_walkthrough.py`` (the README's commands on a terminal).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROCTOR = (sys.executable, "-m", "proctor")
"""The ``proctor`` command of the running interpreter."""

TERMINAL_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PROCTOR_")} | {
    "TZ": "UTC",
    "LC_ALL": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "COLUMNS": "200",
}
"""This environment without ``PROCTOR_*``, times in UTC, UTF-8 and wide lines."""


@dataclass(frozen=True)
class Ran:
    """A finished command: its exit code, stdout and stderr."""

    code: int
    out: str
    err: str


def in_terminal(
    *args: str,
    tmp: Path,
    timeout: float = 120,
    program: Sequence[str] = PROCTOR,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Ran:
    """``proctor ARGS`` with stdout on a pseudo-terminal (stderr to a file in ``tmp``)."""
    import pty

    master, slave = pty.openpty()
    err_path = tmp / f"stderr-{time.monotonic_ns()}"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [*program, *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=err,
            cwd=cwd,
            env=dict(TERMINAL_ENV if env is None else env),
        )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                proc.kill()
                raise AssertionError(f"proctor {' '.join(args)} did not finish in {timeout}s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=timeout)
    finally:
        os.close(master)
    out = b"".join(chunks).decode("utf-8").replace("\r\n", "\n")
    return Ran(code, out, err_path.read_text())


def piped(
    *args: str,
    timeout: float = 120,
    program: Sequence[str] = PROCTOR,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Ran:
    """``proctor ARGS`` with stdout piped, as a script runs it."""
    done = subprocess.run(
        [*program, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=dict(TERMINAL_ENV if env is None else env),
        check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr)
