"""The state store's SQL is the common subset of SQLite and PostgreSQL (ADR 0013,
``proctor.store.sql``): what is specific to one database lives in its backend.

Two checks, one list of constructs (:data:`NOT_COMMON`, each with why it is not
common): the SQL strings written in the shared query modules (read from their source),
and every statement the store actually runs on SQLite while :func:`workout` calls each
of its methods and writers (traced on the connection: this sees SQL assembled at run
time too). The list is tested itself, so a check that finds nothing has not gone blind.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from proctor.errors import StoreConflictError, StoreError
from proctor.store import state_approvals
from proctor.store._pg import PgConnection
from proctor.store.base import Tile
from proctor.store.postgres import PostgresLogStore
from proctor.store.sqlite import SQLiteStore
from proctor.store.state import NodeRecord, PrincipalRecord, RevocationRecord, StateStore
from proctor.store.state_pg import PostgresStateBackend

STORE = Path(__file__).resolve().parents[3] / "src" / "proctor" / "store"
BACKEND_MODULES = ("state_backend.py", "_state_schema.py", "state_pg.py")
"""Where SQL specific to one database belongs (the SQLite backend and its DDL, the
PostgreSQL backend and its DDL)."""
SHARED_MODULES = [
    *sorted(
        p.name for p in STORE.glob("*.py") if p.name.startswith("state") and p.name not in BACKEND_MODULES
    ),
    "records.py",
]
"""The modules whose SQL every backend runs: the state store and its query modules."""

NOT_COMMON: dict[str, tuple[str, str]] = {
    # name: (pattern, searched case-insensitively outside '…' literals; why it is not common)
    "INSERT OR …": (r"\bINSERT\s+OR\b", "SQLite only; ON CONFLICT … DO NOTHING / DO UPDATE is common"),
    "REPLACE INTO": (r"\bREPLACE\s+INTO\b", "SQLite only (and it deletes the row in the way)"),
    "rowid": (r"\b_?rowid_?\b|\bWITHOUT\s+ROWID\b", "SQLite's implicit column; PostgreSQL has none"),
    "COLLATE NOCASE": (r"\bCOLLATE\s+NOCASE\b", "SQLite's collation; PostgreSQL has none by that name"),
    "BEGIN IMMEDIATE": (r"\bBEGIN\s+(IMMEDIATE|EXCLUSIVE|DEFERRED)\b", "SQLite's locking modes"),
    "PRAGMA": (r"\bPRAGMA\b", "SQLite's settings and introspection"),
    "sqlite_ tables": (r"\bsqlite_\w+", "SQLite's catalogue"),
    "JSON": (r"\bjsonb?(_\w+)?\s*\(|->", "json_extract, json_insert … are SQLite's; ->> needs json types"),
    "SQLite functions": (
        r"\b(ifnull|iif|instr|printf|group_concat|typeof|total|changes|last_insert_rowid|randomblob|"
        r"zeroblob|strftime|julianday|unixepoch|datetime|glob|likelihood)\s*\(",
        "not in PostgreSQL (or not alike)",
    ),
    "GLOB, REGEXP": (r"\b(GLOB|REGEXP)\b", "SQLite operators"),
    "LIKE": (r"\bI?LIKE\b", "case-insensitive for ASCII on SQLite, not on PostgreSQL: compare lower()"),
    "TRUE, FALSE": (r"\b(TRUE|FALSE)\b", "booleans are integers in the shared tables"),
    "AUTOINCREMENT": (r"\bAUTOINCREMENT\b", "SQLite DDL"),
    "CAST AS INTEGER": (r"\bAS\s+INT(EGER)?\b", "a 32-bit int on PostgreSQL: cast to BIGINT"),
    "SELECT *": (r"\bSELECT\s+(\w+\.)?\*|\w\.\*", "column positions differ after an upgrade: name them"),
    "INSERT without columns": (r"\bINTO\s+\w+\s+(VALUES|SELECT)\b", "name the columns"),
    "placeholders other than ?": (r"\?\d|(?<![:\w]):[A-Za-z_]|@[A-Za-z_]|%s", "the adapter rewrites ? only"),
    "quoted identifiers": (r"[\"`\[\]]", '"x" is a string on SQLite if no column x; [x], `x` SQLite only'),
    "LIMIT n, m": (r"\bLIMIT\s+[^\s,]+\s*,", "SQLite's offset form; LIMIT … OFFSET … is common"),
    "PostgreSQL only": (
        r"::|\b(GREATEST|LEAST|NOW|TO_JSONB?|ARRAY_AGG|STRING_AGG)\s*\(|\bFOR\s+(UPDATE|SHARE)\b|\bSERIAL\b",
        "PostgreSQL syntax that SQLite does not run",
    ),
}

_SQL_WORDS = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|BEGIN|COMMIT|ROLLBACK|PRAGMA|WITH|REPLACE)\b"
    r"|\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|WHERE|ORDER BY|VALUES|ON CONFLICT|SET)\b",
    re.IGNORECASE,
)
_PROSE = re.compile(r"^[a-z]")
"""Messages start lower-case and mention SQL words in passing; statements start with one."""


def not_common(sql: str) -> list[str]:
    """The names of :data:`NOT_COMMON` constructs in ``sql`` (outside '…' literals),
    and ``two-argument max/min`` (SQLite's scalar max; PostgreSQL says GREATEST)."""
    bare = re.sub(r"'(?:[^']|'')*'", "''", sql)
    found = [name for name, (pattern, _) in NOT_COMMON.items() if re.search(pattern, bare, re.IGNORECASE)]
    for match in re.finditer(r"\b(max|min)\s*\(", bare, re.IGNORECASE):
        depth, i = 1, match.end()
        while i < len(bare) and depth:
            depth += {"(": 1, ")": -1}.get(bare[i], 0)
            if bare[i] == "," and depth == 1:
                found.append("two-argument max/min")
                break
            i += 1
    return found


def _docstrings(tree: ast.Module) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef))]
    return {
        id(n.body[0].value)
        for n in nodes
        if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }


