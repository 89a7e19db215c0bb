"""Re-running a test module as an unprivileged user (``setpriv``), from a root run.

The suite runs as root in CI; the parts that must also hold without privileges (the
containment backends that need no root, `proctor run` end to end) re-run themselves
as uid/gid 65534 with a private HOME and TMPDIR, importing this checkout's ``src`` and
the running venv's site-packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

UNPRIVILEGED = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
CHECK = "import sys, pytest, proctor; print('%d.%d' % sys.version_info[:2])"
ROOT = os.geteuid() == 0


def unprivileged_python(env: dict[str, str]) -> str | None:
    """An interpreter of this Python version that the unprivileged user may execute.

    The venv's interpreter may live where that user cannot go (a pyenv under /root);
    the system interpreter of the same version then runs the venv's packages.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (sys.executable, f"/usr/bin/python{version}"):
        check = subprocess.run(
            # exec'd by a shell running as that user: setpriv's own exec is more lenient
            [*UNPRIVILEGED, "/bin/sh", "-c", 'exec "$0" -c "$1"', exe, CHECK],
            env=env,
            capture_output=True,
            check=False,
        )
        if check.returncode == 0 and check.stdout.decode().strip() == version:
            return exe
    return None


def rerun_unprivileged(test_file: str, *, deselect: str, timeout: float = 180) -> tuple[int, str] | str:
    """Run pytest on ``test_file`` as uid 65534; (exit code, output), or a reason to skip."""
    if not os.path.exists(UNPRIVILEGED[0]):
        return "setpriv (util-linux) is not installed"
    home = tempfile.mkdtemp(prefix="proctor-unpriv-")
    repo = Path(__file__).parents[1]
    try:
        os.chmod(home, 0o777)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "TMPDIR": home,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join(
                [
                    str(repo / "src"),
                    str(repo / "tests"),
                    *(p for p in sys.path if p.endswith("site-packages")),
                ]
            ),
        }
        python = unprivileged_python(env)
        if python is None:
            return "no Python interpreter of this version is executable by an unprivileged user"
        result = subprocess.run(
            [
                *UNPRIVILEGED,
                python,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--basetemp={home}/bt",
                "-k",
                f"not {deselect}",
                test_file,
            ],
            check=False,
            cwd=repo,
            env=env,
            capture_output=True,
            timeout=timeout,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return result.returncode, result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")


def assert_passes_unprivileged(
    test_file: str, *, deselect: str = "unprivileged_rerun", timeout: float = 180
) -> None:
    """Re-run ``test_file`` as uid 65534 (:func:`rerun_unprivileged`) and assert every test
    passed; skip when no unprivileged interpreter can be had here."""
    import pytest

    outcome = rerun_unprivileged(test_file, deselect=deselect, timeout=timeout)
    if isinstance(outcome, str):
        pytest.skip(outcome)
    code, out = outcome
    if code != 0 or " passed" not in out or "failed" in out:
        raise AssertionError(f"the unprivileged re-run did not pass (exit {code}):\n{out[-4000:]}")
