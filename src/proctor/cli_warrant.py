"""``proctor warrant inspect|attenuate``: read and narrow warrants offline (registered by
:mod:`proctor.cli_admin` under ``warrant``).

The warrant key is ``--warrant-key``, else the governor's (``--server``), else the data
directory's public ``keys/warrant.pub``; a signature that does not verify under it
exits VERIFY_FAILED (1). A governor that cannot be reached or answers 429 or 5xx for the
key exits UNAVAILABLE (3), as every command that asks one.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from proctor.authorization.warrants import attenuate_warrant, inspect_warrant
from proctor.cli_output import DataOpt, JsonOpt, emit, error_code, fail, fields, server_option
from proctor.client import GovernorClient, GovernorError
from proctor.datadir import DEFAULT_DATA_DIR
from proctor.errors import ProctorError
from proctor.exitcodes import ExitCode

__all__ = ["warrant_app"]

warrant_app = typer.Typer(help="Attenuate and inspect warrants.", no_args_is_help=True)


def _warrant_root(data: Path, server: str | None, warrant_key: str | None) -> bytes:
    try:
        if warrant_key:
            text = warrant_key
        elif server:
            with GovernorClient(server, None) as client:
                text = client.text("/v1/warrant-key")
        else:
            text = (data / "keys" / "warrant.pub").read_text()
        raw = base64.b64decode(text.strip(), validate=True)
    except GovernorError as e:  # unreachable or 5xx: UNAVAILABLE, as every command that asks one
        fail(error_code(e), f"error: cannot get the warrant public key: {e}")
    except (ProctorError, OSError, ValueError) as e:
        fail(ExitCode.BAD_INPUT, f"error: cannot get the warrant public key: {e}")
    if len(raw) != 32:
        fail(ExitCode.BAD_INPUT, "error: the warrant public key is not 32 bytes")
    return raw


def _token(source: str) -> str:
    """A token given inline, in a file, or inside saved `proctor authorize` output."""
    try:
        if Path(source).is_file():
            source = Path(source).read_text()
    except OSError:  # too long or otherwise not a path: it is the token itself
        pass
    source = source.strip()
    if source.startswith("{"):
        doc = json.loads(source)
        source = doc.get("warrant", {}).get("token", "") if isinstance(doc, dict) else ""
    return source


WarrantKeyOpt = Annotated[
    str | None, typer.Option("--warrant-key", metavar="KEY", help="Warrant root public key (base64).")
]
WarrantServerOpt = Annotated[
    str | None,
    server_option(
        "Ask it for the warrant key; without it (or --warrant-key), keys/warrant.pub is read from the "
        "data directory (a public key: safe to read while a governor runs)."
    ),
]
TokenArg = Annotated[
    str,
    typer.Argument(metavar="TOKEN", help="Token, a file holding it, or `proctor authorize` output."),
]


@warrant_app.command("inspect")
def _warrant_inspect(
    token: TokenArg,
    data: DataOpt = DEFAULT_DATA_DIR,
    server: WarrantServerOpt = None,
    warrant_key: WarrantKeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a warrant's claims and attenuation blocks (signature checked)."""
    root = _warrant_root(data, server, warrant_key)
    try:
        emit(inspect_warrant(_token(token), root_public_key=root), human=fields, json=json_out)
    except ProctorError as e:
        fail(ExitCode.VERIFY_FAILED, f"error: {e}")


@warrant_app.command("attenuate")
def _warrant_attenuate(
    token: TokenArg,
    expires_in: Annotated[
        int | None, typer.Option(metavar="SECONDS", help="Expire this many seconds from now.")
    ] = None,
    resource: Annotated[str | None, typer.Option(metavar="RESOURCE", help="Only this resource.")] = None,
    zone: Annotated[str | None, typer.Option(metavar="ZONE", help="Only in this zone.")] = None,
    args_digest: Annotated[
        str | None, typer.Option("--args-digest", metavar="DIGEST", help="Only these arguments.")
    ] = None,
    max_duration: Annotated[
        int | None, typer.Option("--max-duration", metavar="SECONDS", help="Run at most this many s.")
    ] = None,
    data: DataOpt = DEFAULT_DATA_DIR,
    server: WarrantServerOpt = None,
    warrant_key: WarrantKeyOpt = None,
) -> None:
    """Narrow a warrant offline for a sub-agent (nothing can widen it); print the new token."""
    root = _warrant_root(data, server, warrant_key)
    try:
        narrowed = attenuate_warrant(
            _token(token),
            root_public_key=root,
            expires=int(time.time()) + expires_in if expires_in is not None else None,
            resource=resource,
            args_digest=args_digest,
            zone=zone,
            max_duration_s=max_duration,
        )
    except ProctorError as e:
        fail(ExitCode.VERIFY_FAILED, f"error: {e}")
    typer.echo(narrowed)