def sql_strings(source: str) -> list[str]:
    """The SQL written in a module: string constants and f-strings that read as SQL
    (not docstrings, not messages)."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    inside_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in skip or id(node) in inside_fstrings:
                continue
            text = node.value
        else:
            continue
        if _SQL_WORDS.search(text) and not (_PROSE.match(text) and not _SQL_WORDS.match(text)):
            found.append(text)
    return found


# -- the list itself ---------------------------------------------------------------

_FLAGGED = {
    "insert or ignore": (
        "INSERT OR IGNORE INTO nonces VALUES (?, ?, ?)",
        {"INSERT OR …", "INSERT without columns"},
    ),
    "replace": ("REPLACE INTO meta (key, value) VALUES (?, ?)", {"REPLACE INTO"}),
    "rowid": ("SELECT id FROM executions ORDER BY rowid DESC", {"rowid"}),
    "without rowid": ("CREATE TABLE t (a TEXT PRIMARY KEY) WITHOUT ROWID", {"rowid"}),
    "nocase": ("CREATE INDEX i ON principals (name COLLATE NOCASE)", {"COLLATE NOCASE"}),
    "begin immediate": ("BEGIN IMMEDIATE", {"BEGIN IMMEDIATE"}),
    "pragma": ("PRAGMA table_info(executions)", {"PRAGMA"}),
    "catalogue": ("SELECT name FROM sqlite_master WHERE type = 'index'", {"sqlite_ tables"}),
    "json_extract": ("SELECT json_extract(request, '$.action') FROM executions", {"JSON"}),
    "json_insert": ("UPDATE executions SET indices = json_insert(indices, '$[#]', ?)", {"JSON"}),
    "arrow": ("SELECT request ->> 'action' FROM executions", {"JSON"}),
    "scalar max": (
        "UPDATE meta SET value = max(CAST(value AS BIGINT), excluded.value)",
        {"two-argument max/min"},
    ),
    "group_concat": ("SELECT group_concat(name, ', ') FROM principals", {"SQLite functions"}),
    "like": ("SELECT name FROM principals WHERE name LIKE ?", {"LIKE"}),
    "true": ("SELECT id FROM executions WHERE live = TRUE", {"TRUE, FALSE"}),
    "int cast": ("SELECT CAST(value AS INTEGER) FROM meta", {"CAST AS INTEGER"}),
    "select star": ("SELECT * FROM principals", {"SELECT *"}),
    "qualified star": ("SELECT b.* FROM bundles b", {"SELECT *"}),
    "insert without columns": ("INSERT INTO warrants VALUES (?, ?)", {"INSERT without columns"}),
    "numbered placeholder": ("SELECT name FROM principals WHERE name = ?1", {"placeholders other than ?"}),
    "named placeholder": ("SELECT name FROM principals WHERE name = :name", {"placeholders other than ?"}),
    "double quotes": ('SELECT name FROM principals WHERE status = "active"', {"quoted identifiers"}),
    "limit offset": ("SELECT name FROM principals LIMIT 10, 5", {"LIMIT n, m"}),
    "pg cast": ("SELECT request::jsonb FROM executions", {"PostgreSQL only"}),
    "pg greatest": ("SELECT greatest(1, 2)", {"PostgreSQL only"}),
    "pg lock": ("SELECT value FROM meta WHERE key = ? FOR UPDATE", {"PostgreSQL only"}),
}
_COMMON = {
    "upsert": "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    "do nothing": "INSERT INTO nonces (keyid, nonce, expires) VALUES (?, ?, ?) ON CONFLICT (keyid, nonce) DO NOTHING",
    "aggregate max": "DELETE FROM auth_failures WHERE id <= (SELECT max(id) FROM auth_failures) - ?",
    "concatenation": "UPDATE executions SET indices = '[' || ? || ']' WHERE id = ?",
    "literal words": "SELECT id FROM executions WHERE status = 'INSERT OR REPLACE rowid [x] \"y\" TRUE'",
    "bigint cast": "SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'nonce_floor'",
    "lower": "SELECT name FROM principals WHERE lower(name) = lower(?)",
    "join": "SELECT b.digest, b.doc FROM meta m JOIN bundles b ON b.digest = m.value",
}


@pytest.mark.parametrize(("sql", "names"), list(_FLAGGED.values()), ids=list(_FLAGGED))
def test_the_check_finds_each_construct_that_is_not_common(sql: str, names: set[str]) -> None:
    assert set(not_common(sql)) == names


@pytest.mark.parametrize("sql", list(_COMMON.values()), ids=list(_COMMON))
def test_the_check_passes_the_common_subset(sql: str) -> None:
    assert not_common(sql) == []


# -- the SQL written in the shared modules --------------------------------------------


@pytest.mark.parametrize("module", SHARED_MODULES)
def test_the_state_sql_written_in_the_shared_modules_is_common(module: str) -> None:
    found = {sql: not_common(sql) for sql in sql_strings((STORE / module).read_text(encoding="utf-8"))}
    assert {sql: names for sql, names in found.items() if names} == {}


def test_the_shared_modules_are_the_ones_with_the_state_sql() -> None:
    # Every query module is scanned, and each scanned module of queries has some.
    assert {"state.py", "state_executions.py", "state_principals.py", "state_policy.py"} <= set(
        SHARED_MODULES
    )
    for module in SHARED_MODULES:
        if module.startswith("state_"):
            assert len(sql_strings((STORE / module).read_text(encoding="utf-8"))) >= 5, module


_OWN_CONSTRUCTS = {
    "state_backend.py": {"BEGIN IMMEDIATE", "PRAGMA", "rowid", "sqlite_ tables"},
    "_state_schema.py": {"BEGIN IMMEDIATE", "PRAGMA", "rowid", "sqlite_ tables"},
    "state_pg.py": {"quoted identifiers", "placeholders other than ?", "PostgreSQL only"},
}


@pytest.mark.parametrize("module", BACKEND_MODULES)
def test_what_only_one_database_runs_is_in_its_backend(module: str) -> None:
    # The control: the same check on a backend finds its database's own constructs.
    found = {
        name for sql in sql_strings((STORE / module).read_text(encoding="utf-8")) for name in not_common(sql)
    }
    assert found & _OWN_CONSTRUCTS[module]


# -- the SQL the store runs ------------------------------------------------------------


class Recording:
    """A state store that remembers which of its public names were used."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.used.add(name)
        return getattr(self.state, name)


