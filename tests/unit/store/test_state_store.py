"""Governance state tables on a real SQLite file and a real PostgreSQL database (the
same tests on both backends; PostgreSQL's are marked ``postgres``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from pg_support import pg_params
from proctor.errors import StoreError
from proctor.store.postgres import PostgresLogStore
from proctor.store.sqlite import SQLiteStore
from proctor.store.state import PrincipalRecord, RevocationRecord, StateStore
from proctor.store.state_pg import PostgresStateBackend


@dataclass
class Db:
    """A database with the log's tables: how to open a state store on it, and how to
    run a committed statement on it from outside proctor."""

    name: str
    open: Callable[[], StateStore]
    sql: Callable[[str], None]


def sqlite_db(path: Path) -> Db:
    SQLiteStore(path, create=True).close()

    def sql(statement: str) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(statement)

    return Db("sqlite", lambda: StateStore(path), sql)


def postgres_db(dsn: str) -> Db:
    PostgresLogStore(dsn, create=True).close()

    def sql(statement: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(statement.encode())

    return Db("postgresql", lambda: StateStore(backend=PostgresStateBackend(dsn)), sql)


@pytest.fixture(params=pg_params("sqlite", "postgresql"))
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if request.param == "sqlite":
        return sqlite_db(tmp_path / "p.db")
    return postgres_db(request.getfixturevalue("pg_dsn"))


@pytest.fixture
def state(db: Db) -> Iterator[StateStore]:
    store = db.open()
    yield store
    store.close()


def test_principals_round_trip(state: StateStore) -> None:
    rec = PrincipalRecord("alice", "pk", {"role": "dev", "tenant": "acme"}, "prod", "active", "t0", "t0")
    state.put_principal(rec)
    assert state.principal("alice") == rec
    assert state.principal("bob") is None
    state.put_principal(PrincipalRecord("alice", "pk", rec.attrs, "prod", "suspended", "t0", "t1"))
    got = state.principal("alice")
    assert got is not None
    assert got.status == "suspended"
    assert [p.name for p in state.principals()] == ["alice"]


def test_live_nonces_are_those_not_expired(state: StateStore) -> None:
    conn = state._conn()
    conn.executemany(
        "INSERT INTO nonces VALUES (?, ?, ?)",
        [("alice", "n1", 1100), ("bob", "n1", 999), ("alice", "n2", 1000)],
    )
    assert sorted(state.live_nonces(1000)) == [("alice", "n1", 1100), ("alice", "n2", 1000)]


def test_revocations_and_warrant_chains(state: StateStore) -> None:
    state.put_warrant("wr_a", principal="alice", parent="", decision_index=1, expires=99, issued=10)
    state.put_warrant("wr_b", principal="alice", parent="wr_a", decision_index=3, expires=99, issued=11)
    state.put_warrant("wr_c", principal="bob", parent="wr_b", decision_index=5, expires=99, issued=12)
    assert state.warrant_chain("wr_c") == ["wr_c", "wr_b", "wr_a"]
    assert state.count_warrants("alice", 11) == 1
    assert not state.is_revoked("warrant", "wr_a")
    state.put_revocation(RevocationRecord("warrant", "wr_a", "why", "admin", "t", 7))
    assert state.revoked_index("warrant", "wr_a") == 7
    state.put_revocation(RevocationRecord("warrant", "wr_a", "again", "admin", "t", 8))  # the latest counts
    assert state.is_revoked("warrant", "wr_a")
    assert state.revoked_index("warrant", "wr_a") == 8
    assert [r.reason for r in state.revocations()] == ["again"]
    assert state.revocations(since=8) == []


def test_bundles_and_the_active_one(state: StateStore) -> None:
    assert state.active_bundle() is None
    state.put_bundle("sha256:a", 1, '{"a":1}', "t1", 3)
    state.put_bundle("sha256:b", 2, '{"b":2}', "t2", 9)
    assert state.active_bundle() == ("sha256:b", '{"b":2}')
    assert [v for _, v, _ in state.bundle_versions()] == [1, 2]


def test_auth_failures_are_bounded_and_truncated(state: StateStore) -> None:
    state.auth_failure_writer(1, "k" * 500, "unsigned", "d" * 2000)(state._conn())
    (row,) = state.auth_failures()
    assert len(row["keyid"]) == 128
    assert len(row["detail"]) == 512


def test_unknown_state_schema_is_refused(db: Db) -> None:
    db.open().close()
    db.sql("UPDATE meta SET value = '9' WHERE key = 'state_schema'")
    with pytest.raises(StoreError, match="expected state schema version 3"):
        db.open()
