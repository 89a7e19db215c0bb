"""The ``proctor`` command.

Exit codes: :class:`proctor.exitcodes.ExitCode`, one table for every command (a public
contract; ``EXIT_OK``, ``EXIT_VERIFY_FAILED`` and ``EXIT_BAD_INPUT`` here are aliases).

Data goes to stdout: as JSON when stdout is not a terminal or with ``--json`` (what
scripts read, unchanged), for a person on a terminal (:mod:`proctor.cli_output`);
messages go to stderr prefixed ``proctor:``.

The commands of :mod:`proctor.cli_run`, :mod:`proctor.cli_admin` and
:mod:`proctor.cli_executions` load when they are invoked (or when the whole list is
shown), and the commands here import the governor only inside their bodies:
``proctor run`` starts without importing :mod:`proctor.governor`, Cedar or the web
framework (``docs/architecture.md``, "What each package may import").
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

# This process never runs httpx's own command line: without this, ``import httpx`` (the
# governor client, on every ``proctor run``) also imports it, and with it click, rich and
# pygments (about 40 ms of a ~300 ms start). A ``None`` entry makes that import fail, and
# httpx then defines a stub ``main`` in its place (httpx/__init__.py).
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import typer
import typer.main
from typer.core import TyperArgument, TyperGroup

from proctor.cli_output import DataOpt, JsonOpt, StoreOpt, emit, exit_code_of, fail, fields
from proctor.datadir import DEFAULT_DATA_DIR
from proctor.errors import (
    ProctorError,
    ProofRequestError,
)
from proctor.exitcodes import ExitCode

__all__ = ["app", "main", "EXIT_OK", "EXIT_VERIFY_FAILED", "EXIT_BAD_INPUT"]

# Public aliases kept for compatibility; the table is ExitCode.
EXIT_OK = ExitCode.OK
EXIT_VERIFY_FAILED = ExitCode.VERIFY_FAILED
EXIT_BAD_INPUT = ExitCode.BAD_INPUT

# The modules whose ``register(app)`` adds these top-level commands, in the order of
# ``proctor --help``: a module is imported when one of its commands is looked up.
_LAZY_COMMANDS: dict[str, tuple[str, ...]] = {
    "proctor.cli_log": ("log",),
    "proctor.cli_admin": ("serve", "authorize", "revoke", "principal", "policy", "warrant"),
    "proctor.cli_run": ("run", "receipt", "verify"),
    "proctor.cli_executions": ("executions",),
    "proctor.cli_nodes": ("nodes",),
    "proctor.cli_witness": ("witness",),
    "proctor.cli_store": ("migrate",),
    "proctor.cli_gateway": ("gateway",),
    "proctor.cli_approvals": ("approve", "approvals"),
    "proctor.cli_console": ("console",),
}


class _PlainArgument(TyperArgument):
    """An argument shown by its UPPERCASE metavar alone, as an option's value is (one
    placeholder style, :mod:`proctor.cli_output`): ``ID`` in the usage line (``[FILE]``
    when optional, ``COMMAND...`` when it takes several), and no ``<str>`` type column
    beside it in ``--help``. Typer would show ``{ID}`` and ``<str>``."""

    def display_type_rich(self, ctx: Any) -> str | None:
        """No type column: the metavar already names what the argument takes."""
        return None

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        """The argument in the usage line, as Click writes it."""
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return [name + ("..." if self.nargs != 1 else "")]


def _tidy_flags(command: Any, ctx: Any) -> Any:
    """``command`` (and its subcommands) with no placeholder shown for a flag, ``--help``
    included (a flag takes no value, and Typer would show ``<bool>``), and its arguments
    shown by their metavar alone (:class:`_PlainArgument`)."""
    option = command.get_help_option(ctx)
    if option is None or option.metavar == "":
        return command  # tidied already (or nothing to tidy)
    option.metavar = ""
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
        if type(param) is TyperArgument:
            # Typer has no hook for an argument's class; the subclass adds no state.
            param.__class__ = _PlainArgument
    for sub in [*getattr(command, "commands", {}).values(), *getattr(command, "subcommands", {}).values()]:
        _tidy_flags(sub, ctx)
    return command


class _LazyGroup(TyperGroup):
    """The root command group: loads a command module when one of its commands is needed.

    The lazily loaded subcommands pattern of Click's documentation, over Typer: the
    module's ``register`` fills a Typer app of its own, whose Click commands join this
    group. Commands are listed as Typer lists them (commands, then groups) in
    registration order, so ``proctor --help`` is unchanged.
    """

    # Click's types live in typer's private vendored module; `Any` keeps this file off it.
    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The command ``cmd_name``, importing the module that registers it if needed."""
        if cmd_name not in self.commands:
            for module, names in _LAZY_COMMANDS.items():
                if cmd_name in names:
                    self._load(module, names)
        command = super().get_command(ctx, cmd_name)
        return None if command is None else _tidy_flags(command, ctx)

    def get_help_option(self, ctx: Any) -> Any:
        """``--help``, shown without a placeholder (it is a flag, as is ``--version``)."""
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    def list_commands(self, ctx: Any) -> list[str]:
        """Every command name, each module loaded (only ``proctor --help`` needs them all)."""
        for module, names in _LAZY_COMMANDS.items():
            self._load(module, names)
        order = [*self.commands]
        for names in _LAZY_COMMANDS.values():
            order = [n for n in order if n not in names] + [*names]
        groups = [n for n in order if isinstance(self.commands[n], TyperGroup)]
        return [n for n in order if n not in groups] + groups

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """Resolve as Typer does; an unknown name first loads every module, so that
        "Did you mean …?" considers every command.

        A command with ``subcommands`` (``proctor receipt``: ``show``) runs one of them
        when its name comes first (``proctor receipt show FILE``) and itself otherwise
        (``proctor receipt ex_…``): the name is never a value the command takes.
        """
        if args and self.get_command(ctx, args[0]) is None:
            self.list_commands(ctx)
        name, command, rest = super().resolve_command(ctx, args)
        inner = getattr(command, "subcommands", {})
        if rest and rest[0] in inner:
            return f"{name} {rest[0]}", _tidy_flags(inner[rest[0]], ctx), rest[1:]
        return name, command, rest

    def _load(self, module: str, names: tuple[str, ...]) -> None:
        if all(n in self.commands for n in names):
            return
        sub = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
        importlib.import_module(module).register(sub)
        commands = typer.main.get_group(sub).commands
        if set(commands) != set(names):  # a registration that drifted from the table above
            raise RuntimeError(f"{module}.register added {sorted(commands)}, expected {sorted(names)}")
        for name in names:
            self.commands[name] = commands[name]


