"""Data directory safety: ``proctor init`` writes through nothing planted beforehand and
leaves nothing half-made; opening refuses directories and keys others could change or read.

These run as root in CI, where permission bits do not stop a write: failures are
injected with planted entries, symlinks and (in-process) a failing function instead.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gov_server import cli
from proctor.authorization.keys import PrincipalKey
from proctor.errors import ConfigError, ProctorError, StoreError
from proctor.governor.service import Governor, initialize
from proctor.store.state import StateStore

ROOT = os.geteuid() == 0
OTHER_UID = 65534  # nobody


def _assert_clean_refusal(proc: Any, *expected: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- init: nothing planted is written through; refused cleanly -----------------------------


@pytest.mark.parametrize("planted", ["log.key", "admin.key", "warrant.key"])
@pytest.mark.parametrize("target_exists", [True, False], ids=["victim-exists", "victim-dangling"])
def test_init_never_writes_a_key_through_a_planted_symlink(
    tmp_path: Path, planted: str, target_exists: bool
) -> None:
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    victim = tmp_path / "victim"
    if target_exists:
        victim.write_text("keep")
    (data / "keys" / planted).symlink_to(victim)
    before = _listing(tmp_path)

    proc = cli("init", "--data", str(data), check=False)

    _assert_clean_refusal(proc, str(data), "not empty")
    assert _listing(tmp_path) == before  # no config, no keys, no staging directory left
    if target_exists:
        assert victim.read_text() == "keep"
    else:
        assert not victim.exists()


def test_init_refuses_a_symlinked_data_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "data").symlink_to(elsewhere)

    proc = cli("init", "--data", str(tmp_path / "data"), check=False)

    _assert_clean_refusal(proc, "symbolic link")
    assert list(elsewhere.iterdir()) == []


# -- init: whole or not at all ----------------------------------------------------------------


def _fail_admin_key_save(monkeypatch: pytest.MonkeyPatch, data: Path) -> None:
    real = PrincipalKey.save

    def save(self: PrincipalKey, path: str | os.PathLike[str], **kw: Any) -> None:
        if Path(path).name == "warrant.key":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(self, path, **kw)

    monkeypatch.setattr(PrincipalKey, "save", save)


def _fail_state_write(monkeypatch: pytest.MonkeyPatch, data: Path) -> None:
    def put_principal(self: StateStore, *a: Any, **kw: Any) -> None:
        raise StoreError("injected: the state store failed")

    monkeypatch.setattr(StateStore, "put_principal", put_principal)


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, data: Path) -> None:
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > 3:  # after the first few keys: mid-way
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _fail_rename(monkeypatch: pytest.MonkeyPatch, data: Path) -> None:
    def rename(src: Any, dst: Any, **kw: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", rename)


FAULTS: dict[str, Callable[[pytest.MonkeyPatch, Path], None]] = {
    "warrant-key-write": _fail_admin_key_save,
    "state-store": _fail_state_write,
    "fsync": _fail_fsync,
    "final-rename": _fail_rename,
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_init_is_whole_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    data = tmp_path / "data"
    with monkeypatch.context() as m:
        FAULTS[fault](m, data)
        with pytest.raises(ProctorError):
            initialize(data, origin="whole.example/gov")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a staging directory
    initialize(data, origin="whole.example/gov")  # and a clean retry works
    with Governor(data) as gov:
        assert gov.log.size == 2


def test_init_refuses_a_directory_that_appears_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    real = PrincipalKey.save

    def save(self: PrincipalKey, path: str | os.PathLike[str], **kw: Any) -> None:
        if not data.exists():  # another process makes the target while init runs
            data.mkdir()
            (data / "theirs").write_text("keep")
        real(self, path, **kw)

    monkeypatch.setattr(PrincipalKey, "save", save)
    with pytest.raises(ConfigError, match="appeared while"):
        initialize(data, origin="race.example/gov")
    assert _listing(tmp_path) == ["data", "data/theirs"]
    assert (data / "theirs").read_text() == "keep"


def test_init_failure_exits_2_without_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from proctor.cli import app

    _fail_admin_key_save(monkeypatch, tmp_path / "data")
    result = CliRunner().invoke(app, ["init", "--data", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "No space left on device" in result.output
    assert list(tmp_path.iterdir()) == []


# -- open: unsafe directories and keys are refused ------------------------------------------


def _chmod(rel: str, mode: int) -> Callable[[Path], None]:
    return lambda data: (data / rel).chmod(mode)


def _symlink_key(rel: str) -> Callable[[Path], None]:
    def plant(data: Path) -> None:
        # A well-formed 0600 key outside the data directory, linked in: still refused.
        outside = data.parent / f"outside-{Path(rel).name}"
        shutil.copy2(data / rel, outside)
        outside.chmod(0o600)
        (data / rel).unlink()
        (data / rel).symlink_to(outside)

    return plant


def _symlink_keys_dir(data: Path) -> None:
    outside = data.parent / "outside-keys"
    shutil.copytree(data / "keys", outside, symlinks=True)
    outside.chmod(0o700)
    shutil.rmtree(data / "keys")
    (data / "keys").symlink_to(outside)


UNSAFE: dict[str, tuple[Callable[[Path], None], str]] = {
    "data-dir-world-writable": (_chmod(".", 0o707), "expected no write access for group and others"),
    "data-dir-group-writable": (_chmod(".", 0o770), "expected no write access for group and others"),
    "keys-dir-world-writable": (_chmod("keys", 0o777), "expected no write access for group and others"),
    "keys-dir-group-writable": (_chmod("keys", 0o730), "expected no write access for group and others"),
    "keys-dir-symlink": (_symlink_keys_dir, "is a symbolic link"),
    "log-key-world-readable": (_chmod("keys/log.key", 0o644), "chmod 600"),
    "admin-key-group-readable": (_chmod("keys/admin.key", 0o640), "chmod 600"),
    "warrant-key-world-readable": (_chmod("keys/warrant.key", 0o604), "chmod 600"),
    "log-key-symlink": (_symlink_key("keys/log.key"), "is a symbolic link"),
    "warrant-key-symlink": (_symlink_key("keys/warrant.key"), "is a symbolic link"),
    "admin-key-symlink": (_symlink_key("keys/admin.key"), "is a symbolic link"),
}


@pytest.mark.parametrize("case", list(UNSAFE))
def test_open_refuses_an_unsafe_data_directory(gov_data: Path, case: str) -> None:
    make_unsafe, message = UNSAFE[case]
    make_unsafe(gov_data)

    proc = cli("log", "checkpoint", "--data", str(gov_data), check=False)
    _assert_clean_refusal(proc, message)
    with pytest.raises(ConfigError, match=message):
        Governor(gov_data)


@pytest.mark.skipif(not ROOT, reason="giving a file to another user needs root")
@pytest.mark.parametrize("rel", [".", "keys", "keys/log.key", "keys/warrant.key"])
def test_open_refuses_a_data_directory_or_key_owned_by_another_user(gov_data: Path, rel: str) -> None:
    os.chown(gov_data / rel, OTHER_UID, -1)

    proc = cli("log", "checkpoint", "--data", str(gov_data), check=False)
    _assert_clean_refusal(proc, f"owned by uid {OTHER_UID}")
    with pytest.raises(ConfigError, match="owned by uid"):
        Governor(gov_data)


# -- missing key files -----------------------------------------------------------------------


def test_missing_log_key_is_named_and_exits_2(gov_data: Path) -> None:
    (gov_data / "keys" / "log.key").unlink()
    proc = cli("log", "checkpoint", "--data", str(gov_data), check=False)
    _assert_clean_refusal(proc, f"key file {gov_data / 'keys' / 'log.key'} not found")


def test_missing_key_file_is_named_and_exits_2(gov_data: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nobody.key"
    proc = cli("principal", "suspend", "admin", "--data", str(gov_data), "--key", str(missing), check=False)
    _assert_clean_refusal(proc, f"key file {str(missing)!r} not found")


def test_proctor_run_names_a_missing_key_file_and_exits_2(tmp_path: Path) -> None:
    """`proctor run` names a missing key file and exits 2."""
    missing = tmp_path / "nobody.key"
    proc = cli("run", "--server", "http://127.0.0.1:9", "--key", str(missing), "--", "true", check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"key file {str(missing)!r} not found" in proc.stderr
    assert "Traceback" not in proc.stderr
