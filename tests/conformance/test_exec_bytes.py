"""What runs is the measured bytes: an executable, interpreter or script overwritten in
place (same inode) after it was measured either runs as measured or does not run at
all — never as overwritten. And a script keeps its own path (``$0``), and an executable
its own ``/proc/self/exe``, where the backend can show the measured copy there (a
private mount namespace)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gov_server import GovernorServer
from gov_support import POLICIES
from proctor.enforcement.containment import Containment, probe
from proctor.enforcement.measure import Measurement, measure, prepare
from proctor.errors import EnforcementError, IntegrityError
from unpriv_support import assert_passes_unprivileged

CAPS = probe()
ECHO = os.path.realpath(shutil.which("echo") or "/bin/echo")
SH = os.path.realpath(shutil.which("sh") or "/bin/sh")
BACKENDS = {"strongest": None, "no-mount-namespace": ["session", "subreaper", "pdeathsig"]}


def overwrite_in_place(path: Path, data: bytes) -> None:
    inode = path.stat().st_ino
    with path.open("r+b") as f:
        f.write(data)
        f.truncate()
    assert path.stat().st_ino == inode  # the same file, new bytes


def command(tmp_path: Path, role: str) -> tuple[list[str], Path, bytes]:
    """A command, the file of the given role in it, and what to overwrite that file with.

    Measured, each prints ``measured hi``; overwritten, it would print something else.
    """
    if role == "executable":
        tool = tmp_path / "tool"
        shutil.copy(ECHO, tool)
        return [str(tool), "measured", "hi"], tool, b"#!/bin/sh\necho overwritten\n"
    interpreter = tmp_path / "mysh"
    shutil.copy(SH, interpreter)
    script = tmp_path / "job"
    # The script's own interpreter is root's sh (one its principal could change is refused).
    script.write_text(f'#!{interpreter if role == "interpreter" else SH}\necho measured "$@"\n')
    script.chmod(0o755)
    if role == "interpreter":
        return [str(script), "hi"], interpreter, Path(ECHO).read_bytes()  # would echo the script's path
    return [str(script), "hi"], script, b"#!/bin/sh\necho overwritten\n"


def run_prepared(
    containment: Containment, m: Measurement, *, then: Callable[[], None] = lambda: None
) -> bytes:
    """Stage ``m``, call ``then``, start it; its output, or ``b"refused"`` if nothing ran."""
    try:
        p = prepare(m)
    except IntegrityError:
        return b"refused"
    with p:
        then()
        tree = containment.spawn(p.argv, exec_path=p.exec_path, pass_fds=p.pass_fds, stdout=subprocess.PIPE)
    with tree:
        assert tree.wait(timeout=30) == 0
        assert tree.stdout is not None
        return tree.stdout.read()


@pytest.mark.parametrize("backends", list(BACKENDS))
@pytest.mark.parametrize("role", ["executable", "interpreter", "script"])
def test_overwritten_in_place_after_measure_runs_as_measured_or_not_at_all(
    tmp_path: Path, role: str, backends: str
) -> None:
    argv, target, evil = command(tmp_path, role)
    original = target.read_bytes()
    containment = Containment(CAPS, backends=BACKENDS[backends])
    measured_or_refused = {b"measured hi\n", b"refused"}

    if role == "interpreter" and os.geteuid() != 0:  # the interpreter is its principal's: refused
        with pytest.raises(EnforcementError, match="could be changed by someone other than root"):
            measure(argv)
        return
    # Between measuring and staging the copies (while the governor is asked).
    m = measure(argv)
    overwrite_in_place(target, evil)
    assert run_prepared(containment, m) in measured_or_refused
    assert run_prepared(containment, m) in measured_or_refused  # again, from the file as it is now

    # Between staging the copies and exec (and while it runs).
    overwrite_in_place(target, original)
    m = measure(argv)
    out = run_prepared(containment, m, then=lambda: overwrite_in_place(target, evil))
    assert out in measured_or_refused


# -- end to end: proctor run keeps the paths a program sees ------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(tmp_path_factory.mktemp("exec-bytes"), policy=POLICIES / "run")
    yield gov
    gov.stop()


def proctor_run(
    server: GovernorServer, *argv: str, cwd: Path | None = None, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "proctor",
            "run",
            "--server",
            server.url,
            "--key",
            str(server.key),
            "--",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )


SHOWS_PATHS = pytest.mark.skipif(
    not CAPS.mount_namespaces, reason="no mount namespace here: the copies run as /proc/self/fd/N"
)
# A script is shown at its path only if only root can change that path (else it could
# be swapped as the interpreter opens it): the test's own files are root's only as root.
ROOTS_SCRIPTS = pytest.mark.skipif(
    os.geteuid() != 0, reason="the scripts are this user's: read from /proc/self/fd/N (_trust.pinned)"
)


@SHOWS_PATHS
@ROOTS_SCRIPTS
def test_a_script_sees_its_own_path_as_dollar_zero(server: GovernorServer, tmp_path: Path) -> None:
    """A script sees its own path as $0."""
    home = tmp_path / "app"
    home.mkdir()
    (home / "data.txt").write_text("next to the script\n")
    job = home / "job.sh"
    job.write_text('#!/bin/sh\necho "0=$0"\ncd "$(dirname "$0")" && cat data.txt\n')
    job.chmod(0o755)

    direct = proctor_run(server, str(job))
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout == f"0={job}\nnext to the script\n"

    by_interpreter = proctor_run(server, "sh", "job.sh", cwd=home)
    assert by_interpreter.returncode == 0, by_interpreter.stderr
    assert by_interpreter.stdout == "0=job.sh\nnext to the script\n"


@SHOWS_PATHS
@ROOTS_SCRIPTS
def test_a_wrapper_that_dispatches_on_its_name_sees_the_name_it_was_run_by(
    server: GovernorServer, tmp_path: Path
) -> None:
    # Debian's pg_dump is a symlink to pg_wrapper, which dispatches on basename($0).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = tmp_path / "pg_wrapper"
    wrapper.write_text('#!/bin/sh\necho "called as $(basename "$0")"\n')
    wrapper.chmod(0o755)
    (bindir / "pg_dump").symlink_to(wrapper)
    proc = proctor_run(server, "pg_dump", path=f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "called as pg_dump\n"


@SHOWS_PATHS
def test_an_executable_sees_its_own_path_as_proc_self_exe(server: GovernorServer) -> None:
    """An executable sees its own path as /proc/self/exe."""
    show = "import os, sys; print(os.readlink('/proc/self/exe') == os.path.realpath(sys.executable))"
    proc = proctor_run(server, sys.executable, "-c", show)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "True\n"


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged (this is the re-run)")
def test_unprivileged_rerun_passes() -> None:
    """The same rules as an unprivileged user (the mount namespace is a user namespace's)."""
    assert_passes_unprivileged(__file__, timeout=240)
