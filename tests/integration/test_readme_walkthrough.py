"""The README's walkthrough runs as written, and prints what the README says it prints.

Rule: every shell block of README.md marked ``<!-- walkthrough -->`` works as typed on
a fresh machine, in order, in one shell; a block marked ``<!-- output -->`` right after
one lists lines its output must contain, in order (``…`` stands for anything).

How it runs, as a new user would: a fresh temporary "clone" holding the repository's
``examples/`` and a ``.venv`` that is the venv running these tests (the README
activates it), a fresh ``HOME``, no ``PROCTOR_*`` variables, the venv's ``bin`` first on
the ``PATH``. As root, it runs a second time as an unprivileged user (uid 65534, as a
new user would be; ``unpriv_support``), where the clone's ``.venv`` is made for it: the
interpreter of the re-run, with this checkout's ``src`` and the installed packages. The blocks are joined into one ``bash`` script under ``set -euo pipefail``
(a ``python`` block runs as ``python - <<EOF`` in the same shell and directory), so any
failing command fails the test, naming the block. The one change made to the text: the
governor's port 8700 becomes a free port, so that the test does not collide with a
governor already running on the machine. The script runs in a session of its own; the
whole process group (the governor the README starts in the background included) is
killed at the end, whatever happened.

The README's outputs are the piped form. Then, in the directory the walkthrough left
(its governor stopped), its data commands run once more with stdout on a
pseudo-terminal, as a person types them (``terminal_support``, shared with
``test_cli_human.py``): ``principal list`` and ``log verify`` exactly as the walkthrough
has them, ``policy show`` and ``executions list`` as "Watching executions" shows them;
each must render for a person (a table header, ✓ steps, the policy summary), not JSON.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gov_server import free_port
from terminal_support import in_terminal
from unpriv_support import assert_passes_unprivileged

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PORT = "8700"  # the port the README's governor listens on
BLOCK_MARK = "@@proctor-walkthrough-block {}@@"
FENCE = re.compile(r"^<!-- (walkthrough|output|setup) -->\n```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
TIMEOUT_S = 240

pytestmark = pytest.mark.slow


@dataclass
class Block:
    """One walkthrough block: its language, its text and the output lines it must print."""

    language: str
    text: str
    line: int  # in README.md, 1-based, of the opening fence
    expected: list[str]


def walkthrough(readme: str) -> list[Block]:
    """The marked blocks of ``readme``, in order, each with the output block after it."""
    blocks: list[Block] = []
    for m in FENCE.finditer(readme):
        kind, language, text = m.group(1), m.group(2), m.group(3)
        line = readme.count("\n", 0, m.start()) + 2
        if kind == "walkthrough":
            if language not in ("sh", "python"):
                raise AssertionError(
                    f"README.md:{line}: expected a sh or python walkthrough block, found {language}"
                )
            blocks.append(Block(language, text, line, []))
        elif kind == "output":
            if not blocks or blocks[-1].expected:
                raise AssertionError(f"README.md:{line}: an output block must follow a walkthrough block")
            blocks[-1].expected = [ln for ln in text.splitlines() if ln.strip()]
    return blocks


def script(blocks: list[Block], port: int) -> str:
    """One bash script: the blocks in order, each announced by a marker line."""
    parts = ["set -euo pipefail", "exec 2>&1"]
    for i, block in enumerate(blocks):
        text = block.text.replace(PORT, str(port))
        parts.append(f"echo '{BLOCK_MARK.format(i)}'")
        if block.language == "python":
            parts.append(f"python - <<'PROCTOR_README_PYTHON'\n{text}PROCTOR_README_PYTHON")
        else:
            parts.append(text)
    return "\n".join(parts) + "\n"


def pattern(expected: str) -> re.Pattern[str]:
    """A README output line as a regular expression: ``…`` matches anything."""
    return re.compile(".*?".join(re.escape(part) for part in expected.split("…")))


def check_output(block: Block, output: str) -> None:
    """Every expected line matches a line of ``output``, in order."""
    lines = output.splitlines()
    at = 0
    for expected in block.expected:
        want = pattern(expected)
        while at < len(lines) and not want.fullmatch(lines[at]):
            at += 1
        if at == len(lines):
            raise AssertionError(
                f"README.md:{block.line}: the block did not print {expected!r} (in this order); "
                f"it printed:\n{output}"
            )
        at += 1


def kill_group(pgid: int) -> None:
    """SIGTERM to the script's whole process group (a governor stops cleanly), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def clone_venv(venv: Path) -> None:
    """The clone's ``.venv``: the venv running the tests, or one made for the re-run.

    The unprivileged re-run runs a system interpreter with ``PYTHONPATH`` (the venv's
    own may live where that user cannot go): its venv gets that interpreter, a ``.pth``
    naming this checkout's ``src`` and the installed packages, and a ``proctor`` script.
    """
    if sys.prefix != sys.base_prefix:
        venv.symlink_to(sys.prefix)
        return
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    paths = [str(REPO / "src"), *(p for p in sys.path if p.endswith("site-packages"))]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (venv / "lib" / version / "site-packages" / "proctor-checkout.pth").write_text("\n".join(paths) + "\n")
    entry = venv / "bin" / "proctor"
    entry.write_text(f"#!{venv}/bin/python\nimport sys\nfrom proctor.cli import main\nsys.exit(main())\n")
    entry.chmod(0o755)


