"""The state store's identity and history rules, enforced by the database itself
(SQLite and PostgreSQL: the tests taking ``state`` run on both)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_support import pg_params
from proctor.errors import StoreConflictError, StoreError
from proctor.store.postgres import PostgresLogStore
from proctor.store.records import NewExecution
from proctor.store.sql import INTEGRITY_ERRORS
from proctor.store.sqlite import SQLiteStore
from proctor.store.state import PrincipalRecord, RevocationRecord, StateStore
from proctor.store.state_backend import SQLiteStateBackend
from proctor.store.state_pg import PostgresStateBackend


@pytest.fixture(params=pg_params("sqlite", "postgresql"))
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        SQLiteStore(tmp_path / "p.db", create=True).close()
        store = StateStore(tmp_path / "p.db")
    else:
        dsn = request.getfixturevalue("pg_dsn")
        PostgresLogStore(dsn, create=True).close()
        store = StateStore(backend=PostgresStateBackend(dsn))
    yield store
    store.close()


def record(name: str, key: str, status: str = "active") -> PrincipalRecord:
    return PrincipalRecord(name, key, {"role": "dev"}, "", status, "t0", "t0")


def test_a_principal_update_never_deletes_another(state: StateStore) -> None:
    state.put_principal(record("alice", "ka"))
    state.put_principal(record("bob", "kb"))
    # INSERT OR REPLACE would have deleted alice to make room; the upsert refuses.
    with pytest.raises(StoreConflictError, match="cannot store principal 'ALICE'"):
        state.put_principal(record("ALICE", "kc"))
    with pytest.raises(StoreConflictError, match="cannot store principal 'bob'"):
        state.put_principal(record("bob", "ka"))
    state.put_principal(record("bob", "kb", "suspended"))  # an update of the same name is fine
    assert [(p.name, p.public_key, p.status) for p in state.principals()] == [
        ("alice", "ka", "active"),
        ("bob", "kb", "suspended"),
    ]


def test_lookups_by_name_ignoring_case_and_by_key(state: StateStore) -> None:
    state.put_principal(record("Alice", "ka"))
    assert state.principal_like("aLICE") == state.principal("Alice")
    assert state.principal("alice") is None  # names themselves stay exact
    assert state.principal_with_key("ka") == state.principal("Alice")
    assert state.principal_with_key("kz") is None


def test_bundles_are_append_only_and_version_forward(state: StateStore) -> None:
    state.put_bundle("sha256:a", 0, "{}", "t1", 3)
    state.put_bundle("sha256:b", 5, "{}", "t2", 9)
    assert state.highest_bundle() == (5, "sha256:b")
    for digest, version in (("sha256:a", 7), ("sha256:c", 5), ("sha256:d", 1)):
        with pytest.raises(StoreConflictError, match="append-only"):
            state.put_bundle(digest, version, "{}", "t3", 12)
    conn = state._conn()
    with pytest.raises(INTEGRITY_ERRORS, match="append-only"):
        conn.execute("UPDATE bundles SET log_index = 99 WHERE digest = 'sha256:a'")
    with pytest.raises(INTEGRITY_ERRORS, match="append-only"):
        conn.execute("DELETE FROM bundles")
    assert state.activations() == [(3, "sha256:a"), (9, "sha256:b")]
    assert state.active_bundle() == ("sha256:b", "{}")


def test_exists_and_revocation_lookups(state: StateStore) -> None:
    state.put_principal(record("alice", "ka"))
    state.put_warrant("wr_a", principal="alice", parent="", decision_index=1, expires=9, issued=1)
    state.put_bundle("sha256:a", 1, "{}", "t", 2)
    assert state.exists("principal", "alice")
    assert not state.exists("principal", "ALICE")
    assert state.exists("warrant", "wr_a")
    assert not state.exists("warrant", "wr_b")
    assert state.exists("policy", "sha256:a")
    assert not state.exists("execution", "ex_1")
    assert state.revocation("principal", "alice") is None
    revoked = RevocationRecord("principal", "alice", "why", "admin", "t9", 7)
    state.put_revocation(revoked)
    assert state.revocation("principal", "alice") == revoked


def test_opening_an_older_database_adds_the_rules(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "p.db", create=True).close()
    StateStore(tmp_path / "p.db").close()
    with sqlite3.connect(tmp_path / "p.db") as conn:  # as before the rules existed
        for index in ("principals_name_nocase", "principals_public_key"):
            conn.execute(f"DROP INDEX {index}")
        for trigger in ("bundles_version_forward", "bundles_no_update", "bundles_no_delete"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("INSERT INTO principals VALUES ('alice', 'ka', '{}', '', 'active', 't', 't')")
    state = StateStore(tmp_path / "p.db")
    assert state.principal("alice") is not None
    with pytest.raises(StoreConflictError):
        state.put_principal(record("ALICE", "kb"))
    state.put_bundle("sha256:a", 2, "{}", "t", 1)
    with pytest.raises(StoreConflictError):
        state.put_bundle("sha256:b", 1, "{}", "t", 2)


def test_an_older_database_whose_principals_share_a_key_is_reported_not_changed(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "p.db", create=True).close()
    StateStore(tmp_path / "p.db").close()
    with sqlite3.connect(tmp_path / "p.db") as conn:
        conn.execute("DROP INDEX principals_public_key")
        conn.execute("INSERT INTO principals VALUES ('alice', 'k1', '{}', '', 'active', 't', 't')")
        conn.execute("INSERT INTO principals VALUES ('bob', 'k1', '{}', '', 'active', 't', 't')")
    with pytest.raises(StoreConflictError, match=r"share one public key: \{alice, bob\}"):
        StateStore(tmp_path / "p.db")
    with sqlite3.connect(tmp_path / "p.db") as conn:
        assert conn.execute("SELECT count(*) FROM principals").fetchone() == (2,)
        missing = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'principals_public_key'").fetchone()
    assert missing is None  # the failed open changed nothing, not even the schema


def test_rows_come_back_as_typed_records_and_a_bad_value_is_a_store_error(tmp_path: Path) -> None:
    # SQLite only: PostgreSQL's BIGINT column cannot hold 'soon'.
    SQLiteStore(tmp_path / "p.db", create=True).close()
    state = StateStore(tmp_path / "p.db")
    state.put_warrant("wr_a", principal="alice", parent="", decision_index=1, expires=9, issued=1, token="t")
    assert state.warrant("wr_a") == {
        "id": "wr_a",
        "principal": "alice",
        "parent": "",
        "decision_index": 1,
        "expires": 9,
        "issued": 1,
        "issued_index": -1,
        "token": "t",
    }
    state.close()
    conn = sqlite3.connect(tmp_path / "p.db")  # a row written by something other than proctor
    conn.execute("UPDATE warrants SET expires = 'soon' WHERE id = 'wr_a'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"warrants\[wr_a\]: a column holds an unexpected value"):
        StateStore(tmp_path / "p.db").warrant("wr_a")


def test_the_nonce_floor_never_goes_down(state: StateStore) -> None:
    # The floor explains why older nonces are gone: lowering it (a purge after the
    # clock stepped back) would make requests fresh again whose nonces were forgotten.
    conn = state._conn()
    state.write_nonces(conn, [("k", "n1", 700)], 600)
    state.write_nonces(conn, [("k", "n2", 700)], 10)
    assert state.nonce_floor() == 600
    state.write_nonces(conn, [("k", "n3", 900)], 800)
    assert state.nonce_floor() == 800


@pytest.mark.parametrize("stored", [[], [5], [1, 2, 30]], ids=["empty", "one", "several"])
def test_an_event_index_is_appended_to_the_indices_as_json_insert_did(
    state: StateStore, stored: list[int]
) -> None:
    conn = state._conn()
    record: NewExecution = {
        "id": "ex_a", "warrant": "wr_a", "principal": "alice", "bundle": "", "request": "{}",
        "started_index": 0, "indices": stored, "lease_expires_ms": 0, "ttl_ms": 0, "started": 0,
    }  # fmt: skip
    assert state.start_execution(record)
    before = conn.execute("SELECT indices FROM executions WHERE id = 'ex_a'").fetchone()[0]
    expected = json.dumps([*stored, 41], separators=(",", ":"))
    if isinstance(conn, sqlite3.Connection):  # what json_insert itself writes, where it exists
        assert conn.execute("SELECT json_insert(?, '$[#]', 41)", (before,)).fetchone() == (expected,)
    state.execution_update_writer("ex_a")(conn, index=41)
    assert conn.execute("SELECT indices FROM executions WHERE id = 'ex_a'").fetchone()[0] == expected
    got = state.execution("ex_a")
    assert got is not None
    assert got["indices"] == [*stored, 41]


def test_a_summary_shows_the_requests_action_resource_and_zone_only(state: StateStore) -> None:
    record: NewExecution = {
        "id": "ex_a", "warrant": "wr_a", "principal": "alice", "bundle": "", "started_index": 0,
        "request": '{"action":"exec","resource":"/bin/ls","args":["--secret"]}',
        "indices": [], "lease_expires_ms": 0, "ttl_ms": 0, "started": 0,
    }  # fmt: skip
    assert state.start_execution(record)
    shown = state.execution_summary("ex_a")
    assert shown is not None
    assert (shown.action, shown.resource, shown.zone) == ("exec", "/bin/ls", "")
    assert "--secret" not in repr(shown)


def test_a_summary_of_a_request_that_is_not_json_is_a_store_error(state: StateStore) -> None:
    record: NewExecution = {
        "id": "ex_a", "warrant": "wr_a", "principal": "alice", "bundle": "", "started_index": 0,
        "request": "{not json", "indices": [], "lease_expires_ms": 0, "ttl_ms": 0, "started": 0,
    }  # fmt: skip
    assert state.start_execution(record)
    with pytest.raises(StoreError, match=r"execution 'ex_a': expected its request as JSON"):
        state.execution_summaries(principal=None, live_only=False, limit=5)


def test_a_store_needs_exactly_one_of_a_path_and_a_backend(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="found neither"):
        StateStore()
    SQLiteStore(tmp_path / "q.db", create=True).close()
    backend = SQLiteStateBackend(tmp_path / "q.db")
    with pytest.raises(StoreError, match="found both"):
        StateStore(tmp_path / "q.db", backend=backend)
    state = StateStore(backend=backend)
    assert state.principals() == []
    state.close()


def test_a_refused_open_closes_its_connections(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "p.db", create=True).close()
    StateStore(tmp_path / "p.db").close()
    with sqlite3.connect(tmp_path / "p.db") as conn:
        conn.execute("UPDATE meta SET value = '9' WHERE key = 'state_schema'")
    backend = SQLiteStateBackend(tmp_path / "p.db")
    with pytest.raises(StoreError, match="expected state schema version 3, found '9'"):
        StateStore(backend=backend)
    with pytest.raises(StoreError, match="closed"):
        backend.conn()
