"""The revocation stream against a keyless or greedy client: it needs a signature from
an active principal, carries only what that principal may see, is capped per principal
and in total, and a flood of keyless connections cannot keep ``proctor revoke`` (or
any signed call) out."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi_support import OpenStream, acall, signed
from gov_exec import allow, start_body
from gov_server import GovernorServer
from gov_support import EXE, POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.governor.app import GovernorApp, create_app
from proctor.governor.service import Governor
from proctor.governor.stream import StreamSlots


def keys(data: Path) -> tuple[PrincipalKey, PrincipalKey, PrincipalKey]:
    return (
        PrincipalKey.load(data / "keys" / "admin.key"),
        PrincipalKey.load(data / "alice.key"),
        PrincipalKey.load(data / "bob.key"),
    )


def start_execution(gov: Governor, principal: str) -> str:
    token = allow(gov, "hi", principal=principal)
    return str(gov.executions.start(principal, start_body(token, "hi"))["execution"])


def stream(app: GovernorApp, key: PrincipalKey | None, target: str = "/v1/stream?since=-1") -> OpenStream:
    return OpenStream(app, target, signed(key, "GET", target) if key is not None else [])


async def revoke(app: GovernorApp, admin: PrincipalKey, kind: str, target: str) -> None:
    body = json.dumps({"kind": kind, "target": target, "reason": "test"}).encode()
    answer = await acall(
        app, "POST", "/v1/revocations", headers=signed(admin, "POST", "/v1/revocations", body), body=body
    )
    assert answer.status == 200, answer.body


def seen(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e.get("kind", "") + ":" + e.get("target", e.get("bundle", ""))) for e in events]


async def events_until(s: OpenStream, last: tuple[str, str]) -> list[dict[str, Any]]:
    """The stream's messages up to the recorded copy of ``last`` (a revocation also goes
    out before it is recorded, ``"recorded": false``: ADR 0021)."""
    got: list[dict[str, Any]] = []
    while not got or seen(got[-1:]) != [last] or got[-1].get("recorded") is False:
        got.append(await s.event())
    return got


def recorded(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return seen([e for e in events if e.get("recorded") is not False])


def early(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The copies pushed before the record, each checked to come before its recorded copy."""
    out = []
    for i, e in enumerate(events):
        if e.get("recorded") is False:
            assert e["seq"] == -1
            assert seen([e])[0] in recorded(events[i + 1 :]), "an early copy came after its record"
            out.append(seen([e])[0])
    return out


def test_the_stream_refuses_unsigned_and_inactive_callers(governor: Governor, gov_data: Path) -> None:
    _, alice, bob = keys(gov_data)
    app = create_app(governor)
    bobs = start_execution(governor, "bob")
    governor.set_principal_status("bob", "suspended", by="admin")

    async def scenario() -> None:
        cases = [
            (None, "/v1/stream", 401),  # no key
            (bob, "/v1/stream", 403),  # suspended
            (alice, f"/v1/stream?execution={bobs}", 403),  # someone else's execution
            (alice, "/v1/stream?since=99999999999999999999", 422),
        ]
        for key, target, status in cases:
            s = stream(app, key, target)
            assert await s.started() == status, (target, s.body)
            await s.close()
        assert app.streams.slots.open() == 0

    asyncio.run(scenario())


def test_the_stream_carries_only_what_its_caller_may_see(governor: Governor, gov_data: Path) -> None:
    admin, alice, bob = keys(gov_data)
    app = create_app(governor)
    alices, bobs = start_execution(governor, "alice"), start_execution(governor, "bob")
    alices_warrant = str(governor.state.execution(alices)["warrant"])  # type: ignore[index]

    async def scenario() -> None:
        since = governor.log.size - 1
        await revoke(app, admin, "execution", bobs)  # before the streams open: their backlog
        streams = {
            "alice": stream(app, alice, f"/v1/stream?since={since}&execution={alices}"),
            "bob": stream(app, bob, f"/v1/stream?since={since}"),
            "admin": stream(app, admin, f"/v1/stream?since={since}"),
        }
        for s in streams.values():
            assert await s.started() == 200
        await revoke(app, admin, "warrant", alices_warrant)
        pushed = await asyncio.to_thread(
            governor.push_policy, signed_bundle(gov_data, POLICIES / "basic", version=2), by="admin"
        )
        await revoke(app, admin, "principal", "bob")
        await revoke(app, admin, "policy", pushed["bundle"])  # everyone sees it: the last event
        last = ("revocation", "policy:" + pushed["bundle"])
        got = {name: await events_until(s, last) for name, s in streams.items()}
        for s in streams.values():
            await s.close()
        policy = ("policy", ":" + pushed["bundle"])
        assert recorded(got["alice"]) == [("revocation", "warrant:" + alices_warrant), policy, last]
        assert recorded(got["bob"]) == [
            ("revocation", "execution:" + bobs),
            policy,
            ("revocation", "principal:bob"),
            last,
        ]
        assert recorded(got["admin"]) == [
            ("revocation", "execution:" + bobs),
            ("revocation", "warrant:" + alices_warrant),
            policy,
            ("revocation", "principal:bob"),
            last,
        ]
        # The live revocations also came before their record, to the same audience (bob's
        # execution was revoked before any stream opened: only its record, in the backlog).
        assert early(got["alice"]) == [("revocation", "warrant:" + alices_warrant), last]
        assert early(got["bob"]) == [("revocation", "principal:bob"), last]
        assert early(got["admin"]) == [
            ("revocation", "warrant:" + alices_warrant),
            ("revocation", "principal:bob"),
            last,
        ]
        assert app.streams.slots.open() == 0

    asyncio.run(scenario())


