"""A TCP proxy for fail-over tests: forwards to a governor, and on command cuts it off.

Modes (:meth:`TcpProxy.forward`, :meth:`TcpProxy.drop`, :meth:`TcpProxy.not_ready`):

``forward``
    Bytes go both ways.
``drop``
    Silence: nothing is read or written any more, on open connections and on new ones
    (which are accepted and then left hanging), and nothing is closed. A client sees a
    hang — a network partition — not a refusal.
``not_ready``
    Open connections are closed; each new request is answered ``503`` with the
    governor's not-ready error body, as a node that lost its store answers.
``slow`` (:meth:`TcpProxy.slow`)
    Bytes go both ways, each chunk held for a delay first: a slow link.
``half_open``
    Bytes reach the governor, its answers are read and thrown away, nothing is closed:
    the governor acts on every request, the client never hears back (a connection whose
    return path is gone).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Literal

__all__ = ["TcpProxy"]

Mode = Literal["forward", "drop", "not_ready", "slow", "half_open"]

_NOT_READY = b'{"error": "unavailable", "message": "the governor is not ready (test proxy: not ready)"}'


class TcpProxy:
    """A loopback proxy to ``127.0.0.1:upstream_port`` on a free port of its own."""

    def __init__(self, upstream_port: int) -> None:
        """Listen, and start accepting in a daemon thread."""
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._mode: Mode = "forward"
        self._delay = 0.0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def mode(self) -> Mode:
        """What the proxy does now."""
        return self._mode

    def forward(self) -> None:
        """Forward again."""
        self._mode = "forward"

    def drop(self) -> None:
        """Go silent: read and write nothing, close nothing."""
        self._mode = "drop"

    def slow(self, delay: float) -> None:
        """Forward each chunk ``delay`` seconds late (both ways)."""
        self._delay = delay
        self._mode = "slow"

    def half_open(self) -> None:
        """Forward requests; read and drop every answer; close nothing."""
        self._mode = "half_open"

    def not_ready(self) -> None:
        """Close what is open; answer every new request 503."""
        self._mode = "not_ready"
        with self._lock:
            held, self._open = self._open, []
        for sock in held:
            _close(sock)

    def close(self) -> None:
        """Stop, closing every connection."""
        self._closed.set()
        _close(self._listener)
        with self._lock:
            held, self._open = self._open, []
        for sock in held:
            _close(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._open.append(client)
        if self._mode == "not_ready":
            self._answer_503(client)
            return
        if self._mode == "drop":
            self._closed.wait()  # accepted, then silence
            return
        try:
            upstream = socket.create_connection(self._upstream, timeout=10)
        except OSError:
            _close(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.append(upstream)
        self._pump(client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        try:
            while not self._closed.is_set():
                if self._mode == "drop":
                    self._closed.wait(0.05)  # hold everything: read nothing, write nothing
                    continue
                if self._mode == "not_ready":
                    return
                readable, _, _ = select.select([client, upstream], [], [], 0.05)
                for sock in readable:
                    mode = self._mode
                    if mode not in ("forward", "slow", "half_open"):
                        break  # cut between select and read: the bytes stay unread
                    data = sock.recv(65536)
                    if not data:
                        return
                    if mode == "half_open" and sock is upstream:
                        continue  # the answer is lost on its way back
                    if mode == "slow":
                        time.sleep(self._delay)
                    peer[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            if self._mode != "drop":
                _close(client)
                _close(upstream)

    def _answer_503(self, client: socket.socket) -> None:
        try:
            client.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                chunk = client.recv(65536)
                if not chunk:
                    return
                body += chunk
            client.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: "
                + str(len(_NOT_READY)).encode()
                + b"\r\n\r\n"
                + _NOT_READY
            )
        except (OSError, ValueError):
            pass
        finally:
            _close(client)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
