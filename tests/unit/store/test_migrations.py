"""Versioned migrations of the state schema (:mod:`proctor.store.migrations`), on both
backends, and ``proctor migrate``.

The real schemas have three steps each (version 1, the tables; version 2, ``nodes``; version 3,
``approvals`` and ``calls``); the
rules about later steps run on schemas made here: the real step 1, then a safe step (a
column with a default) and a step that is not safe (it rewrites stored rows), in the SQL
both databases run.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from typer.testing import CliRunner

from pg_support import pg_params
from proctor.cli import app
from proctor.errors import StoreError
from proctor.lineage.log import Log
from proctor.store._state_schema import SQLITE_STATE_SCHEMA, STATE_SCHEMA_VERSION
from proctor.store.migrations import Migration, Schema
from proctor.store.postgres import PostgresLogStore
from proctor.store.sqlite import SQLiteStore
from proctor.store.state import StateStore
from proctor.store.state_backend import SQLiteStateBackend
from proctor.store.state_pg import PG_STATE_SCHEMA, PostgresStateBackend

ADD_NOTE = "ALTER TABLE principals ADD COLUMN note TEXT NOT NULL DEFAULT ''"
REWRITE = "UPDATE principals SET zone = 'moved'"


def step(version: int, sql: str, *, safe: bool, seen: list[int] | None = None) -> Migration[Any]:
    def apply(conn: Any, where: str) -> None:
        if seen is not None:
            seen.append(version)
        conn.execute(sql)

    return Migration(version, f"step {version}: {sql}", safe=safe, apply=apply)


def failing(version: int) -> Migration[Any]:
    def apply(conn: Any, where: str) -> None:
        raise StoreError(f"step {version} failed on purpose")

    return Migration(version, "a step that fails", safe=False, apply=apply)


@dataclass
class Db:
    """A database with the log's tables, at state schema version 1."""

    name: str
    backend: Callable[[Schema[Any]], Any]  # a state backend with these steps
    version: Callable[[], str | None]
    sql: Callable[[str], list[tuple[Any, ...]]]
    schema: Schema[Any]  # the real one

    def open(self, *steps: Migration[Any]) -> StateStore:
        return StateStore(backend=self.backend(Schema(self.schema.backend, (self.schema.steps[0], *steps))))

    def migrate(self, *steps: Migration[Any], dry_run: bool = False) -> Any:
        backend = self.backend(Schema(self.schema.backend, (self.schema.steps[0], *steps)))
        try:
            return backend.migrate(dry_run=dry_run)
        finally:
            backend.close()

    def columns(self) -> set[str]:
        if self.name == "sqlite":
            return {str(r[1]) for r in self.sql("PRAGMA table_info(principals)")}
        return {
            str(r[0])
            for r in self.sql(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'principals'"
            )
        }


