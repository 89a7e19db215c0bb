"""What runs is exactly what was authorized: the resource of an exec is the measured
file, and a warrant covers only the executable whose digest it binds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gov_exec import allow, measured, start_body
from gov_server import GovernorServer
from gov_support import POLICIES
from proctor.errors import WarrantError
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor

OTHER = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(tmp_path_factory.mktemp("binding"), policy=POLICIES / "run")
    yield gov
    gov.stop()


def run(server: GovernorServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proctor", "run", "--server", server.url, "--key", str(server.key), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_explicit_resource_other_than_the_executable_is_refused(
    server: GovernorServer, tmp_path: Path
) -> None:
    # The policy forbids /usr/bin/touch; naming another resource must not get it run.
    target = tmp_path / "made"
    proc = run(server, "--resource", "/usr/bin/echo", "--", "touch", str(target))
    assert proc.returncode == 77, proc.stderr
    assert not target.exists()
    assert "not what the command executes" in proc.stderr


def test_the_resource_is_the_resolved_file_not_a_symlink_to_it(
    server: GovernorServer, tmp_path: Path
) -> None:
    # A symlink with an innocent name still executes /usr/bin/touch: denied as touch.
    link = tmp_path / "innocent"
    os.symlink("/usr/bin/touch", link)
    target = tmp_path / "made"
    proc = run(server, "--", str(link), str(target))
    assert proc.returncode == 77, proc.stderr
    assert not target.exists()


def test_an_exec_warrant_must_bind_the_executable_digest(governor: Governor) -> None:
    result = governor.authorize(
        "alice", AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", "hi"))
    )
    assert result.warrant is None
    assert "executable" in result.decision.reason
    assert result.log_index is not None
    logged = json.loads(governor.log.leaf(result.log_index))
    assert logged["decision"] == "deny"  # the answer and the log agree


def test_the_governor_refuses_a_start_whose_measurement_differs_from_the_warrant(governor: Governor) -> None:
    token = allow(governor, "hi")
    size = governor.log.size
    for measurement in (measured(digest=OTHER), measured(path="/usr/bin/touch")):
        with pytest.raises(WarrantError) as info:
            governor.executions.start("alice", start_body(token, "hi", measurement=measurement))
        assert info.value.reason == "scope"
    assert governor.log.size == size  # nothing recorded as started
    # The genuine measurement starts it.
    assert governor.executions.start("alice", start_body(token, "hi"))["execution"].startswith("ex_")
