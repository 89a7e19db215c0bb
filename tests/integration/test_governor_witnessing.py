"""The governor's cosigner (``proctor.governor.cosigner``) against real witnesses
(``proctor witness serve`` child processes): when it submits, what it remembers across a
restart, its thread's life cycle, and what ``/metrics`` and ``/readyz`` say.

The rules themselves (served receipts verify with a witness policy, a witness that is
down blocks nothing, a fork stops the node) are tests/conformance/test_witnessed_receipts_served.py.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from asgi_support import call
from gov_exec import allow, start_body
from gov_server import cli
from proctor.governor.app import create_app
from proctor.governor.service import Governor
from proctor.store.sqlite import SQLiteStore
from witness_support import WitnessServer, log_key


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[WitnessServer]]:
    started = [WitnessServer(tmp_path / f"w{i}", name=f"witness.example/w{i}") for i in (1, 2)]
    yield started
    for w in started:
        w.close()


def _witnessed_data(
    gov_data: Path, governor: Governor, witnesses: list[WitnessServer], interval_ms: int
) -> None:
    """Close the fixture's governor; configure a 2-of-2 policy of ``witnesses``."""
    governor.close()
    key = log_key(gov_data)
    for w in witnesses:
        cli("witness", "add-log", "--data", str(w.data), "--vkey", key)
    lines = [f"witness w{i} {w.vkey} {w.url}" for i, w in enumerate(witnesses, 1)]
    (gov_data / "witnesses.txt").write_text("\n".join([*lines, "group both all w1 w2", "quorum both"]) + "\n")
    with (gov_data / "config.toml").open("a") as f:
        f.write(f'\n[witnesses]\npolicy = "witnesses.txt"\ninterval_ms = {interval_ms}\n')


def _execution(gov: Governor) -> str:
    token = allow(gov, "hello")
    execution = str(gov.executions.start("alice", start_body(token, "hello"))["execution"])
    gov.executions.finish("alice", execution, {"outcome": "completed", "exit_status": 0})
    return execution


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_checkpoint_is_submitted_again_only_once_the_tree_grew(
    gov_data: Path, governor: Governor, witnesses: list[WitnessServer]
) -> None:
    _witnessed_data(gov_data, governor, witnesses, interval_ms=1000)
    with Governor(gov_data) as gov:
        assert gov.cosigner is not None
        first = gov.cosigner.run_round()
        assert first is not None
        assert first.quorum.satisfied
        assert {w.outcome for w in first.witnesses} == {"cosigned"}
        assert gov.cosigner.run_round() is None  # nothing new to witness
        assert gov.cosigner.snapshot()[0] == {"w1": 1, "w2": 1}
        _execution(gov)
        grown = gov.cosigner.run_round()
        assert grown is not None
        assert grown.size > first.size
        assert grown.quorum.satisfied
        assert gov.cosigner.snapshot()[0] == {"w1": 2, "w2": 2}
        witnessed = gov.cosigner.latest_witnessed()
        assert witnessed is not None
        assert witnessed.size == grown.size == gov.log.size


def test_the_latest_witnessed_checkpoint_is_recovered_from_the_store_after_a_restart(
    gov_data: Path, governor: Governor, witnesses: list[WitnessServer]
) -> None:
    _witnessed_data(gov_data, governor, witnesses, interval_ms=1000)
    with Governor(gov_data) as gov:
        assert gov.cosigner is not None
        execution = _execution(gov)
        report = gov.cosigner.run_round()
        assert report is not None
        assert report.quorum.satisfied
        size = report.size
    for w in witnesses:
        w.stop()  # recovery needs no witness
    with Governor(gov_data) as gov:
        assert gov.cosigner is not None
        failed = gov.cosigner.run_round()  # the first round always submits
        assert failed is not None
        assert {w.outcome for w in failed.witnesses} == {"unreachable"}
        witnessed = gov.cosigner.latest_witnessed()
        assert witnessed is not None
        assert witnessed.size == size
        assert gov.ready()[0]  # unreachable witnesses are no alarm
        receipt = gov.executions.receipt(execution)  # the in-process path: latest checkpoint
        assert str(receipt["checkpoint"]).count("\u2014 witness.example/") == 0


def test_the_cosigner_runs_in_the_background_while_serving_and_stops_with_the_governor(
    gov_data: Path, governor: Governor, witnesses: list[WitnessServer]
) -> None:
    _witnessed_data(gov_data, governor, witnesses, interval_ms=100)
    gov = Governor(gov_data)
    try:
        assert gov.cosigner is not None
        gov.start_sweeper()
        cosigner = gov.cosigner
        _wait("the first witnessed checkpoint", lambda: cosigner.latest_witnessed() is not None)
        _execution(gov)
        size = gov.log.size
        _wait(
            "the grown tree witnessed",
            lambda: (witnessed := cosigner.latest_witnessed()) is not None and witnessed.size == size,
        )
    finally:
        gov.close()
    assert "proctor-cosigner" not in [t.name for t in threading.enumerate()]
    store = SQLiteStore(gov_data / "proctor.db")
    try:
        assert {c.size for c in store.cosignatures()} >= {size}
    finally:
        store.close()


def test_metrics_and_readiness_show_the_cosigner(
    gov_data: Path, governor: Governor, witnesses: list[WitnessServer]
) -> None:
    _witnessed_data(gov_data, governor, witnesses, interval_ms=1000)
    witnesses[1].stop()
    with Governor(gov_data) as gov:
        assert gov.cosigner is not None
        app = create_app(gov)
        gov.cosigner.run_round()
        text = call(app, "GET", "/metrics").body.decode()
        for name in (
            "proctor_cosign_submissions_total",
            "proctor_cosign_failures_total",
            "proctor_cosign_round_failures_total",
            "proctor_cosign_witnessed_size",
            "proctor_cosign_lag_entries",
            "proctor_cosign_alarm",
        ):
            assert re.search(rf"^# HELP {name} ", text, re.MULTILINE), name
        assert 'proctor_cosign_submissions_total{witness="w1"} 1.0' in text
        assert 'proctor_cosign_failures_total{outcome="unreachable",witness="w2"} 1.0' in text
        assert "proctor_cosign_witnessed_size 0.0" in text
        assert f"proctor_cosign_lag_entries {float(gov.log.size)}" in text
        assert "proctor_cosign_alarm 0.0" in text
        ready = call(app, "GET", "/readyz")
        assert ready.status == 200
        assert ready.json()["checks"]["witnesses"] == "ok"


def test_without_a_witnesses_table_nothing_changes(gov_data: Path, governor: Governor) -> None:
    assert governor.cosigner is None
    assert "witnesses" not in governor.ready()[1]
    assert "proctor_cosign" not in call(create_app(governor), "GET", "/metrics").body.decode()
