"""Principal keys and key files: mode 0600, refusal of open files, strict parsing."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proctor.authorization.keys import (
    PrincipalKey,
    encode_public_key,
    load_public_key,
    valid_principal_name,
)
from proctor.errors import KeyFormatError, PrincipalError

SEED = bytes(range(32))


@pytest.fixture
def key() -> PrincipalKey:
    return PrincipalKey.from_private_bytes("agent-1", SEED)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_file_round_trip(tmp_path: Path, key: PrincipalKey) -> None:
    path = tmp_path / "agent.key"
    key.save(path)
    loaded = PrincipalKey.load(path)
    assert loaded.name == "agent-1"
    assert loaded.public_key == key.public_key
    assert loaded.private_bytes() == SEED
    data = orjson.loads(path.read_bytes())
    assert data == {
        "kind": "proctor-principal-key",
        "v": 1,
        "name": "agent-1",
        "public_key": key.public_key_b64,
        "private_key": base64.b64encode(SEED).decode(),
    }


def test_saved_key_file_has_mode_0600(tmp_path: Path, key: PrincipalKey) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        key.save(tmp_path / "a.key")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.key") == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o004], ids=oct)
def test_key_file_readable_by_others_is_refused(tmp_path: Path, key: PrincipalKey, mode: int) -> None:
    path = tmp_path / "a.key"
    key.save(path)
    path.chmod(mode)
    with pytest.raises(KeyFormatError, match="chmod 600"):
        PrincipalKey.load(path)


def test_save_refuses_to_replace_an_existing_file(tmp_path: Path, key: PrincipalKey) -> None:
    path = tmp_path / "a.key"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        key.save(path)
    assert path.read_text() == "precious"


def test_save_with_overwrite_replaces_and_tightens_the_mode(tmp_path: Path, key: PrincipalKey) -> None:
    path = tmp_path / "a.key"
    path.write_text("old")
    path.chmod(0o644)
    key.save(path, overwrite=True)
    assert _mode(path) == 0o600
    assert PrincipalKey.load(path).public_key == key.public_key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.key"]  # no temp file left


def test_load_through_a_symlink_checks_the_target_mode(tmp_path: Path, key: PrincipalKey) -> None:
    key.save(tmp_path / "real.key")
    (tmp_path / "link.key").symlink_to(tmp_path / "real.key")
    assert PrincipalKey.load(tmp_path / "link.key").public_key == key.public_key
    (tmp_path / "real.key").chmod(0o644)
    with pytest.raises(KeyFormatError, match="chmod 600"):
        PrincipalKey.load(tmp_path / "link.key")


def test_save_does_not_write_through_a_symlink(tmp_path: Path, key: PrincipalKey) -> None:
    (tmp_path / "victim").write_text("keep")
    (tmp_path / "a.key").symlink_to(tmp_path / "victim")
    with pytest.raises(FileExistsError):
        key.save(tmp_path / "a.key")
    assert (tmp_path / "victim").read_text() == "keep"


def test_repr_hides_the_secret(key: PrincipalKey) -> None:
    text = repr(key)
    assert "agent-1" in text
    assert key.public_key_b64 in text
    assert base64.b64encode(SEED).decode() not in text
    assert SEED.hex() not in text
    assert "private" not in text.lower()


def test_key_is_immutable(key: PrincipalKey) -> None:
    with pytest.raises(AttributeError):
        key.name = "admin"


def test_signature_verifies_with_the_public_key(key: PrincipalKey) -> None:
    signature = key.sign(b"message")
    assert len(signature) == 64
    Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, b"message")


def test_generate_gives_distinct_keys() -> None:
    a, b = PrincipalKey.generate("admin"), PrincipalKey.generate("admin")
    assert a.public_key != b.public_key
    assert len(a.private_bytes()) == 32


def test_generate_refuses_an_invalid_name() -> None:
    with pytest.raises(PrincipalError):
        PrincipalKey.generate("no spaces")


def _file(**changes: object) -> dict[str, object]:
    key = PrincipalKey.from_private_bytes("agent-1", SEED)
    data: dict[str, object] = key.to_json()
    data.update(changes)
    return data


OTHER_PUB = PrincipalKey.from_private_bytes("x", bytes(32)).public_key_b64


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        orjson.dumps(_file(kind="ssh-key")),
        orjson.dumps(_file(v=2)),
        orjson.dumps(_file(v=True)),
        orjson.dumps(_file(v="1")),
        orjson.dumps(_file(name="bad name")),
        orjson.dumps(_file(name="")),
        orjson.dumps(_file(extra=1)),
        orjson.dumps({k: v for k, v in _file().items() if k != "public_key"}),
        orjson.dumps(_file(public_key=OTHER_PUB)),
        orjson.dumps(_file(private_key="!!!!")),
        orjson.dumps(_file(private_key=base64.b64encode(bytes(31)).decode())),
        orjson.dumps(_file(private_key=base64.b64encode(SEED).decode().rstrip("="))),
        orjson.dumps(_file(private_key=1)),
        b" " * 5000,
    ],
    ids=[
        "not-json",
        "not-object",
        "wrong-kind",
        "wrong-version",
        "version-bool",
        "version-string",
        "bad-name",
        "empty-name",
        "extra-field",
        "missing-field",
        "public-key-mismatch",
        "bad-base64",
        "short-seed",
        "unpadded-base64",
        "seed-not-string",
        "oversize",
    ],
)
def test_malformed_key_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "a.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFormatError):
        PrincipalKey.load(path)


def test_directory_is_not_a_key_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(KeyFormatError, match="regular file"):
        PrincipalKey.load(tmp_path / "d")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("agent-1", True),
        ("svc.deploy_bot", True),
        ("0node", True),
        ("A" * 64, True),
        ("A" * 65, False),
        ("", False),
        ("-agent", False),
        (".agent", False),
        ("agent 1", False),
        ("agent\n", False),
        ("agent+1", False),
        ('agent"', False),
        ("agént", False),
    ],
)
def test_valid_principal_name(name: str, ok: bool) -> None:
    assert valid_principal_name(name) is ok


def test_public_key_round_trip(key: PrincipalKey) -> None:
    assert load_public_key(key.public_key_b64) == key.public_key
    assert encode_public_key(key.public_key) == key.public_key_b64


@pytest.mark.parametrize(
    "text",
    [
        "",
        "AAAA",
        base64.b64encode(bytes(33)).decode(),
        base64.urlsafe_b64encode(b"\xff" * 32).decode(),
        base64.b64encode(bytes(32)).decode() + "\n",
        base64.b64encode(bytes(32)).decode().rstrip("="),
    ],
    ids=["empty", "short", "long", "urlsafe-alphabet", "trailing-newline", "unpadded"],
)
def test_malformed_public_key_is_refused(text: str) -> None:
    with pytest.raises(KeyFormatError):
        load_public_key(text)
