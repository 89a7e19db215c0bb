"""The plain-HTTP client's streamed answers (``GET /v1/stream``, ADR 0023): the
fail-over can wake a reader by shutting its socket down whatever the answer's headers
say, and a line too long for the reader is refused, never split into two events.

Against a raw server on loopback that writes what the test needs.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient, GovernorError
from proctor.transport import MAX_LINE


class _Events(socketserver.StreamRequestHandler):
    """An event stream as ``Connection: close`` with no length, which takes the socket off
    ``http.client``'s connection; after its lines it stays open, silent."""

    def handle(self) -> None:
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        self.wfile.write(self.server.body)  # type: ignore[attr-defined]
        self.wfile.flush()
        self.server.done.wait(10)  # type: ignore[attr-defined]


@pytest.fixture
def events() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Events)
    server.daemon_threads = True
    server.done = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.done.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _client(server: socketserver.ThreadingTCPServer) -> GovernorClient:
    return GovernorClient(f"http://127.0.0.1:{server.server_address[1]}", PrincipalKey.generate("alice"))


def test_a_reader_is_woken_by_shutting_its_socket_down(events: socketserver.ThreadingTCPServer) -> None:
    events.body = b'data: {"seq": 1}\n\n'  # type: ignore[attr-defined]
    got: list[str] = []
    ended = threading.Event()
    with _client(events) as client, client.stream("/v1/stream?since=0", read=30) as lines:
        assert lines.socket is not None

        def read() -> None:
            try:
                got.extend(lines.iter_lines())
            except OSError:
                pass
            ended.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got[:2] == ['data: {"seq": 1}', ""]
        assert not ended.is_set()  # silent, open: the reader waits
        lines.socket.shutdown(socket.SHUT_RDWR)
        assert ended.wait(2), "shutting the socket down did not wake the reader"


def test_a_line_longer_than_the_limit_is_refused_not_split(events: socketserver.ThreadingTCPServer) -> None:
    events.body = b"data: " + b"x" * MAX_LINE + b"\n\n"  # type: ignore[attr-defined]
    with (
        _client(events) as client,
        client.stream("/v1/stream?since=0", read=5) as lines,
        pytest.raises((ValueError, GovernorError), match="at most"),
    ):
        list(lines.iter_lines())