def principal(name: str, key: str) -> PrincipalRecord:
    return PrincipalRecord(name, key, {"role": "dev"}, "prod", "active", "t0", "t0")


def execution(
    ex: str, warrant: str, *, started_index: int = -1, indices: list[int] | None = None
) -> dict[str, Any]:
    return {
        "id": ex,
        "warrant": warrant,
        "principal": "alice",
        "bundle": "sha256:a",
        "request": '{"action":"exec","resource":"/bin/echo","zone":"prod","args":["--secret"]}',
        "started_index": started_index,
        "indices": indices if indices is not None else [1, 2],
        "lease_expires_ms": 1000,
        "ttl_ms": 500,
        "started": 100,
        "presented": "token",
    }


def workout(state: StateStore) -> set[str]:
    """Every method and writer of ``state``, with the answers the store must give;
    returns the public names used. Writers run on the store's own connection."""
    recording = Recording(state)
    s: Any = recording
    conn = state._conn()
    s.ping()

    alice = principal("alice", "ka")
    s.put_principal(alice)
    s.principal_writer(principal("bob", "kb"))(conn, index=4)
    for clash in (principal("ALICE", "kc"), principal("carol", "ka")):
        with pytest.raises(StoreConflictError):
            s.put_principal(clash)
    assert s.principal("alice") == alice
    assert s.principal("ALICE") is None
    assert s.principal_like("ALICE") == alice
    assert s.principal_with_key("kb").name == "bob"
    assert [p.name for p in s.principals()] == ["alice", "bob"]

    s.put_bundle("sha256:a", 1, "{}", "t1", 3)
    s.bundle_writer("sha256:b", 2, '{"b":2}', "t2")(conn, index=9)
    with pytest.raises(StoreConflictError):
        s.put_bundle("sha256:c", 2, "{}", "t3", 12)
    assert s.highest_bundle() == (2, "sha256:b")
    assert s.active_bundle() == ("sha256:b", '{"b":2}')
    assert (s.bundle("sha256:a"), s.bundle("sha256:z")) == ("{}", None)
    assert s.bundle_index("sha256:b") == 9
    assert s.activations(since=3) == [(9, "sha256:b")]
    assert s.bundle_versions() == [("sha256:a", 1, "t1"), ("sha256:b", 2, "t2")]
    s.set_meta("k", "v1")
    s.set_meta("k", "v2")
    assert (s.meta("k"), s.meta("none")) == ("v2", None)
    s.probe_writer(123)(conn)
    assert s.meta("durability_probe") == "123"

    s.put_warrant(
        "wr_a", principal="alice", parent="", decision_index=1, expires=99, issued=10, issued_index=2
    )
    s.warrant_writer(
        "wr_b", principal="alice", parent="wr_a", decision_index=3, expires=99, issued=11, token="t"
    )(conn, index=5)
    assert s.warrant("wr_b") == {
        "id": "wr_b", "principal": "alice", "parent": "wr_a", "decision_index": 3, "expires": 99,
        "issued": 11, "issued_index": 5, "token": "t",
    }  # fmt: skip
    assert s.warrant_chain("wr_b") == ["wr_b", "wr_a"]
    assert s.warrant_times("alice", 11) == [11]
    assert s.count_warrants("alice", 10) == 2
    s.opening_writer({"salt": "s", "args": ["x"]})(conn, index=1)
    assert (s.opening(1), s.opening(2)) == ({"salt": "s", "args": ["x"]}, None)

    s.execution_writer(execution("ex_a", "wr_a"))(conn, index=6)
    assert (s.claim_warrant("wr_a"), s.claim_warrant("wr_b")) == (False, True)
    assert s.start_execution(execution("ex_b", "wr_b", started_index=7, indices=[3, 5, 7])) is True
    assert s.start_execution(execution("ex_c", "wr_b")) is False  # a warrant starts one execution
    s.execution_update_writer("ex_a")(conn, index=8)
    s.execution_update_writer("ex_a", event_index=False, bundle="sha256:b")(conn, index=10)
    s.write_leases(conn, {"ex_a": 5000, "ex_b": 6000})
    s.update_execution("ex_b", status="completed", ended=120)
    s.write_leases(conn, {"ex_b": 9999})  # no longer running: left as it is
    with pytest.raises(StoreError, match="found it ended"):  # an end is recorded once
        s.execution_update_writer("ex_b", status="terminated", reason="revoked", ended=130)(conn, index=11)
    got = s.execution("ex_a")
    assert (got["indices"], got["bundle"], got["lease_expires_ms"]) == ([1, 2, 6, 8], "sha256:b", 5000)
    assert (s.execution("ex_b")["lease_expires_ms"], s.execution("ex_z")) == (6000, None)
    assert s.running_executions() == [("ex_a", "alice")]
    assert s.running_leases() == [("ex_a", 5000)]
    # Several governor processes on one store (ADR 0016): counts, sweeps, leases.
    assert (s.running_count("alice"), s.running_count("bob")) == (1, 0)
    assert (s.starts_after("alice", 99), s.starts_after("alice", 100)) == (2, 0)
    assert (s.lapsed_executions(5000), s.lapsed_executions(5001)) == ([], ["ex_a"])
    assert s.renew_leases([("ex_a", 7000, 5000), ("ex_b", 8000, 0), ("ex_a", 9000, 7001)]) == [
        True,
        False,  # ended
        False,  # lapsed at 7001: never revived
    ]
    assert s.execution("ex_a")["lease_expires_ms"] == 7000
    shown = s.execution_summary("ex_a")
    assert (shown.action, shown.resource, shown.zone, shown.indices) == (
        "exec",
        "/bin/echo",
        "prod",
        (1, 2, 6, 8),
    )
    everyone = s.execution_summaries(principal=None, live_only=False, limit=10)
    assert [x.id for x in everyone] == ["ex_b", "ex_a"]  # one start time: the later start first
    assert [x.id for x in s.execution_summaries(principal="alice", live_only=True, limit=10)] == ["ex_a"]
    assert s.execution_summaries(principal="bob", live_only=False, limit=1) == []

    s.put_revocation(RevocationRecord("warrant", "wr_a", "why", "admin", "t", 11))
    s.revocation_writer(RevocationRecord("execution", "ex_a", "why", "admin", "t", -1))(conn, index=12)
    s.put_revocation(RevocationRecord("warrant", "wr_a", "again", "admin", "t2", 13))
    assert s.execution("ex_a")["status"] == "terminating"
    assert (s.mark_terminating("ex_a", "policy"), s.mark_terminating("ex_b", "policy")) == (False, False)
    assert s.revocation("warrant", "wr_a") == RevocationRecord("warrant", "wr_a", "again", "admin", "t2", 13)
    assert [r.target for r in s.revocations(since=11)] == ["ex_a", "wr_a"]
    assert (s.is_revoked("execution", "ex_a"), s.is_revoked("principal", "alice")) == (True, False)
    assert (s.revoked_index("warrant", "wr_a"), s.revoked_index("warrant", "wr_b")) == (13, None)
    known = [("warrant", "wr_b"), ("execution", "ex_a"), ("principal", "bob"), ("policy", "sha256:a")]
    assert all(s.exists(kind, target) for kind, target in known)
    assert not s.exists("principal", "ALICE")
    with pytest.raises(StoreError, match="expected a kind"):
        s.exists("nothing", "x")

    s.write_nonces(conn, [("ka", "n1", 100), ("ka", "n2", 200)], 0)
    s.write_nonces(conn, [("ka", "n1", 999), ("kb", "n3", 300)], 150)  # n1 kept as stored, then expired
    s.write_nonces(conn, [("kb", "n4", 400)], 120)  # a clock stepped back: the floor stays
    assert sorted(s.live_nonces(0)) == [("ka", "n2", 200), ("kb", "n3", 300), ("kb", "n4", 400)]
    assert s.live_nonces(301) == [("kb", "n4", 400)]
    assert s.nonce_floor() == 150
    # Claimed once across processes; older than the floor is refused; the floor goes up.
    assert s.claim_nonces([("kc", "n5", 500), ("kb", "n4", 400), ("kc", "n6", 149)]) == (
        [True, False, False],
        150,
    )
    assert s.claim_nonces([("kc", "n7", 250)], 260) == ([False], 260)
    assert sorted(s.live_nonces(0)) == [("kb", "n3", 300), ("kb", "n4", 400), ("kc", "n5", 500)]
    s.auth_failure_writer(1, "k" * 200, "unsigned", "d")(conn)
    s.auth_failure_writer(2, "k2", "stale", "d2")(conn)
    assert [(f["time"], f["keyid"]) for f in s.auth_failures()] == [(2, "k2"), (1, "k" * 128)]
    s.record_auth_failures([(3, "k3", "replayed", "d3"), (4, "k4", "stale", "d4")])
    assert [f["time"] for f in s.auth_failures(limit=2)] == [4, 3]

    # Governor nodes (state_nodes): a name is its live instance's; a stale or stopped
    # row is taken over; only its own instance stops a row.
    b1 = NodeRecord("b", "i1", "eu", "1.0", "http://b", 10, 1000, 5, "serving")
    a1 = NodeRecord("a", "i2", "", "1.0", "", 10, 1000, 7, "not ready", "log: error")
    assert (s.put_node(b1, stale_before_ms=0), s.put_node(a1, stale_before_ms=0)) == (True, True)
    assert s.put_node(replace(b1, instance="i3", heartbeat_ms=1500), stale_before_ms=999) is False
    assert s.put_node(replace(b1, heartbeat_ms=2000, applied=9), stale_before_ms=0) is True
    assert s.nodes() == [a1, replace(b1, heartbeat_ms=2000, applied=9)]
    assert (s.node("a"), s.node("A")) == (a1, None)
    assert (s.stop_node("b", "i3", 2500), s.stop_node("b", "i1", 2600)) == (False, True)
    assert s.put_node(replace(b1, instance="i3", heartbeat_ms=2700), stale_before_ms=0) is True
    assert s.put_node(replace(a1, instance="i4", heartbeat_ms=3000), stale_before_ms=1001) is True
    assert [(n.name, n.instance, n.status) for n in s.nodes()] == [
        ("a", "i4", "not ready"),
        ("b", "i3", "serving"),
    ]
    approvals_workout(s, conn)
    s.close()
    return recording.used


