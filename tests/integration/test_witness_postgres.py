"""Witnesses of a log kept in PostgreSQL (issue 12: "A forked log is refused by the
witnesses and detected by ``proctor verify`` with a witness policy").

A real ``proctor witness serve`` child process and the real CLI with ``--store URL``:
``proctor log cosign --store`` keeps the cosignatures in the database,
``proctor log verify --store --witness-policy`` holds the log to the policy, and a log
rewritten in the database and re-signed with its own key is refused by the witness (an
alarm) and fails the verification. The governor's cosigner on a PostgreSQL store keeps
its cosignatures there too, and finds them again after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gov_server import cli
from proctor.governor.service import Governor, initialize
from proctor.store.postgres import PostgresLogStore
from witness_support import WitnessServer, write_policy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def gov(tmp_path: Path, pg_dsn: str) -> Path:
    data = tmp_path / "gov"
    cli("init", "--data", str(data), "--origin", "pg.example/witnessed", "--store", pg_dsn)
    return data


def log_key(data: Path) -> str:
    """The log's verifier key, from the data directory (whose store is elsewhere)."""
    return (data / "keys" / "log.pub").read_text().strip()


def trusting(root: Path, data: Path) -> WitnessServer:
    """A witness process that trusts the log of ``data``."""
    server = WitnessServer(root)
    cli("witness", "add-log", "--data", str(server.data), "--vkey", log_key(data))
    return server


@pytest.fixture
def witness(tmp_path: Path, gov: Path) -> Iterator[WitnessServer]:
    server = trusting(tmp_path, gov)
    yield server
    server.close()


def _event(tag: str) -> str:
    return json.dumps({"v": 1, "type": "approval", "time": "2026-01-01T00:00:00Z", "tag": tag}) + "\n"


def _append(data: Path, store: str, *tags: str, before: str = "") -> int:
    lines = before + "".join(_event(t) for t in tags)
    out = cli("log", "append", "--data", str(data), "--store", store, "-", input=lines)
    return int(json.loads(out.stdout)["tree_size"])


def _cosign(data: Path, store: str, policy: Path) -> tuple[int, dict[str, object]]:
    done = cli(
        "log", "cosign", "--data", str(data), "--store", store, "--witness-policy", str(policy), "--json",
        check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout)


def _verify(data: Path, store: str, policy: Path) -> tuple[int, dict[str, object], str]:
    done = cli(
        "log", "verify", "--data", str(data), "--store", store, "--witness-policy", str(policy), "--json",
        check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout), done.stderr


def _rewrite(dsn: str, *, keep: int) -> str:
    """Throw the log's history away in the database (entries, tiles, checkpoints; the
    cosignatures stay): the next appends re-sign a new history with the same key. The
    first ``keep`` entries are returned (JSON lines) to be appended again, so the state
    tables still agree with the log (a careful rewrite)."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        kept = conn.execute("SELECT data FROM entries WHERE idx < %s ORDER BY idx", (keep,)).fetchall()
        conn.execute("TRUNCATE entries, tiles, checkpoints")
        conn.execute("UPDATE log_head SET tree_size = 0")
    return "".join(bytes(row[0]).decode() + "\n" for row in kept)


def test_a_log_on_postgresql_is_cosigned_and_verified_with_a_witness_policy(
    tmp_path: Path, gov: Path, pg_dsn: str, witness: WitnessServer
) -> None:
    policy = write_policy(
        tmp_path / "policy.txt",
        logs=[log_key(gov)],
        witnesses=[("w1", witness.vkey, witness.url)],
        quorum="w1",
    )
    for round_ in range(2):
        size = _append(gov, pg_dsn, *(f"r{round_}-{i}" for i in range(round_ + 2)))
        code, report = _cosign(gov, pg_dsn, policy)
        assert code == 0, report
        assert report["size"] == size
        code, verified, err = _verify(gov, pg_dsn, policy)
        assert code == 0, err
        assert verified["witnessed"]["witnessed_size"] == size  # type: ignore[index]
    store = PostgresLogStore(pg_dsn)
    try:
        assert [c.name for c in store.cosignatures(size)] == [witness.name]
    finally:
        store.close()
    assert not (gov / "proctor.db").exists()  # the cosignatures are in the database, not the directory

    _append(gov, pg_dsn, "not yet witnessed")
    code, verified, err = _verify(gov, pg_dsn, policy)
    assert code == 1
    assert "not witnessed" in err


def test_a_log_rewritten_in_postgresql_and_re_signed_is_refused_by_the_witness_and_fails_verify(
    tmp_path: Path, gov: Path, pg_dsn: str, witness: WitnessServer
) -> None:
    policy = write_policy(
        tmp_path / "policy.txt",
        logs=[log_key(gov)],
        witnesses=[("w1", witness.vkey, witness.url)],
        quorum="w1",
    )
    witnessed = _append(gov, pg_dsn, "a", "b", "c")
    assert _cosign(gov, pg_dsn, policy)[0] == 0

    kept = _rewrite(pg_dsn, keep=2)  # proctor init's two entries, as they were
    rewritten = [f"rewritten-{i}" for i in range(witnessed - 1)]
    assert _append(gov, pg_dsn, *rewritten, before=kept) == witnessed + 1
    # Without witnesses, the rewritten log verifies: every checkpoint is signed by its key.
    assert cli("log", "verify", "--data", str(gov), "--store", pg_dsn, check=False).returncode == 0

    code, verified, err = _verify(gov, pg_dsn, policy)
    assert code == 1, verified
    assert "re-signed over another tree" in err or "rewritten" in err

    code, report = _cosign(gov, pg_dsn, policy)
    assert code == 1, report
    assert report["witnesses"][0]["outcome"] == "inconsistent"  # type: ignore[index]
    assert witness.get("/readyz").status_code == 503
    code, status = witness.status()
    assert code == 1
    [alarm] = status["alarms"]
    assert alarm["event"]["type"] == "witness.alarm"
    assert alarm["event"]["submitted"]["size"] == witnessed + 1


def test_the_governors_cosigner_keeps_its_cosignatures_in_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    data = tmp_path / "node"
    initialize(data, origin="pg.example/node", store=pg_dsn)
    witness = trusting(tmp_path, data)
    try:
        write_policy(
            data / "witnesses.txt",
            logs=[log_key(data)],
            witnesses=[("w1", witness.vkey, witness.url)],
            quorum="w1",
        )
        with (data / "config.toml").open("a") as f:
            f.write('\n[witnesses]\npolicy = "witnesses.txt"\ninterval_ms = 60000\n')
        with Governor(data, store=pg_dsn) as gov:
            assert gov.cosigner is not None
            report = gov.cosigner.run_round()
            assert report is not None
            assert report.quorum.satisfied, report
            size = report.size
        with Governor(data, store=pg_dsn) as gov:  # recovered from the database
            assert gov.cosigner is not None
            witness.stop()
            assert gov.cosigner.run_round() is not None  # the first round always submits: unreachable
            latest = gov.cosigner.latest_witnessed()
            assert latest is not None
            assert latest.size == size
            assert gov.ready()[1]["witnesses"] == "ok"  # an unreachable witness is no alarm
    finally:
        witness.close()
