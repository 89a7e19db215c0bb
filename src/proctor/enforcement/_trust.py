"""What the principal could choose that a measurement does not cover.

A measurement binds the bytes of the file a command line names (ADR 0007, 0008). Two
things decide what else runs, and the principal who runs ``proctor run`` must not be
able to choose either:

1. **The interpreter of a measured script.** The warrant binds the script's digest;
   the interpreter is measured and run from its measured copy, but not bound. So an
   interpreter is accepted as the one that runs an authorized script only if nobody
   but root could have chosen its bytes (:func:`changeable_by_others`): the file and
   every directory above it belong to root and are writable by nobody else (group
   root aside; a sticky directory may be writable by others, as its root-owned entries
   cannot be renamed or removed by them). Otherwise :func:`~proctor.enforcement.measure.measure`
   refuses a ``#!`` script and measures ``INTERPRETER FILE`` as that interpreter
   alone, which the policy then decides on. As root, root's own files pass: root
   (like anyone with ptrace rights over the supervisor) is beyond this (threat model).
2. **The path a script is read by.** The interpreter opens the script by its path. With
   the copies shown at their own paths (a private mount namespace, ADR 0007), a rename
   over that path, of a directory on it, or of a symlink on the way, between the last
   check and the interpreter's ``open`` detaches or bypasses the copy mounted there, and
   other bytes are read. The copies are therefore shown there only when only root can
   change every name on the way (:func:`pinned`); otherwise the script is read from its
   sealed memfd (``/proc/self/fd/M``), which nobody can swap.
3. **The environment.** The dynamic loader and the interpreters read code from files
   the environment names (``LD_PRELOAD``, ``PYTHONPATH``, ``BASH_ENV``…). Those
   variables (:func:`code_variables`) are not passed to the command: set them in an
   authorized wrapper script, whose bytes are then measured and bound.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

__all__ = ["CODE_VARIABLES", "CODE_PREFIXES", "changeable_by_others", "code_variables", "pinned"]

CODE_PREFIXES = ("LD_", "BASH_FUNC_")
"""Names starting with these are removed: the dynamic loader's variables (``LD_PRELOAD``,
``LD_LIBRARY_PATH``, ``LD_AUDIT``…) and bash's exported functions (``BASH_FUNC_x%%``),
which replace commands a script runs."""

CODE_VARIABLES = frozenset(
    {
        "GCONV_PATH",  # glibc loads iconv modules (shared objects) from there
        "BASH_ENV",  # sourced by every non-interactive bash
        "ENV",  # sourced by an interactive sh
        "SHELLOPTS",  # xtrace with PS4='$(cmd)' runs cmd
        "BASHOPTS",
        "PYTHONPATH",  # sitecustomize/usercustomize, imported at startup
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONINSPECT",  # reads code from stdin once the script ends
        "PYTHONUSERBASE",  # user site-packages: .pth files run code at startup
        "PYTHONPLATLIBDIR",
        "PYTHONEXECUTABLE",
        "PERL5OPT",  # -Mmodule
        "PERL5LIB",
        "PERLLIB",
        "PERL5DB",
        "RUBYOPT",  # -rlibrary
        "RUBYLIB",
        "NODE_OPTIONS",  # --require module
        "NODE_PATH",
    }
)
"""Variables that make a measured program run code from a file it was not given."""


def code_variables(names: Iterable[str]) -> list[str]:
    """The names of an environment that are not passed to a governed command.

    Args:
        names: the environment's variable names.

    Returns:
        Those in :data:`CODE_VARIABLES` or starting with one of :data:`CODE_PREFIXES`,
        sorted.
    """
    return sorted(n for n in names if n in CODE_VARIABLES or n.startswith(CODE_PREFIXES))


def _writable_by_others(st: os.stat_result) -> bool:
    return bool(st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != 0))


def changeable_by_others(path: str, *, sticky: bool = False) -> str | None:
    """Why someone other than root could change what ``path`` holds, if they could.

    Args:
        path: an absolute path without symlinks (``os.path.realpath``).
        sticky: ``path`` is a directory whose root-owned entries only matter: it may be
            writable by others if it is sticky.

    Returns:
        ``None`` when only root can change it, else what lets another user do so.
    """
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"{path} cannot be examined: {e.strerror}"
    if st.st_uid != 0:
        return f"{path} belongs to uid {st.st_uid}, not root"
    if _writable_by_others(st) and not (sticky and st.st_mode & stat.S_ISVTX):
        return f"{path} is writable by users other than root"
    current = path
    while current != "/":
        parent = os.path.dirname(current)
        try:
            pst = os.lstat(parent)
        except OSError as e:
            return f"{parent} cannot be examined: {e.strerror}"
        if pst.st_uid != 0:
            return f"its directory {parent} belongs to uid {pst.st_uid}, not root"
        # A sticky directory: others may add names, but not rename or remove root's.
        if _writable_by_others(pst) and not pst.st_mode & stat.S_ISVTX:
            return f"its directory {parent} is writable by users other than root"
        current = parent
    return None


def pinned(path: str, *, cwd: str) -> bool:
    """Whether only root can change what ``path`` leads to.

    Every name looked up on the way (symlinks followed, as the kernel does) must belong
    to root, in a directory that only root can change (:func:`changeable_by_others`),
    and outside ``/proc`` (whose names, such as ``/proc/self/fd/N``, depend on who looks).

    Args:
        path: the path, as a program will open it.
        cwd: the directory a relative ``path`` starts from.

    Returns:
        ``True`` if no one but root can make ``path`` lead elsewhere.
    """
    current = "/" if path.startswith("/") else os.path.realpath(cwd)
    pending = path.split("/")
    hops = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":  # current has no symlinks: its parent is its dirname
            current = os.path.dirname(current)
            continue
        if current == "/proc" or changeable_by_others(current, sticky=True) is not None:
            return False
        entry = os.path.join(current, name)
        try:
            st = os.lstat(entry)
        except OSError:
            return False
        if st.st_uid != 0:
            return False
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:  # ELOOP
                return False
            target = os.readlink(entry)
            current = "/" if target.startswith("/") else current
            pending = target.split("/") + pending
            continue
        current = entry
    return True
