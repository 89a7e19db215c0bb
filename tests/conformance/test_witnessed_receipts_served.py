"""Witnessed receipts (issue 12, "Witnesses"; ADR 0014): a governor with a ``[witnesses]``
table has its checkpoints cosigned in the background, serves receipts proven under the
latest checkpoint that meets the witness policy's quorum, never lets a witness delay an
authorization, and stops being ready when a witness says its log forked.

Before this, the governor collected no cosignatures and served every receipt under its
latest (unwitnessed) checkpoint, so ``proctor verify --witness-policy`` failed on every
served receipt, and nothing the governor did noticed a fork. Each test is one rule, on
real parts: ``proctor witness serve`` child processes (C2SP tlog-witness), ``proctor
serve``, ``proctor run`` and the CLI, or an in-process governor over a real witness.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from asgi_support import call, signed
from gov_exec import allow, start_body
from gov_server import GovernorServer, cli, free_port
from proctor.authorization.keys import PrincipalKey
from proctor.errors import ConfigError
from proctor.governor.app import create_app
from proctor.governor.service import Governor
from proctor.lineage.cosignature import generate_cosigner
from proctor.lineage.witness_policy import WitnessPolicy
from proctor.receipts import check_receipt
from proctor.store.sqlite import SQLiteStore
from witness_support import WitnessServer, append_events, fork_copy, log_key

POLICIES = Path(__file__).parent.parent / "integration" / "policies"
COSIGNATURE = re.compile(r"^\u2014 witness\.example/w\d+ ", re.MULTILINE)


def policy_text(witnesses: list[tuple[str, WitnessServer]], *, log: str = "", quorum: str = "") -> str:
    """A C2SP tlog-policy: every witness, all of them as the quorum unless ``quorum``."""
    lines = [f"log {log}"] if log else []
    lines += [f"witness {name} {w.vkey} {w.url}" for name, w in witnesses]
    if not quorum:
        lines.append("group all-of-them all " + " ".join(name for name, _ in witnesses))
        quorum = "all-of-them"
    return "\n".join([*lines, f"quorum {quorum}"]) + "\n"


def witness_config(policy: Path, *, interval_ms: int = 200) -> str:
    """The ``[witnesses]`` table of ``config.toml`` for ``policy``."""
    return f'[witnesses]\npolicy = "{policy}"\ninterval_ms = {interval_ms}\ntimeout_ms = 5000\n'


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``check`` until it holds (generous: the machine is shared)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, rest = head.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if sample == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[WitnessServer]]:
    started = [WitnessServer(tmp_path / f"w{i}", name=f"witness.example/w{i}") for i in (1, 2)]
    yield started
    for w in started:
        w.close()


def trust(witnesses: list[WitnessServer], data: Path) -> None:
    """Each witness trusts the log of ``data`` (a running witness sees it at once)."""
    key = log_key(data)
    for w in witnesses:
        cli("witness", "add-log", "--data", str(w.data), "--vkey", key)


# -- the configuration ---------------------------------------------------------------


def _configure(gov_data: Path, policy: str | None, table: str) -> None:
    if policy is not None:
        (gov_data / "witnesses.txt").write_text(policy)
    with (gov_data / "config.toml").open("a") as f:
        f.write("\n" + table)


_W = generate_cosigner("witness.example/w1").verifier.to_string()
_OTHER_LOG = "other.example/log+12345678+AQ" + "A" * 43


@pytest.mark.parametrize(
    ("policy", "table", "message"),
    [
        (None, "[witnesses]\ninterval_ms = 1000\n", "witnesses.policy: expected the path"),
        (None, '[witnesses]\npolicy = "missing.txt"\n', "cannot read"),
        (
            f"witness w1 {_W} http://127.0.0.1:9\nquorum w1\n",
            '[witnesses]\npolicy = ""\n',
            "witnesses.policy",
        ),
        ("quorum none\n", '[witnesses]\npolicy = "witnesses.txt"\n', "quorum"),
        (f"witness w1 {_W}\nquorum w1\n", '[witnesses]\npolicy = "witnesses.txt"\n', "URL"),
        (
            f"witness w1 {_W} http://127.0.0.1:9\nquorum w1\n",
            '[witnesses]\npolicy = "witnesses.txt"\ninterval_ms = true\n',
            "witnesses.interval_ms",
        ),
        (
            f"witness w1 {_W} http://127.0.0.1:9\nquorum w1\n",
            '[witnesses]\npolicy = "witnesses.txt"\ntimeout_ms = 0\n',
            "witnesses.timeout_ms",
        ),
        (
            f"witness w1 {_W} http://127.0.0.1:9\nquorum w1\n",
            '[witnesses]\npolicy = "witnesses.txt"\nquorum = 2\n',
            "unknown key witnesses.quorum",
        ),
    ],
    ids=[
        "no-policy",
        "missing-file",
        "empty-path",
        "quorum-none",
        "no-url",
        "interval-not-integer",
        "timeout-zero",
        "unknown-key",
    ],
)
def test_an_invalid_witness_configuration_stops_the_governor(
    gov_data: Path, policy: str | None, table: str, message: str
) -> None:
    _configure(gov_data, policy, table)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Governor(gov_data)


def test_a_witness_policy_of_another_log_or_that_others_may_write_stops_the_governor(gov_data: Path) -> None:
    # Whoever can write the policy chooses the witnesses: held to config.toml's rules.
    other_log = cli("init", "--data", str(gov_data.parent / "other"), "--origin", "other.example/log")
    assert other_log.returncode == 0
    foreign = log_key(gov_data.parent / "other")
    _configure(gov_data, f"log {foreign}\nwitness w1 {_W} http://127.0.0.1:9\nquorum w1\n", "")
    (gov_data / "config.toml").write_text('[witnesses]\npolicy = "witnesses.txt"\n')
    with pytest.raises(ConfigError, match="expected a policy of this log"):
        Governor(gov_data)
    (gov_data / "witnesses.txt").write_text(f"witness w1 {_W} http://127.0.0.1:9\nquorum w1\n")
    os.chmod(gov_data / "witnesses.txt", 0o666)
    with pytest.raises(ConfigError, match="go-w"):
        Governor(gov_data)
    os.chmod(gov_data / "witnesses.txt", 0o644)
    Governor(gov_data).close()  # the same policy, safely kept: accepted
    # `proctor serve` refuses to start on it, naming the key (exit 2, nothing served).
    os.chmod(gov_data / "witnesses.txt", 0o666)
    done = cli("serve", "--data", str(gov_data), "--port", str(free_port()), check=False, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "witness policy" in done.stderr


# -- receipts under the latest witnessed checkpoint (in process, rounds run by hand) ---


def _execution(gov: Governor) -> str:
    token = allow(gov, "hello")
    execution = str(gov.executions.start("alice", start_body(token, "hello"))["execution"])
    gov.executions.finish("alice", execution, {"outcome": "completed", "exit_status": 0})
    return execution


def _served(gov: Governor, gov_data: Path, execution: str) -> dict[str, object]:
    target = f"/v1/executions/{execution}/receipt"
    alice = PrincipalKey.load(gov_data / "alice.key")
    answer = call(create_app(gov), "GET", target, headers=signed(alice, "GET", target))
    assert answer.status == 200, answer.body
    doc: dict[str, object] = answer.json()
    return doc


def test_a_served_receipt_is_proven_under_the_latest_witnessed_checkpoint_once_it_covers_the_execution(
    tmp_path: Path, gov_data: Path, governor: Governor, witnesses: list[WitnessServer]
) -> None:
    governor.close()
    trust(witnesses, gov_data)
    policy = policy_text([("w1", witnesses[0]), ("w2", witnesses[1])])
    _configure(gov_data, policy, witness_config(gov_data / "witnesses.txt"))
    (tmp_path / "policy.txt").write_text(policy_text([("w1", witnesses[0]), ("w2", witnesses[1])]))
    checked = WitnessPolicy.from_text(policy)
    key = log_key(gov_data)
    with Governor(gov_data) as gov:
        assert gov.cosigner is not None
        first = _execution(gov)
        report = gov.cosigner.run_round()
        assert report is not None
        assert report.quorum.satisfied, report
        second = _execution(gov)  # after the round: not witnessed yet
        witnessed = _served(gov, gov_data, first)
        plain = _served(gov, gov_data, second)
        assert len(COSIGNATURE.findall(str(witnessed["checkpoint"]))) == 2
        assert check_receipt(witnessed, log_key=key, witness_policy=checked).ok
        # Not covered: the latest checkpoint, as without witnesses; it verifies, not to the policy.
        assert not COSIGNATURE.search(str(plain["checkpoint"]))
        assert check_receipt(plain, log_key=key).ok
        failed = check_receipt(plain, log_key=key, witness_policy=checked)
        assert failed.failed is not None
        assert failed.failed.number == 9
        # The next round covers it.
        assert gov.cosigner.run_round() is not None
        again = _served(gov, gov_data, second)
        assert check_receipt(again, log_key=key, witness_policy=checked).ok


def test_a_stored_cosignature_that_contradicts_the_log_makes_the_governor_not_ready(
    tmp_path: Path, gov_data: Path, governor: Governor, witnesses: list[WitnessServer]
) -> None:
    governor.close()
    trust(witnesses[:1], gov_data)
    policy = policy_text([("w1", witnesses[0])], quorum="w1")
    _configure(gov_data, policy, witness_config(gov_data / "witnesses.txt"))
    rewritten = fork_copy(gov_data, tmp_path / "rewritten")
    append_events(gov_data, "what happened")
    with Governor(gov_data) as gov:
        assert gov.cosigner is not None
        assert gov.cosigner.run_round() is not None
        assert gov.ready()[0]
    # The operator rewrites the history after the copy, re-signs it, keeps the cosignatures.
    append_events(rewritten, "what the operator wants seen")
    src, dst = SQLiteStore(gov_data / "proctor.db"), SQLiteStore(rewritten / "proctor.db")
    try:
        for row in src.cosignatures():
            dst.put_cosignature(row)
    finally:
        src.close()
        dst.close()
    with Governor(rewritten) as gov:
        assert gov.ready()[0]  # nothing submitted yet
        assert gov.cosigner is not None
        gov.cosigner.run_round()
        ready, checks = gov.ready()
        assert not ready
        assert "does not verify" in checks["witnesses"]
        answer = call(create_app(gov), "GET", "/readyz")
        assert answer.status == 503
        assert "fork" in answer.json()["checks"]["witnesses"]


# -- real processes: two witnesses, a governor, proctor run ---------------------------


def run(gov: GovernorServer, *command: str) -> str:
    """``proctor run`` under ``gov``; its execution id (it must succeed)."""
    done = cli("run", "--server", gov.url, "--key", str(gov.key), "--", *command, timeout=120)
    assert done.returncode == 0, done.stderr
    match = re.search(r"execution (ex_[a-z0-9]+) started", done.stderr)
    assert match, done.stderr
    return match.group(1)


def receipt(gov: GovernorServer, execution: str, out: Path) -> str:
    """``proctor receipt`` of ``execution`` into ``out``; its checkpoint note."""
    cli("receipt", execution, "--server", gov.url, "--key", str(gov.key), "--out", str(out))
    return str(json.loads(out.read_text())["checkpoint"])


def verify(path: Path, key: str, policy: Path | None = None) -> int:
    args = ["verify", str(path), "--log-key", key]
    if policy is not None:
        args += ["--witness-policy", str(policy)]
    return cli(*args, check=False).returncode


def scrape(gov: GovernorServer) -> str:
    return httpx.get(f"{gov.url}/metrics", timeout=10).text


@pytest.mark.slow
def test_a_receipt_served_by_a_witnessed_governor_verifies_with_the_witness_policy(
    tmp_path: Path, witnesses: list[WitnessServer]
) -> None:
    policy = tmp_path / "witnesses.txt"
    policy.write_text(policy_text([("w1", witnesses[0]), ("w2", witnesses[1])]))
    gov = GovernorServer(tmp_path / "gov", policy=POLICIES / "run", config=witness_config(policy))
    try:
        trust(witnesses, gov.data)
        key = log_key(gov.data)
        # The verifier's policy names the log too (the governor's may leave it out).
        pinned = tmp_path / "pinned.txt"
        pinned.write_text(policy_text([("w1", witnesses[0]), ("w2", witnesses[1])], log=key))
        execution = run(gov, sys.executable, "-c", "print('witnessed')")
        out = tmp_path / "receipt.json"
        wait_for(
            "a receipt under a witnessed checkpoint",
            lambda: bool(COSIGNATURE.search(receipt(gov, execution, out))),
        )
        assert len(COSIGNATURE.findall(receipt(gov, execution, out))) == 2
        assert verify(out, key, pinned) == 0
        assert verify(out, key) == 0
        scraped = scrape(gov)
        assert metric(scraped, "proctor_cosign_submissions_total", witness="w1") >= 1
        assert metric(scraped, "proctor_cosign_witnessed_size") > 0
        witnessed_log = ["log", "verify", "--data", str(gov.data), "--witness-policy", str(pinned)]
        wait_for(
            "the log witnessed to its latest checkpoint",
            lambda: cli(*witnessed_log, check=False).returncode == 0,
        )
    finally:
        gov.stop()


@pytest.mark.slow
def test_a_witness_that_is_down_never_blocks_authorizations_and_receipts_fall_back_to_the_plain_checkpoint(
    tmp_path: Path, witnesses: list[WitnessServer]
) -> None:
    policy = tmp_path / "witnesses.txt"
    policy.write_text(policy_text([("w1", witnesses[0]), ("w2", witnesses[1])]))
    witnesses[1].stop()  # w2 is down: a 2-of-2 quorum cannot be met
    gov = GovernorServer(tmp_path / "gov", policy=POLICIES / "run", config=witness_config(policy))
    try:
        trust(witnesses[:1], gov.data)
        key = log_key(gov.data)
        pinned = tmp_path / "pinned.txt"
        pinned.write_text(policy_text([("w1", witnesses[0]), ("w2", witnesses[1])], log=key))
        executions = [run(gov, "true") for _ in range(2)]  # authorized, ran, finished
        wait_for(
            "w1 cosigning and w2 counted unreachable",
            lambda: (
                metric(scrape(gov), "proctor_cosign_failures_total", witness="w2", outcome="unreachable") >= 1
                and metric(scrape(gov), "proctor_cosign_submissions_total", witness="w1") >= 1
            ),
        )
        scraped = scrape(gov)
        assert metric(scraped, "proctor_cosign_witnessed_size") == 0
        assert metric(scraped, "proctor_cosign_lag_entries") > 0
        assert metric(scraped, "proctor_cosign_alarm") == 0
        for execution in executions:
            out = tmp_path / f"{execution}.json"
            assert not COSIGNATURE.search(receipt(gov, execution, out))  # the plain checkpoint
            assert verify(out, key) == 0
            assert verify(out, key, pinned) == 1  # and it says so: no quorum (step 9)
        ready = httpx.get(f"{gov.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text  # a failure is not an alarm
        assert ready.json()["checks"]["witnesses"] == "ok"
    finally:
        gov.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    "outcome", ["inconsistent", "ahead"], ids=["governor-grew-past-the-fork", "fork-is-larger"]
)
def test_a_witness_that_reports_a_fork_makes_the_governor_not_ready(
    tmp_path: Path, witnesses: list[WitnessServer], outcome: str
) -> None:
    witness = witnesses[0]
    policy = tmp_path / "witnesses.txt"
    policy.write_text(policy_text([("w1", witness)], quorum="w1"))
    gov = GovernorServer(tmp_path / "gov", policy=POLICIES / "run", config=witness_config(policy))
    try:
        # Another copy of this log, signed by the same key, with a history of its own.
        gov.kill()
        fork = fork_copy(gov.data, tmp_path / "fork")
        if outcome == "inconsistent":  # this governor's history grows past the fork point
            gov.start()
            run(gov, "true")
            gov.kill()
        append_events(fork, "what the operator wants seen")
        trust([witness], gov.data)
        cosigned = cli("log", "cosign", "--data", str(fork), "--witness-policy", str(policy), check=False)
        assert cosigned.returncode == 0, cosigned.stderr  # the witness holds the fork's view
        gov.start()  # and is shown this governor's
        wait_for(
            "the governor to report not ready",
            lambda: httpx.get(f"{gov.url}/readyz", timeout=10).status_code == 503,
        )
        checks = httpx.get(f"{gov.url}/readyz", timeout=10).json()["checks"]
        assert "fork" in checks["witnesses"]
        assert f": {outcome}: " in checks["witnesses"]
        assert metric(scrape(gov), "proctor_cosign_alarm") == 1
        assert "ALARM" in gov.log_path.read_text()
        if outcome == "inconsistent":
            assert witness.status()[0] == 1  # the witness raised its own alarm too (422)
    finally:
        gov.stop()
