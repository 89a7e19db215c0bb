"""Helpers of the conformance tests that start executions on an in-process governor."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gov_support import EXE
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor


def measured(path: str = "/bin/echo", digest: str = EXE) -> dict[str, Any]:
    """What an enforcer reports having measured for a plain executable."""
    return {
        "executable": path,
        "executable_digest": digest,
        "files": [{"path": path, "digest": digest, "role": "executable"}],
        "script_index": None,
    }


def allow(gov: Governor, *argv: str, principal: str = "alice", **extra: Any) -> str:
    """An exec warrant for ``/bin/echo ARGV`` (the basic policy allows it)."""
    extra.setdefault("executable_digest", EXE)
    result = gov.authorize(
        principal, AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", *argv), **extra)
    )
    if result.warrant is None:
        raise AssertionError(f"expected allow, got: {result.decision.reason}")
    return result.warrant


def echo_request(*argv: str) -> dict[str, Any]:
    """The body of ``POST /v1/authorize`` for ``/bin/echo ARGV`` (the run policy allows it)."""
    return {"action": "exec", "resource": "/bin/echo", "argv": ["echo", *argv], "executable_digest": EXE}


def start_body(token: str, *argv: str, measurement: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of ``POST /v1/executions`` for a warrant from :func:`allow`."""
    return {
        "warrant": token,
        "action": "exec",
        "resource": "/bin/echo",
        "argv": ["echo", *argv],
        "measurement": measurement or measured(),
    }


class Clock:
    """A governor clock the test moves."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def clocked(gov_data: Path, governor: Governor) -> tuple[Governor, Clock]:
    """Reopen the fixture's governor with a clock the test controls."""
    governor.close()
    clock = Clock()
    return Governor(gov_data, clock=clock), clock
