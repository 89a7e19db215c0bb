"""Witnesses (issue 12, "Witnesses (fork detection)"): a log rewritten and re-signed with its
own key used to pass ``proctor log verify``, because nothing remembered what was
published. A witness remembers, and verifiers can require it.

Each test is one rule, against real processes: ``proctor witness serve`` (C2SP
tlog-witness), the ``proctor`` CLI, and real logs on copies of one database.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gov_exec import allow, start_body
from gov_server import cli
from proctor.governor.service import Governor
from proctor.lineage.cosignature import generate_cosigner
from proctor.lineage.log import Log
from proctor.store.sqlite import SQLiteStore
from witness_support import WitnessServer, append_events, fork_copy, log_key, write_policy


@pytest.fixture
def gov(tmp_path: Path) -> Path:
    data = tmp_path / "gov"
    cli("init", "--data", str(data), "--origin", "test.example/rules")
    return data


@pytest.fixture
def witness(tmp_path: Path, gov: Path) -> Iterator[WitnessServer]:
    server = WitnessServer(tmp_path, trust=(gov,))
    yield server
    server.close()


def _policy(tmp_path: Path, gov: Path, witness: WitnessServer) -> Path:
    return write_policy(
        tmp_path / "policy.txt",
        logs=[log_key(gov)],
        witnesses=[("w1", witness.vkey, witness.url)],
        quorum="w1",
    )


def _cosign(gov: Path, policy: Path) -> int:
    return cli("log", "cosign", "--data", str(gov), "--witness-policy", str(policy), check=False).returncode


def _body(data: Path, old: int) -> str:
    """An add-checkpoint body for the latest checkpoint of ``data``, from size ``old``."""
    with Log.open(data) as log:
        size = log.checkpoint_size()
        proof = log.consistency_proof(old, size)["hashes"] if 0 < old < size else []
        return f"old {old}\n" + "".join(f"{h}\n" for h in proof) + "\n" + log.checkpoint()


def test_a_forked_log_is_refused_by_the_witness_with_an_alarm(
    tmp_path: Path, gov: Path, witness: WitnessServer
) -> None:
    policy = _policy(tmp_path, gov, witness)
    append_events(gov, "published")
    assert _cosign(gov, policy) == 0
    fork = fork_copy(gov, tmp_path / "fork")
    size = append_events(gov, "what happened")
    assert append_events(fork, "what the operator wants seen") == size
    assert _cosign(gov, policy) == 0
    # The same key signed both views; the witness cosigned one and refuses the other.
    assert _cosign(fork, policy) == 1
    refused = witness.post(_body(fork, size))
    assert refused.status_code == 422
    assert "fork" in refused.text
    code, status = witness.status()
    assert code == 1
    assert {a["reason"] for a in status["alarms"]} == {"fork"}
    assert witness.get("/readyz").status_code == 503
    assert status["logs"][0]["cosigned_size"] == size  # the honest view stays the witnessed one


def test_a_rewritten_history_fails_log_verify_with_a_witness_policy(
    tmp_path: Path, gov: Path, witness: WitnessServer
) -> None:
    policy = _policy(tmp_path, gov, witness)
    append_events(gov, "a")
    rewritten = fork_copy(gov, tmp_path / "rewritten")  # the operator's copy, before what follows
    append_events(gov, "b", "c")
    assert _cosign(gov, policy) == 0
    cli("log", "verify", "--data", str(gov), "--witness-policy", str(policy))

    # The operator rebuilds the history after "a" and re-signs it with the log's key.
    append_events(rewritten, "b'", "c'")
    plain = cli("log", "verify", "--data", str(rewritten), check=False)
    assert plain.returncode == 0  # the log's own key vouches for the rewrite: the gap witnesses close
    # Without the witnesses' cosignatures, the rewritten log has no quorum.
    no_quorum = cli("log", "verify", "--data", str(rewritten), "--witness-policy", str(policy), check=False)
    assert no_quorum.returncode == 1
    assert "not met" in json.loads(no_quorum.stdout)["witnessed"]["detail"]
    # Keeping the cosignatures does not help: they sign the tree that was published.
    _copy_cosignatures(gov, rewritten)
    kept = cli("log", "verify", "--data", str(rewritten), "--witness-policy", str(policy), check=False)
    assert kept.returncode == 1
    detail = json.loads(kept.stdout)["witnessed"]["detail"]
    assert "does not verify" in detail
    assert "fork" in detail


def _flip(line: str) -> str:
    """The cosignature line with the last bit of its signature flipped."""
    prefix, _, b64 = line.rstrip("\n").rpartition(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    return f"{prefix} {base64.b64encode(bytes(raw)).decode()}\n"


def _copy_cosignatures(source: Path, target: Path) -> None:
    src, dst = SQLiteStore(source / "proctor.db"), SQLiteStore(target / "proctor.db")
    try:
        for row in src.cosignatures():
            dst.put_cosignature(row)
    finally:
        src.close()
        dst.close()


def _receipt(gov_data: Path, governor: Governor) -> dict[str, object]:
    token = allow(governor, "hello")
    execution = str(governor.executions.start("alice", start_body(token, "hello"))["execution"])
    governor.executions.finish("alice", execution, {"outcome": "completed", "exit_status": 0})
    receipt = governor.executions.receipt(execution)
    governor.close()  # every checkpoint stored; nothing more is appended
    return receipt


def _verify(
    tmp_path: Path, receipt: dict[str, object], key: str, policy: Path
) -> tuple[int, dict[str, object]]:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    done = cli("verify", str(path), "--log-key", key, "--witness-policy", str(policy), "--json", check=False)
    return done.returncode, json.loads(done.stdout)


def test_a_receipt_must_carry_the_quorum_with_a_witness_policy(
    tmp_path: Path, gov_data: Path, governor: Governor
) -> None:
    receipt = _receipt(gov_data, governor)
    witness = WitnessServer(tmp_path / "w", trust=(gov_data,))
    try:
        policy = _policy(tmp_path, gov_data, witness)
        key = log_key(gov_data)
        code, report = _verify(tmp_path, receipt, key, policy)
        assert code == 1, report
        assert report["failed"] == 9  # no cosignature: no quorum
        assert _cosign(gov_data, policy) == 0
        store = SQLiteStore(gov_data / "proctor.db")
        try:
            lines = "".join(c.line for c in store.cosignatures())
        finally:
            store.close()
        witnessed = dict(receipt, checkpoint=str(receipt["checkpoint"]) + lines)
        code, report = _verify(tmp_path, witnessed, key, policy)
        assert code == 0, report
        assert report["steps"][-1]["name"] == "witnesses"  # type: ignore[index]
        # Another witness's policy: these cosignatures are not its quorum.
        other = write_policy(
            tmp_path / "other.txt",
            logs=[key],
            witnesses=[("w9", generate_cosigner("witness.example/w9").verifier.to_string(), "")],
            quorum="w9",
        )
        assert _verify(tmp_path, witnessed, key, other)[0] == 1
        # A cosignature that does not sign this checkpoint fails, it is not just ignored.
        forged = dict(receipt, checkpoint=str(receipt["checkpoint"]) + _flip(lines))
        code, report = _verify(tmp_path, forged, key, policy)
        assert code == 1, report
        assert report["failed"] == 9
    finally:
        witness.close()


def test_the_witness_refuses_a_replayed_old_checkpoint_with_409(
    tmp_path: Path, gov: Path, witness: WitnessServer
) -> None:
    policy = _policy(tmp_path, gov, witness)
    first = append_events(gov, "a")
    assert _cosign(gov, policy) == 0
    old_body = _body(gov, first)
    latest = append_events(gov, "b", "c")
    assert _cosign(gov, policy) == 0
    for body in (old_body, _body(gov, 0), old_body.replace(f"old {first}", "old 0", 1)):
        replayed = witness.post(body)
        assert replayed.status_code == 409, replayed.text
        assert replayed.headers["content-type"] == "text/x.tlog.size"
        assert replayed.text == f"{latest}\n"
    assert witness.get("/readyz").status_code == 200  # a stale request is no inconsistency


def test_the_witness_keeps_what_it_cosigned_across_a_restart(
    tmp_path: Path, gov: Path, witness: WitnessServer
) -> None:
    policy = _policy(tmp_path, gov, witness)
    fork = fork_copy(gov, tmp_path / "fork")
    size = append_events(gov, "a", "b")
    assert append_events(fork, "a'", "b'") == size
    assert _cosign(gov, policy) == 0
    witness.stop()
    witness.start()
    again = witness.post(_body(gov, 0))
    assert (again.status_code, again.text) == (409, f"{size}\n")
    assert witness.post(_body(fork, size)).status_code == 422  # the fork is still refused
    assert witness.status()[0] == 1


def test_the_witness_refuses_an_unknown_log_404_and_a_foreign_key_403(
    tmp_path: Path, gov: Path, witness: WitnessServer
) -> None:
    stranger = tmp_path / "stranger"
    cli("init", "--data", str(stranger), "--origin", "test.example/stranger")
    append_events(stranger, "x")
    assert witness.post(_body(stranger, 0)).status_code == 404
    unknown = write_policy(
        tmp_path / "stranger.txt",
        logs=[log_key(stranger)],
        witnesses=[("w1", witness.vkey, witness.url)],
        quorum="w1",
    )
    assert _cosign(stranger, unknown) == 2  # refused: the witness does not know this log
    # Same origin, another key: the checkpoint carries no signature the witness trusts.
    impostor = tmp_path / "impostor"
    cli("init", "--data", str(impostor), "--origin", "test.example/rules")
    append_events(impostor, "x")
    assert witness.post(_body(impostor, 0)).status_code == 403
    assert witness.get("/readyz").status_code == 200
