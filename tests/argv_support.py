"""Mechanics of the argv-tricks matrix (``tests/conformance/test_argv_tricks.py``).

A trick is a command line and a filesystem (built by the test in a directory of its
own), a policy that allows exactly what the trick's authorized files are, and changes
made at chosen moments of one real ``proctor run``:

- ``at_authorize``: while the governor is asked (after the command was measured,
  before anything is staged or executed);
- ``at_start``: while the start is recorded (after the measured copies were staged,
  before ``exec``);
- ``mid_run``: once the command wrote its start mark, before it goes on.

Those moments are caught by :class:`HookProxy`, a loopback proxy between ``proctor run``
and the governor that calls a hook before it forwards the request that marks the moment.

What ran is read from marks the files leave in the trick's directory: authorized bytes
append ``measured`` lines to ``out`` (or copy a file holding ``measured`` there, for an
authorized binary, a copy of ``cp``); other bytes append ``EVIL`` to ``out``, make
``out`` a directory (a copy of ``mkdir``), or create ``evil``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = [
    "CP",
    "MKDIR",
    "SH",
    "NOBODY",
    "Allow",
    "HookProxy",
    "Setup",
    "allow_file",
    "classify",
    "digest",
    "elf",
    "foreign",
    "hold_python",
    "run_plain",
    "run_proctor",
    "script",
]

CP = os.path.realpath(shutil.which("cp") or "/bin/cp")
MKDIR = os.path.realpath(shutil.which("mkdir") or "/bin/mkdir")
SH = os.path.realpath(shutil.which("sh") or "/bin/sh")
NOBODY = 65534
"""The owner of files "someone else" could change (the principal, when the test is root)."""

MEASURED, DENIED, UNMEASURED = "runs-measured", "denied", "runs-unmeasured"


def digest(path: Path | str) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def script(path: Path, text: str, mode: int = 0o755) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def elf(src: str, dst: Path) -> Path:
    shutil.copy(src, dst)
    dst.chmod(0o755)
    return dst


def foreign(*paths: Path) -> None:
    """Make files another user's (the principal's, not root's): only meaningful as root."""
    if os.geteuid() == 0:
        for p in paths:
            os.chown(p, NOBODY, NOBODY, follow_symlinks=False)


@dataclass(frozen=True)
class Allow:
    """One thing the policy allows: ``resource`` when the Cedar condition ``when`` holds."""

    resource: str
    when: str


def allow_file(path: Path | str) -> Allow:
    """Allow exactly this file (its real path) with exactly its current bytes."""
    real = os.path.realpath(path)
    return Allow(real, f'context.executable_digest == "{digest(real)}"')


@dataclass
class Setup:
    """One trick, built in its directory ``root``: what to run and what is allowed."""

    root: Path
    argv: list[str]
    allow: list[Allow]
    env: Mapping[str, str | None] = field(default_factory=dict)  # None: removed
    cwd: Path | None = None
    stdin: bytes = b""
    fds: tuple[Path, ...] = ()  # opened for reading and passed on; "<fd0>" in argv is the first
    at_authorize: Callable[[], None] | None = None
    at_start: Callable[[], None] | None = None
    mid_run: Callable[[], None] | None = None
    hold: Path | None = None  # the FIFO the interpreter waits on (hold_python)
    at_exec: Callable[[], None] | None = None  # made while it waits, before it opens the script

    @property
    def out(self) -> Path:
        return self.root / "out"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for name, value in self.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env


def classify(setup: Setup, returncode: int) -> tuple[str, str]:
    """``(outcome, evidence)`` from the marks left in the trick's directory."""
    out, evil = setup.out, setup.root / "evil"
    text = out.read_text() if out.is_file() else ""
    if out.is_dir() or "EVIL" in text or evil.exists():
        what = "out is a directory" if out.is_dir() else ("EVIL in out" if "EVIL" in text else "evil exists")
        return UNMEASURED, f"{what} (exit {returncode})"
    lines = text.split()
    if lines and set(lines) <= {"measured", "measured-start"}:
        return MEASURED, f"{' '.join(lines)} (exit {returncode})"
    if not out.exists() and returncode == 77:
        return DENIED, "nothing ran (exit 77)"
    return "unclear", f"out={text!r} (exit {returncode})"


# -- running a trick -------------------------------------------------------------------


