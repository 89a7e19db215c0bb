"""Measure what a command line will execute, then execute exactly what was measured.

:func:`measure` resolves ``argv[0]`` as ``execvp`` would, and hashes (SHA-256, from an
opened descriptor) every file whose content decides what runs:

1. ``argv[0]`` starting with ``#!``: the interpreter of its ``#!`` line (with
   ``/usr/bin/env NAME`` resolved to NAME on the PATH) is the ``interpreter`` — it is
   what the kernel executes — and the file itself is the ``script``. An interpreter
   that someone other than root could change is refused (:mod:`proctor.enforcement._trust`).
2. ``argv[0]`` resolving to ``sh``/``bash``/``dash``/``python*``/``perl``/``ruby``/``node``
   (by the real file's name, not the name it is run by) that only root can change,
   followed by a file (the first argument that is not an option, so ``python -u x.py``
   and ``sh -e x.sh``; not ``python -c CODE``, ``python -m MOD``, ``python -i`` (code
   from stdin), ``sh -c CMD``, ``sh -l``/``-i`` (profile and rc files), ``perl -e``
   …): that file is the ``script``.
3. Otherwise ``argv[0]`` alone is the ``executable``.

:func:`prepare` closes the gap between that check and ``exec``: it copies each
measured file into a sealed memfd (no write, grow, shrink, nor further sealing), hashes
the *sealed copy* and compares it with the measured digest, and the command then runs
from the copies only — the executable's memfd is what is executed, and the script's is
what the interpreter reads. An overwrite of the original at any time after
:func:`measure`, even in place, therefore either fails :func:`prepare` (nothing runs)
or comes too late to matter (the measured bytes run). See ADR 0007.

Paths: with a private mount namespace (the ``mountns`` backend), each copy is shown at
its own path, so ``/proc/self/exe``, ``$0`` and ``__file__`` are the real paths
(:mod:`proctor.enforcement._staging`) — for a script, only where nobody but root can
change its path (below). Otherwise the program sees ``/memfd:…`` as ``/proc/self/exe``
and ``/proc/self/fd/M`` as the script's path; ``argv[0]`` is kept in both cases.

Residual limits, stated plainly:

- Shared libraries, the loader, modules imported, files sourced and commands run by a
  script, and the interpreter's ``site``/``.pth`` are not measured; the variables that
  name such code (``LD_PRELOAD``, ``PYTHONPATH``…) are not passed on (``_trust``).
- Copies carry no set-user-ID bit nor file capabilities (``sudo``, ``ping`` lose them).
- A script is read by its path only if only root can change every name on it
  (``_trust.pinned``: a swap there would race the interpreter's ``open``).
- Nested interpreters (an interpreter that is itself a ``#!`` script), ``env`` options
  other than ``-S``, and a relative ``#!`` interpreter are refused.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from proctor.enforcement._staging import (
    SNAPSHOTS,
    StagedCopy,
    Staging,
    close_quietly,
    copy_mode,
    register,
    sealed_copy,
    snapshot,
    unregister,
)
from proctor.enforcement._trust import changeable_by_others, pinned
from proctor.errors import EnforcementError, IntegrityError

__all__ = [
    "ROLES",
    "MeasuredFile",
    "Measurement",
    "measure",
    "Prepared",
    "prepare",
]

ROLES = ("executable", "interpreter", "script")
"""The roles a measured file can have."""

_SHEBANG_MAX = 256  # BINPRM_BUF_SIZE: the kernel reads no more of a #! line
_DEFAULT_PATH = "/bin:/usr/bin"  # glibc's execvp default when PATH is unset

# Per interpreter family: option letters that take code from elsewhere than a script
# file (the command line, stdin, rc and profile files), and option letters/long options
# whose value is the next word.
_FAMILIES: dict[str, tuple[str, str, frozenset[str]]] = {
    "python": ("cmi", "WX", frozenset({"--check-hash-based-pycs"})),
    "sh": ("csil", "oO", frozenset({"--rcfile", "--init-file"})),
    "perl": ("eE", "IMm", frozenset()),
    "ruby": ("e", "IrCE", frozenset()),
    "node": ("epi", "r", frozenset({"--eval", "--print", "--require", "--import", "--loader"})),
}
_CODE_LONG = frozenset({"--eval", "--print", "--interactive", "--login"})
_FAMILY_NAME = re.compile(r"(python|sh|bash|dash|perl|ruby|node|nodejs)[0-9.]*")


def _family(path: str) -> str | None:
    # The real file's name (python3 -> python3.11, sh -> dash), version suffix allowed.
    match = _FAMILY_NAME.fullmatch(os.path.basename(path))
    if match is None:
        return None
    name = match.group(1)
    return {"bash": "sh", "dash": "sh", "nodejs": "node"}.get(name, name)


@dataclass(frozen=True)
class MeasuredFile:
    """One measured file.

    Attributes:
        path: absolute, symlinks resolved.
        digest: ``sha256:<64 hex>``.
        role: ``executable``, ``interpreter`` or ``script``.

    Raises:
        EnforcementError: a field is malformed.
    """

    path: str
    digest: str
    role: str

    def __post_init__(self) -> None:
        """Validate the fields."""
        if not os.path.isabs(self.path):
            raise EnforcementError(f"measured path must be absolute, got {self.path!r}")
        _check_digest(self.digest)
        if self.role not in ROLES:
            raise EnforcementError(f"measured role must be one of {ROLES}, got {self.role!r}")

    def to_json(self) -> dict[str, str]:
        """Serialise.

        Returns:
            ``{"path", "digest", "role"}``.
        """
        return {"path": self.path, "digest": self.digest, "role": self.role}


def _check_digest(digest: str) -> None:
    hexpart = digest.removeprefix("sha256:")
    if hexpart == digest or len(hexpart) != 64 or hexpart.strip("0123456789abcdef"):
        raise EnforcementError(f"digest must be 'sha256:' and 64 lowercase hex digits, got {digest!r}")


@dataclass(frozen=True)
class Measurement:
    """What a command line executes, measured.

    Attributes:
        argv: the command line as given.
        executable: the file the kernel executes (for a ``#!`` script, its interpreter).
        executable_digest: its digest.
        files: every measured file, the executable first.
        script_index: the index in ``argv`` of the script argument, if any (0 for a
            ``#!`` script run directly).

    Raises:
        EnforcementError: the fields do not agree with each other.
    """

    argv: tuple[str, ...]
    executable: str
    executable_digest: str
    files: tuple[MeasuredFile, ...]
    script_index: int | None

    def __post_init__(self) -> None:
        """Validate that the fields agree."""
        if not self.argv or not self.files:
            raise EnforcementError("a measurement needs a command line and at least one file")
        first = self.files[0]
        if (first.path, first.digest) != (self.executable, self.executable_digest) or first.role == "script":
            raise EnforcementError("the first measured file must be the executable")
        scripts = [f for f in self.files if f.role == "script"]
        if len(scripts) > 1 or (self.script_index is None) != (not scripts):
            raise EnforcementError("a measurement has a script index exactly when it has one script")
        if self.script_index is not None and not 0 <= self.script_index < len(self.argv):
            raise EnforcementError(f"script index {self.script_index} is outside argv")
        if (first.role == "interpreter") != (self.script_index == 0):
            raise EnforcementError("an interpreter is measured exactly when argv[0] is a #! script")

    @property
    def script(self) -> MeasuredFile | None:
        """The measured script, if any."""
        return next((f for f in self.files if f.role == "script"), None)

    def to_json(self) -> dict[str, Any]:
        """Serialise (for the authorization request and ``execution.started``).

        Returns:
            ``{"executable", "executable_digest", "files", "script_index"}``.
        """
        return {
            "executable": self.executable,
            "executable_digest": self.executable_digest,
            "files": [f.to_json() for f in self.files],
            "script_index": self.script_index,
        }


def _open_regular(path: str, what: str) -> tuple[int, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError as e:
        raise EnforcementError(f"{what} {path!r} does not exist") from e
    except OSError as e:
        raise EnforcementError(f"{what} {path!r} cannot be opened for reading: {e.strerror}") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise EnforcementError(f"{what} {path!r} is not a regular file")
    return fd, st


def _measure_file(path: str, role: str, *, executable: bool) -> tuple[MeasuredFile, bytes]:
    fd, st = _open_regular(path, role)
    try:
        if executable and not (st.st_mode & 0o111 and os.access(path, os.X_OK)):
            raise EnforcementError(f"{role} {path!r} is not executable")
        copy, digest = snapshot(fd, role, path, executable=True)
    except OSError as e:
        raise EnforcementError(f"{role} {path!r} cannot be read: {e.strerror}") from e
    finally:
        os.close(fd)
    try:
        head = os.pread(copy, _SHEBANG_MAX, 0)  # the #! line from the very bytes hashed
    except OSError as e:
        os.close(copy)
        raise EnforcementError(f"{role} {path!r} cannot be read: {e.strerror}") from e
    SNAPSHOTS.put(path, digest, copy)
    return MeasuredFile(path=path, digest=digest, role=role), head


def _resolve(name: str, *, cwd: str, path: str | None, what: str) -> str:
    # execvp: a name with a slash is a path; otherwise search PATH (an empty entry is cwd),
    # skipping candidates that are missing, not regular files or not executable.
    if "/" in name:
        candidate = os.path.join(cwd, name)
        if not os.path.exists(candidate):
            raise EnforcementError(f"{what} {name!r} does not exist")
        return os.path.realpath(candidate)
    search = path if path is not None else os.environ.get("PATH", _DEFAULT_PATH)
    for directory in search.split(":"):
        candidate = os.path.join(cwd, directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    raise EnforcementError(f"{what} {name!r} was not found on the PATH ({search})")


def _parse_shebang(head: bytes) -> tuple[str, list[str]] | None:
    # Linux: "#!", optional blanks, the interpreter up to a blank, then the rest of the
    # line (blanks trimmed) as one optional argument.
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0]
    try:
        text = line.decode().strip(" \t")
    except UnicodeDecodeError as e:
        raise EnforcementError("the #! line is not valid UTF-8") from e
    interp, _, arg = text.replace("\t", " ").partition(" ")
    if not interp:
        raise EnforcementError("the #! line names no interpreter")
    arg = arg.strip(" ")
    return interp, [arg] if arg else []


def _interpreter_command(interp: str, args: list[str]) -> tuple[str, str, list[str]]:
    """``(argv0, name or path to resolve, extra args)`` for a ``#!`` line; ``env`` is skipped."""
    if not os.path.isabs(interp):
        raise EnforcementError(f"the #! interpreter {interp!r} is not an absolute path")
    if os.path.basename(interp) != "env":
        return interp, interp, args
    if not args:
        raise EnforcementError("'#!/usr/bin/env' names no program")
    arg = args[0]
    if arg.startswith("-S"):
        try:
            words = shlex.split(arg[2:])
        except ValueError as e:
            raise EnforcementError(f"cannot split the env -S line {arg!r}: {e}") from e
    elif arg.startswith("-"):
        raise EnforcementError(f"unsupported env options in the #! line: {arg!r}")
    elif " " in arg:
        raise EnforcementError(f"'#!{interp} {arg}' would look for a program named {arg!r} (env -S?)")
    else:
        words = [arg]
    if not words or words[0].startswith("-") or "=" in words[0]:
        raise EnforcementError(f"unsupported env options in the #! line: {arg!r}")
    return words[0], words[0], words[1:]


def _script_argument(family: str, argv: Sequence[str]) -> int | None:
    code, valued, valued_long = _FAMILIES[family]
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or (arg == "-" and family == "sh"):
            return i + 1 if i + 1 < len(argv) else None
        if arg == "-" or not arg.startswith(("-", "+")) or (arg.startswith("+") and family != "sh"):
            return None if arg == "-" else i
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            if name in _CODE_LONG:
                return None
            if name in valued_long and "=" not in arg:
                i += 1
            i += 1
            continue
        letters = arg[1:]
        for pos, letter in enumerate(letters):
            if letter in code:
                return None
            if letter in valued:
                if pos == len(letters) - 1:
                    i += 1  # the value is the next word
                break  # the rest of this word is the value
        i += 1
    return None


def measure(argv: Sequence[str], *, cwd: str | None = None, path: str | None = None) -> Measurement:
    """Measure what ``argv`` would execute.

    Args:
        argv: the command line.
        cwd: the directory relative names are resolved in (default: the current one).
        path: the PATH to search (default: ``$PATH``, else ``/bin:/usr/bin``).

    Returns:
        The measurement.

    Raises:
        EnforcementError: a file is missing, not a regular file, not executable or
            unreadable, or the command is of a form that cannot be measured.
    """
    argv = tuple(argv)
    if not argv or not argv[0]:
        raise EnforcementError("nothing to measure: argv is empty")
    if any("\0" in a for a in argv):
        raise EnforcementError("argv contains a NUL byte")
    where = os.path.abspath(cwd or os.getcwd())
    exe_path = _resolve(argv[0], cwd=where, path=path, what="executable")
    exe, head = _measure_file(exe_path, "executable", executable=True)
    shebang = _parse_shebang(head)
    if shebang is not None:
        _argv0, name, _args = _interpreter_command(*shebang)
        interp_path = _resolve(name, cwd=where, path=path, what="#! interpreter")
        why = changeable_by_others(interp_path)
        if why is not None:
            raise EnforcementError(
                f"the #! interpreter {interp_path!r} could be changed by someone other than root "
                f"({why}): it cannot be trusted to run the script"
            )
        interp, interp_head = _measure_file(interp_path, "interpreter", executable=True)
        if _parse_shebang(interp_head) is not None:
            raise EnforcementError(f"the #! interpreter {interp_path!r} is itself a #! script (unsupported)")
        script = MeasuredFile(path=exe.path, digest=exe.digest, role="script")
        return Measurement(argv, interp.path, interp.digest, (interp, script), 0)
    # An interpreter that others could change would run the script as it pleases:
    # then it is the executable, and the policy decides on it (not on the script).
    family = _family(exe_path)
    if family is not None and changeable_by_others(exe_path) is None:
        index = _script_argument(family, argv)
        if index is not None:
            candidate = os.path.join(where, argv[index])
            if not os.path.isfile(candidate):
                raise EnforcementError(
                    f"{os.path.basename(exe_path)} would run {argv[index]!r}, "
                    "which is not an existing regular file"
                )
            script, _ = _measure_file(os.path.realpath(candidate), "script", executable=False)
            return Measurement(argv, exe.path, exe.digest, (exe, script), index)
    return Measurement(argv, exe.path, exe.digest, (exe,), None)


class Prepared:
    """A measured command, ready to execute exactly what was measured.

    Attributes:
        exec_path: ``/proc/self/fd/N``, the executable's sealed copy: what to ``exec``.
        argv: the command line to pass (the script argument as its copy, ``/proc/self/fd/M``).
        pass_fds: descriptors the child must keep (the copies).
    """

    def __init__(self, exec_path: str, argv: tuple[str, ...], pass_fds: tuple[int, ...]) -> None:
        """Hold the sealed copies (made by :func:`prepare`).

        Args:
            exec_path: ``/proc/self/fd/N``.
            argv: the command line.
            pass_fds: the descriptors to keep open in the child.
        """
        self.exec_path = exec_path
        self.argv = argv
        self.pass_fds = pass_fds

    def close(self) -> None:
        """Close the copies (after the child started). Idempotent."""
        fds, self.pass_fds = self.pass_fds, ()
        if fds:
            unregister(fds[0])
        close_quietly(fds)

    def __enter__(self) -> Prepared:
        """Use as a context manager that closes the copies.

        Returns:
            ``self``.
        """
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the copies."""
        self.close()


def _exec_name(name: str, real: str) -> str:
    # The path execvp would pass to the kernel (and the kernel to a #! interpreter):
    # the name itself when it has a slash, else the first PATH entry leading to the file.
    if "/" in name:
        return name
    for directory in os.environ.get("PATH", _DEFAULT_PATH).split(":"):
        candidate = os.path.join(directory, name)
        if os.path.realpath(candidate) == real:
            return candidate
    return real


def _copy_of(path: str, digest: str, role: str, *, executable: bool) -> tuple[int, os.stat_result]:
    # The copy measure() hashed, if it is still kept; else a fresh one, checked.
    try:
        st = os.stat(path)
    except OSError as e:
        raise EnforcementError(f"{role} {path!r} is gone: {e.strerror}") from e
    if executable and not st.st_mode & 0o111:
        raise EnforcementError(f"{role} {path!r} is no longer executable")
    kept = SNAPSHOTS.take(path, digest)
    if kept is not None:
        return kept, st
    src, st = _open_regular(path, role)
    try:
        return sealed_copy(src, digest, role, path, executable=executable), st
    finally:
        os.close(src)


def prepare(measurement: Measurement) -> Prepared:
    """Copy what ``measurement`` describes into sealed memfds, checked against it, for ``exec``.

    Args:
        measurement: from :func:`measure` (and authorized).

    Returns:
        The prepared command; close it once the child started.

    Raises:
        IntegrityError: a file no longer has its measured digest.
        EnforcementError: a file cannot be opened or copied.
    """
    fds: list[int] = []
    try:
        first = measurement.files[0]
        exe, st = _copy_of(first.path, first.digest, first.role, executable=True)
        fds.append(exe)
        copies = [StagedCopy(exe, first.path, None, copy_mode(st, executable=True))]
        argv = list(measurement.argv)
        shown_argv = list(argv)
        script = measurement.script
        if script is not None and measurement.script_index is not None:
            memfd, sst = _copy_of(script.path, script.digest, "script", executable=False)
            fds.append(memfd)
            staged = f"/proc/self/fd/{memfd}"
            if first.role == "interpreter":
                shebang = _parse_shebang(os.pread(memfd, _SHEBANG_MAX, 0))
                if shebang is None:
                    raise IntegrityError(f"script {script.path!r} no longer starts with #!")
                argv0, _, extra = _interpreter_command(*shebang)
                shown = _exec_name(measurement.argv[0], script.path)
                argv = [argv0, *extra, staged, *measurement.argv[1:]]
                shown_argv = [argv0, *extra, shown, *measurement.argv[1:]]
            else:
                shown = measurement.argv[measurement.script_index]
                argv[measurement.script_index] = staged
            copies.append(StagedCopy(memfd, script.path, shown, copy_mode(sst, executable=False)))
        prepared = Prepared(f"/proc/self/fd/{exe}", tuple(argv), tuple(fds))
        # A script is read by the path it is shown at: only where nobody but root can
        # swap what that path leads to (else it is read from its memfd; see _trust).
        if all(pinned(c.shown, cwd=os.getcwd()) for c in copies[1:] if c.shown is not None):
            register(exe, prepared.argv, prepared.pass_fds, Staging(tuple(shown_argv), tuple(copies)))
        return prepared
    except OSError as e:
        close_quietly(tuple(fds))
        raise EnforcementError(f"cannot stage {measurement.executable!r}: {e}") from e
    except BaseException:
        close_quietly(tuple(fds))
        raise
