"""The health page of a deployment of several nodes on one store (``proctor serve
--shared``): every node is listed with its zone and status on each node's page, and a
revocation recorded by one node is applied by the other (its propagation lag returns to
0)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gov_server import GovernorServer, client_of
from gov_support import EXE, POLICIES
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient

pytestmark = pytest.mark.slow


def _snapshot(server: GovernorServer) -> Any:
    return httpx.get(f"{server.url}/health.json", timeout=10).json()


def _until(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            assert found, f"timed out waiting for {what}"
            return found
        time.sleep(0.2)


def test_each_node_lists_every_node_and_applies_the_others_revocations(tmp_path: Path) -> None:
    a, b = GovernorServer.nodes(tmp_path, 2, policy=POLICIES / "run", extra=("--zone", "eu"))
    try:
        for server in (a, b):
            snapshot = _until(
                "both nodes serving",
                lambda s=server: (
                    (got := _snapshot(s))["nodes"] is not None
                    and sorted((n["node"], n["status"]) for n in got["nodes"])
                    == [("node-a", "serving"), ("node-b", "serving")]
                    and got
                ),
            )
            assert snapshot["zones"] == [{"zone": "eu", "nodes": 2, "serving": 2}]
        # A warrant issued on node a, revoked there: node b applies the revocation.
        with client_of(a) as alice:
            granted = alice.authorize(
                {"action": "exec", "resource": "/bin/echo", "argv": ["echo"], "executable_digest": EXE}
            )
        admin = GovernorClient(a.url, PrincipalKey.load(a.data / "keys" / "admin.key"), timeout=30)
        with admin:
            admin.json(
                "POST",
                "/v1/revocations",
                {"kind": "warrant", "target": granted["warrant"]["id"], "reason": "t"},
            )
        size = _snapshot(a)["log"]["size"]
        _until(
            "node b to apply node a's revocation",
            lambda: (got := _snapshot(b))["log"]["size"] >= size and got["revocation"]["lag_entries"] == 0,
        )
        page = httpx.get(f"{b.url}/health", timeout=10).text
        assert "node-a" in page
        assert "node-b" in page
    finally:
        b.stop()
        a.stop()
