"""Where a ``proctor`` admin command acts: a running governor, or the data directory.

``--server URL`` (or ``PROCTOR_SERVER``): the governor there, with requests signed by
``--key`` (default: the data directory's admin key, read only from a directory that
passes the safety checks). Without it: the data directory itself, opened as the
governor would open it, for an active admin's key only. A governor running on that
directory holds its log's append lock; a command that then needs the lock exits
UNAVAILABLE (3) and says to use ``--server`` (:func:`exit_for`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from proctor.authorization.keys import PrincipalKey
from proctor.cli_output import error_code, fail
from proctor.client import GovernorClient
from proctor.datadir import DataDir
from proctor.errors import LogLockedError, ProctorError
from proctor.exitcodes import ExitCode
from proctor.governor.service import Governor

__all__ = ["AdminAccess", "KeyOpt", "admin_access", "error_code", "exit_for"]
# error_code is proctor.cli_output's, re-exported: commands that import no governor use it too.

KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key", metavar="FILE", help="Admin key file (default: keys/admin.key in the data directory)."
    ),
]
"""``--key`` of the admin commands."""


def exit_for(e: ProctorError) -> NoReturn:
    """Exit for a failed admin operation, with the code its kind calls for."""
    if isinstance(e, LogLockedError):
        fail(
            ExitCode.UNAVAILABLE,
            f"error: {e}; a governor is running on this data directory: use --server URL",
        )
    fail(error_code(e), f"error: {e}")


class AdminAccess:
    """Where admin operations go: a running governor (``client``), or the data directory
    itself (``governor``); ``name`` is the principal whose key signs."""

    def __init__(self, client: GovernorClient | None, governor: Governor | None, name: str) -> None:
        self.client = client
        self.governor = governor
        self.name = name


@contextmanager
def admin_access(
    data: Path, server: str | None, key: Path | None, store: str | None = None
) -> Iterator[AdminAccess]:
    """The governor at ``server`` reached with ``key``, or else the data directory ``data``
    (its log and state in ``store``, a ``postgresql://`` URL, if given) opened for an
    active admin's key; exits BAD_INPUT or UNAVAILABLE when neither can be."""
    try:
        if key is None:
            # The data directory's own key: only from a directory that passes the safety
            # checks (no symlinked, foreign or readable key), with or without --server.
            DataDir.open(data)
        admin_key = PrincipalKey.load(key or data / "keys" / "admin.key")
    except (ProctorError, OSError) as e:
        fail(ExitCode.BAD_INPUT, f"error: cannot load the admin key: {e}")
    if server:
        with GovernorClient(server, admin_key) as client:
            yield AdminAccess(client, None, admin_key.name)
        return
    try:
        governor = Governor(data, store=store)
    except ProctorError as e:
        exit_for(e)
    try:
        # The same rule as over HTTP: a suspended or revoked admin's key acts no more.
        try:
            allowed = governor.is_admin(admin_key.name)
        except ProctorError as e:
            exit_for(e)
        if not allowed:
            fail(ExitCode.BAD_INPUT, f"error: {admin_key.name!r} is not an active admin (use --key)")
        yield AdminAccess(None, governor, admin_key.name)
    finally:
        governor.close()
