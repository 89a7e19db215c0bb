"""The governor's HTTP boundary against a hostile client: oversized bodies and heads are
refused before they are read, ambiguous JSON and repeated signature fields are refused,
bad input is a 4xx on every route, and raw warrant tokens are not public."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from asgi_support import Answer, acall, call, signed
from gov_exec import allow, start_body
from gov_server import GovernorServer, cli
from gov_support import EXE
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import content_digest
from proctor.governor.app import GovernorApp, create_app
from proctor.governor.limits import MAX_BODY, MAX_HEAD_BYTES
from proctor.governor.service import Governor

POLICIES = Path(__file__).parents[1] / "integration" / "policies"
CHUNK = 64 << 10
PARAMS = {
    "execution_id": "ex_1",
    "name": "alice",
    "index": "0",
    "approval_id": "ap_" + "a" * 24,
    "verdict": "approve",
}


def every_route(app: GovernorApp) -> list[tuple[str, str]]:
    """(method, concrete path) of every declared route."""
    out = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            path = re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], route.path)
            out += [(method, path) for method in sorted(route.methods or ())]
    return out


@pytest.fixture
def app(governor: Governor) -> GovernorApp:
    return create_app(governor)


def keys(data: Path) -> tuple[PrincipalKey, PrincipalKey, PrincipalKey]:
    return (
        PrincipalKey.load(data / "keys" / "admin.key"),
        PrincipalKey.load(data / "alice.key"),
        PrincipalKey.load(data / "bob.key"),
    )


def start_execution(gov: Governor, principal: str) -> tuple[str, str]:
    """A running execution of ``principal`` and its warrant token."""
    token = allow(gov, "hi", principal=principal)
    return gov.executions.start(principal, start_body(token, "hi"))["execution"], token


# -- bodies -----------------------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(app: GovernorApp) -> None:
    routes = every_route(app)
    assert ("PUT", "/v1/policy") in routes
    assert ("POST", "/v1/authorize") in routes
    for method, path in routes:
        endless = (b"x" * CHUNK for _ in range(10_000))
        answer = call(app, method, path, headers=[("content-length", str(400 << 20))], chunks=endless)
        assert answer.status == 413, (method, path, answer.status, answer.body)
        assert answer.pulled == 0, (method, path)
        assert answer.headers.get("connection") == "close", (method, path)


def test_a_chunked_body_over_the_limit_is_cut_off_early(app: GovernorApp) -> None:
    for method, path in every_route(app):
        endless = (b"x" * CHUNK for _ in range(1024))  # 64 MiB if read whole
        answer = call(app, method, path, headers=[("transfer-encoding", "chunked")], chunks=endless)
        assert answer.pulled <= MAX_BODY + CHUNK, (method, path, answer.pulled)
        assert answer.status == 413 or answer.headers.get("connection") == "close", (method, path, answer)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(tmp_path_factory.mktemp("boundary"), policy=POLICIES / "run")  # dev runs anything
    yield gov
    gov.stop()


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def connect(gov: GovernorServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gov.port), timeout=30)
    sock.settimeout(30)
    return sock


def status_of(sock: socket.socket) -> int:
    """The status of the answer on ``sock`` (0: the connection was reset or closed)."""
    try:
        head = sock.recv(4096)
    except (ConnectionResetError, TimeoutError):
        return 0
    match = re.match(rb"HTTP/1\.1 (\d{3})", head)
    return int(match.group(1)) if match else 0


def test_an_oversized_body_never_grows_the_server(server: GovernorServer) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    before = peak_rss_kib(pid)
    # A declared 400 MiB: refused at once, nothing sent.
    with connect(server) as sock:
        sock.sendall(
            b"PUT /v1/policy HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % (400 << 20)
        )
        assert status_of(sock) == 413
    # 64 MiB chunked: the server stops reading (and closes) soon after the limit.
    total = 64 << 20
    sent = 0
    chunk = b"%x\r\n" % CHUNK + b"{" * CHUNK + b"\r\n"
    with connect(server) as sock:
        sock.sendall(b"PUT /v1/policy HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += CHUNK
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < total, "the server read a 64 MiB body to its end"
    grown_mib = (peak_rss_kib(pid) - before) / 1024
    assert grown_mib < 24, f"the server grew by {grown_mib:.0f} MiB"


# -- heads ------------------------------------------------------------------------------


def test_an_oversized_request_head_is_refused(app: GovernorApp, server: GovernorServer) -> None:
    many = call(app, "GET", "/v1/log/key", headers=[(f"x-f{i}", "1") for i in range(200)])
    assert many.status == 431
    long = call(app, "GET", "/v1/log/key", headers=[("x-pad", "a" * (MAX_HEAD_BYTES + 1))])
    assert long.status == 431
    # On the wire: a head that never ends is refused once over the limit, not buffered.
    with connect(server) as sock:
        sock.sendall(b"GET /v1/log/key HTTP/1.1\r\nhost: x\r\nx-pad: ")
        try:
            for _ in range(64):  # up to 4 MiB of one header value
                sock.sendall(b"a" * CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert status_of(sock) in (431, 0)
    with connect(server) as sock:
        sock.sendall(b"GET /v1/log/key HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * (MAX_HEAD_BYTES + 1024))
        assert status_of(sock) == 431


# -- ambiguity --------------------------------------------------------------------------


def test_duplicate_json_member_names_are_refused(app: GovernorApp, gov_data: Path) -> None:
    """Duplicate JSON member names are refused."""
    admin, alice, _ = keys(gov_data)
    cases = [
        (
            alice,
            "POST",
            "/v1/authorize",
            b'{"action":"exec","resource":"/usr/bin/rm","resource":"/bin/echo"}',
        ),
        (admin, "POST", "/v1/revocations", b'{"kind":"policy","target":"sha256:x","kind":"warrant"}'),
        (
            admin,
            "POST",
            "/v1/principals",
            b'{"name":"carol","public_key":"A","attrs":{"role":"dev","role":"admin"}}',
        ),
        (admin, "PUT", "/v1/policy", b'{"bundle":{},"bundle":{}}'),
    ]
    for key, method, path, body in cases:
        answer = call(app, method, path, headers=signed(key, method, path, body), body=body)
        assert answer.status == 422, (path, answer.status, answer.body)
        assert "unique member names" in answer.body.decode(), answer.body
    # The same member name in different objects is not a duplicate.
    body = b'{"action":"exec","resource":"/bin/echo","arguments":{"action":"x"},"executable_digest":"%s"}' % (
        EXE.encode()
    )
    ok = call(app, "POST", "/v1/authorize", headers=signed(alice, "POST", "/v1/authorize", body), body=body)
    assert ok.status == 200, ok.body


def test_a_repeated_signature_field_is_refused(app: GovernorApp, gov_data: Path) -> None:
    _, alice, bob = keys(gov_data)
    body = json.dumps({"action": "exec", "resource": "/bin/echo", "executable_digest": EXE}).encode()
    for method, path, raw in (("POST", "/v1/authorize", body), ("GET", "/v1/policy", b"")):  # fast, FastAPI
        genuine = dict(signed(alice, method, path, raw))
        forged = dict(signed(bob, method, path, raw))
        forged["Content-Digest"] = content_digest(b"something else")
        for name in ("Signature", "Signature-Input", "Content-Digest"):
            # Sent first or last: whichever one a server kept, it must refuse both.
            for fields in (
                [(name, forged[name]), *genuine.items()],
                [*genuine.items(), (name, forged[name])],
            ):
                answer = call(app, method, path, headers=fields, body=raw)
                assert answer.status == 401, (name, path, answer.status, answer.body)
                assert answer.json()["detail"]["reason"] == "malformed", answer.body


def test_a_malformed_public_key_is_refused_with_a_4xx(app: GovernorApp, gov_data: Path) -> None:
    admin, _, _ = keys(gov_data)
    for public_key in ("not base64!", "", base64.b64encode(b"short").decode(), "A" * 10_000):
        body = json.dumps({"name": "carol", "public_key": public_key}).encode()
        answer = call(
            app, "POST", "/v1/principals", headers=signed(admin, "POST", "/v1/principals", body), body=body
        )
        assert answer.status == 422, (public_key[:20], answer.status, answer.body)
        assert "public_key" in answer.body.decode()


BAD_BODIES = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b"1",
    b'"x"',
    b"{}",
    b'{"a":1,"a":2}',
    b"[" * 3000 + b"]" * 3000,
    b'{"x":1.5}',
    b'{"x":1e400}',
    b'{"x":9007199254740993}',
    # Floats are JSON now (ADR 0001): where an integer or a string is taken, they are refused.
    b'{"outcome":"completed","exit_status":0.0,"processes_killed":1.5,"resource_usage":{"cpu_ms":2.5}}',
    b'{"outcome":"terminated","reason":"revoked","signal":1e21,"detail":-0.0,"processes_killed":2.0}',
    b'{"integrity":1.0,"integrity_detail":0.5}',
    b'{"action":"mcp.call","resource":"a/b","arguments":{"t":0.7,"n":[1e-7,1e300]},"zone":0.5}',
    b'{"warrant":"x","measurement":{"tool":{"resource":"a/b","definition_digest":0.5}},"action":"mcp.call",'
    b'"resource":"a/b","arguments":{"t":0.7},"containment":[1.5],"enforcer":2.5}',
    b'{"name":"carol","public_key":"AAAA","attrs":{"role":0.5},"zone":1.0}',
    b'{"bundle":{"files":{"a.cedar":""},"schema":"","version":1.0},"signer":"admin","signature":""}',
    b'{"x":123456789012345678901234567890}',
    b'{"\\u0000":"\\ud800"}',
    b'{"kind":1,"target":[],"reason":{}}',
    b'{"kind":"principal","target":"nobody"}',
    b'{"kind":"execution","target":"' + b"x" * 5000 + b'"}',
    b'{"name":"../x","public_key":"AAAA"}',
    b'{"name":"carol","public_key":"!!"}',
    b'{"name":"ok1","public_key":"AAAA","attrs":[],"zone":5}',
    b'{"name":"ok2","public_key":"'
    + base64.b64encode(bytes(32)).decode().encode()
    + b'","attrs":{"a":{"b":1}}}',
    b'{"warrant":5,"measurement":[]}',
    b'{"warrant":"x","measurement":{"executable_digest":5},"action":"exec","resource":"/bin/echo","containment":5}',
    b'{"warrant":"x","measurement":{},"action":"exec","resource":"/bin/echo","argv":"echo","arguments":[]}',
    b'{"action":"exec","resource":"/bin/echo","argv":[1],"parent_warrant":"' + b"A" * 20000 + b'"}',
    b'{"integrity":5,"exit_code":"x","usage":[],"duration_ms":-1,"reason":7}',
    b'{"signed":{},"signatures":"x","bundle":[]}',
]
BAD_PARAMS = {
    "execution_id": ["x" * 300, "ex_%00", "..", "ex_nobody"],
    "name": ["nobody", "admin", "a%20b", "x" * 300],
    "index": ["-1", "99999999999999999999999", "abc"],
    "approval_id": ["x" * 300, "ap_%00", "..", "ap_nobody"],
    "verdict": ["deny", "approve2", "x" * 300],
}
BAD_QUERIES = [
    "?since=99999999999999999999999",
    "?since=-2",
    "?since=abc",
    "?execution=ex_nobody",
    "?index=-1&size=abc",
    "?index=99999999999999999999999&size=-4",
    "?old=5&new=1",
    "?old=-1",
    "?status=nonsense",
]


def test_no_route_answers_5xx_for_bad_input(app: GovernorApp, governor: Governor, gov_data: Path) -> None:
    admin, alice, _ = keys(gov_data)
    start_execution(governor, "alice")
    requests: list[tuple[str, str, bytes]] = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        names = re.findall(r"\{(\w+)\}", route.path)
        paths = [re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], route.path)]
        for name in names:
            paths += [route.path.replace("{" + name + "}", bad).format(**PARAMS) for bad in BAD_PARAMS[name]]
        for method in sorted(route.methods or ()):
            for path in paths:
                for query in ["", *BAD_QUERIES]:
                    requests += [
                        (method, path + query, body) for body in (BAD_BODIES if method != "GET" else [b""])
                    ]

    async def fuzz() -> list[tuple[str, str, bytes, Answer]]:
        failed = []
        for method, target, body in requests:
            for key in (admin, alice, None):
                headers = signed(key, method, target, body) if key is not None else []
                answer = await acall(app, method, target, headers=headers, body=body)
                if answer.status >= 500 or answer.status == 0:
                    failed.append((method, target, body[:80], answer))
        return failed

    assert len(requests) > 1000
    failed = asyncio.run(fuzz())
    assert not failed, failed[:5]


# -- warrant tokens ---------------------------------------------------------------------


def test_raw_warrant_tokens_reach_only_the_executions_principal_or_an_admin(
    app: GovernorApp, governor: Governor, gov_data: Path
) -> None:
    admin, alice, bob = keys(gov_data)
    execution, token = start_execution(governor, "alice")
    # The receipt holds the warrant chain's tokens.
    target = f"/v1/executions/{execution}/receipt"
    unsigned = call(app, "GET", target)
    assert unsigned.status == 401
    assert token.encode() not in unsigned.body
    refused = call(app, "GET", target, headers=signed(bob, "GET", target))
    assert refused.status == 403, refused.body
    assert token.encode() not in refused.body
    # Someone else's execution and an unknown one are refused alike.
    unknown = "/v1/executions/ex_nobody/receipt"
    assert call(app, "GET", unknown, headers=signed(bob, "GET", unknown)).status == 403
    early = call(app, "GET", target, headers=signed(alice, "GET", target))
    assert early.status in (200, 409), early.body  # a running execution's receipt: maybe not yet
    governor.executions.finish("alice", execution, {"outcome": "completed", "exit_status": 0})
    for key in (alice, admin):
        answer = call(app, "GET", target, headers=signed(key, "GET", target))
        assert answer.status == 200, answer.body
        assert token.encode() in answer.body
    # The public reads carry the token's digest, never the token.
    issued = []
    public: list[Any] = ["/v1/log/key", "/v1/log/checkpoint", "/v1/warrant-key", "/metrics", "/openapi.json"]
    size = governor.log.size
    public += [f"/v1/log/entries/{i}" for i in range(size)]
    public += [f"/v1/log/proof/inclusion?index={i}&size={size}" for i in range(size)]
    public += [f"/v1/log/proof/consistency?old=1&new={size}"]
    for target in public:
        answer = call(app, "GET", target)
        assert answer.status == 200, (target, answer.body)
        assert token.encode() not in answer.body, target
        if b"warrant.issued" in answer.body:
            issued.append(answer.json()["event"])
    assert issued
    assert all(e["token_digest"].startswith("sha256:") for e in issued)


def test_proctor_receipt_signs_its_request(server: GovernorServer, tmp_path: Path) -> None:
    """`proctor receipt` signs its request."""
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "proctor",
            "run",
            "--server",
            server.url,
            "--key",
            str(server.key),
            "--",
            "/bin/echo",
            "hi",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    match = re.search(r"execution (ex_[a-z0-9]+) started", ran.stderr)
    assert match, ran.stderr
    execution = match.group(1)
    as_admin = cli(
        "receipt", execution, "--server", server.url, "--data", str(server.data)
    )  # the default key
    assert json.loads(as_admin.stdout)["events"]
    out = tmp_path / "r.json"
    cli("receipt", execution, "--server", server.url, "--key", str(server.key), "--out", str(out))
    assert json.loads(out.read_text())["events"]
    stranger = PrincipalKey.generate("mallory")
    stranger.save(tmp_path / "mallory.key")
    refused = cli(
        "receipt", execution, "--server", server.url, "--key", str(tmp_path / "mallory.key"), check=False
    )
    assert refused.returncode == 2, refused.stderr
    assert "no key is known for principal 'mallory'" in refused.stderr  # the 401, in words
