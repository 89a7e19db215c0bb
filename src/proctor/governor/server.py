"""``proctor serve``: the governor under uvicorn, with the connection-level limits an
ASGI application cannot set for itself.

What a client can hold without a key is a connection, and every connection is a file
descriptor. So, before the application sees a request:

- The process takes every descriptor it is allowed (``RLIMIT_NOFILE`` soft limit raised
  to the hard limit) and keeps a reserve of them for its own files, database
  connections and threads (:func:`plan_limits`); connections get the rest.
- A request must arrive whole — head and body — within ``request_timeout_s`` of its
  first byte (or of the connection, for the first request); otherwise the connection
  is closed. Idle keep-alive connections close after uvicorn's keep-alive timeout.
- A request head is refused (431) as soon as more than
  :data:`~proctor.governor.limits.MAX_HEAD_BYTES` of it have arrived unfinished: the
  parser never buffers more.
- At the connection cap, a new connection closes the oldest connection that is still
  waiting for a request head (sent nothing yet, or idle between requests); only when
  there is none is the new one closed. A client that sends its request at once —
  ``proctor revoke``, an enforcer's renewal — is never waiting long, so a flood of
  silent connections cannot keep it out.
- Event streams take at most half of the connections (:class:`StreamSlots` caps them in
  total and per principal), so the other half always remains for authorize, renew and
  revoke.

Several processes (ADR 0016): ``proctor serve --shared`` processes serve one data
directory together, and one ``proctor serve`` (exclusive, the default) serves it alone;
:func:`hold_serving_mode` keeps the two kinds from ever serving one directory at once
(an exclusive governor trusts its memory for nonces and leases, which the shared ones
would not see). ``proctor serve --workers N`` (:mod:`proctor.governor.workers`) hands
each of its shared processes the socket it bound (:func:`listening_socket`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import resource
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proctor.errors import ConfigError, LogLockedError
from proctor.governor.access_log import ACCESS_LOGGER, AccessLog
from proctor.governor.limits import MAX_HEAD_BYTES
from proctor.governor.stream import DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_PRINCIPAL, StreamSlots

__all__ = [
    "LISTEN_FD_ENV",
    "DEFAULT_MAX_STREAMS",
    "DEFAULT_MAX_STREAMS_PER_PRINCIPAL",
    "LOG_LEVELS",
    "SWITCH_INTERVAL_S",
    "ServeLimits",
    "bind",
    "bounded_protocol",
    "configure_logging",
    "default_node",
    "hold_serving_mode",
    "listening_socket",
    "plan_limits",
    "raise_fd_limit",
    "serve",
]

_FD_CEILING = 1 << 20  # Linux's default fs.nr_open: no soft limit can go higher


@dataclass(frozen=True)
class ServeLimits:
    """The connection budget of one ``proctor serve`` process.

    Attributes:
        fd_limit: the process's file descriptor limit (soft, after raising it).
        fd_reserve: descriptors kept for files, database connections and threads.
        max_connections: client connections open at once (``fd_limit - fd_reserve``).
        max_streams: event streams open at once (at most half the connections).
        max_streams_per_principal: event streams one principal may hold open.
        request_timeout_s: how long a request may take to arrive whole.
    """

    fd_limit: int
    fd_reserve: int
    max_connections: int
    max_streams: int
    max_streams_per_principal: int
    request_timeout_s: float = 20.0

    def stream_slots(self) -> StreamSlots:
        """The admission counter of event streams under these limits."""
        return StreamSlots(total=self.max_streams, per_principal=self.max_streams_per_principal)


def raise_fd_limit() -> int:
    """Raise the ``RLIMIT_NOFILE`` soft limit to the hard limit (capped at 2**20).

    Returns:
        The soft limit now in force (unchanged if raising it was refused).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _FD_CEILING if hard == resource.RLIM_INFINITY else min(hard, _FD_CEILING)
    if soft != resource.RLIM_INFINITY and wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass  # keep the limit we have; the budget below follows it
    return _FD_CEILING if soft == resource.RLIM_INFINITY else int(soft)


