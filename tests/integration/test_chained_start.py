"""``POST /v1/authorize/start`` in one commit (ADR 0019 decision 5,
``proctor.governor.authorize_start`` rule 5): the start of a warrant minted on the
governor's own thread is queued behind its authorization before that is durable, so a
call waits for one commit, not two. In process, with the real log, state and minting:

- the start is queued while the authorization's commit is still held back, and both
  are recorded: ``execution.started`` right behind ``warrant.issued``, linked to it,
  with the decision's request and arguments in its row, as a start after the commit;
- an authorization whose commit fails takes its start with it: nothing started, the
  quota slot and the warrant's claim given back, and the log goes on;
- a start refused before it is queued (a measurement the warrant does not cover)
  leaves the authorization recorded and its warrant unused; nothing started;
- a warrant minted by the helper (a busy log) is not chained, nor is anything while a
  trust change holds the ordering lock (the event loop never waits for it): rule 3;
- a start recorded but not answered with its warrant (its answer fails, or the request
  is cancelled) is ended at once, ``failed``/``not-answered``, and frees its slot;
- through ``proctor serve``, the authorization and its start share one commit.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_support import EXE, POLICIES, held_commits, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.errors import EventError, LineageError, PrincipalError, StoreError, WarrantError
from proctor.governor.authorize_start import _authorize_chained, _chain
from proctor.governor.model import AuthorizeRequest, AuthorizeStartBody, parse_body
from proctor.governor.service import Governor
from proctor.lineage.merkle import leaf_hash

REQUEST = AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", "hi"), executable_digest=EXE)
MEASURED: dict[str, Any] = {
    "executable": "/bin/echo",
    "executable_digest": EXE,
    "files": [{"path": "/bin/echo", "digest": EXE, "role": "executable"}],
    "script_index": None,
}


def _request_body(measurement: dict[str, Any] = MEASURED) -> dict[str, Any]:
    """A ``POST /v1/authorize/start`` body for ``REQUEST``."""
    return {
        "authorize": {
            "action": "exec",
            "resource": "/bin/echo",
            "argv": ["echo", "hi"],
            "executable_digest": EXE,
        },
        "start": {"measurement": measurement, "containment": ["cgroup"], "enforcer": "test"},
    }


def _plan(measurement: dict[str, Any] = MEASURED) -> Any:
    return parse_body(AuthorizeStartBody, _request_body(measurement)).start


def _authorize_start(
    gov: Governor, plan: Any = None, called: threading.Event | None = None
) -> tuple[Any, Any]:
    """What the endpoint runs for ``POST /v1/authorize/start`` in exclusive mode."""
    chain = functools.partial(_chain, gov, "alice", REQUEST, plan or _plan(), "bm9uY2Utb2YtdGhlLXRlc3Q")

    def chained(op: Any, notify: Any) -> Any:
        try:
            return chain(op, notify)
        finally:
            if called is not None:
                called.set()

    return asyncio.run(_authorize_chained(gov.authorizer, "alice", REQUEST, chained))


@pytest.fixture
def quota_data(gov_data: Path) -> Path:
    config = gov_data / "config.toml"
    config.write_text(config.read_text() + "\n[quotas.principals.alice]\nmax_running = 1\n")
    return gov_data


@pytest.fixture
def gov(quota_data: Path) -> Iterator[Governor]:
    with Governor(quota_data) as governor:
        alice = PrincipalKey.generate("alice")
        governor.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        governor.push_policy(signed_bundle(quota_data, POLICIES / "basic"), by="admin")
        yield governor


def _leaf(gov: Governor, index: int) -> dict[str, Any]:
    return dict(json.loads(gov.log.leaf(index)))


def test_the_start_is_queued_before_the_authorization_is_durable_and_both_are_recorded(gov: Governor) -> None:
    called = threading.Event()
    outcome: list[tuple[Any, Any]] = []
    size = gov.log.size
    with held_commits(gov.log._store) as (holding, release):
        worker = threading.Thread(target=lambda: outcome.append(_authorize_start(gov, called=called)))
        worker.start()
        assert called.wait(10), "the start was not chained"
        assert gov.log._store.tree_size() == size  # queued while nothing of the authorization is durable
        assert holding.wait(10)
        release.set()
        worker.join(30)
    result, started = outcome[0]
    assert result.allowed, result.decision.reason
    assert isinstance(started, dict), started
    assert started["log_index"] == result.warrant_index + 1  # right behind warrant.issued
    event = _leaf(gov, started["log_index"])
    assert (event["type"], event["warrant"], event["execution"]) == (
        "execution.started",
        result.warrant_id,
        started["execution"],
    )
    assert event["parent"]["index"] == result.warrant_index
    assert (
        event["parent"]["leaf_hash"]
        == __import__("base64").b64encode(leaf_hash(gov.log.leaf(result.warrant_index))).decode()
    )
    assert "lease_sig" in started  # signed for the request's nonce, as a start after the commit
    row = gov.state.execution(started["execution"])
    assert row is not None
    assert row["indices"] == [result.log_index, result.warrant_index, started["log_index"]]
    assert json.loads(row["request"]) == gov.executions._full_request(
        result.log_index, _leaf(gov, result.log_index)
    )
    assert json.loads(row["request"])["argv"] == ["echo", "hi"]  # the arguments, revealed
    assert gov.executions.renew("alice", started["execution"], {"integrity": "ok"})["ok"] is True
    assert gov.log.check_all().ok


def test_a_failed_authorization_commit_takes_its_start_with_it(gov: Governor) -> None:
    store = gov.log._store
    commit = store.append
    failed = threading.Event()

    def broken(*args: Any, **kwargs: Any) -> None:
        if not failed.is_set():
            failed.set()
            raise StoreError("the disk is full (simulated)")
        commit(*args, **kwargs)

    size = gov.log.size
    store.append = broken  # type: ignore[method-assign]
    try:
        result, started = _authorize_start(gov)
    finally:
        store.append = commit  # type: ignore[method-assign]
    assert not result.allowed
    assert result.warrant is None
    # Failed with it: queued behind it (failed as queued after a failure), or, if the
    # log had already re-sequenced, refused by the writer's check of its parent link,
    # which names the warrant.issued entry that was never written.
    assert isinstance(started, (LineageError, StoreError, EventError)), started
    assert gov.log.size == size  # nothing recorded: neither the authorization nor the start
    assert gov.state.execution_summaries(principal="alice", live_only=True, limit=10) == []
    # The quota slot (max_running = 1) and the claim were given back: the next one starts.
    result, started = _authorize_start(gov)
    assert result.allowed, result.decision.reason
    assert isinstance(started, dict), started
    assert gov.log.check_all().ok


def test_a_start_refused_before_it_is_queued_leaves_the_authorization_recorded(gov: Governor) -> None:
    other = "sha256:" + "0" * 64
    plan = _plan(
        {**MEASURED, "executable_digest": other, "files": [{**MEASURED["files"][0], "digest": other}]}
    )
    result, started = _authorize_start(gov, plan)
    assert result.allowed, result.decision.reason  # decided, minted and recorded...
    assert isinstance(started, WarrantError), started  # ...but not for what was measured
    assert "does not cover" in str(started)
    assert _leaf(gov, result.warrant_index)["type"] == "warrant.issued"
    assert gov.log.size == result.warrant_index + 1  # nothing started behind it
    assert gov.state.warrant(result.warrant_id) is not None
    # The claim and the quota slot (max_running = 1) were given back: the next one starts.
    result, started = _authorize_start(gov)
    assert isinstance(started, dict), started
    assert gov.log.check_all().ok


def test_a_warrant_minted_by_the_helper_is_not_chained(gov_data: Path) -> None:
    with Governor(gov_data, mint_helper=True) as helped:
        alice = PrincipalKey.generate("alice")
        helped.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        helped.push_policy(signed_bundle(gov_data, POLICIES / "basic"), by="admin")
        helped.log.busy = True  # as after a batch of several callers: the helper mints
        result, started = _authorize_start(helped)
        assert result.allowed, result.decision.reason
        assert started is None  # the endpoint starts it after the commit (rule 3)
        assert helped.log.size == result.warrant_index + 1


def test_nothing_is_chained_while_a_trust_change_holds_the_ordering_lock(gov: Governor) -> None:
    with gov.executions._gate:  # as a revocation does until it is durable
        outcome: list[tuple[Any, Any]] = []
        worker = threading.Thread(target=lambda: outcome.append(_authorize_start(gov)))
        worker.start()
        worker.join(10)
        assert not worker.is_alive(), "the event loop waited for the trust change"
    result, started = outcome[0]
    assert result.allowed, result.decision.reason
    assert started is None  # rule 3, after the commit, in a worker thread
    assert gov.log.size == result.warrant_index + 1
    assert gov.executions.start("alice", _body(result.warrant))["execution"]  # claim and slot free


def _body(warrant: str) -> dict[str, Any]:
    return {"warrant": warrant, "action": "exec", "resource": "/bin/echo", "argv": ["echo", "hi"],
            "measurement": MEASURED}  # fmt: skip


def _ended_unanswered(gov: Governor) -> list[dict[str, Any]]:
    events = [_leaf(gov, i) for i in range(gov.log.size)]
    return [e for e in events if e["type"] == "execution.terminated" and e["reason"] == "not-answered"]


def test_a_recorded_start_whose_answer_fails_is_ended_at_once(gov: Governor) -> None:
    plan = _plan()
    chain = functools.partial(
        _chain, gov, "alice", REQUEST, plan, "not a nonce"
    )  # its answer cannot be signed
    result, started = asyncio.run(_authorize_chained(gov.authorizer, "alice", REQUEST, chain))
    assert result.allowed, result.decision.reason
    assert isinstance(started, Exception), started
    [ended] = _ended_unanswered(gov)
    assert ended["parent"]["index"] == result.warrant_index + 1  # the start, ended
    result, again = _authorize_start(gov)  # max_running = 1: the slot was freed
    assert isinstance(again, dict), again
    assert gov.log.check_all().ok


def test_a_cancelled_request_ends_the_start_it_recorded(gov: Governor) -> None:
    called = threading.Event()
    plan = _plan()
    chain = functools.partial(_chain, gov, "alice", REQUEST, plan, "bm9uY2Utb2YtdGhlLXRlc3Q")

    def chained(op: Any, notify: Any) -> Any:
        try:
            return chain(op, notify)
        finally:
            called.set()

    async def cancelled() -> None:
        task = asyncio.ensure_future(_authorize_chained(gov.authorizer, "alice", REQUEST, chained))
        await asyncio.to_thread(called.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()  # the commit goes on; the recorded start is ended behind it
        for _ in range(400):  # the server's loop goes on too (asyncio.run would cancel)
            summaries = gov.state.execution_summaries(principal="alice", live_only=False, limit=10)
            if any(s.status == "failed" for s in summaries):
                return
            await asyncio.sleep(0.025)
        raise AssertionError("the cancelled request's start was not ended")

    with held_commits(gov.log._store) as (_holding, release):
        asyncio.run(cancelled())
    [ended] = _ended_unanswered(gov)
    assert "cancelled" in ended["detail"]
    _, again = _authorize_start(gov)  # max_running = 1: the slot was freed
    assert isinstance(again, dict), again
    assert gov.log.check_all().ok


def test_through_proctor_serve_the_authorization_and_its_start_share_a_commit(tmp_path: Path) -> None:
    import sqlite3

    from gov_server import GovernorServer, client_of

    server = GovernorServer(tmp_path / "gov", policy=POLICIES / "basic")
    try:
        body = _request_body()
        answers = []
        with client_of(server) as client:
            for _ in range(5):
                answer = client.json("POST", "/v1/authorize/start", body)
                answers.append(answer)
                client.json("POST", f"/v1/executions/{answer['execution']['execution']}/finish",
                            {"outcome": "completed", "exit_status": 0})  # fmt: skip
        with sqlite3.connect(f"file:{server.data / 'proctor.db'}?mode=ro", uri=True) as db:
            sizes = {int(r[0]) for r in db.execute("SELECT size FROM checkpoints")}
    finally:
        server.stop()
    shared = 0
    for answer in answers:
        issued, started = answer["authorization"]["warrant"]["log_index"], answer["execution"]["log_index"]
        assert started == issued + 1
        assert started + 1 in sizes  # durable once both are
        shared += issued + 1 not in sizes  # no checkpoint between them: one commit
    assert shared >= 1, "no authorization shared its commit with its start"


@pytest.mark.parametrize("change", ["revoke", "suspend"])
def test_a_trust_change_racing_the_chained_start_is_seen(
    gov: Governor, quota_data: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The principal revoked or suspended while its start is being chained (here: as the
    warrant is claimed): the start is refused, chained (re-checked under the ordering
    lock) or not (the lock was held: the start after the commit refuses it), and the log
    shows no execution started after the change."""
    import time

    from log_invariants import check_log

    registry = gov.executions.registry
    claim = registry.claim
    fired: list[str] = []

    def claim_during_a_change(key: str) -> bool:
        claimed = claim(key)
        if key.startswith("wr_") and not fired:
            fired.append(key)

            def act() -> None:
                if change == "revoke":
                    gov.revoke("principal", "alice", reason="race", by="admin")
                else:
                    gov.set_principal_status("alice", "suspended", by="admin")

            threading.Thread(target=act).start()
            time.sleep(0.3)  # the change is queued, holding the ordering lock until durable
        return claimed

    monkeypatch.setattr(registry, "claim", claim_during_a_change)
    result, started = _authorize_start(gov)
    assert fired
    assert result.allowed, result.decision.reason  # decided before the change
    if started is None:  # not chained: the start after the commit (rule 3) is refused
        with pytest.raises((PrincipalError, WarrantError)):
            gov.executions.start("alice", _body(result.warrant))
    else:
        assert isinstance(started, (PrincipalError, WarrantError)), started
    time.sleep(0.3)
    gov.close()
    report = check_log(quota_data)
    assert report.ok, report
    assert report.executions_started == 0
