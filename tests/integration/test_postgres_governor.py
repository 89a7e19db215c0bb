"""A governor whose log and state live in PostgreSQL, end to end: ``proctor init
--store``, ``principal add`` and ``policy push`` on the database, a real ``proctor serve``
on it (``PROCTOR_STORE``), ``proctor run``, ``proctor log verify --store``.

Also: the data directory then holds only keys and configuration (a command without
``--store`` finds no store there and says how to name one); a store that a running
governor holds refuses an admin change made beside it; ``init`` refuses a database that
already holds a log; a governor refuses a store whose state schema is newer than it
knows; the DSN's password is never printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from gov_server import GovernorServer, cli

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

POLICIES = Path(__file__).parent / "policies"


def password(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["password"])


@pytest.fixture
def gov(tmp_path: Path, pg_dsn: str) -> Iterator[GovernorServer]:
    server = GovernorServer(tmp_path, policy=POLICIES / "run", origin="pg.example/gov", store=pg_dsn)
    yield server
    server.stop()


def test_a_governor_on_postgresql_runs_governed_commands_and_its_log_verifies(
    gov: GovernorServer, pg_dsn: str, tmp_path: Path
) -> None:
    # The data directory holds keys and configuration only.
    assert {"config.json", "config.toml", "keys"} <= {p.name for p in gov.data.iterdir()}
    assert [p.name for p in gov.data.iterdir() if p.name.startswith("proctor.db")] == []  # no database here

    receipt = tmp_path / "r.json"
    run = subprocess.run(
        [sys.executable, "-m", "proctor", "run", "--server", gov.url, "--key", str(gov.key),
         "--receipt", str(receipt), "--", "sh", "-c", "echo hello; exit 3"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 3, run.stderr
    assert run.stdout == "hello\n"
    key = (gov.data / "keys" / "log.pub").read_text().strip()
    assert json.loads(cli("verify", str(receipt), "--log-key", key).stdout)["ok"] is True
    denied = subprocess.run(
        [sys.executable, "-m", "proctor", "run", "--server", gov.url, "--key", str(gov.key), "--", "touch", str(tmp_path / "t")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert denied.returncode == 77, denied.stderr
    assert not (tmp_path / "t").exists()

    # The rows are in PostgreSQL: events and state.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        (size,) = conn.execute("SELECT tree_size FROM log_head").fetchone() or (0,)
        statuses = conn.execute("SELECT status FROM executions").fetchall()
    assert size >= 6
    assert statuses == [("completed",)]  # the denied one never started

    shown = gov.admin("principal", "list", "--json")
    assert {p["name"] for p in json.loads(shown.stdout)} == {"admin", "alice"}
    gov.stop()

    verified = cli("log", "verify", "--data", str(gov.data), "--store", pg_dsn, "--json")
    report = json.loads(verified.stdout)
    assert report["ok"] is True
    assert report["size"] == size
    assert "the state tables agree with the log" in verified.stderr
    listed = cli(
        "executions", "list", "--status", "all", "--data", str(gov.data), "--store", pg_dsn, "--json"
    )
    assert [x["status"] for x in json.loads(listed.stdout)["executions"]] == ["completed"]
    serve_err = gov.log_path.read_text()
    assert "store user=postgres password=*** dbname=" in serve_err
    assert password(pg_dsn) not in serve_err + verified.stdout + verified.stderr


def test_without_store_a_postgresql_data_directory_says_how_to_name_its_store(gov: GovernorServer) -> None:
    gov.stop()
    done = cli("log", "verify", "--data", str(gov.data), check=False)
    assert done.returncode == 2
    assert "no database at" in done.stderr
    assert "--store URL (or PROCTOR_STORE)" in done.stderr


def test_an_admin_change_beside_a_governor_serving_the_store_exits_3(
    gov: GovernorServer, pg_dsn: str
) -> None:
    # The running governor holds the log's sequencer lock: a change made on the store
    # directly would bypass its caches; the command is told to go through --server.
    done = cli(
        "revoke", "--principal", "alice", "--data", str(gov.data), "--store", pg_dsn, "--json", check=False
    )
    assert done.returncode == 3, done.stderr
    assert "use --server" in done.stderr
    listed = gov.admin("principal", "list", "--json")
    assert {p["name"]: p["status"] for p in json.loads(listed.stdout)}["alice"] == "active"


def test_init_refuses_a_database_that_already_holds_a_log(
    gov: GovernorServer, pg_dsn: str, tmp_path: Path
) -> None:
    other = tmp_path / "second"
    done = cli("init", "--data", str(other), "--store", pg_dsn, check=False)
    assert done.returncode == 2
    assert "already holds a log" in done.stderr
    assert password(pg_dsn) not in done.stderr
    assert not other.exists()  # nothing was created


def test_a_governor_refuses_a_store_whose_state_schema_is_newer_than_it_knows(
    gov: GovernorServer, pg_dsn: str
) -> None:
    gov.stop()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '4' WHERE key = 'state_schema'")
    done = cli("serve", "--data", str(gov.data), "--store", pg_dsn, "--port", "0", check=False, timeout=60)
    assert done.returncode == 2
    assert (
        "expected state schema version 3, found '4': the store was written by a newer proctor" in done.stderr
    )
    assert password(pg_dsn) not in done.stderr


def test_init_on_postgresql_prints_the_store_without_its_password(pg_dsn: str, tmp_path: Path) -> None:
    done = cli("init", "--data", str(tmp_path / "d"), "--store", pg_dsn, "--json")
    doc = json.loads(done.stdout)
    assert password(pg_dsn) not in done.stdout
    assert ":***@" in doc["store"] or "password=***" in doc["store"]
    assert not (tmp_path / "d" / "proctor.db").exists()
    checked = cli(
        "log", "verify", "--data", str(tmp_path / "d"), "--json", env=os.environ | {"PROCTOR_STORE": pg_dsn}
    )
    assert json.loads(checked.stdout)["size"] == 2  # the warrant key declared, the admin added