def approvals_workout(s: Any, conn: Any) -> None:
    """Approvals and calls (state_approvals, through ``run``): each move is one
    conditional update, and only the first of two takes it."""
    asked = state_approvals.StoredApproval(
        "ap_1", "alice", "mcp.call", "fs/write", "sha256:a", "sha256:d", "prod", ("p1",),
        "pending", 100, 400, 7, 8, "", 0, -1, "", -1,
    )  # fmt: skip
    state_approvals.approval_writer(asked)(conn, index=7)
    got = s.run(state_approvals.approval, "ap_1")
    assert (got.stored, got.decision_index, got.requested_index, got.policies) == ("pending", 7, 8, ("p1",))
    assert (got.status_at(399), got.status_at(400)) == ("pending", "expired")
    assert [a.id for a in s.run(state_approvals.approvals, status="pending", now=200)] == ["ap_1"]
    assert s.run(state_approvals.approvals, status="expired", now=200) == []
    assert [a.id for a in s.run(state_approvals.approvals, status="expired", now=500)] == ["ap_1"]
    assert s.run(state_approvals.claim_decision, "ap_1", 400) is False  # expired
    assert s.run(state_approvals.claim_decision, "ap_1", 200) is True
    assert s.run(state_approvals.claim_decision, "ap_1", 200) is False  # taken
    assert s.run(state_approvals.approval, "ap_1").status_at(200) == "pending"
    state_approvals.decided_writer("ap_1", status="approved", by="root", at=201)(conn, index=9)
    assert s.run(state_approvals.approval, "ap_1").status_at(200) == "approved"
    assert s.run(state_approvals.claim_use, replace(got, args_digest="sha256:b"), 200) is False
    assert s.run(state_approvals.claim_use, got, 200) is True
    assert s.run(state_approvals.claim_use, got, 200) is False
    assert s.run(state_approvals.release, "ap_1", "using") is True
    assert s.run(state_approvals.claim_use, got, 200) is True
    state_approvals.used_writer("ap_1", "w1")(conn, 11)
    used = s.run(state_approvals.approval, "ap_1")
    assert (used.status_at(900), used.warrant, used.used_index, used.decided_by) == ("used", "w1", 11, "root")
    assert [a.id for a in s.run(state_approvals.approvals, status="used", now=900)] == ["ap_1"]
    assert [a.id for a in s.run(state_approvals.approvals, status=None, now=900)] == ["ap_1"]
    for i, digest in enumerate(("sha256:a", "sha256:a", "sha256:b")):
        state_approvals.call_writer("alice", "fs/write", digest, 100 + i)(conn, 20 + i, f"w{i}")
    assert s.run(state_approvals.count_calls, "alice", "fs/write", 101) == 2
    assert s.run(state_approvals.count_calls, "alice", "fs/write", 101, besides=["w2", "w9"]) == 1
    assert s.run(state_approvals.count_calls, "alice", "fs/write", 100, besides=["w0", "w1", "w2"]) == 0
    assert s.run(state_approvals.distinct_arguments, "alice", "fs/write", 100, "sha256:c") == (2, False)
    assert s.run(state_approvals.distinct_arguments, "alice", "fs/write", 102, "sha256:b") == (1, True)
    # Held digests join the stored ones as a union: one already stored adds nothing.
    union = s.run(state_approvals.distinct_arguments, "alice", "fs/write", 100, "sha256:c", also=["sha256:b"])
    assert union == (2, False)
    union = s.run(
        state_approvals.distinct_arguments,
        "alice",
        "fs/write",
        102,
        "sha256:a",
        also=["sha256:a", "sha256:d"],
    )
    assert union == (3, False)


