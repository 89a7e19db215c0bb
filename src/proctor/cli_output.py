"""How every ``proctor`` command speaks: data as JSON on stdout, messages on stderr."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import orjson
import typer

from proctor.exitcodes import ExitCode

__all__ = ["emit", "fail"]


def emit(doc: Any) -> None:
    """Write ``doc`` to stdout as indented JSON."""
    sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def fail(code: ExitCode, message: str) -> NoReturn:
    """Print ``proctor: message`` on stderr and exit with ``code`` (a member of the one table)."""
    typer.echo(f"proctor: {message}", err=True)
    raise typer.Exit(code)
