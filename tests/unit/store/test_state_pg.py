"""The state tables on PostgreSQL: what its backend adds to the shared SQL (DDL,
collation, the bundle rules under concurrency, pooled connections, refusals).

The state store's own behaviour runs on both backends in ``test_state_store.py``,
``test_state_rules.py`` and ``test_state_sql.py``; these are PostgreSQL's own rules.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_support import PgCluster
from proctor.errors import StoreError
from proctor.store.postgres import PostgresLogStore
from proctor.store.sqlite import SQLiteStore
from proctor.store.state import PrincipalRecord, StateStore
from proctor.store.state_pg import PostgresStateBackend, PostgresStateSnapshot, pg_has_state

pytestmark = pytest.mark.postgres


def record(name: str, key: str) -> PrincipalRecord:
    return PrincipalRecord(name, key, {"role": "dev"}, "", "active", "t0", "t0")


@pytest.fixture
def pg_state(pg_dsn: str) -> Iterator[StateStore]:
    PostgresLogStore(pg_dsn, create=True).close()
    state = StateStore(backend=PostgresStateBackend(pg_dsn))
    yield state
    state.close()


def sqlite_columns(tmp_path: Path) -> dict[str, list[tuple[str, bool, bool]]]:
    SQLiteStore(tmp_path / "p.db", create=True).close()
    StateStore(tmp_path / "p.db").close()
    with sqlite3.connect(tmp_path / "p.db") as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: sorted(
                (str(c[1]), bool(c[3]) or bool(c[5]), bool(c[5]))
                for c in conn.execute(f"PRAGMA table_info({t})")
            )
            for t in tables
        }


def pg_columns(dsn: str) -> dict[str, list[tuple[str, bool, bool]]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.table_name, c.column_name, c.is_nullable = 'NO', "
            "EXISTS (SELECT 1 FROM information_schema.key_column_usage k "
            "JOIN information_schema.table_constraints t USING (constraint_name, table_name) "
            "WHERE t.constraint_type = 'PRIMARY KEY' AND k.table_name = c.table_name "
            "AND k.column_name = c.column_name) "
            "FROM information_schema.columns c WHERE c.table_schema = 'public'"
        ).fetchall()
    out: dict[str, list[tuple[str, bool, bool]]] = {}
    for table, column, not_null, primary in rows:
        out.setdefault(table, []).append((column, bool(not_null) or bool(primary), bool(primary)))
    return {t: sorted(cols) for t, cols in out.items()}


def test_the_postgresql_state_tables_have_the_sqlite_columns_and_keys(pg_dsn: str, tmp_path: Path) -> None:
    PostgresLogStore(pg_dsn, create=True).close()
    StateStore(backend=PostgresStateBackend(pg_dsn)).close()
    lite, pg = sqlite_columns(tmp_path), pg_columns(pg_dsn)
    state_tables = set(lite) - {"meta", "entries", "tiles", "checkpoints", "cosignatures"}
    assert state_tables == {
        "principals", "bundles", "revocations", "warrants", "executions", "openings", "nonces", "auth_failures",
        "nodes", "approvals", "calls",
    }  # fmt: skip
    for table in sorted(state_tables | {"meta"}):
        assert pg[table] == lite[table], table


def test_the_postgresql_state_indexes_and_triggers_are_sqlites(pg_state: StateStore, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
        triggers = {r[0] for r in conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
    assert {"principals_name_nocase", "principals_public_key", "executions_by_principal",
            "warrants_by_principal", "nonces_by_expiry"} <= indexes  # fmt: skip
    assert triggers == {
        "bundles_version_forward",
        "bundles_no_update",
        "bundles_no_delete",
        "bundles_no_truncate",
    }


@pytest.fixture
def icu_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A database whose default collation is a linguistic one (ICU's root locale), in
    which 'a' sorts before 'B' — unlike SQLite's BINARY."""
    pg_cluster.sql(
        "CREATE DATABASE proctor_icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C'"
    )
    try:
        yield pg_cluster.dsn("proctor_icu")
    finally:
        pg_cluster.drop_database("proctor_icu")


def test_postgresql_state_text_compares_bytewise_whatever_the_locale(icu_dsn: str) -> None:
    with psycopg.connect(icu_dsn, autocommit=True) as conn:  # the control: this locale is not bytewise
        assert conn.execute("SELECT x FROM (VALUES ('a'), ('B')) v(x) ORDER BY x").fetchall() == [
            ("a",),
            ("B",),
        ]
    PostgresLogStore(icu_dsn, create=True).close()
    state = StateStore(backend=PostgresStateBackend(icu_dsn))
    try:
        for name, key in (("a", "k1"), ("B", "k2"), ("_", "k3")):
            state.put_principal(record(name, key))
        assert [p.name for p in state.principals()] == ["B", "_", "a"]  # as SQLite orders them
    finally:
        state.close()