def test_a_suspended_principal_loses_its_stream(governor: Governor, gov_data: Path) -> None:
    _, alice, _ = keys(gov_data)
    app = create_app(governor)
    app.streams.keepalive = 0.1

    async def scenario() -> None:
        s = stream(app, alice)
        assert await s.started() == 200
        await asyncio.to_thread(governor.set_principal_status, "alice", "suspended", by="admin")
        await asyncio.wait_for(s.ended.wait(), 30)
        await s.close()
        assert app.streams.slots.open() == 0

    asyncio.run(scenario())


def test_streams_are_capped_per_principal_and_in_total(governor: Governor, gov_data: Path) -> None:
    admin, alice, bob = keys(gov_data)
    app = create_app(governor, streams=StreamSlots(total=3, per_principal=2))

    async def scenario() -> None:
        a1, a2 = stream(app, alice), stream(app, alice)
        assert [await a1.started(), await a2.started()] == [200, 200]
        a3 = stream(app, alice)
        assert await a3.started() == 429, a3.body
        b1 = stream(app, bob)
        assert await b1.started() == 200
        b2 = stream(app, bob)
        assert await b2.started() == 429, b2.body  # the total is reached
        # Full: authorize and revoke still get through.
        body = json.dumps(
            {"action": "exec", "resource": "/bin/echo", "argv": ["echo"], "executable_digest": EXE}
        )
        raw = body.encode()
        authorized = await acall(
            app, "POST", "/v1/authorize", headers=signed(bob, "POST", "/v1/authorize", raw), body=raw
        )
        assert authorized.status == 200, authorized.body
        await revoke(app, admin, "execution", start_execution(governor, "alice"))
        # A stream that ends gives its slot back.
        for s in (a3, b2, a1):
            await s.close()
        b3 = stream(app, bob)
        assert await b3.started() == 200
        for s in (a2, b1, b3):
            await s.close()
        assert app.streams.slots.open() == 0

    asyncio.run(scenario())


# -- a keyless flood against a real server ------------------------------------------------

NOFILE = 512


@pytest.fixture
def starved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GovernorServer]:
    """``proctor serve`` allowed only NOFILE file descriptors (soft and hard)."""
    real = subprocess.Popen

    def low(args: Any, **kw: Any) -> subprocess.Popen[Any]:
        limit = (NOFILE, NOFILE)
        return real(args, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit), **kw)

    monkeypatch.setattr(subprocess, "Popen", low)  # the one gov_server starts `proctor serve` with
    server = GovernorServer(tmp_path, policy=Path(__file__).parents[1] / "integration" / "policies" / "run")
    monkeypatch.undo()
    yield server
    server.stop()


@pytest.mark.slow
def test_keyless_connections_cannot_keep_out_a_revocation(starved: GovernorServer) -> None:
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proctor",
            "run",
            "--server",
            starved.url,
            "--key",
            str(starved.key),
            "--",
            "sleep",
            "300",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    flood: list[socket.socket] = []
    try:
        assert run.stderr is not None
        match = re.search(r"execution (ex_[a-z0-9]+) started", run.stderr.readline())
        assert match, "proctor run did not start"
        # Twice the server's descriptors: keyless stream requests, and connections that
        # never say anything. The old server held each of them open for good.
        for i in range(2 * NOFILE):
            sock = socket.create_connection(("127.0.0.1", starved.port), timeout=30)
            if i % 2 == 0:
                sock.sendall(b"GET /v1/stream HTTP/1.1\r\nhost: x\r\n\r\n")
            flood.append(sock)
        revoked = starved.admin("revoke", "--execution", match.group(1), "--reason", "flood", check=False)
        assert revoked.returncode == 0, revoked.stderr
        run.wait(timeout=60)
        assert run.returncode == 79
        assert "revoked" in run.stderr.read()
    finally:
        for sock in flood:
            sock.close()
        run.kill()
        run.wait(timeout=10)
        if run.stderr is not None:
            run.stderr.close()
