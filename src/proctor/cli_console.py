"""``proctor console token [--ttl 15m]``: a short-lived sign-in token for the governance
console (``/console``), signed here with an admin's key (:mod:`proctor.console.session`).

The token is the admin's Ed25519 signature over a domain-separated statement (the
principal, an expiry, a random id); nothing is sent anywhere. It signs in once, at any
governor where the key's principal is an active admin, until it expires (at most an
hour). Treat it as a password until then.

Exit codes: BAD_INPUT for a bad ``--ttl`` or an unreadable key.
"""

from __future__ import annotations

import re
import time
from typing import Annotated

import typer

from proctor.authorization.keys import PrincipalKey
from proctor.cli_access import KeyOpt
from proctor.cli_output import DataOpt, JsonOpt, emit, fail
from proctor.console.session import MAX_SESSION_S, issue_token
from proctor.datadir import DEFAULT_DATA_DIR, DataDir
from proctor.errors import ProctorError
from proctor.exitcodes import ExitCode

__all__ = ["parse_ttl", "register"]

console_app = typer.Typer(help="The governance console (/console): sign-in tokens.", no_args_is_help=True)

_TTL = re.compile(r"([0-9]{1,5})([smh]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_ttl(text: str) -> int:
    """Seconds from ``90``, ``90s``, ``15m`` or ``1h``: 1 to :data:`MAX_SESSION_S`.

    Raises:
        ValueError: another form, or out of range (the message says which).
    """
    m = _TTL.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"--ttl: expected a duration such as 15m, 900s or 1h, found {text!r}")
    seconds = int(m.group(1)) * _UNIT[m.group(2)]
    if not 1 <= seconds <= MAX_SESSION_S:
        raise ValueError(f"--ttl: expected 1 s to {MAX_SESSION_S // 60} minutes, found {seconds} s")
    return seconds


@console_app.command("token")
def _token(
    ttl: Annotated[
        str,
        typer.Option("--ttl", metavar="DURATION", help="How long it is valid: 15m, 900s, 1h (at most 1h)."),
    ] = "15m",
    data: DataOpt = DEFAULT_DATA_DIR,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print a sign-in token for the console, signed with the admin key: paste it into
    the sign-in page. It signs in once, until it expires."""
    try:
        seconds = parse_ttl(ttl)
    except ValueError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    try:
        if key is None:
            DataDir.open(data)  # the data directory's own key: only from a safe directory
        admin = PrincipalKey.load(key or data / "keys" / "admin.key")
    except (ProctorError, OSError) as e:
        fail(ExitCode.BAD_INPUT, f"error: cannot load the admin key: {e}")
    now = time.time()
    token = issue_token(admin, ttl_s=seconds, now=now)
    doc = {"token": token, "principal": admin.name, "expires": int(now) + seconds}
    emit(doc, human=lambda d: str(d["token"]), json=json_out)


def register(app: typer.Typer) -> None:
    """Add ``console`` (``token``) to the ``proctor`` app."""
    app.add_typer(console_app, name="console")
