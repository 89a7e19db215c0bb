"""A populated in-process governor for the adversarial suites (tests/conformance/test_hostile_*,
test_openapi_schema_fuzz): the application ``proctor serve`` runs (the API with the pages
mounted), three principals, a running and an ended execution, a pending approval; and
what a test compares before and after hostile input (the log's size, the state's rows)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asgi_support import call
from gov_exec import allow, start_body
from gov_support import EXE, POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.console import mount
from proctor.console.session import COOKIE, issue_token
from proctor.governor.app import GovernorApp, create_app
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor, initialize

__all__ = [
    "APPROVAL_POLICY",
    "BOOKKEEPING",
    "ORIGIN",
    "World",
    "build_world",
    "console_cookie",
    "seeded",
    "write_request",
]

APPROVAL_POLICY = """
@id("write-needs-approval")
@approval("required")
permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/write_file");
"""

BOOKKEEPING = frozenset({"nonces", "auth_failures"})
"""State tables a refused request may write by design: a signed request's nonce stays
spent whatever its answer (so it cannot be replayed; with ``meta``'s ``nonce_floor``, the
oldest time a nonce is still remembered from), and an unauthenticated request is counted
in a bounded table (app.py's docstring); never the log, never governance state."""


def write_request(**extra: object) -> AuthorizeRequest:
    """A tool call the approval policy holds for an admin's approval."""
    return AuthorizeRequest(
        action="mcp.call",
        resource="fs/write_file",
        arguments={"path": "/tmp/x", "content": "hi"},
        executable_digest=EXE,
        **extra,  # type: ignore[arg-type]
    )


def seeded(env: str) -> tuple[int, random.Random]:
    """A seed (``$env`` if set, else a fresh one) and an RNG made from it; print the seed
    in a failing assertion's message so the run can be repeated."""
    seed = int(os.environ.get(env) or random.SystemRandom().randrange(1 << 32))
    return seed, random.Random(seed)


@dataclass
class World:
    """A governor with the pages mounted, its principals' keys, and some history."""

    data: Path
    gov: Governor
    app: GovernorApp
    keys: dict[str, PrincipalKey]
    running: str
    running_token: str
    ended: str
    ended_token: str
    approval: str

    def snapshot(self) -> dict[str, str]:
        """A digest of every row of every state table (the log's entries among them) but
        :data:`BOOKKEEPING`'s: what a refused request must leave as it was. Taken once
        the log writer has committed everything queued before (a lease renewed a moment
        ago is written with the writer's next transaction)."""
        self.gov.log.submit([], side=[lambda conn, index: None]).wait()
        out: dict[str, str] = {}
        with contextlib.closing(sqlite3.connect(f"file:{self.data / 'proctor.db'}?mode=ro", uri=True)) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in sorted(set(tables) - BOOKKEEPING):
                rows = sorted(repr(row) for row in db.execute(f'SELECT * FROM "{table}"'))
                if table == "meta":
                    rows = [r for r in rows if not r.startswith("('nonce_floor',")]
                out[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        out["log-size"] = str(self.gov.log.size)
        return out

    def close(self) -> None:
        self.gov.close()


def build_world(
    root: Path, *, policy: bool = True, clock: Callable[[], float] | None = None, node: str = "gov-1"
) -> World:
    """A fresh data directory under ``root`` and its governor; without ``policy``, none is
    pushed (the governor is not ready, and nothing is allowed); ``clock`` and ``node``:
    the governor's."""
    data = root / "data"
    initialize(data, origin="test.example/hostile")
    gov = Governor(data, node=node) if clock is None else Governor(data, clock=clock, node=node)
    keys = {"admin": PrincipalKey.load(data / "keys" / "admin.key")}
    for name, role in (("alice", "dev"), ("bob", "ops")):
        keys[name] = PrincipalKey.generate(name)
        keys[name].save(data / f"{name}.key")
        gov.add_principal(name, keys[name].public_key_b64, attrs={"role": role}, zone="", by="admin")
    running = ended = running_token = ended_token = approval = ""
    if policy:
        source = root / "policy"
        shutil.copytree(POLICIES / "basic", source)
        (source / "approvals.cedar").write_text(APPROVAL_POLICY)
        gov.push_policy(signed_bundle(data, source), by="admin")
        running_token = allow(gov, "running")
        running = gov.executions.start("alice", start_body(running_token, "running"))["execution"]
        ended_token = allow(gov, "ended")
        ended = gov.executions.start("alice", start_body(ended_token, "ended"))["execution"]
        gov.executions.finish("alice", ended, {"outcome": "completed", "exit_status": 0})
        asked = gov.authorize("alice", write_request())
        if asked.approval is None:
            raise AssertionError(f"expected an approval to be asked for, got {asked.decision.reason}")
        approval = str(asked.approval["id"])
    app = create_app(gov)
    mount(app)  # the pages too: the application proctor serve runs
    return World(data, gov, app, keys, running, running_token, ended, ended_token, approval)


ORIGIN = "http://testserver"
"""The origin of requests made in process (the ASGI scope's server)."""


def console_cookie(world: World) -> str:
    """A console session of the admin, signed in in process as a browser would: the
    ``Cookie`` field value to send with the console's requests."""
    form = f"token={issue_token(world.keys['admin'], ttl_s=3600, now=time.time())}".encode()
    headers = [
        ("host", "testserver"),
        ("origin", ORIGIN),
        ("content-type", "application/x-www-form-urlencoded"),
        ("content-length", str(len(form))),
    ]
    answer = call(world.app, "POST", "/console/signin", headers=headers, body=form)
    if answer.status != 303:
        raise AssertionError(f"expected to be signed in (303), found {answer.status}: {answer.body[:200]!r}")
    cookie = answer.headers["set-cookie"].split(";", 1)[0]
    if not cookie.startswith(f"{COOKIE}="):
        raise AssertionError(f"expected the session cookie, found {cookie[:40]!r}")
    return cookie
