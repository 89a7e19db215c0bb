"""Argv tricks: what runs is what was measured and authorized, or nothing runs.

Each trick runs through a real ``proctor run`` against a real governor whose policy
allows exactly the trick's authorized files (their real path and digest; for ``sh -c``,
the shell with exactly one string). The authorized bytes leave ``measured`` marks, any
other bytes ``EVIL`` marks (``tests/argv_support.py``), so the outcome is read from what
happened, not from what proctor says:

- ``runs-measured``: only the authorized bytes ran (the run may then be stopped by the
  integrity watch, exit 79, when a measured file changed under it);
- ``denied``: nothing ran (exit 77: refused before the start, or the start failed);
- ``runs-unmeasured``: other bytes ran — a bug, unless the trick is a stated limit
  (``limit`` below, and a bullet in ``docs/threat-model.md``).

Where the trick would run other bytes without proctor, that is checked too (the
control: the same command and changes, run directly), so no row holds only because the
trick was harmless.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from argv_support import (
    CP,
    DENIED,
    MEASURED,
    MKDIR,
    SH,
    UNMEASURED,
    Allow,
    Setup,
    allow_file,
    classify,
    digest,
    elf,
    foreign,
    hold_python,
    run_plain,
    run_proctor,
    script,
)
from figures import record
from gov_server import GovernorServer
from proctor.enforcement.containment import probe

# The principal is another user than root: its files are chowned to it, which needs root.
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the tricks make files another user's (chown)")

PATH = os.environ.get("PATH", "/usr/bin:/bin")
SHOWN = probe().mount_namespaces  # the copies can be shown at their own paths
# A real interpreter binary: the first python3 on PATH may be a wrapper script (a pyenv
# shim), which is then what the resource names.
PY = os.path.realpath("/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)
BASH = shutil.which("bash") or "/bin/bash"
CC = shutil.which("cc")


# -- the files tricks are made of ------------------------------------------------------


def auth_sh(d: Path, name: str = "auth.sh", *, shebang: str = "/bin/sh", extra: str = "") -> Path:
    """An authorized script: appends ``measured`` to ``out``."""
    return script(d / name, f"#!{shebang}\n{extra}echo measured >> {d}/out\n")


def evil_sh(d: Path, name: str = "evil.sh", *, out: Path | None = None) -> Path:
    return script(d / name, f"#!/bin/sh\necho EVIL >> {out or d / 'out'}\n")


def auth_py(d: Path, name: str = "auth.py", *, shebang: str = "", out: Path | None = None) -> Path:
    head = f"#!{shebang}\n" if shebang else ""
    return script(
        d / name, f"{head}with open({str(out or d / 'out')!r}, 'a') as f:\n    f.write('measured\\n')\n"
    )


def evil_py(path: Path, d: Path) -> Path:
    """Python that leaves the ``evil`` mark — in any interpreter but proctor's own (which
    gets the same environment: what it runs in itself is the principal's affair)."""
    code = (
        f"import sys\nif 'proctor' not in sys.orig_argv:\n    open({str(d / 'evil')!r}, 'w').write('EVIL')\n"
    )
    return script(path, code, mode=0o644)


def waiting_sh(d: Path) -> Path:
    """An authorized script that marks its start, waits for ``go``, then appends
    ``measured`` — after 32 KiB of comments, so a shell reading the file itself reads
    that last line only then."""
    pad = "".join(f"# padding line {i:05d} ...........................................\n" for i in range(512))
    return script(
        d / "wait.sh",
        f"#!/bin/sh\necho measured-start >> {d}/out\n"
        f"while [ ! -e {d}/go ]; do sleep 0.02; done\n{pad}echo measured >> {d}/out\n",
    )


def cp_tool(d: Path, path: Path) -> tuple[Path, list[str]]:
    """An authorized binary (a copy of ``cp``) and the arguments that make it leave its
    mark: ``src`` (holding ``measured``) copied to ``out``. A copy of ``mkdir`` given the
    same arguments makes ``out`` a directory instead."""
    elf(CP, path)
    (d / "src").write_text("measured\n")
    return path, [str(d / "src"), str(d / "out")]