def _sqlite(path: Path) -> Db:
    SQLiteStore(path, create=True).close()

    def sql(statement: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            return conn.execute(statement).fetchall()

    def version() -> str | None:
        rows = sql("SELECT value FROM meta WHERE key = 'state_schema'")
        return None if not rows else str(rows[0][0])

    db = Db(
        "sqlite", lambda schema: SQLiteStateBackend(path, schema=schema), version, sql, SQLITE_STATE_SCHEMA
    )
    db.open().close()  # version 1: the rules below add their own steps 2 and 3
    return db


def _postgres(dsn: str) -> Db:
    PostgresLogStore(dsn, create=True).close()

    def sql(statement: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = conn.execute(statement.encode())
            return cur.fetchall() if cur.description else []

    def version() -> str | None:
        rows = sql("SELECT value FROM meta WHERE key = 'state_schema'")
        return None if not rows else str(rows[0][0])

    db = Db(
        "postgresql", lambda schema: PostgresStateBackend(dsn, schema=schema), version, sql, PG_STATE_SCHEMA
    )
    db.open().close()
    return db


@pytest.fixture(params=pg_params("sqlite", "postgresql"))
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if request.param == "sqlite":
        return _sqlite(tmp_path / "p.db")
    return _postgres(request.getfixturevalue("pg_dsn"))


def test_each_backend_knows_state_schema_version_3() -> None:
    assert SQLITE_STATE_SCHEMA.latest == PG_STATE_SCHEMA.latest == STATE_SCHEMA_VERSION == 3
    assert all(s.safe for s in SQLITE_STATE_SCHEMA.steps)
    assert all(s.safe for s in PG_STATE_SCHEMA.steps)
    assert SQLITE_STATE_SCHEMA.steps[1].summary == PG_STATE_SCHEMA.steps[1].summary
    assert SQLITE_STATE_SCHEMA.steps[2].summary == PG_STATE_SCHEMA.steps[2].summary


def test_a_version_1_store_gets_the_nodes_table_when_it_opens(db: Db) -> None:
    # A store written before the nodes table: versions 2 and 3 are safe, applied on open.
    assert db.version() == "1"
    StateStore(backend=db.backend(db.schema)).close()
    assert db.version() == "3"
    assert db.sql("SELECT name, instance, zone, applied, status FROM nodes") == []
    assert db.sql("SELECT id, status FROM approvals") == []
    assert db.sql("SELECT warrant, principal FROM calls") == []


def test_migration_steps_are_numbered_without_gaps() -> None:
    with pytest.raises(ValueError, match="numbered 1, 2"):
        Schema("SQLite", (SQLITE_STATE_SCHEMA.steps[0], step(3, ADD_NOTE, safe=True)))


def test_an_older_store_gets_its_safe_steps_when_it_opens(db: Db) -> None:
    state = db.open(step(2, ADD_NOTE, safe=True))
    state.close()
    assert db.version() == "2"
    assert "note" in db.columns()


def test_an_older_store_needing_a_step_that_is_not_safe_is_refused_when_it_opens(db: Db) -> None:
    db.sql("INSERT INTO principals (name, public_key, attrs, zone, status, created, updated) "
           "VALUES ('alice', 'ka', '{}', 'prod', 'active', 't', 't')")  # fmt: skip
    with pytest.raises(StoreError, match=r"found 1; the pending step\(s\) 3: .* run proctor migrate"):
        db.open(step(2, ADD_NOTE, safe=True), step(3, REWRITE, safe=False))
    assert db.version() == "1"  # one transaction: not even the safe step was applied
    assert "note" not in db.columns()
    assert db.sql("SELECT zone FROM principals") == [("prod",)]


def test_migrate_applies_every_pending_step_in_one_transaction(db: Db) -> None:
    plan = db.migrate(step(2, ADD_NOTE, safe=True), step(3, REWRITE, safe=False))
    assert (plan.found, plan.latest, plan.applied) == (1, 3, True)
    assert [s.version for s in plan.pending] == [2, 3]
    assert db.version() == "3"
    assert "note" in db.columns()
    db.open(step(2, ADD_NOTE, safe=True), step(3, REWRITE, safe=False)).close()  # now it opens


def test_a_failing_migration_step_leaves_the_store_as_it_was(db: Db) -> None:
    with pytest.raises(StoreError, match="step 3 failed on purpose"):
        db.migrate(step(2, ADD_NOTE, safe=True), failing(3))
    assert db.version() == "1"
    assert "note" not in db.columns()


def test_a_dry_run_changes_nothing(db: Db) -> None:
    plan = db.migrate(step(2, ADD_NOTE, safe=True), step(3, REWRITE, safe=False), dry_run=True)
    assert (plan.found, plan.applied, [s.version for s in plan.pending]) == (1, False, [2, 3])
    assert plan.to_json()["version"] == 1
    assert db.version() == "1"
    assert "note" not in db.columns()


@pytest.mark.parametrize(
    "stored", ["2", "x", "01", "0", "-1"], ids=["newer", "text", "padded", "zero", "negative"]
)
def test_a_store_of_a_version_this_proctor_does_not_know_is_refused(db: Db, stored: str) -> None:
    db.sql(f"UPDATE meta SET value = '{stored}' WHERE key = 'state_schema'")
    with pytest.raises(StoreError, match=f"expected state schema version 1, found '{stored}'"):
        db.open()
    with pytest.raises(StoreError, match="expected state schema version 1"):
        db.migrate()
    assert db.version() == stored


def test_a_store_newer_than_this_proctor_says_so(db: Db) -> None:
    db.migrate(step(2, ADD_NOTE, safe=True))
    with pytest.raises(StoreError, match=r"written by a newer proctor .* knows versions up to 1"):
        db.open()


def test_a_store_without_state_tables_gets_every_step(db: Db) -> None:
    for table in ("principals", "bundles", "revocations", "warrants", "executions", "openings", "nonces",
                  "auth_failures"):  # fmt: skip
        db.sql(f"DROP TABLE {table}")
    db.sql("DELETE FROM meta WHERE key = 'state_schema'")
    if db.name == "postgresql":
        db.sql("DROP FUNCTION proctor_bundles_version_forward, proctor_bundles_append_only")
    db.open(step(2, ADD_NOTE, safe=True), step(3, REWRITE, safe=False)).close()  # nothing stored to lose
    assert db.version() == "3"


def test_migrations_take_turns_under_the_migration_lock(db: Db) -> None:
    # Two processes upgrading at once: the second reads the version only after the
    # first committed, so the step runs once (a second ADD COLUMN would fail).
    seen: list[int] = []
    errors: list[BaseException] = []
    inside = threading.Event()

    def slow(conn: Any, where: str) -> None:
        seen.append(2)
        inside.set()
        threading.Event().wait(0.3)  # long enough for the other to reach the lock
        conn.execute(ADD_NOTE)

    slow_step = Migration(2, "a slow additive step", safe=True, apply=slow)

    def run() -> None:
        try:
            db.migrate(slow_step)
        except BaseException as e:
            errors.append(e)

    first = threading.Thread(target=run)
    first.start()
    assert inside.wait(60)
    second = threading.Thread(target=run)
    second.start()
    first.join(60)
    second.join(60)
    assert errors == []
    assert seen == [2]
    assert db.version() == "2"


# -- proctor migrate -----------------------------------------------------------------


def migrate(*args: str) -> tuple[int, Any, str]:
    result = CliRunner().invoke(app, ["migrate", *args, "--json"])
    out = orjson.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, out, result.stderr


@pytest.fixture
def bare_log(tmp_path: Path) -> Path:
    """A data directory whose database has the log and no state tables (state schema 0)."""
    Log.initialize(tmp_path / "d", origin="test.example/migrate").close()
    return tmp_path / "d"


def test_proctor_migrate_applies_what_is_pending_and_a_dry_run_does_not(bare_log: Path) -> None:
    code, plan, _ = migrate("--data", str(bare_log), "--dry-run")
    assert code == 0
    assert (plan["found"], plan["version"], plan["applied"], plan["dry_run"]) == (0, 0, False, True)
    assert [s["version"] for s in plan["pending"]] == [1, 2, 3]
    code, plan, err = migrate("--data", str(bare_log))
    assert code == 0
    assert (plan["found"], plan["version"], plan["applied"]) == (0, 3, True)
    assert "applied step(s) 1, 2, 3: state schema version 3" in err
    code, plan, _ = migrate("--data", str(bare_log))
    assert (code, plan["pending"], plan["applied"]) == (0, [], False)


def test_proctor_migrate_refuses_a_newer_store_with_exit_2(bare_log: Path) -> None:
    migrate("--data", str(bare_log))
    with sqlite3.connect(bare_log / "proctor.db") as conn:
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'state_schema'")
    code, plan, err = migrate("--data", str(bare_log))
    assert (code, plan) == (2, None)
    assert "expected state schema version 3, found '7': the store was written by a newer proctor" in err


def test_proctor_migrate_needs_a_log(tmp_path: Path) -> None:
    Log.initialize(tmp_path / "d", origin="test.example/migrate").close()
    (tmp_path / "d" / "proctor.db").unlink()
    code, _, err = migrate("--data", str(tmp_path / "d"))
    assert code == 2
    assert "no database at" in err
    assert "--store URL" in err


@pytest.mark.postgres
def test_proctor_migrate_on_a_postgresql_store(pg_dsn: str, tmp_path: Path) -> None:
    PostgresLogStore(pg_dsn, create=True).close()
    code, plan, err = migrate("--store", pg_dsn, "--data", str(tmp_path / "none"))
    assert code == 0, err
    assert (plan["backend"], plan["found"], plan["version"], plan["applied"]) == ("PostgreSQL", 0, 3, True)
    assert "***" in plan["store"]
    password = str(psycopg.conninfo.conninfo_to_dict(pg_dsn)["password"])
    assert password not in plan["store"]
    code, plan, _ = migrate("--store", pg_dsn)
    assert (code, plan["pending"]) == (0, [])


@pytest.mark.postgres
def test_proctor_migrate_refuses_a_postgresql_database_without_a_log(pg_dsn: str) -> None:
    code, _, err = migrate("--store", pg_dsn)
    assert code == 2
    assert "expected a proctor database, found no schema" in err
    password = str(psycopg.conninfo.conninfo_to_dict(pg_dsn)["password"])
    assert password not in err


def test_proctor_migrate_refuses_a_store_url_that_is_not_postgresql() -> None:
    code, _, err = migrate("--store", "mysql://root:hunter2@db/proctor")
    assert code == 2
    assert "expected a store URL starting postgresql://, found 'mysql'" in err
    assert "hunter2" not in err
