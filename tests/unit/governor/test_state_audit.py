"""Reading the state check's input (proctor.governor.state_audit): the events replayed
are the ones the log signed, read in one snapshot with the rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from proctor.authorization.keys import PrincipalKey
from proctor.errors import LogIntegrityError, StoreError
from proctor.governor.consistency import StateReport
from proctor.governor.service import Governor, initialize
from proctor.governor.state_audit import audit_state, has_state
from proctor.lineage.log import Log


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    initialize(root, origin="test.example/audit")
    with Governor(root) as gov:
        for name, role in (("alice", "dev"), ("bob", "ops")):
            key = PrincipalKey.generate(name)
            gov.add_principal(name, key.public_key_b64, attrs={"role": role}, zone="", by="admin")
    return root


def audit(root: Path) -> StateReport:
    with Log.open(root) as log:
        return audit_state(root / "proctor.db", log.verifier)


def sql(root: Path, statement: str, *params: object) -> None:
    conn = sqlite3.connect(root / "proctor.db")
    try:
        conn.execute(statement, params)
        conn.commit()
    finally:
        conn.close()


def bob_event_index(root: Path) -> int:
    with Log.open(root) as log:
        for index in range(log.size):
            event = orjson.loads(log.leaf(index))
            if event["type"] == "principal.changed" and event["principal"] == "bob":
                return index
    raise AssertionError("no event for bob")


def test_a_data_directory_as_the_governor_left_it_checks_out(data: Path) -> None:
    report = audit(data)
    assert report.ok, report.discrepancies
    assert report.events == 3  # the admin, alice and bob


def test_an_event_rewritten_with_its_row_fails_the_log_not_the_check(data: Path) -> None:
    # Editing the row and the logged event alike leaves them agreeing, but the entries
    # no longer hash to the signed checkpoint.
    index = bob_event_index(data)
    with Log.open(data) as log:
        raw = log.leaf(index).replace(b'"role":"ops"', b'"role":"admin"')
    sql(data, "UPDATE entries SET data = ? WHERE idx = ?", raw, index)
    sql(data, """UPDATE principals SET attrs = '{"role":"admin"}' WHERE name = 'bob'""")
    with pytest.raises(LogIntegrityError, match="do not hash to the root"):
        audit(data)


def test_a_missing_entry_fails_the_audit(data: Path) -> None:
    sql(data, "DELETE FROM entries WHERE idx = 1")
    with pytest.raises(LogIntegrityError, match="entry 1 is missing"):
        audit(data)


def test_a_log_without_a_valid_checkpoint_fails_the_audit(data: Path) -> None:
    sql(data, "UPDATE checkpoints SET note = replace(note, 'test.example', 'evil.example')")
    with pytest.raises(LogIntegrityError, match="does not verify"):
        audit(data)
    sql(data, "DELETE FROM checkpoints")
    with pytest.raises(LogIntegrityError, match="no checkpoint"):
        audit(data)


def test_a_column_of_the_wrong_type_is_named(data: Path) -> None:
    sql(data, "INSERT INTO warrants VALUES ('wr_x', 'bob', '', 1, 'never', 0, 2, '')")
    with pytest.raises(StoreError, match=r"warrants\[wr_x\]\.expires: expected an integer"):
        audit(data)


def test_the_tree_hash_is_checked_at_every_size(tmp_path: Path) -> None:
    # Sizes around tile and power-of-two boundaries: each must fold to the signed root.
    root = tmp_path / "data"
    initialize(root, origin="test.example/sizes")
    event = {"v": 1, "type": "decision", "time": "2026-01-01T00:00:00.000Z"}
    with Log.open(root) as log:
        size = log.size
    for target in (3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 255, 256, 257, 600):
        with Log.open(root) as log:
            log.append_many([event] * (target - size))
        size = target
        assert audit(root).ok, target


def test_only_a_governor_data_directory_has_state(tmp_path: Path, data: Path) -> None:
    assert has_state(data / "proctor.db")
    with Log.initialize(tmp_path / "bare", origin="test.example/bare"):
        pass
    assert not has_state(tmp_path / "bare" / "proctor.db")


@pytest.fixture
def tiled(data: Path) -> Path:
    """A data directory whose log has a complete tile (0/0) and a partial one (0/1)."""
    event = {"v": 1, "type": "decision", "time": "2026-01-01T00:00:00.000Z"}
    with Log.open(data) as log:
        log.append_many([event] * (300 - log.size))
    return data


def _flip_tile_byte(root: Path, offset: int) -> None:
    conn = sqlite3.connect(root / "proctor.db")
    try:
        (hashes,) = conn.execute("SELECT hashes FROM tiles WHERE level = 0 AND idx = 0").fetchone()
        damaged = bytearray(hashes)
        damaged[offset] ^= 0x01
        conn.execute("UPDATE tiles SET hashes = ? WHERE level = 0 AND idx = 0", (bytes(damaged),))
        conn.commit()
    finally:
        conn.close()


def test_a_damaged_leaf_hash_in_a_complete_tile_names_its_entry(tiled: Path) -> None:
    # Proofs are served from the tiles: the entries hashing to the signed root is not enough.
    _flip_tile_byte(tiled, 10 * 32 + 5)  # the leaf hash of entry 10
    with pytest.raises(LogIntegrityError, match="entry 10 does not match its stored leaf hash"):
        audit(tiled)


def test_a_damaged_interior_hash_in_a_complete_tile_names_the_tile(tiled: Path) -> None:
    _flip_tile_byte(tiled, (256 + 128) * 32)  # the first hash of the tile's third row
    with pytest.raises(LogIntegrityError, match="stored tile 0/0 does not match the entries"):
        audit(tiled)


def test_a_stored_tile_the_entries_do_not_make_fails_the_audit(tiled: Path) -> None:
    sql(tiled, "INSERT INTO tiles (level, idx, width, hashes) VALUES (0, 9, 1, zeroblob(32))")
    with pytest.raises(LogIntegrityError, match="expected 3 stored tiles for the entries, found 4"):
        audit(tiled)
