"""The PostgreSQL connection adapter: SQLite-dialect SQL with ``?`` placeholders on psycopg,
integrity violations as :class:`IntegrityViolation`, and DSNs without their passwords."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from proctor.errors import StoreError
from proctor.store._pg import PgConnection, redact, translate
from proctor.store.sql import IntegrityViolation


@pytest.mark.parametrize(
    ("sqlite", "psycopg_sql"),
    [
        ("SELECT a FROM t WHERE a = ? AND b = ?", "SELECT a FROM t WHERE a = %s AND b = %s"),
        ("SELECT '?' , ?", "SELECT '?' , %s"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
        ('SELECT "odd?name" FROM t WHERE x = ?', 'SELECT "odd?name" FROM t WHERE x = %s'),
        ("SELECT 1 -- why? because\nWHERE x = ?", "SELECT 1 -- why? because\nWHERE x = %s"),
        ("SELECT /* ? */ ?", "SELECT /* ? */ %s"),
        ("SELECT x FROM t WHERE k LIKE 'a%' AND y = ?", "SELECT x FROM t WHERE k LIKE 'a%%' AND y = %s"),
        ("SELECT 10 % 3", "SELECT 10 %% 3"),
    ],
    ids=["plain", "literal", "quoted-quote", "identifier", "line-comment", "block-comment", "like", "modulo"],
)
def test_placeholders_outside_literals_become_psycopg_ones(sqlite: str, psycopg_sql: str) -> None:
    assert translate(sqlite) == psycopg_sql


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT a FROM t WHERE a = ?1", "expected plain \\? placeholders, found a numbered one"),
        ("SELECT 'open", "expected a closing ' in SQL"),
        ('SELECT "open', 'expected a closing " in SQL'),
        ("SELECT /* open", r"expected \*/ to close a comment"),
    ],
    ids=["numbered", "open-literal", "open-identifier", "open-comment"],
)
def test_sql_outside_the_common_subset_is_refused(sql: str, expected: str) -> None:
    with pytest.raises(StoreError, match=expected):
        translate(sql)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:s3cret@127.0.0.1:5432/db", "user=u password=*** dbname=db host=127.0.0.1 port=5432"),
        ("host=h dbname=d password=s3cret", "host=h dbname=d password=***"),
        ("postgresql://u@h/db", "user=u dbname=db host=h"),
        ("password='s3cret", "(an unparseable PostgreSQL DSN)"),
    ],
    ids=["uri", "keywords", "no-password", "unparseable"],
)
def test_a_dsn_in_a_message_never_shows_its_password(dsn: str, shown: str) -> None:
    assert sorted(redact(dsn).split()) == sorted(shown.split())  # libpq keeps no order
    assert "s3cret" not in redact(dsn)


@pytest.fixture
def conn(pg_dsn: str) -> Iterator[PgConnection]:
    with psycopg.connect(pg_dsn, autocommit=True) as raw:
        c = PgConnection(raw)
        c.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BYTEA, n BIGINT)")
        yield c


@pytest.mark.postgres
def test_sqlite_dialect_sql_runs_on_postgresql(conn: PgConnection) -> None:
    conn.execute("INSERT INTO t (k, v, n) VALUES (?, ?, ?)", ("a?%", b"\x00\xff", 2**40))
    conn.executemany("INSERT INTO t (k, v, n) VALUES (?, ?, ?)", [("b", b"", 1), ("c", None, 2)])
    cur = conn.execute("UPDATE t SET n = n + 1 WHERE k LIKE 'b%' OR k = ?", ("c",))
    assert cur.rowcount == 2
    assert conn.execute("SELECT k, v, n FROM t WHERE k = ?", ("a?%",)).fetchone() == (
        "a?%",
        b"\x00\xff",
        2**40,
    )
    assert conn.execute("SELECT k FROM t WHERE k LIKE 'a%' ORDER BY k").fetchall() == [("a?%",)]
    assert conn.execute("SELECT count(*) FROM t WHERE n % 2 = 0").fetchone() == (2,)


@pytest.mark.postgres
def test_an_integrity_error_is_an_integrity_violation(conn: PgConnection) -> None:
    conn.execute("INSERT INTO t (k) VALUES (?)", ("a",))
    with pytest.raises(IntegrityViolation, match="duplicate key") as caught:
        conn.execute("INSERT INTO t (k) VALUES (?)", ("a",))
    assert isinstance(caught.value.__cause__, psycopg.IntegrityError)
    with pytest.raises(IntegrityViolation):
        conn.executemany("INSERT INTO t (k) VALUES (?)", [("x",), ("a",)])
    assert conn.execute("SELECT k FROM t ORDER BY k").fetchall() == [("a",)]  # executemany: none


@pytest.mark.postgres
def test_a_caught_integrity_violation_does_not_abort_the_transaction(conn: PgConnection) -> None:
    """As in SQLite: a statement refused by a constraint is undone alone, and the
    transaction goes on (PostgreSQL would abort it without the savepoint)."""
    conn.execute("INSERT INTO t (k) VALUES (?)", ("a",))
    with conn.raw.transaction():
        conn.execute("INSERT INTO t (k) VALUES (?)", ("b",))
        with pytest.raises(IntegrityViolation):
            conn.execute("INSERT INTO t (k) VALUES (?)", ("a",))
        conn.execute("INSERT INTO t (k) VALUES (?)", ("c",))
    assert conn.execute("SELECT k FROM t ORDER BY k").fetchall() == [("a",), ("b",), ("c",)]


def test_psycopg_is_imported_only_by_the_store() -> None:
    """The driver is the store's business: nothing above ``proctor.store`` imports it."""
    import ast
    from pathlib import Path

    import proctor

    src = Path(proctor.__file__).parent
    offenders = []
    for path in src.rglob("*.py"):
        if path.parent.name == "store" and path.parent.parent == src:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(src)}: {n}" for n in names if n.split(".")[0].startswith("psycopg")
            ]
    assert offenders == []
