"""A policy pushed between an authorization and its start: the execution runs under the
bundle that decided, so its first renewal re-evaluates the request under the new one.

Real parts: a ``proctor serve`` child process, the real client and admin CLI. Before,
the execution's row named the bundle active at its start: a bundle pushed in between
was taken as the one that had decided, and the renewal re-evaluated nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gov_exec import measured
from gov_server import GovernorServer, client_of
from gov_support import EXE, POLICIES

REQUEST = {"action": "exec", "resource": "/bin/echo", "argv": ["echo", "hi"], "executable_digest": EXE}
NO_ECHO = """
@id("dev-exec")
@lease_ttl_s("2")
permit (principal, action == Proctor::Action::"exec", resource) when { principal.role == "dev" };

@id("no-echo")
forbid (principal, action, resource == Proctor::Executable::"/bin/echo");
"""


@pytest.fixture
def gov(tmp_path: Path) -> Iterator[GovernorServer]:
    server = GovernorServer(tmp_path / "gov", policy=POLICIES / "run")
    yield server
    server.stop()


def test_a_renewal_re_evaluates_under_a_bundle_pushed_before_the_start(
    gov: GovernorServer, tmp_path: Path
) -> None:
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "run.cedar").write_text(NO_ECHO)
    with client_of(gov) as alice:
        answer = alice.authorize(REQUEST)
        assert answer["allow"] is True, answer
        decided = alice.json("GET", f"/v1/log/entries/{answer['log_index']}")["event"]["bundle"]
        gov.admin("policy", "push", str(newer))  # forbids it from now on
        body = {
            "warrant": answer["warrant"]["token"],
            **{k: REQUEST[k] for k in ("action", "resource", "argv")},
        }
        started = alice.json("POST", "/v1/executions", {**body, "measurement": measured()})
        execution = started["execution"]
        listed = alice.json("GET", f"/v1/executions/{execution}")
        assert listed["bundle"] == decided  # the bundle that decided, not the one pushed since
        renewed = alice.json("POST", f"/v1/executions/{execution}/renew", {})
    assert renewed["ok"] is False, renewed
    assert "no-echo" in str(renewed), renewed
