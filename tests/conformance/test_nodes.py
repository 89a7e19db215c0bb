"""Several governor processes on one store (``proctor serve --shared``, ADR 0016): any of
them serves any request, and none of them is fooled by what another one saw.

Each test opens two or three governors in shared mode on one data directory, in this
process (each has its own log writer, sequencer lock, state connections and caches, as
separate processes would); ``tests/integration/test_nodes_processes.py`` runs real ``proctor
serve --shared`` processes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_exec import Clock, allow, start_body
from gov_support import POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.authorization.warrants import verify_warrant
from proctor.errors import AuthenticationError, ExecutionConflictError, ProctorError, QuotaError, StoreError
from proctor.governor.follower import FollowedBroadcaster, PollingSignal, TrustFollower
from proctor.governor.issuance import DEFAULT_LEASE_TTL_MS
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor
from proctor.governor.stream import sse_stream


def open_nodes(data: Path, count: int = 3, clock: Clock | None = None) -> list[Governor]:
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    return [Governor(data, node=f"node-{n}", shared=True, **extra) for n in "abcdef"[:count]]


@pytest.fixture
def nodes(gov_data: Path, governor: Governor) -> Iterator[list[Governor]]:
    """Three shared governors on the fixture's data directory (its own governor closed)."""
    governor.close()
    opened = open_nodes(gov_data)
    try:
        yield opened
    finally:
        for gov in opened:
            gov.close()


def events(gov: Governor, kind: str) -> list[dict[str, Any]]:
    found = [json.loads(gov.log.leaf(i)) for i in range(gov.log.size)]
    return [e for e in found if e["type"] == kind]


def start(gov: Governor, token: str, arg: str) -> str:
    return str(gov.executions.start("alice", start_body(token, arg))["execution"])


def test_a_nonce_used_on_one_process_is_refused_on_every_other(gov_data: Path, nodes: list[Governor]) -> None:
    a, b, c = nodes
    alice = PrincipalKey.load(gov_data / "alice.key")
    now = int(a.now())
    captured = sign_request("GET", "/v1/executions", b"", alice, now=now)
    assert a.authenticate("GET", "/v1/executions", b"", captured) == "alice"
    for other in (b, c):
        with pytest.raises(AuthenticationError) as refused:
            other.authenticate("GET", "/v1/executions", b"", captured)
        assert refused.value.reason == "replayed"
    with pytest.raises(AuthenticationError):  # and on the first one again (its memory)
        a.authenticate("GET", "/v1/executions", b"", captured)
    fresh = sign_request("GET", "/v1/executions", b"", alice, now=now)
    assert c.authenticate("GET", "/v1/executions", b"", fresh) == "alice"
    # The refusals are recorded (in transactions of their own, not in the log writer's turn).
    deadline = time.monotonic() + 10
    while len([f for f in b.state.auth_failures() if f["reason"] == "replayed"]) < 3:
        assert time.monotonic() < deadline, b.state.auth_failures()
        time.sleep(0.01)


def test_a_nonce_claimed_concurrently_on_two_processes_is_accepted_once(
    gov_data: Path, nodes: list[Governor]
) -> None:
    a, b, _ = nodes
    alice = PrincipalKey.load(gov_data / "alice.key")
    signed = [sign_request("GET", "/v1/executions", b"", alice, now=int(a.now())) for _ in range(20)]

    async def one(gov: Governor, headers: dict[str, str]) -> bool:
        try:
            await gov.authenticate_async("GET", "/v1/executions", b"", headers)
        except AuthenticationError:
            return False
        return True

    async def everyone() -> list[bool]:
        return await asyncio.gather(*(one(gov, h) for h in signed for gov in (a, b)))

    answers = asyncio.run(everyone())
    assert sum(answers) == len(signed)  # each request once, on one of the two


def test_an_execution_started_on_one_process_is_renewed_and_finished_on_another(
    nodes: list[Governor],
) -> None:
    a, b, c = nodes
    ex = start(a, allow(a, "failover"), "failover")
    renewed = b.executions.renew("alice", ex, {})
    assert renewed["ok"] is True
    row = b.state.execution(ex)
    assert row is not None
    assert row["lease_expires_ms"] == renewed["lease_expires_ms"]  # written through
    assert c.executions.renew("alice", ex, {})["ok"] is True
    done = b.executions.finish("alice", ex, {"outcome": "completed", "exit_status": 0})
    assert done["status"] == "completed"
    with pytest.raises(ExecutionConflictError):  # ended once, whichever process is asked
        a.executions.finish("alice", ex, {"outcome": "completed", "exit_status": 0})
    assert c.executions.renew("alice", ex, {})["ok"] is False
    assert len(events(a, "execution.completed")) == 1


