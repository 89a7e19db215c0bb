"""The governor's clients let an idle connection go before ``proctor serve`` closes it.

With both sides at 5 s, a request sent just as the server closed its idle connection was
lost ("Server disconnected without sending a response"): the soak's admin lost a
revocation that way (tests/conformance/test_soak.py). A signed request is never sent
again on its own, so the client must not send on a connection the server may be closing.
"""

from __future__ import annotations

import asyncio
import socket
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
