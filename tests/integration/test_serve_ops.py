"""``proctor serve`` for operators: a busy port fails before any address is announced,
``--access-log`` writes one line per request naming the authenticated principal,
``--log-level`` is checked, and a shutdown (SIGTERM or SIGINT) is logged and clean."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gov_server import GovernorServer, cli, free_port
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient, GovernorError


def serve(data: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "proctor", "serve", "--data", str(data), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_busy_port_fails_before_an_address_is_announced(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli("init", "--data", str(data), "--origin", "ops.example/gov")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve(data, "--port", str(port))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert f"cannot listen on 127.0.0.1:{port}: it is already in use" in err
    assert "http://" not in err  # nothing announced
    assert "Traceback" not in err


def test_an_unknown_log_level_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli("init", "--data", str(data), "--origin", "ops.example/gov")
    done = cli("serve", "--data", str(data), "--port", str(free_port()), "--log-level", "loud", check=False)
    assert done.returncode == 2
    assert "--log-level: expected one of debug, info, warning, error, found 'loud'" in done.stderr


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_a_shutdown_is_logged_and_clean(tmp_path: Path, how: signal.Signals) -> None:
    data = tmp_path / "data"
    cli("init", "--data", str(data), "--origin", "ops.example/gov")
    port = free_port()
    proc = serve(data, "--port", str(port))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.send_signal(how)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    name = "SIGTERM" if how == signal.SIGTERM else "SIGINT"
    assert f"governor stopped ({name}); no longer listening on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
    # The data directory was closed: another governor opens it at once.
    assert cli("log", "verify", "--data", str(data)).returncode == 0


def test_the_access_log_has_one_line_per_request(tmp_path: Path) -> None:
    server = GovernorServer(tmp_path, serve_args=("--access-log",))
    try:
        httpx.get(f"{server.url}/v1/log/checkpoint", timeout=10)
        forger = PrincipalKey.generate("alice")  # claims alice's name, not her key
        with (
            GovernorClient(server.url, PrincipalKey.load(server.key)) as alice,
            GovernorClient(server.url, forger) as impostor,
        ):
            with pytest.raises(GovernorError):  # alice is not an admin: 403, and she is named
                alice.json("GET", "/v1/principals")
            with pytest.raises(GovernorError):
                impostor.json("GET", "/v1/principals")
        httpx.get(f"{server.url}/v1/%0a%1bforged 200 admin", timeout=10)  # a path that tries to forge a line
    finally:
        server.stop()
    lines = [line for line in server.log_path.read_text().splitlines() if " proctor.access " in line]
    entries = [re.search(r"proctor\.access INFO (\S+) (.+) (\d{3}) (\S+) (\d+)us$", line) for line in lines]
    assert all(entries), lines
    seen = [(m.group(1), m.group(2), m.group(3), m.group(4)) for m in entries if m]
    assert ("GET", "/v1/log/checkpoint", "200", "-") in seen
    assert ("GET", "/v1/principals", "403", "alice") in seen  # the verified principal
    assert ("GET", "/v1/principals", "401", "-") in seen  # a claimed name is not logged as one
    forged = [s for s in seen if "forged" in s[1]]
    assert len(forged) == 1
    assert forged[0][1].startswith("'")  # shown as a literal: one request, one line
