"""Identity hygiene and registration grammar: one principal per name ignoring case, one
principal per public key, and zones and attributes of a strict grammar, all checked
before anything is logged."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gov_server import cli
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.errors import PrincipalError, StoreConflictError
from proctor.governor.app import create_app
from proctor.governor.model import RequestShapeError
from proctor.governor.service import Governor
from proctor.store.state import StateStore

HOSTILE_ZONE = 'prod" || true\n'


@pytest.fixture
def client(governor: Governor) -> Iterator[TestClient]:
    with TestClient(create_app(governor), raise_server_exceptions=False) as c:
        yield c


def post(client: TestClient, key: PrincipalKey, path: str, body: Any) -> Any:
    raw = json.dumps(body).encode()
    return client.post(path, content=raw, headers=sign_request("POST", path, raw, key, now=int(time.time())))


def new_key() -> str:
    return PrincipalKey.generate("x").public_key_b64


@pytest.mark.parametrize("name", ["ALICE", "Alice", "aLiCe"])
def test_names_equal_ignoring_case_are_refused(governor: Governor, name: str) -> None:
    size = governor.log.size
    with pytest.raises(PrincipalError, match="differs only in case from the existing principal 'alice'"):
        governor.add_principal(name, new_key(), attrs={}, zone="", by="admin")
    assert governor.log.size == size
    assert governor.state.principal(name) is None


def test_a_key_registered_to_another_principal_is_refused(governor: Governor) -> None:
    alice_key = governor.state.principal("alice").public_key  # type: ignore[union-attr]
    size = governor.log.size
    with pytest.raises(PrincipalError, match="found the key of principal 'alice'"):
        governor.add_principal("mallory", alice_key, attrs={}, zone="", by="admin")
    assert governor.log.size == size
    assert governor.state.principal("mallory") is None


def test_zones_are_validated_at_registration(governor: Governor, gov_data: Path, client: TestClient) -> None:
    size = governor.log.size
    with pytest.raises(RequestShapeError) as refused:
        governor.add_principal("carol", new_key(), attrs={}, zone=HOSTILE_ZONE, by="admin")
    assert str(refused.value).startswith("zone: expected '' or 1-64 characters of [A-Za-z0-9._-]")
    assert str(refused.value).endswith(f"found {HOSTILE_ZONE!r}")
    admin = PrincipalKey.load(gov_data / "keys" / "admin.key")
    body = {"name": "carol", "public_key": new_key(), "zone": HOSTILE_ZONE}
    answer = post(client, admin, "/v1/principals", body)
    assert answer.status_code == 422
    assert answer.json()["message"].startswith("zone: expected")
    assert governor.log.size == size
    governor.add_principal("carol", new_key(), attrs={}, zone="prod-eu.1", by="admin")  # a good one passes


BAD_ATTRIBUTES = {
    "quote": ({"role": 'dev" || true'}, "attrs['role']: expected 1-256 printable characters"),
    "newline": ({"role": "dev\n"}, "'\\n' at position 3"),
    "bidi-override": ({"role": "dev\u202e"}, "'\\u202e' at position 3"),
    "apostrophe": ({"role": "it's"}, '"\'" at position 2'),
    "backquote": ({"role": "dev`id`"}, "'`' at position 3"),
    "outer-space": ({"role": " dev"}, "white space at an end"),
    "empty": ({"role": ""}, "(0 characters)"),
    "too-long": ({"role": "x" * 257}, "(257 characters)"),
    "key-space": ({"ro le": "dev"}, "expected attribute names"),
    "key-digit": ({"1role": "dev"}, "expected attribute names"),
    "key-too-long": ({"x" * 65: "dev"}, "expected attribute names"),
    "zone": ({"zone": "prod"}, "not as an attribute"),
    "too-many": ({f"a{i}": "v" for i in range(33)}, "at most 32 attributes, found 33"),
}


@pytest.mark.parametrize(("attrs", "expected"), BAD_ATTRIBUTES.values(), ids=BAD_ATTRIBUTES.keys())
def test_attributes_are_validated_at_registration(
    governor: Governor, attrs: dict[str, str], expected: str
) -> None:
    size = governor.log.size
    with pytest.raises(RequestShapeError) as refused:
        governor.add_principal("carol", new_key(), attrs=attrs, zone="", by="admin")
    assert expected in str(refused.value)
    assert governor.log.size == size
    assert governor.state.principal("carol") is None


def test_bad_zones_and_attributes_exit_2_on_the_command_line(gov_data: Path, tmp_path: Path) -> None:
    data = ["--data", str(gov_data), "--out", str(tmp_path / "carol.key")]
    zone = cli("principal", "add", "carol", "--zone", HOSTILE_ZONE, *data, check=False)
    assert zone.returncode == 2
    assert "zone: expected '' or 1-64 characters" in zone.stderr
    attr = cli("principal", "add", "carol", "--attr", "role=dev`id`", *data, check=False)
    assert attr.returncode == 2
    assert "attrs['role']: expected" in attr.stderr
    assert not (tmp_path / "carol.key").exists()


def test_a_data_directory_that_breaks_the_identity_rules_fails_to_open_and_keeps_its_data(
    gov_data: Path,
) -> None:
    db = gov_data / "proctor.db"
    with sqlite3.connect(db) as conn:  # as written before the rules: no unique index
        conn.execute("DROP INDEX principals_name_nocase")
        row = conn.execute("SELECT * FROM principals WHERE name = 'admin'").fetchone()
        conn.execute("INSERT INTO principals VALUES (?, ?, ?, ?, ?, ?, ?)", ("ADMIN", new_key(), *row[2:]))
    with pytest.raises(StoreConflictError, match="differ only in case") as refused:
        StateStore(db)
    assert "ADMIN" in str(refused.value)
    assert "Nothing was changed" in str(refused.value)
    with sqlite3.connect(db) as conn:
        names = sorted(n for (n,) in conn.execute("SELECT name FROM principals"))
    assert names == ["ADMIN", "admin"]