def repoint(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def rename_over(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    os.replace(tmp, path)


def rewrite_in_place(path: Path, data: bytes) -> None:
    inode = path.stat().st_ino
    with path.open("r+b") as f:
        f.write(data)
        f.truncate()
    assert path.stat().st_ino == inode


def fake_bin(d: Path, name: str, *, target: str = MKDIR, link: bool = False) -> Path:
    """A directory holding ``name``: a copy of ``target`` the principal owns (or, with
    ``link``, a symlink to ``target`` itself)."""
    bindir = d / "fakebin"
    bindir.mkdir(exist_ok=True)
    if link:
        (bindir / name).symlink_to(target)
    else:
        foreign(elf(target, bindir / name))
    foreign(bindir)
    return bindir


def sh_c(text: str) -> Allow:
    """Allow ``sh -c TEXT`` exactly: the shell's string is authorized as argument content."""
    return Allow(
        SH,
        f'context.executable_digest == "{digest(SH)}" && context.argc == 3 && context.args has a1 && '
        f'context.args.a1 == "-c" && context.args has a2 && context.args.a2 == "{text}"',
    )


# -- the tricks ------------------------------------------------------------------------


def symlink_retargeted_while_authorizing(d: Path) -> Setup:
    auth, evil = auth_sh(d), evil_sh(d)
    link = d / "job"
    link.symlink_to(auth)
    return Setup(d, [str(link)], [allow_file(auth)], at_authorize=lambda: repoint(link, evil))


def symlink_named_like_the_authorized_file(d: Path) -> Setup:
    auth, evil = auth_sh(d), evil_sh(d)
    (d / "other").mkdir()
    (d / "other" / "auth.sh").symlink_to(evil)
    return Setup(d, [str(d / "other" / "auth.sh")], [allow_file(auth)])


def dotdot_through_a_symlinked_directory(d: Path) -> Setup:
    # Read as text, sub/../auth.sh is the authorized d/auth.sh; the kernel resolves sub
    # first (a symlink to d/elsewhere/inner), so it is d/elsewhere/auth.sh.
    auth = auth_sh(d)
    (d / "elsewhere" / "inner").mkdir(parents=True)
    evil_sh(d / "elsewhere", "auth.sh", out=d / "out")
    (d / "sub").symlink_to(d / "elsewhere" / "inner")
    return Setup(d, ["sub/../auth.sh"], [allow_file(auth)], cwd=d)


def dotdot_and_dot_slash_to_the_authorized_file(d: Path) -> Setup:
    auth = auth_sh(d)
    (d / "sub").mkdir()
    return Setup(d, ["./sub/../auth.sh"], [allow_file(auth)], cwd=d)


def relative_script_given_to_sh(d: Path) -> Setup:
    auth = auth_sh(d)
    (d / "sub").mkdir()
    return Setup(d, ["sh", "../auth.sh"], [allow_file(auth)], cwd=d / "sub")


def path_hijack_earlier_entry(d: Path) -> Setup:
    (d / "good").mkdir()
    tool, args = cp_tool(d, d / "good" / "tool")
    bad = fake_bin(d, "tool")
    return Setup(d, ["tool", *args], [allow_file(tool)], env={"PATH": f"{bad}:{d / 'good'}:{PATH}"})


def path_changed_by_env_in_the_command(d: Path) -> Setup:
    (d / "good").mkdir()
    tool, args = cp_tool(d, d / "good" / "tool")
    bad = fake_bin(d, "tool")
    argv = ["env", f"PATH={bad}:{d / 'good'}", "tool", *args]
    return Setup(d, argv, [allow_file(tool)], env={"PATH": f"{d / 'good'}:{PATH}"})


def python3_resolving_to_a_principals_file(d: Path) -> Setup:
    auth = auth_py(d)
    fake = fake_bin(d, "python3")
    return Setup(
        d, ["python3", str(auth), str(d / "out")], [allow_file(auth)], env={"PATH": f"{fake}:{PATH}"}
    )


def python3_resolving_to_another_program(d: Path) -> Setup:
    auth = auth_py(d)
    fake = fake_bin(d, "python3", target=MKDIR, link=True)  # root's own mkdir, named python3
    return Setup(
        d, ["python3", str(auth), str(d / "out")], [allow_file(auth)], env={"PATH": f"{fake}:{PATH}"}
    )


def shebang_naming_a_principals_interpreter(d: Path) -> Setup:
    (d / "interp").mkdir()
    interp = elf(MKDIR, d / "interp" / "sh")  # was a copy of sh when the script was written
    foreign(interp, d / "interp")
    auth = auth_sh(d, shebang=str(interp))
    return Setup(d, [str(auth), str(d / "out")], [allow_file(auth)])


def shebang_interpreter_rewritten_while_authorizing(d: Path) -> Setup:
    (d / "interp").mkdir()
    interp = elf(SH, d / "interp" / "sh")
    auth = auth_sh(d, shebang=str(interp))
    evil = Path(MKDIR).read_bytes()
    return Setup(
        d,
        [str(auth), str(d / "out")],
        [allow_file(auth)],
        at_authorize=lambda: rewrite_in_place(interp, evil),
    )


def env_shebang_with_a_hijacked_path(d: Path) -> Setup:
    auth = auth_py(d, shebang="/usr/bin/env python3")
    fake = fake_bin(d, "python3")
    return Setup(d, [str(auth), str(d / "out")], [allow_file(auth)], env={"PATH": f"{fake}:{PATH}"})


def sh_c_not_authorized(d: Path) -> Setup:
    auth = auth_sh(d)
    return Setup(d, ["sh", "-c", f"echo EVIL >> {d}/out"], [allow_file(auth)])


def sh_c_the_authorized_string(d: Path) -> Setup:
    text = f"echo measured >> {d}/out"
    return Setup(d, ["sh", "-c", text], [sh_c(text)])


def sh_c_another_string(d: Path) -> Setup:
    return Setup(d, ["sh", "-c", f"echo EVIL >> {d}/out"], [sh_c(f"echo measured >> {d}/out")])


def env_assignment_then_the_command(d: Path) -> Setup:
    auth = auth_sh(d)
    return Setup(d, ["env", "X=1", str(auth)], [allow_file(auth)])


def env_split_string(d: Path) -> Setup:
    auth = auth_sh(d)
    return Setup(d, ["env", "-S", f"{auth} x"], [allow_file(auth)])


def nohup_then_the_command(d: Path) -> Setup:
    auth = auth_sh(d)
    return Setup(d, ["nohup", str(auth)], [allow_file(auth)], cwd=d)


def exec_a_through_a_shell(d: Path) -> Setup:
    auth, evil = auth_sh(d), evil_sh(d)
    return Setup(d, [BASH, "-c", f"exec -a {auth} {evil}"], [allow_file(auth)])


def script_rewritten_in_place_while_authorizing(d: Path) -> Setup:
    auth = auth_sh(d)
    evil = f"#!/bin/sh\necho EVIL >> {d}/out\n".encode()
    return Setup(d, [str(auth)], [allow_file(auth)], at_authorize=lambda: rewrite_in_place(auth, evil))


def script_renamed_over_while_authorizing(d: Path) -> Setup:
    auth = auth_sh(d)
    evil = f"#!/bin/sh\necho EVIL >> {d}/out\n".encode()
    return Setup(d, [str(auth)], [allow_file(auth)], at_authorize=lambda: rename_over(auth, evil))


def script_rewritten_in_place_mid_run(d: Path) -> Setup:
    wait = waiting_sh(d)
    head, _, tail = wait.read_bytes().rpartition(b"echo measured >> ")  # only the last line changes
    edited = head + b"echo EVIL     >> " + tail
    return Setup(d, [str(wait)], [allow_file(wait)], mid_run=lambda: rewrite_in_place(wait, edited))


def evil_py_script(d: Path) -> bytes:
    return f"#!{PY}\nwith open({str(d / 'out')!r}, 'a') as f:\n    f.write('EVIL\\n')\n".encode()


def directory_replaced_as_its_interpreter_starts(d: Path) -> Setup:
    # The principal renames the script's directory away and puts another script where it
    # was (a rename over the script itself would be seen by the integrity watch at once).
    fifo = hold_python(d, PY)
    foreign(d)  # the principal's directory
    (d / "app").mkdir()
    auth = auth_py(d / "app", shebang=PY, out=d / "out")
    evil = evil_py_script(d)

    def swap() -> None:
        (d / "app").rename(d / "app.old")
        (d / "app").mkdir()
        rename_over(auth, evil)

    env = {"HOME": str(d / "home")}
    return Setup(d, [str(auth)], [allow_file(auth)], env=env, hold=fifo, at_exec=swap)


def symlink_retargeted_as_its_interpreter_starts(d: Path) -> Setup:
    fifo = hold_python(d, PY)
    foreign(d)
    auth = auth_py(d, shebang=PY)
    evil = d / "evil.py"
    evil.write_bytes(evil_py_script(d))
    evil.chmod(0o755)
    link = d / "job"
    link.symlink_to(auth)
    env = {"HOME": str(d / "home")}
    return Setup(d, [str(link)], [allow_file(auth)], env=env, hold=fifo, at_exec=lambda: repoint(link, evil))


def sourced_file_rewritten_while_authorizing(d: Path) -> Setup:
    lib = script(d / "lib.sh", "true\n", mode=0o644)
    auth = auth_sh(d, extra=f". {lib}\n")
    evil = f"echo EVIL >> {d}/out\n".encode()
    return Setup(d, [str(auth)], [allow_file(auth)], at_authorize=lambda: rewrite_in_place(lib, evil))


def binary_renamed_over_while_authorizing(d: Path) -> Setup:
    tool, args = cp_tool(d, d / "tool")
    evil = Path(MKDIR).read_bytes()
    return Setup(d, [str(tool), *args], [allow_file(tool)], at_authorize=lambda: rename_over(tool, evil))


def binary_renamed_over_after_staging(d: Path) -> Setup:
    tool, args = cp_tool(d, d / "tool")
    evil = Path(MKDIR).read_bytes()
    return Setup(d, [str(tool), *args], [allow_file(tool)], at_start=lambda: rename_over(tool, evil))


def binary_rewritten_in_place_after_staging(d: Path) -> Setup:
    tool, args = cp_tool(d, d / "tool")
    evil = Path(MKDIR).read_bytes()
    return Setup(d, [str(tool), *args], [allow_file(tool)], at_start=lambda: rewrite_in_place(tool, evil))


def hardlink_written_through_its_other_name(d: Path) -> Setup:
    tool, args = cp_tool(d, d / "tool")
    alias = d / "alias"
    os.link(tool, alias)
    evil = Path(MKDIR).read_bytes()
    return Setup(
        d, [str(tool), *args], [allow_file(tool)], at_authorize=lambda: rewrite_in_place(alias, evil)
    )


def hardlink_to_the_authorized_binary_elsewhere(d: Path) -> Setup:
    tool, args = cp_tool(d, d / "tool")
    (d / "other").mkdir()
    os.link(tool, d / "other" / "tool")
    return Setup(d, [str(d / "other" / "tool"), *args], [allow_file(tool)])


def proc_self_fd_to_another_file(d: Path) -> Setup:
    auth, evil = auth_sh(d), evil_sh(d)
    return Setup(d, ["/proc/self/fd/<fd0>"], [allow_file(auth)], fds=(evil,))


def proc_self_fd_to_the_authorized_file(d: Path) -> Setup:
    auth = auth_sh(d)
    return Setup(d, ["/proc/self/fd/<fd0>"], [allow_file(auth)], fds=(auth,))


def ld_preload(d: Path) -> Setup:
    tool, args = cp_tool(d, d / "tool")
    lib = d / "evil.so"
    src = d / "evil.c"
    # Leaves its mark in the governed tool only (proctor run itself gets LD_PRELOAD too:
    # what runs in the principal's own process is the principal's affair).
    src.write_text(
        "#include <fcntl.h>\n#include <string.h>\n#include <unistd.h>\n"
        "__attribute__((constructor)) static void evil(void) {\n"
        '  char me[4096] = {0}; int fd = open("/proc/self/cmdline", O_RDONLY);\n'
        "  if (fd < 0) return; read(fd, me, sizeof me - 1); close(fd);\n"
        f'  if (strcmp(me, "{tool}") == 0) close(open("{d}/evil", O_CREAT|O_WRONLY, 0600));\n'
        "}\n"
    )
    assert CC is not None
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=60)
    return Setup(d, [str(tool), *args], [allow_file(tool)], env={"LD_PRELOAD": str(lib)})


def pythonpath_sitecustomize(d: Path) -> Setup:
    auth = auth_py(d)
    (d / "pylib").mkdir()
    evil_py(d / "pylib" / "sitecustomize.py", d)
    evil_py(d / "pylib" / "usercustomize.py", d)
    return Setup(d, [PY, str(auth)], [allow_file(auth)], env={"PYTHONPATH": str(d / "pylib")})


def pythonstartup(d: Path) -> Setup:
    auth = auth_py(d)
    start = evil_py(d / "startup.py", d)
    return Setup(d, [PY, str(auth)], [allow_file(auth)], env={"PYTHONSTARTUP": str(start)})


def python_i_with_code_on_stdin(d: Path) -> Setup:
    auth = auth_py(d)
    code = f"open({str(d / 'evil')!r}, 'w').write('EVIL')\n".encode()
    return Setup(d, [PY, "-i", str(auth)], [allow_file(auth)], stdin=code)


def login_shell_reading_the_principals_profile(d: Path) -> Setup:
    auth = auth_sh(d, shebang=BASH)
    (d / "home").mkdir()
    (d / "home" / ".bash_profile").write_text(f"echo EVIL >> {d}/out\n")
    return Setup(d, [BASH, "-l", str(auth)], [allow_file(auth)], env={"HOME": str(d / "home")})


def bash_env(d: Path) -> Setup:
    auth = auth_sh(d, shebang=BASH)
    evil = evil_sh(d)
    return Setup(d, [BASH, str(auth)], [allow_file(auth)], env={"BASH_ENV": str(evil)})


def exported_bash_function(d: Path) -> Setup:
    auth = auth_sh(d, shebang=BASH)
    return Setup(
        d,
        [str(auth)],
        [allow_file(auth)],
        env={"BASH_FUNC_echo%%": f"() {{ builtin echo EVIL >> {d}/out; }}"},
    )


def commands_the_script_runs_on_a_hijacked_path(d: Path) -> Setup:
    # The authorized script runs `cat` by name: the PATH it inherits is the principal's.
    (d / "src").write_text("measured\n")
    auth = script(d / "auth.sh", f"#!/bin/sh\ncat {d}/src >> {d}/out\n")
    fake = fake_bin(d, "cat", target=str(evil_sh(d, "cat-evil")))
    return Setup(d, [str(auth)], [allow_file(auth)], env={"PATH": f"{fake}:{PATH}"})


@dataclass(frozen=True)
class Trick:
    """One row of the matrix: what is tried, what must happen, and how that is checked."""

    build: Callable[[Path], Setup]
    expected: str
    how: str
    control: bool = True  # without proctor, the trick runs other bytes (checked)
    limit: bool = False  # a stated limit: other bytes run, and the threat model says so

    @property
    def name(self) -> str:
        return self.build.__name__.replace("_", "-")


TRICKS = [
    Trick(symlink_retargeted_while_authorizing, DENIED if SHOWN else MEASURED, "argv[0] a symlink to the authorized script, pointed at another one while the governor is asked: the copy is shown at the real path, the symlink no longer leads there, the start fails (without a mount namespace: the copy runs)"),
    Trick(symlink_named_like_the_authorized_file, DENIED, "other/auth.sh, a symlink to another script: the resource is the real path, which the policy does not allow"),
    Trick(dotdot_through_a_symlinked_directory, DENIED, "sub/../auth.sh with sub a symlink elsewhere: resolved as the kernel does (sub first), not as text"),
    Trick(dotdot_and_dot_slash_to_the_authorized_file, MEASURED, "./sub/../auth.sh resolves to the authorized script, which runs", control=False),
    Trick(relative_script_given_to_sh, MEASURED, "sh ../auth.sh from a subdirectory: the script is measured and runs", control=False),
    Trick(path_hijack_earlier_entry, DENIED, "an earlier PATH entry holds a same-named binary: measured as execvp resolves it, not allowed"),
    Trick(path_changed_by_env_in_the_command, DENIED, "env PATH=... tool: what runs is env, not allowed"),
    Trick(python3_resolving_to_a_principals_file, DENIED, "python3 auth.py where python3 is the principal's own file: it cannot vouch for the script"),
    Trick(python3_resolving_to_another_program, DENIED, "python3 auth.py where python3 is a symlink to root's mkdir: the interpreter is recognised by its real name"),
    Trick(shebang_naming_a_principals_interpreter, DENIED, "the authorized script's #! names a file the principal can change (now mkdir): refused"),
    Trick(shebang_interpreter_rewritten_while_authorizing, MEASURED, "the #! interpreter rewritten in place while the governor is asked: its measured copy runs"),
    Trick(env_shebang_with_a_hijacked_path, DENIED, "#!/usr/bin/env python3 with the principal's python3 first on the PATH: refused"),
    Trick(sh_c_not_authorized, DENIED, "sh -c STRING: the resource is the shell, which the policy does not allow"),
    Trick(sh_c_the_authorized_string, MEASURED, "sh -c with exactly the string the policy allows (argv is in the request and bound by the warrant)", control=False),
    Trick(sh_c_another_string, DENIED, "sh -c with another string than the one the policy allows"),
    Trick(env_assignment_then_the_command, DENIED, "env X=1 auth.sh: what runs is env, not allowed", control=False),
    Trick(env_split_string, DENIED, "env -S 'auth.sh x': what runs is env, not allowed", control=False),
    Trick(nohup_then_the_command, DENIED, "nohup auth.sh: what runs is nohup, not allowed", control=False),
    Trick(exec_a_through_a_shell, DENIED, "bash -c 'exec -a auth.sh evil.sh': what runs is the shell, not allowed"),
    Trick(script_rewritten_in_place_while_authorizing, MEASURED, "the script rewritten in place (same inode) while the governor is asked: its measured copy runs"),
    Trick(script_renamed_over_while_authorizing, MEASURED, "another script renamed over it while the governor is asked: the measured copy runs at its path"),
    Trick(script_rewritten_in_place_mid_run, MEASURED, "its last line rewritten in place while it runs (a shell reads it only then): the copy runs on, to its end or until the integrity watch stops it"),
    Trick(directory_replaced_as_its_interpreter_starts, MEASURED, "the script's directory (the principal's) renamed away and another script put at its path once the interpreter started (held there by a user-site hook), before it opens the script: it reads its sealed copy"),
    Trick(symlink_retargeted_as_its_interpreter_starts, MEASURED, "run through the principal's symlink, pointed at another script once the interpreter started, before it opens the script: it reads its sealed copy"),
    Trick(sourced_file_rewritten_while_authorizing, UNMEASURED, "the authorized script sources lib.sh, rewritten while the governor is asked: a sourced file is not measured", limit=True),
    Trick(binary_renamed_over_while_authorizing, MEASURED, "mkdir renamed over the authorized binary while the governor is asked: the measured copy runs"),
    Trick(binary_renamed_over_after_staging, MEASURED, "mkdir renamed over it after the copies were staged, before exec: the measured copy runs"),
    Trick(binary_rewritten_in_place_after_staging, MEASURED, "rewritten in place after staging, before exec: the measured copy runs"),
    Trick(hardlink_written_through_its_other_name, MEASURED, "rewritten in place through a hard link's other name while the governor is asked: the measured copy runs"),
    Trick(hardlink_to_the_authorized_binary_elsewhere, DENIED, "a hard link to the authorized binary at another path: the resource is the path run", control=False),
    Trick(proc_self_fd_to_another_file, DENIED, "/proc/self/fd/N open on another script: resolved to that file, not allowed"),
    Trick(proc_self_fd_to_the_authorized_file, MEASURED, "/proc/self/fd/N open on the authorized script: measured, and read from its sealed copy", control=False),
    Trick(ld_preload, MEASURED, "LD_PRELOAD names a library with a constructor: removed from the command's environment"),
    Trick(pythonpath_sitecustomize, MEASURED, "PYTHONPATH holds sitecustomize.py: removed from the command's environment"),
    Trick(pythonstartup, MEASURED, "PYTHONSTARTUP: read only by an interactive interpreter (and removed)", control=False),
    Trick(python_i_with_code_on_stdin, DENIED, "python3 -i auth.py reads code from stdin after the script: the resource is python3, not allowed"),
    Trick(login_shell_reading_the_principals_profile, DENIED, "bash -l auth.sh reads the principal's ~/.bash_profile first: the resource is bash, not allowed"),
    Trick(bash_env, MEASURED, "BASH_ENV names another script: removed from the command's environment"),
    Trick(exported_bash_function, MEASURED, "an exported function (BASH_FUNC_echo%%) overriding echo: removed from the command's environment"),
    Trick(commands_the_script_runs_on_a_hijacked_path, UNMEASURED, "the authorized script runs cat by name, the principal's PATH finds another: commands a script runs are not measured", limit=True),
]  # fmt: skip


# -- running the matrix ----------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What one trick did under ``proctor run``, and without it (or why it could not be run)."""

    outcome: str
    evidence: str
    stderr: str
    control: str | None  # the outcome without proctor, when checked
    error: BaseException | None = None


def observe(trick: Trick, root: Path, server: GovernorServer) -> Observed:
    try:
        return _observe(trick, root, server)
    except Exception as e:
        return Observed("error", repr(e), "", None, e)


def _observe(trick: Trick, root: Path, server: GovernorServer) -> Observed:
    plain = root / "plain" / trick.name
    code, err = run_proctor(SETUPS[trick.name], server.port, server.key)
    outcome, evidence = classify(SETUPS[trick.name], code)
    control = None
    if trick.control:
        plain.mkdir(parents=True)
        setup = trick.build(plain)
        control = classify(setup, run_plain(setup))[0]
    return Observed(outcome, evidence, err, control)


SETUPS: dict[str, Setup] = {}
RUNNABLE = [t for t in TRICKS if t.build is not ld_preload or CC is not None]
RESULTS: dict[str, Observed] = {}  # the tricks whose checks passed


@pytest.fixture(scope="module")
def observed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Observed]]:
    """Every selected trick built, one governor allowing what each authorizes, every
    trick run (four at a time: each has its own proxy and directory)."""
    names = {item.callspec.id for item in request.session.items if hasattr(item, "callspec")}
    tricks = [t for t in RUNNABLE if t.name in names]
    base = tmp_path_factory.mktemp("argv-tricks")
    for trick in tricks:
        d = base / "tricks" / trick.name
        d.mkdir(parents=True)
        SETUPS[trick.name] = trick.build(d)
    rules = [
        f'@id("{name}-{i}")\npermit (principal, action == Proctor::Action::"exec", '
        f'resource == Proctor::Executable::"{allowed.resource}") when {{ {allowed.when} }};\n'
        for name, setup in SETUPS.items()
        for i, allowed in enumerate(setup.allow)
    ]
    (base / "policy").mkdir()
    (base / "policy" / "argv.cedar").write_text("\n".join(rules))
    server = GovernorServer(base / "gov", policy=base / "policy")
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {t.name: pool.submit(observe, t, base, server) for t in tricks}
            results = {name: f.result() for name, f in futures.items()}
    finally:
        server.stop()
    yield results
    if set(RESULTS) == {t.name for t in RUNNABLE}:  # every trick checked, and held
        publish()


