"""Reading principal key files: clear errors naming the file, no waiting on a FIFO."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from proctor.authorization.keys import PrincipalKey
from proctor.errors import KeyFormatError


def test_load_names_a_missing_key_file(tmp_path: Path) -> None:
    missing = tmp_path / "nobody.key"
    with pytest.raises(KeyFormatError) as info:
        PrincipalKey.load(missing)
    assert str(info.value) == f"key file {str(missing)!r} not found"


def test_load_names_a_dangling_symlink_as_not_found(tmp_path: Path) -> None:
    (tmp_path / "a.key").symlink_to(tmp_path / "gone.key")
    with pytest.raises(KeyFormatError, match="not found"):
        PrincipalKey.load(tmp_path / "a.key")


def test_load_refuses_a_fifo_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    os.mkfifo(path, 0o600)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            PrincipalKey.load(path)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("loading a FIFO as a key file blocked")
    assert len(errors) == 1
    assert isinstance(errors[0], KeyFormatError)
    assert "regular file" in str(errors[0])
