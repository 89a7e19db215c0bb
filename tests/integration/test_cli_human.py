"""The CLI talks to people on a terminal and stays exact for scripts (issue 11).

Each command runs as a child process twice: with stdout on a pseudo-terminal (Python's
``pty``), where it must render for a person (tables, ✓/✗ steps, a timeline, a policy
summary, readable times), and with stdout piped, where it must print exactly what
``--json`` prints on the terminal (today's JSON, unchanged). Exit codes are the same
either way.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gov_exec import allow, start_body
from gov_server import GovernorServer, cli
from gov_support import POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient
from proctor.governor.service import Governor, initialize
from terminal_support import Ran, in_terminal, piped

_MOVING = re.compile(r'("lease_(?:age|remaining)_ms": )-?[0-9]+')  # read from the clock at each run


def same_for_scripts(*args: str, tmp: Path, moving: bool = False) -> tuple[Ran, Ran]:
    """(terminal, piped): the piped output is exactly the terminal's ``--json`` output
    (``moving``: but for the lease times, read from the clock at each run), and the exit
    code is the same in all three runs."""
    human = in_terminal(*args, tmp=tmp)
    forced = in_terminal(*args, "--json", tmp=tmp)
    script = piped(*args)
    if moving:
        assert _MOVING.sub(r"\1N", script.out) == _MOVING.sub(r"\1N", forced.out), (script.out, forced.out)
    else:
        assert script.out == forced.out, (script.out, forced.out)
    json.loads(script.out)  # it is JSON
    assert human.code == forced.code == script.code, (human, forced, script)
    assert not human.out.lstrip().startswith(("{", "[")), human.out
    return human, script


@dataclass(frozen=True)
class Scene:
    data: Path
    receipt: Path
    log_key: str
    done: str
    running: str


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """A data directory with alice and bob, the basic policy, one finished execution
    of alice's (and its receipt) and one of bob's left running (no governor runs)."""
    root = tmp_path_factory.mktemp("human")
    data = root / "data"
    initialize(data, origin="human.example/gov")
    with Governor(data) as gov:
        for name, role in (("alice", "dev"), ("bob", "ops")):
            key = PrincipalKey.generate(name)
            key.save(data / f"{name}.key")
            gov.add_principal(name, key.public_key_b64, attrs={"role": role}, zone="", by="admin")
        gov.push_policy(signed_bundle(data, POLICIES / "basic"), by="admin")
        done = str(gov.executions.start("alice", start_body(allow(gov, "one"), "one"))["execution"])
        gov.executions.finish("alice", done, {"outcome": "completed", "exit_status": 0})
        token = allow(gov, "two", principal="bob")
        running = str(gov.executions.start("bob", start_body(token, "two"))["execution"])
        receipt = root / "receipt.json"
        receipt.write_text(json.dumps(gov.executions.receipt(done)))
        log_key = gov.log.verifier_key()
    return Scene(data, receipt, log_key, done, running)


def test_log_verify_ticks_its_steps_on_a_terminal(scene: Scene, tmp_path: Path) -> None:
    human, script = same_for_scripts("log", "verify", "--data", str(scene.data), tmp=tmp_path)
    assert human.code == 0, human
    assert "✓ log: " in human.out
    assert "✓ state tables agree with the log" in human.out
    assert json.loads(script.out)["ok"] is True


def test_verify_ticks_each_numbered_step_on_a_terminal(scene: Scene, tmp_path: Path) -> None:
    args = ("verify", str(scene.receipt), "--log-key", scene.log_key)
    human, script = same_for_scripts(*args, tmp=tmp_path)
    assert human.code == 0, human
    assert f"receipt of {scene.done}: verified" in human.out
    for number, name in enumerate(("shape", "log-key", "checkpoint", "inclusion", "linkage"), start=1):
        assert f"✓ {number}. {name}: " in human.out
    assert [s["ok"] for s in json.loads(script.out)["steps"]] == [True] * 8


def test_a_failing_verify_shows_the_cross_and_exits_the_same(scene: Scene, tmp_path: Path) -> None:
    doc = json.loads(scene.receipt.read_text())
    doc["checkpoint"] = doc["checkpoint"].replace("\n\n", "\n\n\n", 1)  # no longer a signed note
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    human, script = same_for_scripts("verify", str(bad), "--log-key", scene.log_key, tmp=tmp_path)
    assert human.code == script.code == 1
    assert "✗ " in human.out
    assert "not checked" in human.out  # the steps after the failure are named, not ticked
    assert "receipt does not verify" in human.err


def test_receipt_show_is_a_timeline(scene: Scene, tmp_path: Path) -> None:
    human, script = same_for_scripts("receipt", "show", str(scene.receipt), tmp=tmp_path)
    assert human.code == 0, human
    assert f"execution {scene.done} of alice: completed" in human.out
    assert "not verified here" in human.out
    assert "EVENT" in human.out
    assert "WHAT" in human.out
    lines = human.out.splitlines()
    order = [t for t in ("decision", "warrant.issued", "execution.started", "execution.completed")
             if any(f"  {t}  " in line for line in lines)]  # fmt: skip
    assert order == ["decision", "warrant.issued", "execution.started", "execution.completed"]
    assert "completed, exit status 0" in human.out
    # Times for a person: local (TZ=UTC here) with the RFC 3339 value.
    assert " UTC (20" in human.out
    shown = json.loads(script.out)
    assert shown["outcome"] == "completed"
    assert [e["type"] for e in shown["events"]][-1] == "execution.completed"


def test_receipt_show_with_the_log_key_verifies_it(scene: Scene, tmp_path: Path) -> None:
    args = ("receipt", "show", str(scene.receipt), "--log-key", scene.log_key)
    human, script = same_for_scripts(*args, tmp=tmp_path)
    assert human.code == 0, human
    assert "✓ verified" in human.out
    assert json.loads(script.out)["verification"]["ok"] is True


def test_receipt_show_escapes_terminal_controls(scene: Scene, tmp_path: Path) -> None:
    """An unverified receipt is shown, but what it says cannot drive the terminal."""
    doc = json.loads(scene.receipt.read_text())
    for entry in doc["events"]:
        event = json.loads(base64.b64decode(entry["leaf"]))
        if event["type"] == "decision":
            event["reason"] = "\x1b[2J\x1b]0;pwned\x07 cleared \u202eevil"
            entry["leaf"] = base64.b64encode(json.dumps(event).encode()).decode()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    human = in_terminal("receipt", "show", str(forged), tmp=tmp_path)
    assert human.code == 0, human
    assert "\x1b" not in human.out
    assert "\x07" not in human.out
    assert "\u202e" not in human.out
    assert "\\x1b[2J" in human.out
    assert "\\u202e" in human.out
    # With the key, the forgery is named and the exit code says so.
    checked = in_terminal("receipt", "show", str(forged), "--log-key", scene.log_key, tmp=tmp_path)
    assert checked.code == 1
    assert "✗ does not verify" in checked.out


def test_a_malformed_receipt_is_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"events": [{"leaf_index": 0, "leaf": "%%%"}]}))
    for ran in (in_terminal("receipt", "show", str(bad), tmp=tmp_path), piped("receipt", "show", str(bad))):
        assert ran.code == 2
        assert "events[0]: expected leaf_index and a base64 JSON leaf" in ran.err


def test_principal_list_is_a_table(scene: Scene, tmp_path: Path) -> None:
    human, script = same_for_scripts("principal", "list", "--data", str(scene.data), tmp=tmp_path)
    assert human.code == 0, human
    header = next(line for line in human.out.splitlines() if line.startswith("NAME"))
    assert header.split() == ["NAME", "STATUS", "ZONE", "ATTRIBUTES", "UPDATED"]
    rows = {line.split()[0]: line for line in human.out.splitlines()[1:] if line.strip()}
    assert {"admin", "alice", "bob"} <= set(rows)
    assert "role=ops" in rows["bob"]
    # Aligned columns: every row's status starts where the header's does.
    column = header.index("STATUS")
    assert all(rows[n][column:].startswith("active") for n in ("alice", "bob"))
    assert {p["name"] for p in json.loads(script.out)} >= {"admin", "alice", "bob"}


def test_policy_show_is_a_summary(scene: Scene, tmp_path: Path) -> None:
    human, script = same_for_scripts("policy", "show", "--data", str(scene.data), tmp=tmp_path)
    assert human.code == 0, human
    bundle: dict[str, Any] = json.loads(script.out)
    assert set(bundle) == {"bundle", "signer", "signature"}  # today's JSON, unchanged
    assert "version:   1" in human.out
    assert "digest:    sha256:" in human.out
    assert "signed by: admin" in human.out
    assert "activated: " in human.out
    assert " UTC (20" in human.out
    policies = {
        line.split()[0]: line.split()[1:]
        for line in human.out.splitlines()
        if line.startswith(("echo", "no-rm"))
    }
    assert policies["echo"] == ["permit", "exec.cedar"]
    assert policies["no-rm"] == ["forbid", "exec.cedar"]


def _activated_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("activated: "))


def test_policy_show_prints_the_same_fields_over_server_and_from_the_data_directory(
    tmp_path: Path,
) -> None:
    """The activation time is shown over ``--server`` too (the governor's ``GET
    /v1/policy`` adds it to the signed bundle), equal to the data directory's."""
    server = GovernorServer(tmp_path, policy=POLICIES / "basic", origin="human.example/show")
    data = ["--data", str(server.data)]
    try:
        with GovernorClient(server.url, PrincipalKey.load(server.data / "keys" / "admin.key")) as admin:
            answer = admin.json("GET", "/v1/policy")
        remote_human, remote_script = same_for_scripts(
            "policy", "show", "--server", server.url, *data, tmp=tmp_path
        )
    finally:
        server.stop()
    local_human, local_script = same_for_scripts("policy", "show", *data, tmp=tmp_path)
    assert remote_human.code == local_human.code == 0, (remote_human, local_human)
    # The route: the signed bundle, and when it was activated (the policy.activated time).
    assert set(answer) == {"bundle", "signer", "signature", "activated"}
    activated = answer["activated"]
    assert re.fullmatch(r"20[0-9-]+T[0-9:.]+Z", activated), activated
    # Both forms: the same summary, the activation time included, and the same JSON.
    assert _activated_line(remote_human.out) == _activated_line(local_human.out)
    assert f"({activated})" in _activated_line(remote_human.out)
    assert remote_human.out == local_human.out
    assert remote_script.out == local_script.out
    assert set(json.loads(remote_script.out)) == {"bundle", "signer", "signature"}  # today's JSON