def publish() -> None:
    rows = []
    for trick in RUNNABLE:
        seen = RESULTS[trick.name]
        outcome = f"{seen.outcome}{' (limit)' if trick.limit else ''}: {seen.evidence}"
        how = trick.how + ("; without proctor, other bytes ran" if seen.control == UNMEASURED else "")
        rows.append((trick.name, outcome, how))
    counts = {
        o: sum(1 for t in RUNNABLE if RESULTS[t.name].outcome == o) for o in (MEASURED, DENIED, UNMEASURED)
    }
    record(
        "inputs-argv-tricks",
        section="Inputs tried",
        summary=[
            f"{len(rows)} argv tricks, each through a real proctor run against a real governor whose policy "
            "allows exactly the trick's authorized file (path and digest)",
            f"only the measured, authorized bytes ran: {counts[MEASURED]}; denied, nothing ran: {counts[DENIED]}; "
            f"other bytes ran: {counts[UNMEASURED]} (each a stated limit, docs/threat-model.md)",
            f"{sum(1 for t in RUNNABLE if RESULTS[t.name].control == UNMEASURED)} of the tricks were also run "
            "without proctor, where each ran other bytes than the authorized ones",
        ],
        columns=["trick", "outcome", "checked how"],
        rows=rows,
    )


@pytest.mark.parametrize("trick", TRICKS, ids=lambda t: t.name)
def test_what_runs_is_what_was_measured_and_authorized_or_nothing_runs(
    observed: dict[str, Observed], trick: Trick
) -> None:
    """What runs is what was measured and authorized, or nothing runs (each argv trick)."""
    if trick.name not in observed:
        pytest.skip("no C compiler to build the preloaded library")
    seen = observed[trick.name]
    if seen.error is not None:
        raise seen.error
    assert seen.outcome == trick.expected, (
        f"{trick.name}: {seen.outcome} ({seen.evidence}):\n{seen.stderr[-1500:]}"
    )
    assert (seen.outcome == UNMEASURED) == trick.limit
    if trick.control:
        assert seen.control == UNMEASURED, (
            f"{trick.name}: without proctor it ran no other bytes ({seen.control})"
        )
    RESULTS[trick.name] = seen
