"""The data directory: built whole or not at all, private modes, safe key reads."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from proctor.datadir import DataDir
from proctor.errors import ConfigError

ORIGIN = "unit.example/log"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_build_makes_private_directories_and_keys_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with DataDir.build(tmp_path / "d", origin=ORIGIN) as staged:
            assert staged.path.parent == tmp_path  # a sibling: the rename stays on one filesystem
            assert not (tmp_path / "d").exists()
    finally:
        os.umask(old)
    d = tmp_path / "d"
    assert (_mode(d), _mode(d / "keys"), _mode(d / "keys" / "log.key")) == (0o700, 0o700, 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert DataDir.open(d).origin == ORIGIN


def test_build_replaces_an_empty_directory(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    with DataDir.build(d, origin=ORIGIN):
        pass
    assert _mode(d) == 0o700
    assert DataDir.open(d).origin == ORIGIN


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.write_text("x"), "not a directory"),
        (lambda d: (d.mkdir(), (d / "notes.txt").write_text("x")), "not empty"),
        (lambda d: (d.mkdir(), (d / "config.json").write_text("{}")), "already initialised"),
        (lambda d: d.symlink_to(d.parent / "nowhere"), "symbolic link"),
    ],
    ids=["file", "non-empty", "initialised", "symlink"],
)
def test_build_refuses_a_target_that_is_not_new_or_empty(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    d = tmp_path / "d"
    make(d)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ConfigError, match=message), DataDir.build(d, origin=ORIGIN):
        pytest.fail("the body must not run")
    assert sorted(os.listdir(tmp_path)) == before


def test_build_refuses_an_invalid_origin_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="origin"), DataDir.build(tmp_path / "d", origin="a b"):
        pytest.fail("the body must not run")
    assert list(tmp_path.iterdir()) == []


def test_build_removes_everything_when_the_body_fails(tmp_path: Path) -> None:
    def half_build() -> None:
        with DataDir.build(tmp_path / "d", origin=ORIGIN) as staged:
            (staged.path / "proctor.db").write_text("half")
            raise RuntimeError("body failed")

    with pytest.raises(RuntimeError, match="body"):
        half_build()
    assert list(tmp_path.iterdir()) == []


def test_build_turns_an_os_error_in_the_body_into_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing was written"), DataDir.build(tmp_path / "d") as staged:
        (staged.path / "keys" / "log.key").open("x")  # exists: O_EXCL refuses
    assert list(tmp_path.iterdir()) == []


def test_open_accepts_directories_others_may_read(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with DataDir.build(d, origin=ORIGIN):
        pass
    d.chmod(0o755)
    (d / "keys").chmod(0o755)
    assert DataDir.open(d).log_signer().name == ORIGIN


def test_open_ignores_public_keys_and_other_files_in_keys(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with DataDir.build(d, origin=ORIGIN):
        pass
    assert _mode(d / "keys" / "log.pub") == 0o644  # public: readable is fine
    (d / "keys" / "README").write_text("x")
    DataDir.open(d)


def test_log_signer_refuses_a_symlink_even_without_open(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with DataDir.build(d, origin=ORIGIN):
        pass
    key = d / "keys" / "log.key"
    os.replace(key, tmp_path / "real.key")
    key.symlink_to(tmp_path / "real.key")
    with pytest.raises(ConfigError, match="symbolic link"):
        DataDir(d, ORIGIN).log_signer()


def test_log_signer_refuses_a_fifo_without_waiting(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with DataDir.build(d, origin=ORIGIN):
        pass
    key = d / "keys" / "log.key"
    key.unlink()
    os.mkfifo(key, 0o600)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            DataDir(d, ORIGIN).log_signer()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():  # unblock the reader before failing
        os.close(os.open(key, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO planted as the log key blocked")
    assert len(errors) == 1
    assert isinstance(errors[0], ConfigError)
    assert "not a regular file" in str(errors[0])


def test_missing_log_key_names_the_file(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with DataDir.build(d, origin=ORIGIN):
        pass
    (d / "keys" / "log.key").unlink()
    with pytest.raises(ConfigError, match=r"key file .*log\.key not found"):
        DataDir.open(d)
    with pytest.raises(ConfigError, match=r"key file .*log\.key not found"):
        DataDir(d, ORIGIN).log_signer()
