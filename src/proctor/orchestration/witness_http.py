"""``proctor witness serve``: the witness over HTTP (c2sp.org/tlog-witness), under uvicorn.

Routes (one plain ASGI application, no framework):

- ``POST /add-checkpoint`` — the spec's call (:meth:`Witness.add_checkpoint`); the
  body is read up to :data:`~proctor.orchestration.witness.MAX_BODY` bytes (more: 413);
  a ``Proctor-Log-Signature`` header says the submitter holds the log's key.
- ``GET /<hex SHA-256 of an origin>/checkpoint`` — the latest checkpoint cosigned for
  that log, with the log's signature(s) and the witness's cosignature (the spec's
  monitoring retrieval); 404 if none.
- ``GET /healthz`` — the process answers (200).
- ``GET /readyz`` — 200 only while the state can be read and no alarm is open; 503
  otherwise (a fork was seen: an operator must look, then ``proctor witness
  clear-alarms``).
- ``GET /metrics`` — Prometheus: requests by outcome, alarms raised, open alarms.

One outermost barrier turns any unexpected exception into a plain 500 (logged, never
described to the client); nothing is cosigned unless the state write committed.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from proctor.errors import BodyTooLargeError, ConfigError, ProctorError
from proctor.orchestration.witness import MAX_BODY, SUBMITTER_HEADER, Witness, WitnessAnswer

__all__ = ["WitnessApp", "parse_listen", "bind", "serve"]

_log = logging.getLogger("proctor.witness")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class WitnessApp:
    """The witness's ASGI application."""

    def __init__(self, witness: Witness, *, clock: Callable[[], float] = time.time) -> None:
        """Serve ``witness``; ``clock`` gives the cosignatures' time."""
        self.witness = witness
        self.clock = clock
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "proctor_witness_requests",
            "add-checkpoint requests by outcome (cosigned, conflict, fork, inconsistent-proof ...).",
            ["outcome"],
            registry=self.registry,
        )
        self.alarms = Counter(
            "proctor_witness_alarms", "Inconsistencies seen (forks, failed proofs).", registry=self.registry
        )
        self.open_alarms = Gauge(
            "proctor_witness_open_alarms",
            "Alarms no operator has cleared (-1: the state cannot be read).",
            registry=self.registry,
        )
        self.open_alarms.set_function(self._open_alarms)

    def _open_alarms(self) -> float:
        try:
            return float(self.witness.state.open_alarm_count())
        except ProctorError:
            return -1.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        try:
            status, content_type, body = await self._route(scope, receive)
        except BodyTooLargeError:
            status, content_type, body = 413, "text/plain", f"expected at most {MAX_BODY} bytes\n".encode()
        except Exception:  # noqa: BLE001 -- the outermost barrier: a plain 500, never a traceback
            _log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            status, content_type, body = 500, "text/plain", b"internal error\n"
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, str, bytes]:
        method, path = scope["method"], scope["path"]
        # Mounted under a prefix (a governor node's /witness), the routes are below it:
        # Starlette passes the whole path and the prefix as root_path.
        root = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        if path == "/add-checkpoint":
            if method != "POST":
                return 405, "text/plain", b"expected POST\n"
            body = await _read_body(scope, receive)
            submitter = _header(scope, SUBMITTER_HEADER)
            answer: WitnessAnswer = await asyncio.to_thread(
                self.witness.add_checkpoint, body, now=self.clock(), submitter=submitter
            )
            self.requests.labels(answer.outcome).inc()
            if answer.alarm is not None:
                self.alarms.inc()
                _log.error("ALARM %d: %s", answer.alarm, answer.body.decode(errors="replace").strip())
            return answer.status, answer.content_type, answer.body
        if method != "GET":
            return 405, "text/plain", b"expected GET\n"
        if path == "/healthz":
            return 200, "application/json", b'{"status":"ok"}'
        if path == "/readyz":
            return await asyncio.to_thread(self._ready)
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        parts = path.split("/")
        if len(parts) == 3 and parts[2] == "checkpoint" and len(parts[1]) == 64:
            return await asyncio.to_thread(self._checkpoint, parts[1])
        return 404, "text/plain", b"not found\n"

    def _ready(self) -> tuple[int, str, bytes]:
        try:
            count = self.witness.state.open_alarm_count()
        except ProctorError as e:
            doc: dict[str, Any] = {"ready": False, "reason": f"the state cannot be read: {e}"}
            return 503, "application/json", orjson.dumps(doc)
        if count:
            doc = {
                "ready": False,
                "open_alarms": count,
                "reason": "an inconsistency was seen: proctor witness status, then clear-alarms",
            }
            return 503, "application/json", orjson.dumps(doc)
        return 200, "application/json", orjson.dumps({"ready": True, "open_alarms": 0})

    def _checkpoint(self, origin_hash: str) -> tuple[int, str, bytes]:
        for latest in self.witness.state.latest_all():
            if hashlib.sha256(latest.origin.encode()).hexdigest() == origin_hash.lower():
                return 200, "text/plain; charset=utf-8", latest.note.encode()
        return 404, "text/plain", b"no checkpoint cosigned for that log\n"


def _header(scope: Scope, name: str) -> str | None:
    """The value of header ``name`` (lower case), if there is exactly one; several: ""
    (which verifies as nothing)."""
    wanted = name.encode()
    values = [v for k, v in scope.get("headers", []) if k.lower() == wanted]
    if not values:
        return None
    return values[0].decode("latin-1") if len(values) == 1 else ""


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                if int(value) > MAX_BODY:
                    raise BodyTooLargeError(f"expected at most {MAX_BODY} bytes of body")
            except ValueError:
                pass  # the server checked its syntax; an odd one is caught by the count below
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLargeError(f"expected at most {MAX_BODY} bytes of body")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a host and a port.

    Raises:
        ConfigError: not of that form, or a port outside 1-65535.
    """
    host, sep, port_text = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"--listen: expected HOST:PORT (port 1-65535), found {listen!r}")
    return host, int(port_text)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is announced.

    Raises:
        ConfigError: the address cannot be used (in use, not on this host, privileged).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"--listen {host}:{port}: the host does not resolve ({e})") from e
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(512)
    except OSError as e:
        sock.close()
        why = "it is already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise ConfigError(f"cannot listen on {host}:{port}: {why}") from e
    return sock


def serve(witness: Witness, sock: socket.socket) -> None:
    """Serve ``witness`` on the bound ``sock`` until SIGINT or SIGTERM."""
    import uvicorn  # noqa: PLC0415 -- loaded only by the command that serves

    config = uvicorn.Config(
        WitnessApp(witness),
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
        limit_concurrency=512,
    )
    uvicorn.Server(config).run(sockets=[sock])