def public_names() -> set[str]:
    return {n for n in dir(StateStore) if not n.startswith("_")}


@pytest.fixture
def sqlite_state(tmp_path: Path) -> Iterator[StateStore]:
    SQLiteStore(tmp_path / "p.db", create=True).close()
    state = StateStore(tmp_path / "p.db")
    yield state
    state.close()


BACKEND_STATEMENTS = frozenset({"BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"})
"""What the SQLite backend itself runs around a transaction (not shared SQL)."""


def test_every_statement_the_state_store_runs_is_common(sqlite_state: StateStore) -> None:
    ran: list[str] = []
    conn: Any = sqlite_state._conn()
    conn.set_trace_callback(ran.append)
    assert workout(sqlite_state) == public_names()
    shared = [sql for sql in ran if sql not in BACKEND_STATEMENTS]
    assert len(set(shared)) > 50
    assert {sql: not_common(sql) for sql in shared if not_common(sql)} == {}


# -- the same SQL on PostgreSQL ----------------------------------------------------------


@pytest.mark.postgres
def test_the_state_store_answers_alike_on_postgresql(pg_dsn: str) -> None:
    PostgresLogStore(pg_dsn, create=True).close()  # its meta table, as SQLiteStore's in a data dir
    assert workout(StateStore(backend=PostgresStateBackend(pg_dsn))) == public_names()


