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

import base64
import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
import typer.main
from typer.core import TyperArgument, TyperGroup

from proctor import __version__
from proctor.cli_output import DataOpt, JsonOpt, StoreOpt, emit, fail, fields, ticks
from proctor.datadir import DEFAULT_DATA_DIR, DataDir
from proctor.errors import (
    ConfigError,
    EventError,
    LineageError,
    LogIntegrityError,
    ProctorError,
    ProofRequestError,
    VerificationError,
)
from proctor.exitcodes import ExitCode
from proctor.lineage.events import Event
from proctor.lineage.log import Log
from proctor.store.open import open_snapshot, store_has_state

__all__ = ["app", "main", "EXIT_OK", "EXIT_VERIFY_FAILED", "EXIT_BAD_INPUT"]

# Public aliases kept for compatibility; the table is ExitCode.
EXIT_OK = ExitCode.OK
EXIT_VERIFY_FAILED = ExitCode.VERIFY_FAILED
EXIT_BAD_INPUT = ExitCode.BAD_INPUT

# The modules whose ``register(app)`` adds these top-level commands, in the order of
# ``proctor --help``: a module is imported when one of its commands is looked up.
_LAZY_COMMANDS: dict[str, tuple[str, ...]] = {
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
log_app = typer.Typer(help="Read, prove and verify the lineage log.", no_args_is_help=True)
app.add_typer(log_app, name="log")


def _exit_code(e: ProctorError) -> ExitCode:
    if isinstance(e, LogIntegrityError | VerificationError):
        return ExitCode.VERIFY_FAILED
    return ExitCode.BAD_INPUT


def _open(data: Path, store: str | None = None) -> Log:
    try:
        return Log.open(data, store=store)
    except ProctorError as e:
        fail(_exit_code(e), f"error: {e}")


def _version(value: bool) -> None:
    if value:
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
        fail(_exit_code(e), f"error: {e}")
    except OSError as e:  # initialize wraps these; an expected failure never shows a traceback
        fail(ExitCode.BAD_INPUT, f"error: cannot initialise {data}: {e}")
    emit(result, human=fields, json=json_out)


@log_app.command("key")
def _log_key(data: DataOpt = DEFAULT_DATA_DIR, store: StoreOpt = None) -> None:
    """Print the log's verifier key (signed-note form: origin+keyid+base64)."""
    with _open(data, store) as log:
        typer.echo(log.verifier_key())


@log_app.command("checkpoint")
def _log_checkpoint(data: DataOpt = DEFAULT_DATA_DIR, store: StoreOpt = None) -> None:
    """Print the latest signed checkpoint (C2SP signed note)."""
    with _open(data, store) as log:
        try:
            sys.stdout.write(log.checkpoint())
        except ProctorError as e:
            fail(_exit_code(e), f"error: {e}")


@log_app.command("entry")
def _log_entry(
    index: Annotated[int, typer.Argument(metavar="INDEX", help="Entry index (0-based).")],
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print one entry: its index, leaf hash and event."""
    with _open(data, store) as log:
        try:
            raw = log.leaf(index)
            leaf = log.leaf_hash(index)
        except ProctorError as e:
            fail(_exit_code(e), f"error: {e}")
        emit(
            {
                "index": index,
                "leaf_hash": base64.b64encode(leaf).decode(),
                "event": orjson.loads(raw),
            },
            human=fields,
            json=json_out,
        )


@log_app.command("proof")
def _log_proof(
    index: Annotated[int, typer.Option("--index", metavar="N", help="Entry index to prove.")],
    size: Annotated[
        int | None, typer.Option("--size", metavar="N", help="Tree size; default the latest checkpoint's.")
    ] = None,
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print an RFC 9162 inclusion proof as JSON."""
    with _open(data, store) as log:
        try:
            emit(log.inclusion_proof(index, size), human=fields, json=json_out)
        except ProctorError as e:
            fail(_exit_code(e), f"error: {e}")


@log_app.command("consistency")
def _log_consistency(
    old: Annotated[int, typer.Option("--old", metavar="N", help="The older tree size.")],
    new: Annotated[
        int | None,
        typer.Option("--new", metavar="N", help="The newer tree size; default the latest checkpoint's."),
    ] = None,
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print an RFC 9162 consistency proof as JSON."""
    with _open(data, store) as log:
        try:
            emit(log.consistency_proof(old, new), human=fields, json=json_out)
        except ProctorError as e:
            fail(_exit_code(e), f"error: {e}")


@log_app.command("verify")
def _log_verify(
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
    witness_policy: Annotated[
        Path | None,
        typer.Option(
            "--witness-policy",
            metavar="FILE",
            help="Also require witnesses (C2SP tlog-policy file): every stored cosignature must "
            "verify and the latest checkpoint must meet the quorum (proctor log cosign).",
        ),
    ] = None,
) -> None:
    """Recompute every hash and check every checkpoint; exit 1 naming the first broken index.

    With ``--witness-policy``, the log must be witnessed (:mod:`proctor.cli_witness`).
    Then, if the data directory holds governance state, check it against the log
    (:mod:`proctor.governor.state_audit`); exit 1 naming each row that disagrees.
    """
    from proctor.governor.state_audit import audit_state  # noqa: PLC0415

    witness_steps: list[tuple[bool, str]] = []

    def show(out: dict[str, Any], state: str | None = None, state_ok: bool = True) -> None:
        if report.ok:
            steps = [(True, f"log: {report.size} entries, {report.checkpoints} checkpoint(s) verified")]
            steps += witness_steps
        else:
            where = "" if report.index is None else f" at index {report.index}"
            steps = [(False, f"log broken{where}: {report.error}")]
        if state is not None:
            steps.append((state_ok, state))
        emit(out, human=lambda _: ticks(steps), json=json_out)

    with _open(data, store) as log:
        try:
            report = log.check_all()
        except ProctorError as e:
            fail(ExitCode.VERIFY_FAILED, f"log verification failed: {e}")
        out = report.to_json()
        if not report.ok:
            show(out)
            where = "" if report.index is None else f" at index {report.index}"
            fail(ExitCode.VERIFY_FAILED, f"log broken{where}: {report.error}")
        if witness_policy is not None:
            from proctor.cli_witness import witnessed  # noqa: PLC0415 (loads the orchestration layer)

            witness = witnessed(data, witness_policy, store_url=store)
            out["witnessed"] = witness.to_json()
            witness_steps.append((witness.ok, f"witnesses: {witness.detail}"))
            if not witness.ok:
                out.update(ok=False, index=None, error=witness.detail)
                show(out)
                fail(ExitCode.VERIFY_FAILED, f"the log is not witnessed: {witness.detail}")
        try:
            db = DataDir.open(data).db_path
            state = (
                audit_state(open_snapshot(store, db), log.verifier) if store_has_state(store, db) else None
            )
        except ProctorError as e:
            out.update(ok=False, index=None, error=f"the state cannot be checked: {e}")
            show(out, f"state tables: cannot be checked: {e}", state_ok=False)
            fail(ExitCode.VERIFY_FAILED, f"state verification failed: {e}")
        if state is None:
            show(out)  # the report of a log that checks out keeps its shape
            return
        if state.ok:
            n = len(state.unverified)
            unverified = f"; the log cannot vouch for {n} item(s)" if n else ""
            show(out, f"state tables agree with the log{unverified}")
            typer.echo(f"proctor: the state tables agree with the log{unverified}", err=True)
            return
        summary = f"{len(state.discrepancies)} state row(s) disagree with the log"
        out.update(ok=False, index=None, error=summary, state=state.to_json())
        show(out, "state tables: " + summary, state_ok=False)
        for found in state.discrepancies:
            typer.echo(f"proctor: state disagrees with the log: {found}", err=True)
        fail(ExitCode.VERIFY_FAILED, summary)


@log_app.command("cosign")
def _log_cosign(
    witness_policy: Annotated[
        Path,
        typer.Option(
            "--witness-policy",
            metavar="FILE",
            help="The witnesses to ask (each with a URL) and the quorum (C2SP tlog-policy file).",
        ),
    ],
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="How long to wait for each witness.")
    ] = 10.0,
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Ask witnesses to cosign the latest checkpoint (C2SP tlog-witness); keep their cosignatures.

    Each witness gets the checkpoint and a consistency proof from the last one it
    cosigned; valid cosignatures are stored beside the checkpoint. Exit 0 once the
    policy's quorum is met.
    """
    from proctor.cli_witness import log_cosign  # noqa: PLC0415 (loads the orchestration layer)

    log_cosign(data, witness_policy, timeout=timeout, json_out=json_out, store_url=store)


@log_app.command("append")
def _log_append(
    source: Annotated[
        str,
        typer.Argument(metavar="FILE", help="File of JSON events, one per line ('-' for standard input)."),
    ] = "-",
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Append events (JSON Lines) atomically: one bad line rejects them all."""
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as e:
        fail(ExitCode.BAD_INPUT, f"error: cannot read {source}: {e}")
    events = []
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(Event.from_bytes(line))
        except EventError as e:
            fail(ExitCode.BAD_INPUT, f"error: line {n}: {e}")
    if not events:
        fail(ExitCode.BAD_INPUT, "error: expected at least one JSON event, found none")
    with _open(data, store) as log:
        try:
            indices = log.append_many(events)
        except (EventError, LineageError, ConfigError) as e:
            fail(_exit_code(e), f"error: {e}")
        emit({"indices": indices, "tree_size": log.size}, human=fields, json=json_out)


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
        fail(_exit_code(e), f"demo failed: {e}")
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the ``proctor`` console script."""
    app()