app = typer.Typer(
    name="proctor",
    cls=_LazyGroup,
    help="Execution governance: authorize before anything runs, stop it when trust breaks, "
    "prove afterwards what happened.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from proctor import __version__  # noqa: PLC0415 - read from the installed metadata when asked

        typer.echo(f"proctor {__version__}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", metavar="", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Execution governance: authorize, enforce, prove."""


@app.command("init")
def _init(
    data: DataOpt = DEFAULT_DATA_DIR,
    origin: Annotated[
        str | None,
        typer.Option(
            metavar="ORIGIN",
            help="The log's origin (checkpoint first line); default proctor/HOST/RANDOM.",
        ),
    ] = None,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a data directory: log key, admin key, warrant key, database, signed empty log.

    The directory must not exist or be empty; it is built beside it and renamed into
    place whole (mode 0700, keys 0600), so a failure leaves nothing behind. With
    --store, the log and the state go into that PostgreSQL database (which must hold
    no log yet) and the directory holds only keys and configuration.
    """
    from proctor.governor.service import initialize  # noqa: PLC0415 (keeps `proctor run` light)

    try:
        result = initialize(data, origin=origin, store=store)
    except ProctorError as e:
        fail(exit_code_of(e), f"error: {e}")
    except OSError as e:  # initialize wraps these; an expected failure never shows a traceback
        fail(ExitCode.BAD_INPUT, f"error: cannot initialise {data}: {e}")
    emit(result, human=fields, json=json_out)


@app.command("demo")
def _demo(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", metavar="DIR", help="Fresh data directory to use (default: a new temporary one)."
        ),
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Leave the governor running and its files in place; print what to try next."
        ),
    ] = False,
    no_browser: Annotated[
        bool,
        typer.Option("--no-browser", hidden=True, help="Accepted and ignored (the demo opens no browser)."),
    ] = False,
) -> None:
    """Run the demonstration end to end, without input."""
    from proctor.demo import run_demo  # noqa: PLC0415 (the demo starts a governor)

    del no_browser  # kept for compatibility: the demo opens no browser
    try:
        code = run_demo(data, keep=keep)
    except ProofRequestError as e:
        fail(ExitCode.VERIFY_FAILED, f"demo failed: {e}")
    except ProctorError as e:
        fail(exit_code_of(e), f"demo failed: {e}")
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the ``proctor`` console script."""
    app()