class HookProxy:
    """Forwards to ``127.0.0.1:upstream``; before forwarding a chunk holding a request line
    that starts with a hooked prefix, calls that hook (once)."""

    def __init__(self, upstream: int) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._hooks: dict[bytes, Callable[[], None]] = {}
        self.fired: list[bytes] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def hook(self, hooks: Mapping[bytes, Callable[[], None] | None]) -> None:
        with self._lock:
            self._hooks = {k: v for k, v in hooks.items() if v is not None}
            self.fired = []
            self.errors = []

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _due(self, data: bytes) -> Callable[[], None] | None:
        with self._lock:
            for prefix, hook in list(self._hooks.items()):
                if data.startswith(prefix) or b"\r\n\r\n" + prefix in data:
                    del self._hooks[prefix]
                    self.fired.append(prefix)
                    return hook
        return None

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=10)
        except OSError:
            client.close()
            return
        peer = {client: upstream, upstream: client}
        try:
            while not self._closed:
                readable, _, _ = select.select([client, upstream], [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    hook = self._due(data) if sock is client else None
                    if hook is not None:
                        try:
                            hook()
                        except BaseException as e:
                            self.errors.append(e)
                    peer[sock].sendall(data)
        except OSError:
            return
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.close()


AUTHORIZE = b"POST /v1/authorize "
START = b"POST /v1/executions "


def _open_fds(setup: Setup) -> tuple[list[int], list[str]]:
    """The descriptors to pass on, and argv with ``<fdN>`` replaced by their numbers."""
    fds = [os.open(p, os.O_RDONLY) for p in setup.fds]
    argv = list(setup.argv)
    for i, fd in enumerate(fds):
        os.set_inheritable(fd, True)
        argv = [a.replace(f"<fd{i}>", str(fd)) for a in argv]
    return fds, argv


@contextlib.contextmanager
def _stdin(setup: Setup) -> Iterator[IO[bytes]]:
    """The command's standard input: a file holding ``setup.stdin``."""
    path = setup.root / "stdin"
    path.write_bytes(setup.stdin)
    with path.open("rb") as f:
        yield f


def hold_python(d: Path, python: str) -> Path:
    """Make ``python``, run with ``HOME=d/home``, wait at startup — after its ``site``
    and before it opens its script — until :func:`_at_exec` let it go: a
    ``usercustomize`` in the user site-packages (a stated limit: not measured) opens a
    FIFO for reading. Returns the FIFO."""
    home = d / "home"
    env = {**os.environ, "HOME": str(home)}
    query = [python, "-c", "import site; print(site.getusersitepackages())"]
    site = Path(subprocess.run(query, env=env, capture_output=True, text=True, check=True).stdout.strip())
    site.mkdir(parents=True)
    fifo = d / "hold"
    os.mkfifo(fifo)
    (site / "usercustomize.py").write_text(
        "import sys\n"
        "if not any('proctor' in a for a in sys.orig_argv):  # the governed interpreter, not proctor\n"
        f"    open({str(fifo)!r}).read()\n"
    )
    return fifo


def _at_exec(setup: Setup, deadline: float) -> tuple[threading.Thread, list[bool]] | None:
    """Once the interpreter waits on the trick's FIFO (:func:`hold_python`): make the
    change, then let it go on — so the change lands after the start's last check and
    before the interpreter opens the script."""
    hook, fifo = setup.at_exec, setup.hold
    if hook is None or fifo is None:
        return None
    caught: list[bool] = []

    def catch() -> None:
        while time.monotonic() < deadline:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until a reader waits
            except OSError:
                time.sleep(0.005)
                continue
            try:
                hook()
                caught.append(True)
            finally:
                os.close(fd)  # end of file: the reader goes on
            return

    thread = threading.Thread(target=catch, daemon=True)
    thread.start()
    return thread, caught


def _caught(catcher: tuple[threading.Thread, list[bool]] | None) -> bool:
    """Whether the interpreter was caught (``True`` when there was nothing to catch)."""
    if catcher is None:
        return True
    catcher[0].join(timeout=5)
    return bool(catcher[1])


def _mid_run(setup: Setup, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Once the command marked its start: change things, then let it go on."""
    if setup.mid_run is None:
        return
    out = setup.out
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_file() and "measured-start" in out.read_text():
            break
        time.sleep(0.01)
    setup.mid_run()
    (setup.root / "go").touch()


def run_proctor(setup: Setup, upstream: int, key: Path, *, timeout: float = 60) -> tuple[int, str]:
    """One ``proctor run`` of the trick, through a proxy of its own to the governor
    listening on ``upstream``; ``(exit status, stderr)``."""
    proxy = HookProxy(upstream)
    try:
        return _run_proctor(setup, proxy, key, timeout)
    finally:
        proxy.close()


def _run_proctor(setup: Setup, proxy: HookProxy, key: Path, timeout: float) -> tuple[int, str]:
    proxy.hook({AUTHORIZE: setup.at_authorize, START: setup.at_start})
    fds, command = _open_fds(setup)
    try:
        argv = [sys.executable, "-m", "proctor", "run", "--server", proxy.url, "--key", str(key)]
        with _stdin(setup) as stdin:
            proc = subprocess.Popen(
                [*argv, "--", *command],
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=setup.cwd,
                env=setup.environment(),
                pass_fds=fds,
            )
    finally:
        for fd in fds:
            os.close(fd)
    deadline = time.monotonic() + timeout
    catcher = _at_exec(setup, deadline)
    _mid_run(setup, proc, deadline)
    try:
        _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if not _caught(catcher) and proc.returncode != 77:
        raise AssertionError(f"the interpreter was never caught: {err.decode()[-800:]}")
    for prefix, hook in ((AUTHORIZE, setup.at_authorize), (START, setup.at_start)):
        if hook is not None and prefix not in proxy.fired and proc.returncode != 77:
            raise AssertionError(f"the {prefix.decode().strip()} hook never ran: {err.decode()[-800:]}")
    if proxy.errors:
        raise AssertionError(f"a hook failed: {proxy.errors!r}")
    return proc.returncode, err.decode(errors="replace")


def run_plain(setup: Setup, *, timeout: float = 30) -> int:
    """The same trick without proctor: the hooks' changes made before (or while) it runs,
    as nothing measured, authorized or copied anything."""
    for hook in (setup.at_authorize, setup.at_start):
        if hook is not None:
            hook()
    fds, command = _open_fds(setup)
    try:
        with _stdin(setup) as stdin:
            proc = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=setup.cwd,
                env=setup.environment(),
                pass_fds=fds,
            )
    finally:
        for fd in fds:
            os.close(fd)
    catcher = _at_exec(setup, time.monotonic() + timeout)
    _mid_run(setup, proc, time.monotonic() + timeout)
    code = proc.wait(timeout=timeout)
    if not _caught(catcher):
        raise AssertionError("the interpreter was never caught")
    return code
