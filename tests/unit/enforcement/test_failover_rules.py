"""The pure rules of :mod:`proctor.enforcement._failover`: which ``--server`` lists are
accepted, and how long each attempt may take before the lease's end (rule 3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gov_server import cli
from proctor.authorization.keys import PrincipalKey
from proctor.enforcement._failover import MIN_ATTEMPT_S, _attempt_timeout, governor_urls
from proctor.exitcodes import ExitCode


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8700", ("http://127.0.0.1:8700",)),
        ("http://a:1/,https://b:2", ("http://a:1", "https://b:2")),
        (["http://a:1", "http://b:2, http://c:3"], ("http://a:1", "http://b:2", "http://c:3")),
    ],
    ids=["one", "comma-separated", "repeated-and-comma-separated"],
)
def test_server_lists_are_comma_separated_or_repeated(
    given: str | list[str], expected: tuple[str, ...]
) -> None:
    assert governor_urls(given) == expected


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("http://a:1,,http://b:2", "separated by commas"),
        ("127.0.0.1:8700", "expected http://HOST"),
        ("ftp://a:1", "expected http://HOST"),
        ("http://a:1,http://a:1/", "listed twice"),
        ([], "at least one"),
    ],
    ids=["empty-entry", "no-scheme", "other-scheme", "twice", "none"],
)
def test_a_malformed_server_list_is_refused_saying_what_was_expected(
    given: str | list[str], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        governor_urls(given)


def test_no_attempt_starts_after_the_lease_ends() -> None:
    assert _attempt_timeout(1.0, deadline=10.0, now=10.0, left=2) is None
    assert _attempt_timeout(1.0, deadline=10.0, now=11.0, left=1) is None


def test_each_attempt_gets_its_share_of_the_time_left_so_the_last_governor_is_asked_in_time() -> None:
    # Three governors, 1.2 s of lease left, 1 s per attempt at most: 0.4 s each.
    assert _attempt_timeout(1.0, deadline=11.2, now=10.0, left=3) == pytest.approx(0.4)
    # Never beyond the lease's end, and never below the floor while time remains.
    assert _attempt_timeout(1.0, deadline=10.1, now=10.0, left=1) == pytest.approx(0.1)
    assert _attempt_timeout(1.0, deadline=10.5, now=10.0, left=5) == pytest.approx(MIN_ATTEMPT_S)
    assert _attempt_timeout(1.0, deadline=None, now=10.0, left=3) == 1.0


@pytest.mark.parametrize(
    ("option", "env"),
    [(("--server", "127.0.0.1:8700"), {}), ((), {"PROCTOR_SERVER": "http://a:1,,http://b:2"})],
    ids=["flag", "environment"],
)
def test_proctor_run_refuses_a_malformed_server_list_as_bad_input_before_asking_anyone(
    tmp_path: Path, option: tuple[str, ...], env: dict[str, str]
) -> None:
    key = tmp_path / "alice.key"
    PrincipalKey.generate("alice").save(key)
    proc = cli("run", *option, "--key", str(key), "--", "true", check=False, env={**os.environ, **env})
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert "--server: expected" in proc.stderr
