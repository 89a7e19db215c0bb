"""_trust: which files and paths only root can change, and which variables name code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proctor.enforcement._trust import changeable_by_others, code_variables, pinned

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="makes files another user's (chown)")
ENV = os.path.realpath("/usr/bin/env")


def mkdir(path: Path, mode: int, owner: int = 0) -> Path:
    path.mkdir()
    os.chmod(path, mode)
    os.chown(path, owner, owner)
    return path


def test_a_system_file_is_roots_alone() -> None:
    assert changeable_by_others(ENV) is None
    assert pinned("/usr/bin/env", cwd="/")
    assert pinned("../usr/bin/env", cwd="/usr")


@ROOT_ONLY
def test_a_file_is_others_when_it_or_a_directory_above_it_is(tmp_path: Path) -> None:
    base = mkdir(tmp_path / "base", 0o755)
    mine = base / "mine"
    mine.write_text("x")
    assert changeable_by_others(str(mine)) is None
    os.chown(mine, 65534, 65534)
    assert "belongs to uid 65534" in (changeable_by_others(str(mine)) or "")
    os.chown(mine, 0, 0)
    os.chmod(mine, 0o666)
    assert "writable by users other than root" in (changeable_by_others(str(mine)) or "")
    os.chmod(mine, 0o644)
    shared = mkdir(base / "shared", 0o777)
    (shared / "f").write_text("x")
    assert "its directory" in (changeable_by_others(str(shared / "f")) or "")
    os.chmod(shared, 0o1777)  # sticky: others cannot rename or remove root's entries
    assert changeable_by_others(str(shared / "f")) is None
    theirs = mkdir(base / "theirs", 0o755, owner=65534)
    (theirs / "f").write_text("x")
    assert "belongs to uid 65534" in (changeable_by_others(str(theirs / "f")) or "")


@ROOT_ONLY
def test_a_path_is_pinned_only_if_every_name_on_the_way_is_roots(tmp_path: Path) -> None:
    base = mkdir(tmp_path / "base", 0o755)
    (base / "job").write_text("x")
    (base / "link").symlink_to(base / "job")
    assert pinned(str(base / "link"), cwd="/")
    assert pinned("link", cwd=str(base))
    os.lchown(base / "link", 65534, 65534)  # its owner could replace it in a sticky directory
    assert not pinned(str(base / "link"), cwd="/")
    theirs = mkdir(base / "theirs", 0o755, owner=65534)
    (theirs / "to-job").symlink_to(base / "job")
    assert not pinned(str(theirs / "to-job"), cwd="/")  # they can point it elsewhere
    (base / "via").symlink_to(theirs)
    assert not pinned(str(base / "via" / ".." / "job"), cwd="/")  # resolved through their directory
    (base / "loop").symlink_to(base / "loop")
    assert not pinned(str(base / "loop"), cwd="/")
    assert not pinned(str(base / "missing"), cwd="/")


def test_proc_names_are_never_pinned() -> None:
    fd = os.open(ENV, os.O_RDONLY)
    try:
        assert not pinned(f"/proc/self/fd/{fd}", cwd="/")  # another process's fd N is another file
    finally:
        os.close(fd)


def test_the_variables_that_name_code_are_the_loaders_and_the_interpreters() -> None:
    names = [
        "PATH",
        "HOME",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "BASH_FUNC_ls%%",
        "PYTHONPATH",
        "PYTHONUNBUFFERED",
    ]
    names += ["BASH_ENV", "NODE_OPTIONS", "PERL5OPT", "RUBYOPT", "GCONV_PATH", "LANG", "XLD_PRELOAD"]
    assert code_variables(names) == [
        "BASH_ENV",
        "BASH_FUNC_ls%%",
        "GCONV_PATH",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "NODE_OPTIONS",
        "PERL5OPT",
        "PYTHONPATH",
        "RUBYOPT",
    ]
