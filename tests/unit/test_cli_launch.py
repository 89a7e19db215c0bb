"""``proctor run`` parsed without the command-line framework (proctor.cli_launch, ADR 0022).

Rules: a command line :func:`parse_run` accepts is parsed exactly as Typer parses it (the
same :class:`RunArgs` reaches :func:`run_governed`), checked on hand-picked and on
generated command lines; anything outside the plain form is left to Typer (``None``);
the console script runs the plain form without importing Typer, click or pydantic, and
ends as the framework ends a command (Ctrl-C: "Aborted!", exit 1; bad input: exit 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import proctor.__main__ as entry
import proctor.cli_run
from proctor.cli import app
from proctor.cli_launch import RunArgs, parse_run

ENV: dict[str, str] = {}


def through_typer(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]) -> RunArgs | None:
    """The RunArgs Typer hands to run_governed for ``proctor run ARGS``, or None if it
    refused the command line."""
    seen: list[RunArgs] = []

    def capture(parsed: RunArgs) -> int:
        seen.append(parsed)
        return 0

    monkeypatch.setattr(proctor.cli_run, "run_governed", capture)
    monkeypatch.delenv("PROCTOR_SERVER", raising=False)
    result = CliRunner().invoke(app, ["run", *args], env=env)
    if seen:
        assert result.exit_code == 0, result.output
        return seen[0]
    assert result.exit_code != 0, result.output
    return None


AGREED = [
    ["--key", "k.key", "--", "true"],
    ["--key=k.key", "--", "true", "--key", "x"],
    ["--server", "http://a:1", "--key", "./dir/k.key", "--", "sh", "-c", "exit 3"],
    ["--server=http://a:1,http://b:2", "--key", "k", "--zone", "", "--", "true"],
    ["--zone=", "--key", "k", "--", "--", "true"],
    ["--key", "k", "--action", "exec", "--resource", "/bin/true", "--zone", "eu-1", "--", "true"],
    ["--key", "k", "--receipt", "out/r.json/", "--warrant-key", "AAAA", "--grace", "2", "--", "true"],
    ["--grace", "0.25", "--key", "k//x", "--", "true"],
    ["--grace", "007.500", "--key", "k", "--", "true"],
    ["--key", "k", "--", "-x", "--help"],
]


@pytest.mark.parametrize("args", AGREED, ids=[" ".join(a) or "-" for a in AGREED])
def test_a_plain_command_line_is_parsed_as_typer_parses_it(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    fast = parse_run(args, ENV)
    assert fast is not None, "expected the plain form to be parsed here"
    assert fast == through_typer(monkeypatch, args, ENV)


@pytest.mark.parametrize(
    "env",
    [{"PROCTOR_SERVER": "http://a:1"}, {"PROCTOR_SERVER": " http://a:1  http://b:2 "},
     {"PROCTOR_SERVER": "http://a:1,http://b:2"}],
    ids=["one", "two-by-space", "two-by-comma"],
)  # fmt: skip
def test_the_server_variable_is_split_as_typer_splits_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    args = ["--key", "k", "--", "true"]
    fast = parse_run(args, env)
    assert fast is not None
    assert fast == through_typer(monkeypatch, args, env)
    # An option given on the command line wins over the variable, as with Typer.
    named = ["--server", "http://c:3", *args]
    assert parse_run(named, env) == through_typer(monkeypatch, named, env)


LEFT_TO_TYPER = [
    ["--help"],
    ["--key", "k", "--help", "--", "true"],
    ["--key", "k", "true"],  # no --
    ["--key", "k", "--"],  # no command
    ["--", "true"],  # no key
    ["--key", "k", "--key", "j", "--", "true"],  # repeated
    ["--server", "http://a:1", "--server", "http://b:2", "--key", "k", "--", "true"],
    ["--kee", "k", "--", "true"],  # unknown
    ["-k", "k", "--", "true"],
    ["--key", "--", "true"],  # a value that starts with -
    ["--key", "k", "--zone", "-eu", "--", "true"],
    ["--key", "", "--", "true"],  # empty where it cannot be
    ["--key", "k", "--receipt=", "--", "true"],
    ["--key", "k", "--grace", "inf", "--", "true"],
    ["--key", "k", "--grace", "1e3", "--", "true"],
    ["--key", "k", "--grace", ".5", "--", "true"],
    ["--key", "k", "--grace", "1.", "--", "true"],
    ["--key", "k", "--grace", " 1", "--", "true"],
    ["--key", "k", "--grace", "\u0661", "--", "true"],  # a digit, but not an ASCII one
    ["--key"],
]


@pytest.mark.parametrize("args", LEFT_TO_TYPER, ids=[" ".join(a) or "-" for a in LEFT_TO_TYPER])
def test_anything_else_is_left_to_typer(args: list[str]) -> None:
    assert parse_run(args, ENV) is None


def test_a_blank_server_variable_is_left_to_typer() -> None:
    assert parse_run(["--key", "k", "--", "true"], {"PROCTOR_SERVER": "  "}) is None


_NAMES = ["--server", "--key", "--action", "--resource", "--zone", "--receipt", "--warrant-key", "--grace"]
_VALUE = st.one_of(
    st.sampled_from(["", "k", "a b", "http://a:1", "0.5", "12", "x/", "-v", "--", "é", "a=b", "1.5.2"]),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6),
)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """Mostly the plain form (distinct options, ``--NAME VALUE`` or ``--NAME=VALUE``,
    then ``--`` and a command), sometimes with one token dropped, doubled or added."""
    options = draw(st.dictionaries(st.sampled_from(_NAMES), _VALUE, max_size=5))
    options.setdefault("--key", draw(_VALUE))
    args: list[str] = []
    for name, value in options.items():
        args += [f"{name}={value}"] if draw(st.booleans()) else [name, value]
    command = draw(
        st.lists(st.sampled_from(["true", "-c", "--", "x", "--key", "a b"]), min_size=1, max_size=3)
    )
    args += ["--", *command]
    change = draw(st.sampled_from(["none", "none", "none", "drop", "double", "add"]))
    at = draw(st.integers(0, len(args) - 1))
    if change == "drop":
        del args[at]
    elif change == "double":
        args.insert(at, args[at])
    elif change == "add":
        args.insert(at, draw(st.sampled_from(["--help", "-x", "--", "--kee", "true"])))
    return args


@settings(max_examples=200, deadline=None)
@given(args=command_lines())
def test_generated_command_lines_parse_as_typer_parses_them(args: list[str]) -> None:
    fast = parse_run(args, ENV)
    if fast is None:
        return  # left to Typer: nothing to compare
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert fast == through_typer(monkeypatch, args, ENV), args


def test_the_console_script_runs_the_plain_form_without_the_framework(tmp_path: Path) -> None:
    # A run that stops at its key file (missing): exit 2 as through Typer, nothing of
    # Typer, click or pydantic loaded on the way.
    code = (
        "import sys\n"
        "sys.argv = ['proctor', 'run', '--server', 'http://127.0.0.1:9', '--key', "
        f"{str(tmp_path / 'none.key')!r}, '--', 'true']\n"
        "import proctor.__main__ as entry\n"
        "try:\n"
        "    entry.main()\n"
        "except SystemExit as e:\n"
        "    print(repr(e.code), file=sys.stderr)\n"
        "unwanted = ('typer', 'click', 'pydantic', 'rich', 'proctor.cli.', 'proctor.governor', 'cedarpy', "
        "'fastapi', 'starlette', 'uvicorn')\n"
        "print(__import__('json').dumps(sorted(m for m in sys.modules if (m + '.').startswith(unwanted) "
        "or m == 'proctor.cli')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert "proctor: error:" in done.stderr
    assert "none.key" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "2"


def test_bad_input_reads_the_same_through_either_parser(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.key")
    runs = []
    for args in (
        ["run", "--key", missing, "--", "true"],  # the plain form
        ["run", "--key", missing, "true"],  # no --: Typer parses it
    ):
        done = subprocess.run(
            [sys.executable, "-m", "proctor", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "PROCTOR_SERVER": "http://127.0.0.1:9"},
        )
        runs.append((done.returncode, done.stderr))
    assert runs[0] == runs[1]
    assert runs[0][0] == 2
    assert runs[0][1].startswith("proctor: error: ")


def test_help_still_comes_from_typer() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "proctor", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert "--grace" in done.stdout


def test_ctrl_c_ends_as_the_framework_ends_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(parsed: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("proctor.cli_launch.run_governed", interrupted)
    monkeypatch.setattr(sys, "argv", ["proctor", "run", "--key", "k", "--", "true"])
    with pytest.raises(SystemExit) as ended:
        entry.main()
    assert ended.value.code == 1
    assert capsys.readouterr().err == "\nAborted!\n"