def readme_command(blocks: list[Block], start: str) -> list[str]:
    """The argument vector of the walkthrough's line that starts with ``start``, as the
    shell splits it (its comment dropped); it may appear more than once, always alike."""
    lines = [ln for b in blocks if b.language == "sh" for ln in b.text.splitlines() if ln.startswith(start)]
    argvs = {tuple(shlex.split(line, comments=True)) for line in lines}
    if len(argvs) != 1:
        raise AssertionError(f"README.md: expected one walkthrough command starting {start!r}, found {lines}")
    return list(argvs.pop())


def check_terminal_rendering(blocks: list[Block], tour: Path, env: dict[str, str], tmp: Path) -> None:
    """The walkthrough's data commands, on a terminal, print for a person."""
    terminal = env | {"TZ": "UTC", "LC_ALL": "C.UTF-8", "COLUMNS": "200"}
    principal_list = readme_command(blocks, "proctor principal list")
    commands = {
        "principal list": principal_list,
        "log verify": readme_command(blocks, "proctor log verify"),
        "policy show": ["proctor", "policy", "show", *principal_list[3:]],  # the same --key
        "executions list": ["proctor", "executions", "list", "--status", "all", *principal_list[3:]],
    }
    shown = {}
    for name, argv in commands.items():
        ran = in_terminal(*argv[1:], tmp=tmp, program=argv[:1], cwd=tour, env=terminal)
        assert ran.code == 0, (argv, ran)
        assert not ran.out.lstrip().startswith(("{", "[")), f"{argv} printed JSON on a terminal:\n{ran.out}"
        shown[name] = ran.out.splitlines()

    def header(name: str, first: str) -> list[str]:
        line = next((ln for ln in shown[name] if ln.startswith(first)), None)
        assert line is not None, f"proctor {name}: no table header on a terminal:\n" + "\n".join(shown[name])
        return line.split()

    assert header("principal list", "NAME") == ["NAME", "STATUS", "ZONE", "ATTRIBUTES", "UPDATED"]
    assert any(ln.split()[:2] == ["bob", "active"] for ln in shown["principal list"]), shown
    assert any("✓ log: " in ln for ln in shown["log verify"]), shown["log verify"]
    assert any("✓ state tables agree with the log" in ln for ln in shown["log verify"]), shown["log verify"]
    assert header("policy show", "POLICY") == ["POLICY", "EFFECT", "FILE"]
    assert any(ln.startswith("activated: ") and " UTC (20" in ln for ln in shown["policy show"])
    assert header("executions list", "ID") == [
        "ID",
        "PRINCIPAL",
        "RESOURCE",
        "ZONE",
        "STATUS",
        "STARTED",
        "LEASE",
    ]


def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = walkthrough(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no <!-- walkthrough --> block"
    clone = tmp_path / "clone"
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(REPO / "examples", clone / "examples")
    clone_venv(clone / ".venv")
    env = {
        "PATH": f"{clone / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp_path),
    }
    (tmp_path / "walkthrough.sh").write_text(script(blocks, free_port()))
    proc = subprocess.Popen(
        ["bash", str(tmp_path / "walkthrough.sh")],
        cwd=clone,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        output, _ = proc.communicate()
        raise AssertionError(f"the walkthrough did not finish within {TIMEOUT_S} s:\n{output}") from None
    finally:
        kill_group(proc.pid)  # the session's leader: its pid is the group's id
    # The output of each block: what follows its marker, up to the next one.
    pieces = re.split(r"^@@proctor-walkthrough-block (\d+)@@$\n?", output, flags=re.MULTILINE)
    by_block = {int(pieces[i]): pieces[i + 1] for i in range(1, len(pieces) - 1, 2)}
    if proc.returncode != 0:
        failed = max(by_block, default=0)
        block = blocks[failed]
        raise AssertionError(
            f"the walkthrough failed (exit {proc.returncode}) in the block at README.md:{block.line}:\n"
            f"{block.text}\n--- its output:\n{by_block.get(failed, output)}"
        )
    assert sorted(by_block) == list(range(len(blocks))), "some walkthrough blocks did not run"
    for i, block in enumerate(blocks):
        check_output(block, by_block[i])
    check_terminal_rendering(blocks, home / "proctor-tour", env, tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged (this is the re-run)")
def test_readme_walkthrough_unprivileged_rerun() -> None:
    """The same walkthrough as an unprivileged user (no cgroups: namespaces only)."""
    assert_passes_unprivileged(__file__, timeout=240)
