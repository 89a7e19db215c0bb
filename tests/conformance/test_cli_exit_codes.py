"""One exit code for one answer of the governor, whatever the command (issue 11).

A script tells "ask again later" from "stop, the call is wrong" by the exit code alone:
a governor that cannot take the call (HTTP 429, 5xx) is UNAVAILABLE (3) for every command
that asks one (``run`` excepted: nothing starts, DENIED), and a refusal (400, 401, 403,
404, 409, 422) is BAD_INPUT (2) (``authorize`` excepted: 401 is DENIED). ``proctor
receipt`` used to exit 2 on a 5xx, so a script would give up on a receipt that a retry
would have fetched. The governor here is a real HTTP server that answers every request
with one status and a JSON error body, as ``proctor serve`` does when it fails.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gov_server import cli
from proctor.authorization.keys import PrincipalKey
from proctor.exitcodes import ExitCode


class _OneStatus(BaseHTTPRequestHandler):
    """Answers every request with the server's ``status`` and the governor's error envelope."""

    server: _Governor

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = json.dumps(
            {"error": "failing", "message": f"the test governor answers {self.server.status}"}
        ).encode()
        self.send_response(self.server.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def log_message(self, *args: Any) -> None:
        pass


class _Governor(ThreadingHTTPServer):
    status = 500


@pytest.fixture(scope="module")
def failing() -> Iterator[_Governor]:
    server = _Governor(("127.0.0.1", 0), _OneStatus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    PrincipalKey.generate("alice").save(root / "alice.key")
    PrincipalKey.generate("admin").save(root / "admin.key")
    return root


# Every command that asks a governor and reports its failure (``run`` never starts the
# command instead: DENIED, as the table says).
_COMMANDS = {
    "receipt": ("receipt", "ex_" + "a" * 24, "--key", "{keys}/alice.key"),
    "executions-show": ("executions", "show", "ex_" + "a" * 24, "--key", "{keys}/alice.key"),
    "executions-list": ("executions", "list", "--key", "{keys}/alice.key"),
    "policy-show": ("policy", "show", "--key", "{keys}/admin.key"),
    "principal-list": ("principal", "list", "--key", "{keys}/admin.key"),
    "revoke": ("revoke", "--execution", "ex_" + "a" * 24, "--key", "{keys}/admin.key"),
    "warrant-inspect": ("warrant", "inspect", "token"),
    "authorize": (
        "authorize",
        "--key",
        "{keys}/alice.key",
        "--action",
        "tool.call",
        "--resource",
        "srv/tool",
    ),
}


def _run(failing: _Governor, keys: Path, status: int, command: str) -> Any:
    failing.status = status
    url = f"http://127.0.0.1:{failing.server_port}"
    args = [a.format(keys=keys) for a in _COMMANDS[command]]
    return cli(*args, "--server", url, check=False)


@pytest.mark.parametrize("status", [503, 429])
@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_a_governor_that_cannot_take_the_call_is_unavailable_for_every_command(
    failing: _Governor, keys: Path, status: int, command: str
) -> None:
    done = _run(failing, keys, status, command)
    assert done.returncode == ExitCode.UNAVAILABLE, (command, status, done.stderr)
    assert f"the test governor answers {status}" in done.stderr  # the governor's words
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("status", [401])
@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_a_refusal_is_bad_input_for_every_command(
    failing: _Governor, keys: Path, status: int, command: str
) -> None:
    done = _run(failing, keys, status, command)
    expected = ExitCode.DENIED if (command, status) == ("authorize", 401) else ExitCode.BAD_INPUT
    assert done.returncode == expected, (command, status, done.stderr)
    assert f"the test governor answers {status}" in done.stderr
