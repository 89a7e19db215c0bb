"""``proctor run`` started without the command-line framework.

``proctor run`` is the command a loop of governed commands pays at every start, and
Typer's parsing costs more than anything else in that start: it imports pydantic and
builds a validator for every option, 70-120 ms on the machine of docs/benchmarks.md
(ADR 0022). The console script (:func:`proctor.__main__.main`) therefore hands an
invocation of ``proctor run`` in its plain form to :func:`parse_run` first:

    proctor run [--OPTION VALUE | --OPTION=VALUE]... -- COMMAND [ARG]...

with the options of ``proctor run --help``, each at most once, and no value the
framework would have to judge (empty, starting with ``-``, a ``--grace`` that is not a
plain decimal). Anything else (``--help``, an unknown or repeated option, no ``--``, no
command, a blank ``PROCTOR_SERVER``) is not parsed here: the full command line of
:mod:`proctor.cli` parses it, with its own help and error messages. Both parsers end
in :func:`run_governed`, so a command runs the same way whichever parsed it;
``tests/unit/test_cli_launch.py`` checks that they agree on every command line this
one accepts.

It imports no Typer, click or pydantic: only what ``proctor run`` runs.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# As in proctor.cli: this process never runs httpx's own command line, whose import
# would bring click, rich and pygments (a ``None`` entry makes it fail; httpx then
# defines a stub in its place).
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

__all__ = ["DEFAULT_SERVER", "RunArgs", "parse_run", "run_governed"]

DEFAULT_SERVER = "http://127.0.0.1:8700"
"""The governor ``proctor run``, ``receipt`` and ``executions`` ask when none is named."""

SERVER_ENV = "PROCTOR_SERVER"

_OPTIONS = {
    "--server": "server",
    "--key": "key",
    "--action": "action",
    "--resource": "resource",
    "--zone": "zone",
    "--receipt": "receipt",
    "--warrant-key": "warrant_key",
    "--grace": "grace",
}
"""Every option ``proctor run`` takes, by its name on the command line."""
_MAY_BE_EMPTY = frozenset({"zone"})
_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")


@dataclass(frozen=True)
class RunArgs:
    """A parsed ``proctor run``: what :func:`run_governed` needs, as given."""

    key: str
    command: tuple[str, ...]
    server: tuple[str, ...] = ()
    action: str = "exec"
    resource: str | None = None
    zone: str = ""
    receipt: str | None = None
    warrant_key: str | None = None
    grace: float = 0.5


def parse_run(args: Sequence[str], environ: Mapping[str, str]) -> RunArgs | None:
    """The arguments after ``run`` in the plain form (module docstring), or ``None``
    when the full command line is to parse them.

    Args:
        args: the command line after ``run``.
        environ: the environment (``PROCTOR_SERVER`` when no ``--server`` is given).
    """
    given: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        field = _OPTIONS.get(name)
        if field is None or field in given:
            return None
        if not eq:
            if i + 1 >= len(args):
                return None
            i += 1
            value = args[i]
        if value.startswith("-") or (not value and field not in _MAY_BE_EMPTY):
            return None
        given[field] = value
        i += 1
    command = tuple(args[i + 1 :])
    if i >= len(args) or not command or "key" not in given:
        return None
    grace = given.pop("grace", "0.5")
    if not _DECIMAL.fullmatch(grace):
        return None
    server: tuple[str, ...] = (given.pop("server"),) if "server" in given else ()
    if not server and SERVER_ENV in environ:
        # The framework splits an option's variable at whitespace when the option may
        # be repeated; a blank one is left to it.
        server = tuple(environ[SERVER_ENV].split())
        if not server:
            return None
    key, receipt = str(Path(given.pop("key"))), given.pop("receipt", None)
    return RunArgs(
        key=key,
        command=command,
        server=server,
        receipt=str(Path(receipt)) if receipt is not None else None,
        grace=float(grace),
        **given,
    )


def run_governed(args: RunArgs) -> int:
    """Run ``args.command`` under governance (``proctor run``); its exit code.

    Returns:
        The command's own exit status, DENIED (77), TERMINATED (79), or BAD_INPUT (2)
        for a malformed ``--server``, ``--warrant-key`` or a missing or malformed key
        file, before anything is asked of the governor.
    """
    from proctor.authorization.keys import PrincipalKey  # noqa: PLC0415 - after the parse
    from proctor.enforcement._failover import governor_urls  # noqa: PLC0415
    from proctor.enforcement._trust import code_variables  # noqa: PLC0415
    from proctor.enforcement.supervisor import RunOptions, Supervisor  # noqa: PLC0415
    from proctor.errors import ProctorError  # noqa: PLC0415
    from proctor.exitcodes import ExitCode  # noqa: PLC0415

    try:
        servers = governor_urls(args.server or [DEFAULT_SERVER])
        principal = PrincipalKey.load(Path(args.key))
        root = base64.b64decode(args.warrant_key, validate=True) if args.warrant_key else None
    except (ProctorError, OSError, ValueError) as e:
        # Bad input (a missing or malformed key), not a denial: exit 2 as every command does.
        sys.stderr.write(f"proctor: error: {e}\n")
        sys.stderr.flush()
        return ExitCode.BAD_INPUT
    # The loader's and interpreters' variables that name code (LD_PRELOAD, PYTHONPATH,
    # BASH_ENV…) would run bytes nobody measured: the command does not get them.
    for name in code_variables(os.environ):
        del os.environ[name]
    options = RunOptions(
        server=",".join(servers),
        key=principal,
        action=args.action,
        resource=args.resource,
        zone=args.zone,
        receipt=args.receipt,
        warrant_key=root,
        grace=args.grace,
    )
    return Supervisor(options, list(args.command)).run()
