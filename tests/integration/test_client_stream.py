"""The client's streamed answers (``GET /v1/stream``, ADR 0023), on both transports
(``http.client`` for a plain ``http://`` governor; httpx for ``https://`` or through a
proxy): the fail-over can wake a reader by shutting its socket down whatever the
answer's headers say, and a line too long for the reader is refused, never split into
two events nor held in memory whole.

Against a raw server on loopback that writes what the test needs (for httpx it is the
proxy the client is told to use, and answers as the governor would).
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient, GovernorError
from proctor.transport import MAX_LINE, limited_lines


class _Events(socketserver.StreamRequestHandler):
    """An event stream as ``Connection: close`` with no length, which takes the socket off
    ``http.client``'s connection; after its lines it stays open, silent."""

    def handle(self) -> None:
        head = []
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            head.append(line)
        self.server.heads.append(b"".join(head))  # type: ignore[attr-defined]
        extra = self.server.headers  # type: ignore[attr-defined]
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n" + extra + b"\r\n"
        )
        for part in self.server.parts or [self.server.body]:  # type: ignore[attr-defined]
            self.wfile.write(part)
            self.wfile.flush()
            time.sleep(0.01)
        self.server.done.wait(10)  # type: ignore[attr-defined]


@pytest.fixture
def events() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Events)
    server.daemon_threads = True
    server.done = threading.Event()  # type: ignore[attr-defined]
    server.heads = []  # type: ignore[attr-defined]
    server.headers = b""  # type: ignore[attr-defined]
    server.parts = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.done.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["plain", "httpx"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return str(request.param)


def _client(server: socketserver.ThreadingTCPServer, transport: str = "plain") -> GovernorClient:
    here = f"http://127.0.0.1:{server.server_address[1]}"
    if transport == "plain":
        return GovernorClient(here, PrincipalKey.generate("alice"))
    # httpx: the raw server is the proxy, and answers for the governor behind it.
    os.environ["HTTP_PROXY"] = here
    try:
        return GovernorClient("http://governor.invalid:8443", PrincipalKey.generate("alice"))
    finally:
        del os.environ["HTTP_PROXY"]


def test_a_reader_is_woken_by_shutting_its_socket_down(
    events: socketserver.ThreadingTCPServer, transport: str
) -> None:
    events.body = b'data: {"seq": 1}\n\n'  # type: ignore[attr-defined]
    got: list[str] = []
    ended = threading.Event()
    with _client(events, transport) as client, client.stream("/v1/stream?since=0", read=30) as lines:
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


@pytest.mark.parametrize(
    "parts",
    [
        [b"data: " + b"x" * MAX_LINE + b"\n\n"],  # a whole line, one byte over
        # A line that never ends (2 MiB in 64 KiB writes, the stream left open): refused
        # as soon as it is longer than the limit, not read to its end first.
        [b"data: "] + [b"x" * 65536] * 32,
    ],
    ids=["long", "endless"],
)
def test_a_line_longer_than_the_limit_is_refused_not_split(
    events: socketserver.ThreadingTCPServer, transport: str, parts: list[bytes]
) -> None:
    events.parts = parts  # type: ignore[attr-defined]
    with (
        _client(events, transport) as client,
        client.stream("/v1/stream?since=0", read=5) as lines,
        pytest.raises((ValueError, GovernorError), match="at most"),
    ):
        list(lines.iter_lines())


def test_lines_split_across_writes_read_whole(
    events: socketserver.ThreadingTCPServer, transport: str
) -> None:
    events.parts = [b'data: {"se', b'q": 1}\r', b"\n\nda", b'ta: {"seq": 2}\n', b"\n"]  # type: ignore[attr-defined]
    got: list[str] = []
    with _client(events, transport) as client, client.stream("/v1/stream?since=0", read=5) as lines:
        for line in lines.iter_lines():
            got.append(line)
            if len(got) == 4:
                break
    assert got == ['data: {"seq": 1}', "", 'data: {"seq": 2}', ""]
    if transport == "httpx":  # an uncompressed stream asked for: a compressed line has no bound
        assert b"accept-encoding: identity" in events.heads[-1].lower()  # type: ignore[attr-defined]


def test_a_compressed_stream_is_refused_on_httpx(
    events: socketserver.ThreadingTCPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(The plain transport asks for no compression and decodes none.)"""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    transport = "httpx"
    events.headers = b"content-encoding: gzip\r\n"  # type: ignore[attr-defined]
    events.body = b"\x1f\x8b"  # type: ignore[attr-defined]
    with (
        _client(events, transport) as client,
        client.stream("/v1/stream?since=0", read=5) as lines,
        pytest.raises(ValueError, match="uncompressed"),
    ):
        list(lines.iter_lines())


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"a\nb\n"], ["a", "b"]),
        ([b"a", b"\n", b"b"], ["a", "b"]),  # the last line ends with the stream
        ([b"a\r\n\r\n"], ["a", ""]),
        ([b""], []),
        ([b"\xff\n"], ["\ufffd"]),
        ([b"x" * (MAX_LINE - 1) + b"\n"], ["x" * (MAX_LINE - 1)]),  # at the limit, its end included
    ],
)
def test_limited_lines(chunks: list[bytes], expected: list[str]) -> None:
    assert list(limited_lines(chunks)) == expected


@pytest.mark.parametrize("chunks", [[b"x" * MAX_LINE + b"\n"], [b"x" * 1000] * (MAX_LINE // 1000 + 1)])
def test_limited_lines_refuses_a_longer_line(chunks: list[bytes]) -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_LINE} bytes"):
        list(limited_lines(chunks))
