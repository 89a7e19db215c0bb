"""``proctor run``, ``proctor receipt`` and ``proctor verify``.

Exit codes (:class:`proctor.exitcodes.ExitCode`) of ``proctor run``: the command's own
exit status when it ran to its end; DENIED (77) when it was denied and never started;
TERMINATED (79) when governance terminated it; BAD_INPUT (2) for a missing or malformed
key file, before anything is asked of the governor. ``proctor receipt``: BAD_INPUT for
an unreadable key or any HTTP error, UNAVAILABLE (3) when the governor cannot be
reached. ``proctor verify``: OK when every step passed, VERIFY_FAILED (1) naming the
failing step, BAD_INPUT for an unreadable receipt.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient, GovernorError
from proctor.datadir import DEFAULT_DATA_DIR
from proctor.enforcement.supervisor import RunOptions, Supervisor
from proctor.errors import ProctorError
from proctor.exitcodes import ExitCode

__all__ = ["register"]

DEFAULT_SERVER = "http://127.0.0.1:8700"
ServerOpt = Annotated[str, typer.Option("--server", envvar="PROCTOR_SERVER", help="Governor URL.")]


def _run(
    key: Annotated[Path, typer.Option("--key", help="The principal's key file.")],
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).")],
    server: ServerOpt = DEFAULT_SERVER,
    action: Annotated[str, typer.Option("--action", help="exec (default).")] = "exec",
    resource: Annotated[str | None, typer.Option("--resource", help="Default: the executable.")] = None,
    zone: Annotated[str, typer.Option("--zone", help="The zone this runs in.")] = "",
    receipt: Annotated[Path | None, typer.Option("--receipt", help="Write the receipt here.")] = None,
    warrant_key: Annotated[
        str | None, typer.Option("--warrant-key", help="Warrant root key (base64); default: ask the server.")
    ] = None,
    grace: Annotated[float, typer.Option("--grace", help="Seconds between SIGTERM and SIGKILL.")] = 0.5,
) -> None:
    """Run a command under governance: authorized first, verified throughout, killed when trust breaks."""
    try:
        principal = PrincipalKey.load(key)
        root = base64.b64decode(warrant_key, validate=True) if warrant_key else None
    except (ProctorError, OSError, ValueError) as e:
        # Bad input (a missing or malformed key), not a denial: exit 2 as every command does.
        typer.echo(f"proctor: error: {e}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    options = RunOptions(
        server=server,
        key=principal,
        action=action,
        resource=resource,
        zone=zone,
        receipt=str(receipt) if receipt else None,
        warrant_key=root,
        grace=grace,
    )
    raise typer.Exit(Supervisor(options, command).run())


def _receipt(
    execution: Annotated[str, typer.Argument(help="Execution id (ex_…).")],
    server: ServerOpt = DEFAULT_SERVER,
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Key that signs the request: the execution's principal's or an admin's "
            "(default: <data>/keys/admin.key).",
        ),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option("--data", envvar="PROCTOR_DATA", help="Data directory (for the default key).")
    ] = DEFAULT_DATA_DIR,
) -> None:
    """Fetch an execution's receipt: events, inclusion proofs, checkpoint, warrants, statement.

    The receipt holds the raw warrant tokens, so the request is signed: by the
    execution's principal or an admin.
    """
    try:
        signer = PrincipalKey.load(key or data_dir / "keys" / "admin.key")
    except (ProctorError, OSError) as e:
        typer.echo(f"proctor: error: cannot load the key that signs the request: {e}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    try:
        with GovernorClient(server, signer) as client:
            doc = client.json("GET", f"/v1/executions/{execution}/receipt")
    except GovernorError as e:
        typer.echo(f"proctor: error: {e}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT if e.status else ExitCode.UNAVAILABLE) from None
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        out.write_bytes(data)


def _verify(
    receipt: Annotated[Path, typer.Argument(help="Receipt JSON file.")],
    log_key: Annotated[str, typer.Option("--log-key", help="The log's verifier key (or a file holding it).")],
    replay: Annotated[bool, typer.Option("--replay", help="Also re-evaluate the decision.")] = False,
) -> None:
    """Verify a receipt offline, with nothing but the log's verifier key."""
    from proctor.receipts import check_receipt  # noqa: PLC0415

    key_text = log_key
    try:
        if Path(log_key).is_file():
            key_text = Path(log_key).read_text().strip()
    except OSError:
        pass
    try:
        doc: Any = json.loads(receipt.read_text())
    except (OSError, ValueError) as e:
        typer.echo(f"proctor: error: cannot read {receipt}: {e}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    report = check_receipt(doc, log_key=key_text, replay=replay)
    sys.stdout.buffer.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    if not report.ok:
        failed = report.failed
        where = f"step {failed.number} ({failed.name}): {failed.detail}" if failed else "unknown step"
        typer.echo(f"proctor: receipt does not verify: {where}", err=True)
        raise typer.Exit(ExitCode.VERIFY_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``run``, ``receipt`` and ``verify`` to the ``proctor`` app."""
    app.command("run", context_settings={"allow_interspersed_args": False})(_run)
    app.command("receipt")(_receipt)
    app.command("verify")(_verify)
