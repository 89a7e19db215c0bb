"""The witness's data directory (proctor.orchestration.witness_dir): built whole, its key
the owner's alone, nothing else accepted in its place."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from proctor.errors import ConfigError
from proctor.governor.service import initialize
from proctor.orchestration.witness_dir import WitnessDir


def test_a_witness_directory_is_created_whole_with_private_modes(tmp_path: Path) -> None:
    made = WitnessDir.create(tmp_path / "w", name="witness.example/w1")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in made.path.iterdir()}
    assert stat.S_IMODE(made.path.stat().st_mode) == 0o700
    assert modes["witness.key"] == 0o600
    assert {"witness.json", "witness.key", "witness.pub", "witness.db"} <= set(modes)
    opened = WitnessDir.open(tmp_path / "w")
    assert opened.name == "witness.example/w1"
    assert opened.verifier().to_string() == (made.path / "witness.pub").read_text().strip()
    assert [p.name for p in tmp_path.iterdir()] == ["w"]  # no staging directory left behind


@pytest.mark.parametrize("name", ["", "has space", "a+b"], ids=["empty", "space", "plus"])
def test_a_bad_name_is_refused_and_nothing_is_made(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="name"):
        WitnessDir.create(tmp_path / "w", name=name)
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_target_is_refused(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "something").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        WitnessDir.create(tmp_path / "w", name="w1")
    WitnessDir.create(tmp_path / "w2", name="w1")
    with pytest.raises(ConfigError, match="not empty"):
        WitnessDir.create(tmp_path / "w2", name="w1")  # a second init


def test_a_governor_data_directory_is_not_a_witness_directory(tmp_path: Path) -> None:
    initialize(tmp_path / "gov")
    with pytest.raises(ConfigError, match="not a witness directory"):
        WitnessDir.open(tmp_path / "gov")


def test_an_unprotected_or_linked_key_is_refused(tmp_path: Path) -> None:
    made = WitnessDir.create(tmp_path / "w", name="w1")
    os.chmod(made.key_path, 0o644)
    with pytest.raises(ConfigError, match="expected 0600"):
        made.cosigner()
    os.chmod(made.key_path, 0o600)
    made.key_path.rename(tmp_path / "elsewhere.key")
    made.key_path.symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(ConfigError, match="symbolic link"):
        made.cosigner()


def test_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    made = WitnessDir.create(tmp_path / "w", name="w1")
    os.chmod(made.path, 0o777)
    with pytest.raises(ConfigError, match="mode 0777"):
        WitnessDir.open(made.path)
