"""The governor's clients let an idle connection go before ``proctor serve`` closes it.

With both sides at 5 s, a request sent just as the server closed its idle connection was
lost ("Server disconnected without sending a response"): the soak's admin lost a
revocation that way (tests/conformance/test_soak.py). A signed request is never sent
again on its own, so the client must not send on a connection the server may be closing.
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from gov_server import GovernorServer
from proctor.client import AsyncGovernorClient, GovernorClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(tmp_path_factory.mktemp("keepalive"))
    yield gov
    gov.stop()


def _idle_close_after(server: GovernorServer) -> float:
    """Seconds from an answer on a kept-alive connection until the server closes it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        answered = time.monotonic()
        while conn.recv(65536):
            pass
        return time.monotonic() - answered


def test_a_client_lets_an_idle_connection_go_before_the_governor_closes_it(server: GovernorServer) -> None:
    closes_after = _idle_close_after(server)
    assert 1.0 < closes_after < 30.0
    with GovernorClient(server.url, None) as client:
        assert client.keepalive_expiry <= closes_after - 1.0, (client.keepalive_expiry, closes_after)
        # It is what the client does: a connection idle that long is not used again.
        client.call("GET", "/healthz", signed=False)
        first = client._transport._idle[-1][0]  # type: ignore[union-attr]
        client.call("GET", "/healthz", signed=False)
        assert client._transport._idle[-1][0] is first  # type: ignore[union-attr]  # kept alive
        time.sleep(client.keepalive_expiry + 0.1)
        client.call("GET", "/healthz", signed=False)
        assert client._transport._idle[-1][0] is not first  # type: ignore[union-attr]  # let go
        assert first.sock is None  # closed

    async def async_expiry() -> float | None:
        async with AsyncGovernorClient(server.url, None) as client:
            value: float | None = client._http._transport._pool._keepalive_expiry  # type: ignore[attr-defined]
            return value

    expiry = asyncio.run(async_expiry())
    assert expiry is not None
    assert expiry <= closes_after - 1.0, (expiry, closes_after)


class _OneAnswerEach(socketserver.StreamRequestHandler):
    """Answers one request per connection as if it kept it alive, then closes it: what a
    client sees of a governor restarted (or whose keep-alive ended) while it was idle."""

    def handle(self) -> None:
        self.server.paths.append(self.rfile.readline().split()[1].decode())  # type: ignore[attr-defined]
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        body = b'{"status":"ok"}'
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )


def test_a_connection_the_governor_closed_while_idle_is_not_sent_on() -> None:
    """A signed request is never sent twice, so it must not go out on a connection the
    server already closed: the client checks an idle connection before it reuses it."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _OneAnswerEach)
    server.daemon_threads = True
    server.paths = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with GovernorClient(f"http://127.0.0.1:{server.server_address[1]}", None, timeout=5) as client:
            for _ in range(3):
                assert client.json("GET", "/healthz", signed=False) == {"status": "ok"}
                time.sleep(0.05)  # the server has closed it by now; the client holds it idle
        # A governor under a path (behind a proxy's prefix) is asked under it, as before.
        with GovernorClient(f"http://127.0.0.1:{server.server_address[1]}/gov/", None, timeout=5) as client:
            assert client.text("/v1/log/key") == '{"status":"ok"}'
        assert server.paths == ["/healthz"] * 3 + ["/gov/v1/log/key"]  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