def plan_limits(
    fd_limit: int,
    *,
    max_streams: int = DEFAULT_MAX_STREAMS,
    max_streams_per_principal: int = DEFAULT_MAX_STREAMS_PER_PRINCIPAL,
) -> ServeLimits:
    """Split ``fd_limit`` descriptors between the process and its clients.

    The reserve is a quarter of the limit, at least 32 and at most 256 (files, SQLite
    connections of the worker threads, the minting helper's pipes, the listening
    socket); streams get at most half of the rest.

    Raises:
        ConfigError: fewer than 128 descriptors, or a stream cap below 1.
    """
    if fd_limit < 128:
        raise ConfigError(f"expected a file descriptor limit of at least 128, found {fd_limit}")
    if max_streams < 1 or max_streams_per_principal < 1:
        raise ConfigError(
            f"expected stream caps of at least 1, found {max_streams} and {max_streams_per_principal}"
        )
    reserve = min(256, max(32, fd_limit // 4))
    connections = fd_limit - reserve
    streams = min(max_streams, connections // 2)
    return ServeLimits(
        fd_limit=fd_limit,
        fd_reserve=reserve,
        max_connections=connections,
        max_streams=streams,
        max_streams_per_principal=min(max_streams_per_principal, streams),
    )


_HEAD_TOO_LARGE = (
    b'{"detail":{"error":"head-too-large","message":"expected a request head of at most '
    + str(MAX_HEAD_BYTES).encode()
    + b' bytes"}}'
)
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: "
    + str(len(_HEAD_TOO_LARGE)).encode()
    + b"\r\nconnection: close\r\n\r\n"
    + _HEAD_TOO_LARGE
)


def bounded_protocol(limits: ServeLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the limits of the module docstring.

    One class per server: it holds the server's queue of connections waiting for a
    request head (all on the server's one event loop, so no lock).
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415 - serve only

    waiting: dict[BoundedHttpToolsProtocol, None] = {}  # oldest first

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                victim = next(iter(waiting), None)
                if victim is None:
                    transport.close()  # every connection is busy: refuse this one
                    return
                victim.drop()
            self._await_request()

        def _await_request(self) -> None:
            waiting[self] = None
            self._head_bytes = 0
            if self._deadline is None:
                self._deadline = self.loop.call_later(limits.request_timeout_s, self.drop)

        def _arrived(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def drop(self) -> None:
            """Close this connection (late, or evicted while waiting for a head)."""
            waiting.pop(self, None)
            self._arrived()
            if not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            super().data_received(data)
            if self in waiting and not self.transport.is_closing():
                # Still no complete head: what the parser holds is at most this much.
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    waiting.pop(self, None)
                    self._arrived()
                    if self.cycle is None or self.cycle.response_complete:
                        self.transport.write(_431)
                    self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:
                self._deadline = self.loop.call_later(limits.request_timeout_s, self.drop)

        def on_headers_complete(self) -> None:
            waiting.pop(self, None)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._arrived()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)
            super().on_response_complete()
            if not pipelined and not self.transport.is_closing():
                waiting[self] = None  # idle until the next request (or the keep-alive timeout)
                self._head_bytes = 0

        def connection_lost(self, exc: Exception | None) -> None:
            waiting.pop(self, None)
            self._arrived()
            super().connection_lost(exc)

    return BoundedHttpToolsProtocol


SWITCH_INTERVAL_S = 0.001
"""The GIL switch interval of ``proctor serve`` (CPython's default is 0.005)."""


LOG_LEVELS = ("debug", "info", "warning", "error")
"""The levels ``proctor serve --log-level`` accepts."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket of ``proctor serve``, bound before anything is announced.

    Raises:
        ConfigError: the address cannot be used (a port already in use, an address not
            on this host, a port needing privileges), with what was asked and why not.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(
            f"--host {host}: expected an address of this host, found one that does not resolve ({e})"
        ) from e
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        why = "it is already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise ConfigError(f"cannot listen on {host}:{port}: {why}") from e
    sock.set_inheritable(True)
    return sock


LISTEN_FD_ENV = "PROCTOR_LISTEN_FD"
"""Set by ``proctor serve --workers`` for its processes: the descriptor of the listening
socket they inherit (instead of binding one)."""


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket to serve on: the one inherited from ``proctor serve --workers`` (its
    descriptor in :data:`LISTEN_FD_ENV`), else a new one (:func:`bind`).

    Raises:
        ConfigError: the address cannot be used, or the inherited descriptor is not a
            listening TCP socket.
    """
    inherited = os.environ.pop(LISTEN_FD_ENV, None)
    if inherited is None:
        return bind(host, port)
    try:
        sock = socket.socket(fileno=int(inherited))
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except (ValueError, OSError) as e:
        raise ConfigError(
            f"{LISTEN_FD_ENV}: expected the descriptor of a listening socket, found {inherited!r}"
        ) from e
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise ConfigError(f"{LISTEN_FD_ENV}: expected a listening TCP socket, found descriptor {inherited}")
    return sock


def hold_serving_mode(data_path: Path, *, shared: bool, store: str | None = None) -> contextlib.ExitStack:
    """Declare how this process serves the data directory, for its whole life: a shared
    ``flock`` on ``governors.lock`` for a shared governor, an exclusive one for an
    exclusive governor; with a PostgreSQL ``store``, the same claim in the database
    (:class:`~proctor.store.locks_pg.PgServingMode`), whose nodes may be on other hosts,
    each with its own data directory. Close the returned stack when done serving.

    Raises:
        LogLockedError: a governor of the other kind serves the data directory or the
            database (or an exclusive one already does).
        StoreError: the database cannot be reached.
    """
    held = contextlib.ExitStack()
    path = data_path / "governors.lock"
    handle = open(path, "a+b")  # noqa: SIM115 - held open for the life of the process
    try:
        fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        other = "an exclusive governor serves" if shared else "other governors serve"
        hint = "" if shared else " (start each with --shared to serve it together)"
        raise LogLockedError(f"{other} the data directory {data_path}{hint}") from None
    held.callback(handle.close)
    if store is not None:
        from proctor.store.locks_pg import PgServingMode  # noqa: PLC0415 - psycopg only with a URL

        try:
            held.callback(PgServingMode(store, shared=shared).close)
        except BaseException:
            held.close()
            raise
    return held


def default_node() -> str:
    """The node name of a governor started without ``--node``: ``HOST:PID``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def configure_logging(level: str, *, access_log: bool) -> None:
    """Log to stderr at ``level`` (one of :data:`LOG_LEVELS`); with ``access_log``, one
    line per request (:mod:`proctor.governor.access_log`) whatever the level.

    Raises:
        ConfigError: a level that is not one of :data:`LOG_LEVELS`.
    """
    if level not in LOG_LEVELS:
        raise ConfigError(f"--log-level: expected one of {', '.join(LOG_LEVELS)}, found {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("proctor", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    access = logging.getLogger(ACCESS_LOGGER)
    access.disabled = not access_log
    if access_log:
        access.setLevel(logging.INFO)


def serve(
    app: Any,
    *,
    sock: socket.socket,
    limits: ServeLimits,
    log_level: str = "warning",
    access_log: bool = False,
) -> None:
    """Run ``app`` under uvicorn with :func:`bounded_protocol` on ``sock`` (from
    :func:`bind`) until interrupted; log the shutdown."""
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    config = uvicorn.Config(
        AccessLog(app) if access_log else app,
        http=bounded_protocol(limits),
        log_level=log_level,
        log_config=None,  # configure_logging's handlers, not uvicorn's
        access_log=False,  # ours names the principal and the time (AccessLog)
        proxy_headers=False,  # the governor uses no client address; nothing to rewrite
        timeout_graceful_shutdown=2,  # open event streams must not hold a shutdown
    )
    # The event loop shares the GIL with worker threads (presented warrants are
    # verified in one, the log writer and minting helper run in others). At CPython's
    # default 5 ms switch interval, the loop can wait that long for the GIL behind a
    # thread doing a hostile principal's work, which is what other principals' tail
    # latency then shows; 1 ms bounds that wait (bench/soak_hostile.py: p99 ratio
    # 2.09x -> 1.62-1.78x, docs/benchmarks-history.md) at no measurable throughput cost.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    logger = logging.getLogger("proctor.governor")
    # uvicorn shuts down gracefully on SIGINT or SIGTERM, then raises the signal again
    # under the handler it found: make SIGTERM's an exception too, so that the shutdown
    # is logged and the data directory closed, as for Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _stop)
    why, address = "the server returned", _address(sock)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped) as e:
        why = "SIGTERM" if isinstance(e, _Stopped) else "SIGINT"
    finally:
        signal.signal(signal.SIGTERM, previous)
        logger.warning("governor stopped (%s); no longer listening on %s", why, address)
        sock.close()


class _Stopped(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM arrived (after uvicorn's graceful shutdown, or before it started)."""


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


def _address(sock: socket.socket) -> str:
    try:
        host, port = sock.getsockname()[:2]
    except OSError:
        return "its socket"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
