"""How every ``proctor`` command speaks: data on stdout, messages on stderr.

Rules:

- Data goes to stdout as indented JSON when stdout is not a terminal, or when the
  command was given ``--json``: scripts that pipe a command's output get the same
  bytes whatever the terminal (:func:`emit`).
- On a terminal, a command that has a human rendering prints it instead: tables with
  aligned columns for lists, ✓/✗ for verification steps, times in local time with
  their RFC 3339 value. Exit codes do not depend on the form.
- Messages go to stderr prefixed ``proctor:`` (:func:`fail`).
- One placeholder style for options and arguments: an UPPERCASE metavar
  (``--server URL``, ``--key FILE``, ``--data DIR``); a flag has none.

It imports nothing of the governor: ``proctor run`` loads it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer

from proctor.cli_launch import DEFAULT_SERVER
from proctor.errors import GovernorError, LogIntegrityError, ProctorError, VerificationError
from proctor.exitcodes import ExitCode

__all__ = [
    "DataOpt",
    "StoreOpt",
    "JsonOpt",
    "ServerOpt",
    "GovernorOpt",
    "DEFAULT_SERVER",
    "server_option",
    "emit",
    "error_code",
    "exit_code_of",
    "fail",
    "human_output",
    "table",
    "ticks",
    "when",
    "duration",
    "fields",
    "printable",
]


def server_option(without: str) -> Any:
    """The one ``--server URL`` option (environment ``PROCTOR_SERVER``); ``without`` says
    what the command does when it is not given."""
    return typer.Option(
        "--server",
        envvar="PROCTOR_SERVER",
        metavar="URL",
        help=f"Governor URL (or PROCTOR_SERVER). {without}",
    )


ServerOpt = Annotated[
    str | None,
    server_option(
        "Without it the command acts on the data directory (--data) itself: safe only while no "
        "governor runs on it (a running governor holds it, and the command exits 3)."
    ),
]
"""``--server`` of the commands that fall back to the data directory (admin commands)."""

GovernorOpt = Annotated[str, server_option("There is no fallback: a governor must answer.")]
"""``--server`` of the commands that must talk to a governor (``run``, ``receipt`` …)."""

DataOpt = Annotated[
    Path,
    typer.Option("--data", envvar="PROCTOR_DATA", metavar="DIR", help="Data directory.", show_default=True),
]
"""``--data``: the data directory (``PROCTOR_DATA``; default ``./.proctor``)."""

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="PROCTOR_STORE",
        metavar="URL",
        show_default=False,
        help="The store: a postgresql:// URL (or PROCTOR_STORE); the data directory then holds "
        "only keys and configuration. Without it, the data directory's own SQLite file.",
    ),
]
"""``--store``: where the log and the state are (``PROCTOR_STORE``; :mod:`proctor.store.open`)."""

JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", metavar="", help="Print JSON (the default when standard output is not a terminal)."
    ),
]
"""``--json``: JSON even on a terminal."""


def human_output(json_flag: bool = False) -> bool:
    """Whether to print for a person: stdout is a terminal and ``--json`` was not given."""
    if json_flag:
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed: not a terminal
        return False


def emit(doc: Any, *, human: Callable[[Any], str] | None = None, json: bool = False) -> None:
    """Write ``doc`` to stdout: as indented JSON, or rendered by ``human`` on a terminal.

    Args:
        doc: the data (what ``--json`` prints).
        human: its rendering for a person (``None``: JSON everywhere).
        json: ``--json`` was given.
    """
    if human is not None and human_output(json):
        text = printable(human(doc)).rstrip("\n") + "\n"
        # A terminal whose encoding lacks a character gets its escape, never a traceback.
        encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        sys.stdout.buffer.write(text.encode(encoding, errors="backslashreplace"))
    else:
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def fail(code: ExitCode, message: str) -> NoReturn:
    """Print ``proctor: message`` on stderr and exit with ``code`` (a member of the one table)."""
    typer.echo(f"proctor: {message}", err=True)
    raise typer.Exit(code)


# A governor's refusals: the call was wrong (bad arguments or body, a key it does not
# accept, no right, nothing there, a conflict), so asking again will not help.
_REFUSALS = frozenset({400, 401, 403, 404, 409, 422})


def error_code(e: ProctorError) -> ExitCode:
    """The exit code of a failed call to a governor, the same for every command.

    Args:
        e: what the call raised.

    Returns:
        BAD_INPUT for a refusal (HTTP 400, 401, 403, 404, 409, 422) or any other
        error; UNAVAILABLE when the governor could not be reached or could not take
        the call (any other HTTP status: 429, 5xx). ``authorize`` (401 is DENIED) and
        ``run`` (DENIED for any failure, nothing started) add their own rule on top.
    """
    if isinstance(e, GovernorError):
        return ExitCode.BAD_INPUT if e.status in _REFUSALS else ExitCode.UNAVAILABLE
    return ExitCode.BAD_INPUT


def exit_code_of(e: ProctorError) -> ExitCode:
    """The exit code of a local command's failure: VERIFY_FAILED when what was checked
    does not verify (a broken log, a proof or receipt that fails), else BAD_INPUT."""
    if isinstance(e, LogIntegrityError | VerificationError):
        return ExitCode.VERIFY_FAILED
    return ExitCode.BAD_INPUT


# -- renderings for a person --------------------------------------------------------

# What a terminal would act on instead of showing: C0 and C1 controls (ESC starts the
# sequences that move the cursor, retitle the window or rewrite what was printed) and
# the bidirectional overrides (which reorder what is shown). Data shown to a person may
# come from anyone (a principal's resource name, a receipt file): each is shown escaped.
_CONTROLS = {
    c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    for c in [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    if c != 0x0A
}


def printable(text: str) -> str:
    """``text`` with every control character but the newline shown as an escape."""
    return text.translate(_CONTROLS)


def _can_write(text: str) -> bool:
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def ticks(steps: Iterable[tuple[bool, str]]) -> str:
    """One line per step: ``✓ text`` or ``✗ text`` (``ok``/``FAIL`` where the
    terminal's encoding has no ticks)."""
    good, bad = ("✓", "✗") if _can_write("✓✗") else ("ok  ", "FAIL")
    return "\n".join(f"{good if ok else bad} {text}" for ok, text in steps)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], *, empty: str = "(none)") -> str:
    """Rows under upper-case headers, each column as wide as its widest cell."""
    if not rows:
        return empty
    cells = [[str(h).upper() for h in headers], *[[_cell(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("\n", "\\n")


def when(value: str | float | None) -> str:
    """A time for a person: local time, then the RFC 3339 UTC value it came from.

    Accepts an RFC 3339 string or unix seconds; anything else is shown as it is.
    """
    if value is None or value == "":
        return "-"
    try:
        if isinstance(value, str):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                return value
            stamp = value
        else:
            moment = datetime.fromtimestamp(float(value), UTC)
            stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)
    return f"{moment.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')} ({stamp})"


def duration(ms: float | None) -> str:
    """Milliseconds for a person: ``850ms``, ``4.2s``, ``3m 05s``, ``2h 03m``, ``-1.5s``."""
    if ms is None or isinstance(ms, bool) or not isinstance(ms, int | float):
        return "-" if ms is None else str(ms)
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    if ms < 1000:
        return f"{sign}{int(ms)}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{sign}{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{sign}{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours}h {minutes:02d}m"


def fields(doc: Any, *, indent: str = "") -> str:
    """A JSON value as ``key: value`` lines, nested objects indented; times that look
    like RFC 3339 are shown by :func:`when`."""
    if not isinstance(doc, Mapping):
        if isinstance(doc, list) and doc and all(isinstance(d, Mapping) for d in doc):
            return "\n\n".join(fields(d, indent=indent) for d in doc)
        return indent + _scalar(doc)
    lines = []
    for key, value in doc.items():
        if isinstance(value, Mapping) and value:
            lines.append(f"{indent}{key}:")
            lines.append(fields(value, indent=indent + "  "))
        elif isinstance(value, list) and value and any(isinstance(v, Mapping | list) for v in value):
            lines.append(f"{indent}{key}:")
            lines.extend(f"{indent}  - {orjson.dumps(v).decode()}" for v in value)
        else:
            lines.append(f"{indent}{key}: {_scalar(value)}")
    return "\n".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        if len(value) >= 20 and value[4:5] == "-" and value[10:11] == "T":
            return when(value)
        return value
    if isinstance(value, list):
        return ", ".join(_scalar(v) for v in value) if value else "(none)"
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return orjson.dumps(value).decode()
