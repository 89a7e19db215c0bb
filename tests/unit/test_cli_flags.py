"""Every ``proctor`` command's options follow one style (issue 11).

The command tree is walked as Click sees it (every lazily loaded module included):
no flag shows a ``<bool>`` placeholder, every value takes an UPPERCASE placeholder
(``--server URL``, ``--key FILE``, ``--data DIR``), every argument is shown the same way
(``ID`` in the usage line, ``[FILE]`` when optional; no ``{ID}`` and no ``<str>`` type
column), every ``--server`` reads ``PROCTOR_SERVER`` and says what the command does
without it, and every command that prints data takes ``--json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from proctor.cli import app

_PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(=[A-Z][A-Z0-9_]*)?")

# The commands that print data (JSON when piped or with --json, for a person on a terminal).
_DATA_COMMANDS = {
    "init",
    "authorize",
    "revoke",
    "verify",
    "receipt show",
    "log entry",
    "log proof",
    "log consistency",
    "log verify",
    "log append",
    "log cosign",
    "principal add",
    "principal suspend",
    "principal resume",
    "principal list",
    "policy check",
    "policy push",
    "policy show",
    "policy replay",
    "warrant inspect",
    "executions list",
    "executions show",
    "witness init",
    "witness add-log",
    "witness status",
    "witness clear-alarms",
}


def _commands() -> Iterator[tuple[str, Any, Any]]:
    """(path, command, context) of every command that runs (groups are walked into)."""
    root: Any = typer.main.get_command(app)
    root_ctx = root.make_context("proctor", ["--help"], resilient_parsing=True)
    context = type(root_ctx)
    stack: list[tuple[str, Any, Any]] = [("", root, root_ctx)]
    while stack:
        path, command, ctx = stack.pop()
        yield path, command, ctx
        names = command.list_commands(ctx) if hasattr(command, "list_commands") else []
        for name in names:
            sub = command.get_command(ctx, name)
            stack.append((f"{path} {name}".strip(), sub, context(sub, parent=ctx, info_name=name)))
        for name, sub in getattr(command, "subcommands", {}).items():
            stack.append((f"{path} {name}".strip(), sub, context(sub, parent=ctx, info_name=name)))


_ALL = sorted(_commands(), key=lambda c: c[0])
_IDS = [path or "proctor" for path, _, _ in _ALL]


def _params(command: Any, ctx: Any) -> list[Any]:
    return [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]


def test_the_walk_finds_every_command() -> None:
    paths = {path for path, _, _ in _ALL}
    assert {"run", "receipt", "receipt show", "executions list", "executions show", "log verify"} <= paths
    assert paths >= _DATA_COMMANDS


@pytest.mark.parametrize(("path", "command", "ctx"), _ALL, ids=_IDS)
def test_no_flag_shows_a_bool_placeholder(path: str, command: Any, ctx: Any) -> None:
    for param in _params(command, ctx):
        shown = param.display_type_rich(ctx) or ""
        if getattr(param, "is_flag", False):
            assert shown == "", f"proctor {path} {param.opts[0]} shows {shown!r}"
        assert "bool" not in shown.lower(), f"proctor {path} {param.opts[0]} shows {shown!r}"
        if getattr(param, "secondary_opts", None):
            assert param.show_default, f"proctor {path} {param.opts[0]}: a --x/--no-x flag shows its default"


@pytest.mark.parametrize(("path", "command", "ctx"), _ALL, ids=_IDS)
def test_every_value_has_an_uppercase_placeholder(path: str, command: Any, ctx: Any) -> None:
    for param in _params(command, ctx):
        if getattr(param, "is_flag", False):
            continue
        expected = f"proctor {path} {param.opts[0]}: expected an UPPERCASE metavar, found {param.metavar!r}"
        assert param.metavar is not None, expected
        assert _PLACEHOLDER.fullmatch(param.metavar), expected


@pytest.mark.parametrize(("path", "command", "ctx"), _ALL, ids=_IDS)
def test_every_argument_is_shown_by_its_placeholder_alone(path: str, command: Any, ctx: Any) -> None:
    for param in _params(command, ctx):
        if param.param_type_name != "argument":
            continue
        where = f"proctor {path} {param.metavar}"
        shown = param.display_type_rich(ctx)
        assert not shown, f"{where}: expected no type column beside the placeholder, found {shown!r}"
        usage = param.metavar if param.required else f"[{param.metavar}]"
        usage += "..." if param.nargs != 1 else ""
        found = param.get_usage_pieces(ctx)
        assert found == [usage], f"{where}: expected {usage!r} in the usage line, found {found!r}"


_TYPE_COLUMN = re.compile(r"<[a-z][a-z\[\]|,]*>")  # Typer's <str>, <path>, <int>, <list[str]>
_BRACED = re.compile(r"\{[A-Z][A-Z0-9_]*\}")  # Typer's {ID} for a required argument


@pytest.mark.parametrize("path", sorted({p for p, _, _ in _ALL}), ids=lambda p: p or "proctor")
def test_help_shows_one_placeholder_style(path: str) -> None:
    """What a person sees: ``proctor executions show [OPTIONS] ID``, and ``ID`` with its
    help, as ``--server URL`` is shown; never ``{ID}`` or ``ID <str>``."""
    result = CliRunner().invoke(app, [*path.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert not _TYPE_COLUMN.findall(result.output), result.output
    assert not _BRACED.findall(result.output), result.output


def test_a_required_argument_is_named_plainly_in_usage_and_errors() -> None:
    shown = CliRunner().invoke(app, ["executions", "show", "--help"], terminal_width=200).output
    assert "Usage: proctor executions show [OPTIONS] ID" in shown
    assert "Usage: proctor run [OPTIONS] COMMAND..." in CliRunner().invoke(app, ["run", "--help"]).output
    missing = CliRunner().invoke(app, ["executions", "show"], terminal_width=200)
    assert missing.exit_code == 2
    assert "Missing argument 'ID'" in missing.output


@pytest.mark.parametrize(("path", "command", "ctx"), _ALL, ids=_IDS)
def test_the_shared_options_are_declared_alike(path: str, command: Any, ctx: Any) -> None:
    options = {p.opts[0]: p for p in _params(command, ctx) if p.param_type_name == "option"}
    if "--server" in options:
        server = options["--server"]
        assert server.envvar == "PROCTOR_SERVER", path
        assert server.metavar == "URL", path
        assert "PROCTOR_SERVER" in server.help, path
        if server.default is None and not server.required:  # optional: says what happens without it
            assert "without it" in server.help.lower(), path
            # warrant: mints offline; nodes: reads the store, which is safe beside governors.
            if "--data" in options and path.split(maxsplit=1)[0] not in ("warrant", "nodes"):
                assert "safe only while no governor runs" in server.help, path
    if "--data" in options:
        assert options["--data"].metavar == "DIR", path
        if path != "demo":  # the demo wants a fresh directory: it does not read PROCTOR_DATA
            assert options["--data"].envvar == "PROCTOR_DATA", path
    if "--key" in options:
        assert options["--key"].metavar == "FILE", path


@pytest.mark.parametrize(("path", "command", "ctx"), _ALL, ids=_IDS)
def test_every_data_command_takes_json(path: str, command: Any, ctx: Any) -> None:
    if path in _DATA_COMMANDS:
        flags = {o for p in _params(command, ctx) for o in p.opts}
        assert "--json" in flags, f"proctor {path} has no --json"


@pytest.mark.parametrize("path", sorted({p for p, _, _ in _ALL}), ids=lambda p: p or "proctor")
def test_help_shows_no_bool_placeholder(path: str) -> None:
    """What a person sees: ``--help`` of every command, rendered, names no ``<bool>``."""
    result = CliRunner().invoke(app, [*path.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "BOOLEAN" not in result.output
    assert "<data>" not in result.output  # one placeholder style: no <lowercase> ones either