def test_a_renewal_on_another_process_sees_a_revocation(nodes: list[Governor]) -> None:
    a, b, _ = nodes
    ex = start(a, allow(a, "revoked"), "revoked")
    a.revoke("execution", ex, reason="test", by="admin")
    answer = b.executions.renew("alice", ex, {})
    assert (answer["ok"], answer["terminate"]) == (False, "revoked")


def test_the_sweeper_does_not_close_an_execution_another_process_renewed(
    gov_data: Path, governor: Governor
) -> None:
    governor.close()
    clock = Clock()
    a, b, c = opened = open_nodes(gov_data, clock=clock)
    try:
        t0 = clock.now
        ex = start(a, allow(a, "lease"), "lease")
        ttl = DEFAULT_LEASE_TTL_MS / 1000
        clock.now = t0 + 0.8 * ttl
        assert b.executions.renew("alice", ex, {})["ok"] is True  # on B only: A never heard of it
        clock.now = t0 + ttl + 2.0  # A's own lease of it lapsed, with the sweep's grace
        assert a.executions.sweep() == []
        row = a.state.execution(ex)
        assert row is not None
        assert row["status"] == "running"
        clock.now = t0 + 1.8 * ttl + 2.0  # B's renewal lapsed too: any process closes it, once
        closed = [c.executions.sweep(), a.executions.sweep(), b.executions.sweep()]
        assert closed == [[ex], [], []]
        assert [e["reason"] for e in events(a, "execution.terminated")] == ["supervisor-lost"]
        assert b.executions.renew("alice", ex, {})["ok"] is False  # and never revived
    finally:
        for gov in opened:
            gov.close()


def concurrently(calls: list[Any]) -> list[Any]:
    """Run the calls at once, in threads; their results or the exceptions they raised."""
    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except ProctorError as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_max_running_holds_across_processes(gov_data: Path, governor: Governor) -> None:
    tokens = [allow(governor, f"q{i}") for i in range(6)]
    governor.close()
    (gov_data / "config.toml").write_text("[quotas]\nmax_running = 2\n")
    opened = open_nodes(gov_data)
    try:
        calls = [
            (lambda gov=gov, token=token, i=i: start(gov, token, f"q{i}"))
            for i, (token, gov) in enumerate(zip(tokens, opened * 2, strict=True))
        ]
        results = concurrently(calls)
        started = [r for r in results if isinstance(r, str)]
        refused = [r for r in results if isinstance(r, QuotaError)]
        assert (len(started), len(refused)) == (2, 4), results
        assert all(r.quota == "max_running" for r in refused)
        assert opened[0].state.running_count("alice") == 2
    finally:
        for gov in opened:
            gov.close()


def test_a_warrant_starts_one_execution_across_processes(nodes: list[Governor]) -> None:
    a, b, c = nodes
    token = allow(a, "once")
    results = concurrently([lambda gov=gov: start(gov, token, "once") for gov in (a, b, c)])
    started = [r for r in results if isinstance(r, str)]
    assert len(started) == 1, results
    assert all(isinstance(r, ExecutionConflictError) for r in results if not isinstance(r, str)), results
    assert len(events(a, "execution.started")) == 1


# -- trust changes recorded by another process ------------------------------------------


def followed(gov: Governor) -> TrustFollower:
    assert gov.follower is not None
    gov.follower.poll()  # what its thread does every few milliseconds, now
    return gov.follower