@pytest.mark.postgres
def test_a_state_row_commits_with_its_event_on_postgresql(pg_dsn: str) -> None:
    log = PostgresLogStore(pg_dsn, create=True)
    state = StateStore(backend=PostgresStateBackend(pg_dsn, pool=log.pool))
    try:
        hashes = bytes(32) * sum(1 >> r for r in range(8))
        log.append(
            0, [b"e0"], [Tile(0, 0, 1, hashes)], also=[StateStore.principal_writer(principal("alice", "ka"))]
        )
        assert log.tree_size() == 1
        assert state.principal("alice") == principal("alice", "ka")
        clash = StateStore.principal_writer(principal("ALICE", "kb"))
        with pytest.raises(StoreConflictError, match="cannot store principal 'ALICE'"):
            log.append(1, [b"e1"], [Tile(0, 0, 2, bytes(32) * 3)], also=[clash])
        assert log.tree_size() == 1  # neither the event nor the row
        assert state.principal_like("ALICE") == principal("alice", "ka")
    finally:
        state.close()
        log.close()


@pytest.mark.postgres
def test_a_side_write_on_a_broken_postgresql_connection_is_a_store_error(pg_dsn: str) -> None:
    # The nonce cache keeps its rows for the next commit only on a StoreError, and the
    # PostgreSQL adapter raises its driver's own errors: the side writes wrap them.
    PostgresLogStore(pg_dsn, create=True).close()
    StateStore(backend=PostgresStateBackend(pg_dsn)).close()
    raw = psycopg.connect(pg_dsn, autocommit=True)
    adapted = PgConnection(raw)
    raw.close()
    with pytest.raises(StoreError, match="cannot persist request nonces"):
        StateStore.write_nonces(adapted, [("k", "n", 1)], 0)
    with pytest.raises(StoreError, match="cannot persist lease deadlines"):
        StateStore.write_leases(adapted, {"ex_a": 1})