def test_two_bundle_activations_at_once_cannot_both_pass_the_version_rule(
    pg_state: StateStore, pg_dsn: str
) -> None:
    # READ COMMITTED alone would let each insert miss the other's uncommitted row.
    first = psycopg.connect(pg_dsn)
    second = psycopg.connect(pg_dsn)
    insert = "INSERT INTO bundles (digest, version, doc, activated, log_index) VALUES (%s, 5, '{}', 't', %s)"
    outcome: list[BaseException | None] = []
    try:
        first.execute(insert, ("sha256:a", 1))  # holds the bundle lock until it commits

        def race() -> None:
            try:
                second.execute(insert, ("sha256:b", 2))
                second.commit()
                outcome.append(None)
            except psycopg.Error as e:
                second.rollback()
                outcome.append(e)

        racer = threading.Thread(target=race)
        racer.start()
        racer.join(0.5)
        assert racer.is_alive()  # waiting for the first to finish
        first.commit()
        racer.join(60)
        assert len(outcome) == 1
        assert isinstance(outcome[0], psycopg.errors.CheckViolation)
        assert "only go forward" in str(outcome[0])
    finally:
        first.close()
        second.close()
    assert pg_state.bundle_versions() == [("sha256:a", 5, "t")]


def test_postgresql_bundles_cannot_be_truncated(pg_state: StateStore, pg_dsn: str) -> None:
    pg_state.put_bundle("sha256:a", 1, "{}", "t", 3)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("TRUNCATE bundles")
    assert pg_state.highest_bundle() == (1, "sha256:a")


def test_a_state_store_borrowing_the_log_pool_leaves_it_open(pg_dsn: str) -> None:
    log = PostgresLogStore(pg_dsn, create=True)
    try:
        state = StateStore(backend=PostgresStateBackend(pg_dsn, pool=log.pool))
        state.put_principal(record("alice", "ka"))
        state.close()
        assert log.tree_size() == 0  # the log's connections still answer
        with pytest.raises(StoreError, match="closed"):
            state.principal("alice")
    finally:
        log.close()


def test_a_transaction_sees_its_own_writes_and_rolls_back_whole(pg_state: StateStore) -> None:
    backend: Any = pg_state._backend
    seen: list[Any] = []

    def abandoned() -> None:
        with backend.transaction() as conn:
            StateStore.principal_writer(record("alice", "ka"))(conn, index=1)
            seen.extend([backend.conn() is conn, pg_state.principal("alice")])
            raise RuntimeError("abandon")

    with pytest.raises(RuntimeError):
        abandoned()
    assert seen == [True, record("alice", "ka")]  # this thread's statements joined the transaction
    assert pg_state.principal("alice") is None


def test_a_refused_postgresql_open_changes_nothing_and_closes_its_pool(pg_dsn: str) -> None:
    PostgresLogStore(pg_dsn, create=True).close()
    StateStore(backend=PostgresStateBackend(pg_dsn)).close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '4' WHERE key = 'state_schema'")
    backend = PostgresStateBackend(pg_dsn)
    with pytest.raises(
        StoreError, match="expected state schema version 3, found '4': the store was written by a newer"
    ):
        StateStore(backend=backend)
    with pytest.raises(StoreError, match="closed"):
        backend.conn()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'state_schema'").fetchone() == ("4",)


def test_a_postgresql_state_error_never_shows_the_password(pg_cluster: PgCluster, pg_dsn: str) -> None:
    wrong = pg_dsn.replace(pg_cluster.password, "not-the-password-42")
    with pytest.raises(StoreError) as refused:
        PostgresStateBackend(wrong, timeout=5)
    assert "not-the-password-42" not in str(refused.value)
    assert pg_cluster.password not in str(refused.value)
    with pytest.raises(StoreError) as unread:
        pg_has_state(wrong)
    assert "not-the-password-42" not in str(unread.value)


def test_has_state_tells_a_bare_log_from_a_governed_one(pg_dsn: str) -> None:
    assert not pg_has_state(pg_dsn)  # not even a meta table
    PostgresLogStore(pg_dsn, create=True).close()
    assert not pg_has_state(pg_dsn)
    StateStore(backend=PostgresStateBackend(pg_dsn)).close()
    assert pg_has_state(pg_dsn)


def test_a_postgresql_snapshot_reads_one_moment(pg_state: StateStore, pg_dsn: str) -> None:
    pg_state.put_principal(record("alice", "ka"))
    with PostgresStateSnapshot(pg_dsn) as snapshot:
        assert snapshot.tree_size() == 0
        pg_state.put_principal(record("bob", "kb"))  # committed after the snapshot began
        assert [p.name for p in snapshot.rows().principals] == ["alice"]
        assert list(snapshot.entries(10)) == []
        assert snapshot.latest_checkpoint() is None