def test_a_suspension_on_one_process_is_enforced_by_every_other(nodes: list[Governor]) -> None:
    a, b, _ = nodes
    allow(b, "cached")  # alice is in B's principal cache, active
    a.set_principal_status("alice", "suspended", by="admin")
    followed(b)
    record = b.principal("alice")
    assert record is not None
    assert record.status == "suspended"
    denied = b.authorize("alice", AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo",)))
    assert not denied.allowed


def test_a_policy_activated_on_one_process_decides_on_every_other(
    gov_data: Path, nodes: list[Governor]
) -> None:
    a, b, c = nodes
    pushed = a.push_policy(signed_bundle(gov_data, POLICIES / "basic", version=2), by="admin")
    for other in (b, c):
        followed(other)
        assert other.engine is not None
        assert other.engine.bundle_digest == pushed["bundle"]
    a.revoke("policy", pushed["bundle"], reason="leaked", by="admin")
    followed(b)
    assert b.engine is None  # withdrawn everywhere: nothing decides until a newer bundle
    assert not b.ready()[0]


def test_every_process_streams_every_recorded_change_once_in_log_order(nodes: list[Governor]) -> None:
    a, b, c = nodes
    tokens = [allow(a, f"s{i}") for i in range(3)]
    warrants = [verify(a, t) for t in tokens]

    async def watch() -> list[list[dict[str, Any]]]:
        queues = [gov.broadcaster.subscribe() for gov in nodes]
        await asyncio.to_thread(a.revoke, "warrant", warrants[0], reason="r", by="admin")
        await asyncio.to_thread(b.revoke, "warrant", warrants[1], reason="r", by="admin")
        await asyncio.to_thread(c.revoke, "warrant", warrants[2], reason="r", by="admin")
        seen: list[list[dict[str, Any]]] = []
        for queue in queues:
            got: list[dict[str, Any]] = []
            while len([m for m in got if m.get("recorded") is not False]) < 3:
                got.append(await asyncio.wait_for(queue.get(), 10))
            await asyncio.sleep(0.2)  # and nothing more (a second copy would be here by now)
            assert queue.empty()
            seen.append(got)
        return seen

    seen = asyncio.run(watch())
    for gov, got in zip(nodes, seen, strict=True):
        records = [m for m in got if m.get("recorded") is not False]
        assert [m["target"] for m in records] == warrants
        assert [m["seq"] for m in records] == sorted(m["seq"] for m in records)
        # Besides, the node that took a revocation pushed it before its record (seq -1,
        # ADR 0021); on SQLite no other node hears of it before it is recorded.
        taken = warrants[nodes.index(gov)]
        assert [(m["target"], m["seq"]) for m in got if m.get("recorded") is False] == [(taken, -1)]


def verify(gov: Governor, token: str) -> str:
    return verify_warrant(
        token, root_public_key=gov.warrant_public_key, now=int(gov.now()), request=None
    ).warrant_id


def test_a_process_that_cannot_follow_the_others_stops_serving(nodes: list[Governor]) -> None:
    a, _, _ = nodes
    ex = start(a, allow(a, "lag"), "lag")
    assert a.follower is not None
    a.follower.close()  # its own follower would say it caught up: this one cannot read

    def unreadable(start: int, end: int) -> list[tuple[int, bytes]]:
        raise StoreError("the store cannot be read")

    stuck = TrustFollower(
        trust=a.trust,
        state=a.state,
        size=lambda: a.log.size + 1,  # something new, which it cannot read
        entries=unreadable,
        revoked_execution=a.executions.revoked,
        admin_lock=a.recorder.admin_lock,
        broadcaster=FollowedBroadcaster(PollingSignal()),
        signal=PollingSignal(),
        start=a.log.size,
        stale_after=0.0,
    )
    assert stuck.follow() is False
    assert a.trust.lagging is not None
    assert not a.ready()[0]
    denied = a.authorize("alice", AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo",)))
    assert not denied.allowed
    with pytest.raises(StoreError):  # not "revoked": the enforcer fails over, or its lease ends
        a.executions.renew("alice", ex, {})
    a.trust.set_lagging(None)
    assert a.executions.renew("alice", ex, {})["ok"] is True


def test_an_unrecorded_revocation_still_reaches_every_stream(nodes: list[Governor]) -> None:
    a, _, _ = nodes
    seen: list[bytes] = []

    async def watch() -> None:
        frames = sse_stream(a.broadcaster, lambda since: [], since=10, keepalive=5.0)
        assert b"live" in await anext(frames)
        a.broadcaster.publish({"type": "revocation", "seq": -1, "kind": "execution", "target": "ex_x"})
        seen.append(await asyncio.wait_for(anext(frames), 10))
        await frames.aclose()

    asyncio.run(watch())
    assert b'"target":"ex_x"' in seen[0]


def test_rate_counters_count_the_warrants_every_process_issued(nodes: list[Governor]) -> None:
    a, b, _ = nodes
    now = int(b.now())
    before = b.counters.counts("alice", now)["rate_1m"]  # B's window of alice, loaded
    for i in range(3):
        allow(a, f"rate{i}")
    allow(b, "rate-b")
    followed(b)
    assert b.counters.counts("alice", int(b.now()))["rate_1m"] == before + 4
