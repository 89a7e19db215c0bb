"""A real witness process (``proctor witness serve``) and the real CLI around it.

A witness cosigns a growing log; its HTTP surface (C2SP tlog-witness add-checkpoint,
the monitoring checkpoint, health, readiness, metrics) answers as the spec says; an
alarm makes it not ready until an operator clears it; a policy with two witnesses
needs both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gov_server import cli
from proctor.lineage.cosignature import CosignerKey, cosignatures_in
from proctor.note import NoteVerifier, open_note
from witness_support import WitnessServer, append_events, fork_copy, log_key, write_policy


@pytest.fixture
def gov(tmp_path: Path) -> Path:
    data = tmp_path / "gov"
    cli("init", "--data", str(data), "--origin", "test.example/witnessed")
    return data


@pytest.fixture
def witness(tmp_path: Path, gov: Path) -> Iterator[WitnessServer]:
    server = WitnessServer(tmp_path, trust=(gov,))
    yield server
    server.close()


def _policy(tmp_path: Path, gov: Path, *witnesses: WitnessServer, quorum: str = "w1") -> Path:
    return write_policy(
        tmp_path / "policy.txt",
        logs=[log_key(gov)],
        witnesses=[(f"w{i}", w.vkey, w.url) for i, w in enumerate(witnesses, 1)],
        quorum=quorum,
    )


def _cosign(gov: Path, policy: Path) -> tuple[int, dict[str, object]]:
    done = cli("log", "cosign", "--data", str(gov), "--witness-policy", str(policy), "--json", check=False)
    return done.returncode, json.loads(done.stdout)


def test_a_witness_cosigns_a_growing_log(tmp_path: Path, gov: Path, witness: WitnessServer) -> None:
    policy = _policy(tmp_path, gov, witness)
    sizes = []
    for round_ in range(3):
        size = append_events(gov, *(f"r{round_}-{i}" for i in range(round_ + 1)))
        code, report = _cosign(gov, policy)
        assert code == 0, report
        assert report["size"] == size
        assert report["quorum"]["satisfied"] is True  # type: ignore[index]
        sizes.append(size)
        verified = cli("log", "verify", "--data", str(gov), "--witness-policy", str(policy))
        assert json.loads(verified.stdout)["witnessed"]["witnessed_size"] == size
    assert sizes == sorted(sizes)
    assert len(set(sizes)) == 3
    code, status = witness.status()
    assert code == 0
    assert status["logs"][0]["cosigned_size"] == sizes[-1]
    assert [e["type"] for e in json.loads(json.dumps(status))["alarms"]] == []

    # The monitoring retrieval: the latest cosigned checkpoint, with the log's
    # signature and the witness's cosignature, under the SHA-256 of the origin.
    origin_hash = hashlib.sha256(b"test.example/witnessed").hexdigest()
    served = witness.get(f"/{origin_hash}/checkpoint")
    assert served.status_code == 200
    opened = open_note(served.text, [NoteVerifier.from_string(log_key(gov))])
    assert opened.text.split("\n")[1] == str(sizes[-1])
    assert cosignatures_in(opened.text, opened.unverified, [CosignerKey.from_string(witness.vkey)])
    assert witness.get("/" + "0" * 64 + "/checkpoint").status_code == 404


def test_health_readiness_and_metrics_answer(tmp_path: Path, gov: Path, witness: WitnessServer) -> None:
    assert witness.get("/healthz").status_code == 200
    ready = witness.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "open_alarms": 0})
    append_events(gov, "a")
    assert _cosign(gov, _policy(tmp_path, gov, witness))[0] == 0
    metrics = witness.get("/metrics").text
    assert 'proctor_witness_requests_total{outcome="cosigned"} 1.0' in metrics
    assert "proctor_witness_open_alarms 0.0" in metrics
    assert witness.get("/add-checkpoint").status_code == 405
    assert witness.post(b"x" * (64 << 10)).status_code == 413


def test_an_alarm_keeps_the_witness_not_ready_until_an_operator_clears_it(
    tmp_path: Path, gov: Path, witness: WitnessServer
) -> None:
    policy = _policy(tmp_path, gov, witness)
    append_events(gov, "shared")
    assert _cosign(gov, policy)[0] == 0
    fork = fork_copy(gov, tmp_path / "fork")
    append_events(gov, "honest")
    append_events(fork, "rewritten")
    assert _cosign(gov, policy)[0] == 0
    code, report = _cosign(fork, policy)
    assert code == 1, report
    assert report["witnesses"][0]["outcome"] == "inconsistent"  # type: ignore[index]

    ready = witness.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["open_alarms"] == 1
    assert "proctor_witness_alarms_total 1.0" in witness.get("/metrics").text
    code, status = witness.status()
    assert code == 1
    [alarm] = status["alarms"]
    assert alarm["reason"] == "fork"
    assert alarm["event"]["type"] == "witness.alarm"

    # The witness kept the honest view: the honest log still gets cosignatures.
    append_events(gov, "later")
    assert _cosign(gov, policy)[0] == 0
    assert witness.get("/readyz").status_code == 503  # still: nobody looked yet

    refused = cli("witness", "clear-alarms", "--data", str(witness.data), "--reason", " ", check=False)
    assert refused.returncode == 2
    cli("witness", "clear-alarms", "--data", str(witness.data), "--reason", "fork of a test copy")
    assert witness.get("/readyz").status_code == 200
    code, status = witness.status()
    assert code == 0
    assert status["alarms"] == []


def test_a_policy_of_two_witnesses_needs_both(tmp_path: Path, gov: Path, witness: WitnessServer) -> None:
    second = WitnessServer(tmp_path / "second", name="witness.example/w2", trust=(gov,))
    try:
        append_events(gov, "a")
        both = write_policy(
            tmp_path / "both.txt",
            logs=[log_key(gov)],
            witnesses=[("w1", witness.vkey, witness.url), ("w2", second.vkey, second.url)],
            quorum="both",
        )
        both.write_text(both.read_text().replace("quorum both", "group both all w1 w2\nquorum both"))
        second.stop()
        code, report = _cosign(gov, both)
        assert code == 3, report  # w2 cannot be reached: the quorum is not met
        outcomes = {w["witness"]: w["outcome"] for w in report["witnesses"]}  # type: ignore[attr-defined]
        assert outcomes == {"w1": "cosigned", "w2": "unreachable"}
        failed = cli("log", "verify", "--data", str(gov), "--witness-policy", str(both), check=False)
        assert failed.returncode == 1
        second.start()
        assert _cosign(gov, both)[0] == 0
        cli("log", "verify", "--data", str(gov), "--witness-policy", str(both))
    finally:
        second.close()
