"""``proctor run`` in a principal's own zone, and deny messages a person can act on.

A principal registered with ``--zone prod`` runs without repeating ``--zone prod``
(the governor evaluates its own zone; the warrant names it; the run is checked and
started in it). Another zone is denied with one line that names the principal, the
action, the resource, the zone asked for and the reason, with no repeated "denied:"
and no empty policy list."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gov_server import GovernorServer, cli

POLICIES = Path(__file__).parent / "policies"


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    server = GovernorServer(tmp_path_factory.mktemp("zones"), policy=POLICIES / "run")
    key = server.data / "pat.key"
    cli("principal", "add", "pat", "--attr", "role=dev", "--zone", "prod", "--out", str(key), "--data", str(server.data), "--server", server.url)  # fmt: skip
    yield server
    server.stop()


def run(gov: GovernorServer, *args: str) -> subprocess.CompletedProcess[str]:
    key = gov.data / "pat.key"
    return subprocess.run(
        [sys.executable, "-m", "proctor", "run", "--server", gov.url, "--key", str(key), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_principal_runs_in_its_own_zone_without_naming_it(gov: GovernorServer) -> None:
    done = run(gov, "--", "echo", "in prod")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "in prod\n"
    named = run(gov, "--zone", "prod", "--", "echo", "named")
    assert named.returncode == 0, named.stderr


def test_another_zone_is_denied_in_one_line_that_says_who_what_where_and_why(gov: GovernorServer) -> None:
    done = run(gov, "--zone", "dev", "--", "echo", "elsewhere")
    assert done.returncode == 77
    assert done.stdout == ""
    denial = [line for line in done.stderr.splitlines() if "denied" in line]
    assert len(denial) == 1, done.stderr
    line = denial[0]
    assert line.startswith("proctor: denied: pat exec ")
    assert "/echo (zone 'dev'): cross-zone request (principal zone 'prod', environment zone 'dev')" in line
    assert "denied: denied" not in line
    assert "policies: []" not in line


def test_a_forbid_names_its_policy_once(gov: GovernorServer, tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    done = run(gov, "--", "touch", str(marker))
    assert done.returncode == 77
    assert "pat exec /usr/bin/touch (the principal's zone): by forbid policy no-touch" in done.stderr
    assert done.stderr.count("no-touch") == 1
    assert not marker.exists()
