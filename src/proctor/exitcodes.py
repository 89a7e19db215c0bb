"""The exit codes of every ``proctor`` command: one table, a public contract.

Every command exits with a member of :class:`ExitCode` and with nothing else, except
``proctor run``, which passes the governed command's own exit status through when it
ran to its end (so a command that itself exits ``77`` looks denied: its receipt,
``execution.completed`` or ``execution.terminated``, tells the two apart). Usage errors
that the command-line parser finds (an unknown option, a missing argument) exit
:attr:`ExitCode.BAD_INPUT` too.

Numbers never change meaning; a new condition gets a new member. The README's "Exit
codes" table is :func:`markdown_table` pasted in, and a test keeps the two equal:
``python -m proctor.exitcodes`` prints it.
"""

from __future__ import annotations

import sys
from enum import IntEnum

__all__ = ["ExitCode", "markdown_table"]


class ExitCode(IntEnum):
    """An exit status of a ``proctor`` command; :attr:`meaning` says when it is used."""

    OK = 0
    VERIFY_FAILED = 1
    BAD_INPUT = 2
    UNAVAILABLE = 3
    DENIED = 77
    TERMINATED = 79

    @property
    def meaning(self) -> str:
        """One line: when a command exits with this code."""
        return _MEANINGS[self]


# One line each (a Markdown table cell: no "|" and no line break).
_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: (
        "Success: done as asked (`authorize`: allowed; `verify`, `log verify`: everything verified)."
    ),
    ExitCode.VERIFY_FAILED: (
        "Verification failed: a broken log or checkpoint, or a proof, signature or receipt that "
        "does not verify (the first broken index or the failing step is named); a `demo` check "
        "that did not hold."
    ),
    ExitCode.BAD_INPUT: (
        "Bad input or usage: malformed arguments, events or files, a missing or malformed key "
        "file, an unsafe or uninitialised data directory, a port in use (`serve`), a call the "
        "governor refused (HTTP 400, 401, 403, 404, 409, 422; `authorize`: 401 is `DENIED`)."
    ),
    ExitCode.UNAVAILABLE: (
        "Unavailable: the governor could not be reached or could not take the call (any other "
        "HTTP error, such as 429 or 5xx; every command that asks a governor, `run` excepted), "
        "or a running governor holds the data directory."
    ),
    ExitCode.DENIED: (
        "Denied: the governor denied the request, or refused the principal's key (`authorize`: "
        "HTTP 401); `run`: also a warrant that fails the local checks, a command that cannot be "
        "measured, or a governor that cannot be asked. Nothing started."
    ),
    ExitCode.TERMINATED: (
        "Terminated by governance (`run`): revoked, expired, denied on re-evaluation, integrity, "
        "obligation exceeded or lease lost; the whole process tree was killed and the receipt "
        "says why."
    ),
}


def markdown_table() -> str:
    """The exit codes as a Markdown table (the README's "Exit codes" table).

    Returns:
        The table's lines, a header and one row per :class:`ExitCode` in numeric order,
        each ending in a newline.

    Raises:
        ValueError: a meaning that would break the table (holds ``|`` or a line break).
    """
    lines = ["| Code | Name | Meaning |", "| ---: | --- | --- |"]
    for code in sorted(ExitCode):
        meaning = code.meaning
        if "|" in meaning or "\n" in meaning:
            raise ValueError(f"expected a one-line meaning without '|' for {code.name}, found {meaning!r}")
        lines.append(f"| {code.value} | `{code.name}` | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