def _lease_lapsed(scene: Scene, timeout: float = 30.0) -> None:
    """Wait until bob's running execution's lease has run out (no governor renews it):
    this test may run right after the scene is made (alone, or first of a selection)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = cli("executions", "list", "--data", str(scene.data), "--status", "all", "--json")
        shown = {e["id"]: e for e in json.loads(listed.stdout)["executions"]}
        if shown[scene.running]["lease_remaining_ms"] < 0 or time.monotonic() > deadline:
            return
        time.sleep(min(1.0, shown[scene.running]["lease_remaining_ms"] / 1000 + 0.05))


def test_executions_list_is_a_table(scene: Scene, tmp_path: Path) -> None:
    args = ("executions", "list", "--data", str(scene.data), "--status", "all")
    _lease_lapsed(scene)
    human, script = same_for_scripts(*args, tmp=tmp_path, moving=True)
    assert human.code == 0, human
    lines = human.out.splitlines()
    assert lines[0].split() == ["ID", "PRINCIPAL", "RESOURCE", "ZONE", "STATUS", "STARTED", "LEASE"]
    running = next(line for line in lines if scene.running in line)
    assert "bob" in running
    assert "/bin/echo" in running
    assert "running" in running
    assert "lapsed" in running  # no governor renews it: its lease ran out
    done = next(line for line in lines if scene.done in line)
    assert "completed" in done
    assert {e["id"] for e in json.loads(script.out)["executions"]} == {scene.done, scene.running}


def test_executions_show_reads_like_a_record(scene: Scene, tmp_path: Path) -> None:
    args = ("executions", "show", scene.running, "--data", str(scene.data))
    human, script = same_for_scripts(*args, tmp=tmp_path, moving=True)
    assert human.code == 0, human
    assert f"execution: {scene.running}" in human.out
    assert "status: running" in human.out
    assert "lease: renewed " in human.out
    assert "started: " in human.out
    assert " UTC (20" in human.out
    assert json.loads(script.out)["id"] == scene.running


def test_unknown_execution_exits_the_same_on_a_terminal(scene: Scene, tmp_path: Path) -> None:
    args = ("executions", "show", "ex_" + "a" * 24, "--data", str(scene.data))
    human, script = in_terminal(*args, tmp=tmp_path), piped(*args)
    assert human.code == script.code == 2
    assert "no such execution" in human.err
    assert "no such execution" in script.err
    assert human.out == script.out == ""
