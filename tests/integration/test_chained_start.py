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
  leaves the authorization recorded and its warrant unused; nothing started.
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
from proctor.errors import EventError, LineageError, StoreError, WarrantError
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


def _plan(measurement: dict[str, Any] = MEASURED) -> Any:
    body = {
        "authorize": {
            "action": "exec",
            "resource": "/bin/echo",
            "argv": ["echo", "hi"],
            "executable_digest": EXE,
        },
        "start": {"measurement": measurement, "containment": ["cgroup"], "enforcer": "test"},
    }
    return parse_body(AuthorizeStartBody, body).start


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
