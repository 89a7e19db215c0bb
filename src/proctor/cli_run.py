"""``proctor run``, ``proctor receipt`` (and ``receipt show``) and ``proctor verify``.

Exit codes (:class:`proctor.exitcodes.ExitCode`) of ``proctor run``: the command's own
exit status when it ran to its end; DENIED (77) when it was denied and never started;
TERMINATED (79) when governance terminated it; BAD_INPUT (2) for a missing or malformed
key file, before anything is asked of the governor. ``proctor receipt``: as every
command that asks a governor (:func:`proctor.cli_output.error_code`): BAD_INPUT for an
unreadable key or a refusal (HTTP 400, 401, 403, 404, 409, 422), UNAVAILABLE (3) when
the governor cannot be reached or take the call (429, 5xx). ``proctor verify``: OK when
every step passed, VERIFY_FAILED (1) naming the failing step, BAD_INPUT for an
unreadable receipt. ``proctor receipt show``: BAD_INPUT for an unreadable or malformed
receipt; with ``--log-key``, VERIFY_FAILED when it does not verify.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
import typer.main
from typer.core import TyperCommand

from proctor.authorization.keys import PrincipalKey
from proctor.cli_launch import RunArgs, run_governed
from proctor.cli_output import (
    DEFAULT_SERVER,
    DataOpt,
    GovernorOpt,
    JsonOpt,
    duration,
    emit,
    error_code,
    fail,
    table,
    ticks,
    when,
)
from proctor.client import GovernorClient, GovernorError
from proctor.datadir import DEFAULT_DATA_DIR
from proctor.errors import ProctorError
from proctor.exitcodes import ExitCode

__all__ = ["DEFAULT_SERVER", "receipt_timeline", "register"]

KeyFileOpt = Annotated[Path, typer.Option("--key", metavar="FILE", help="The principal's key file.")]
LogKeyOpt = Annotated[
    str,
    typer.Option("--log-key", metavar="KEY", help="The log's verifier key (or a file holding it)."),
]


RunServerOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--server",
        envvar="PROCTOR_SERVER",
        metavar="URL",
        help="Governor URL (or PROCTOR_SERVER). Several governors of one deployment, comma-separated "
        "or the option repeated: the enforcer fails over to the next when one does not answer in "
        f"time. Without it: {DEFAULT_SERVER}.",
    ),
]


def _run(
    key: KeyFileOpt,
    command: Annotated[
        list[str], typer.Argument(metavar="COMMAND", help="The command and its arguments (after --).")
    ],
    server: RunServerOpt = None,
    action: Annotated[str, typer.Option("--action", metavar="ACTION", help="exec (default).")] = "exec",
    resource: Annotated[
        str | None, typer.Option("--resource", metavar="RESOURCE", help="Default: the executable.")
    ] = None,
    zone: Annotated[str, typer.Option("--zone", metavar="ZONE", help="The zone this runs in.")] = "",
    receipt: Annotated[
        Path | None, typer.Option("--receipt", metavar="FILE", help="Write the receipt here.")
    ] = None,
    warrant_key: Annotated[
        str | None,
        typer.Option(
            "--warrant-key", metavar="KEY", help="Warrant root key (base64); default: ask the server."
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option("--grace", metavar="SECONDS", help="Seconds between SIGTERM and SIGKILL.")
    ] = 0.5,
) -> None:
    """Run a command under governance: authorized first, verified throughout, killed when trust breaks.

    The command does not get the variables that make the loader or an interpreter run
    code it was not given (LD_*, PYTHONPATH, BASH_ENV, PERL5OPT, NODE_OPTIONS...): set
    them in an authorized wrapper script instead.
    """
    parsed = RunArgs(
        key=str(key),
        command=tuple(command),
        server=tuple(server or ()),
        action=action,
        resource=resource,
        zone=zone,
        receipt=str(receipt) if receipt else None,
        warrant_key=warrant_key,
        grace=grace,
    )
    raise typer.Exit(run_governed(parsed))


SignerOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        metavar="FILE",
        help="Key that signs the request: the execution's principal's or an admin's "
        "(default: keys/admin.key in the data directory).",
    ),
]


def _receipt(
    execution: Annotated[str, typer.Argument(metavar="EXECUTION", help="Execution id (ex_…).")],
    server: GovernorOpt = DEFAULT_SERVER,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Write here instead of stdout.")
    ] = None,
    key: SignerOpt = None,
    data_dir: DataOpt = DEFAULT_DATA_DIR,
) -> None:
    """Fetch an execution's receipt: events, inclusion proofs, checkpoint, warrants, statement.

    The receipt holds the raw warrant tokens, so the request is signed: by the
    execution's principal or an admin. It is always JSON (a file to keep and verify);
    to read one: proctor receipt show FILE.
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
        fail(error_code(e), f"error: {e}")
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        out.write_bytes(data)


def _read_receipt(path: Path, *, limit: int | None = None) -> Any:
    """A receipt file's JSON (at most ``limit`` bytes); exits BAD_INPUT if it cannot be read."""
    try:
        with path.open("rb") as f:
            raw = f.read() if limit is None else f.read(limit + 1)
        if limit is not None and len(raw) > limit:
            fail(ExitCode.BAD_INPUT, f"error: {path}: expected at most {limit} bytes of receipt, found more")
        return json.loads(raw)
    except (OSError, ValueError) as e:
        fail(ExitCode.BAD_INPUT, f"error: cannot read {path}: {e}")


def _key_text(log_key: str) -> str:
    try:
        if Path(log_key).is_file():
            return Path(log_key).read_text().strip()
    except OSError:
        pass
    return log_key


def _verify(
    receipt: Annotated[Path, typer.Argument(metavar="FILE", help="Receipt JSON file.")],
    log_key: LogKeyOpt,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay/--no-replay", metavar="", show_default=True, help="Also re-evaluate the decision."
        ),
    ] = False,
    json_out: JsonOpt = False,
    witness_policy: Annotated[
        Path | None,
        typer.Option(
            "--witness-policy",
            metavar="FILE",
            help="Also require witnesses (C2SP tlog-policy file): the receipt's checkpoint must "
            "carry cosignatures meeting its quorum (step 9).",
        ),
    ] = None,
) -> None:
    """Verify a receipt offline, with nothing but the log's verifier key."""
    from proctor.receipts import check_receipt  # noqa: PLC0415

    policy = None
    if witness_policy is not None:
        from proctor.cli_witness import read_policy  # noqa: PLC0415

        policy = read_policy(witness_policy)
    report = check_receipt(
        _read_receipt(receipt), log_key=_key_text(log_key), replay=replay, witness_policy=policy
    )
    emit(report.to_json(), human=_verification_text, json=json_out)
    if not report.ok:
        failed = report.failed
        where = f"step {failed.number} ({failed.name}): {failed.detail}" if failed else "unknown step"
        fail(ExitCode.VERIFY_FAILED, f"receipt does not verify: {where}")


def _verification_text(report: dict[str, Any]) -> str:
    """``proctor verify`` for a person: the verdict, then every step ticked."""
    from proctor.receipts import STEP_NAMES  # noqa: PLC0415

    execution = report.get("execution") or "an unnamed execution"
    head = f"receipt of {execution}: " + (
        "verified" if report["ok"] else f"FAILED at step {report['failed']}"
    )
    done = {s["number"] for s in report["steps"]}
    lines = [ticks((s["ok"], f"{s['number']}. {s['name']}: {s['detail']}") for s in report["steps"])]
    lines += [f"  {n}. {name}: not checked" for n, name in STEP_NAMES.items() if n not in done]
    return "\n".join([head, *lines])


# -- proctor receipt show -------------------------------------------------------------


def _receipt_show(
    receipt: Annotated[Path, typer.Argument(metavar="FILE", help="Receipt JSON file.")],
    log_key: Annotated[
        str | None,
        typer.Option(
            "--log-key",
            metavar="KEY",
            help="Verify it too, with this log verifier key (or a file holding it); without it the "
            "timeline is shown unverified.",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a saved receipt as a timeline: who ran what, when, and how it ended."""
    from proctor.receipts import MAX_RECEIPT_BYTES  # noqa: PLC0415 - only this command needs it

    doc = _read_receipt(receipt, limit=MAX_RECEIPT_BYTES)
    try:
        shown = receipt_timeline(doc)
    except (TypeError, ValueError) as e:
        fail(ExitCode.BAD_INPUT, f"error: {receipt}: {e}")
    ok = True
    if log_key is not None:
        from proctor.receipts import check_receipt  # noqa: PLC0415

        report = check_receipt(doc, log_key=_key_text(log_key), replay=False)
        shown["verification"] = report.to_json()
        ok = report.ok
    emit(shown, human=_timeline_text, json=json_out)
    if not ok:
        fail(ExitCode.VERIFY_FAILED, "receipt does not verify: the timeline above is not proven")


def receipt_timeline(doc: Any) -> dict[str, Any]:
    """The events of a receipt in log order, each with a one-line summary.

    Nothing here is verified (that is ``proctor verify``): the events are only decoded.

    Returns:
        ``{"execution", "principal", "outcome", "events": [{"index", "time", "type",
        "summary", "event"}]}``.

    Raises:
        TypeError, ValueError: not a receipt's shape (says what was expected and what was found).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        found = type(doc).__name__ if not isinstance(doc, dict) else sorted(doc)
        raise TypeError(f"expected a receipt (a JSON object with events), found {found}")
    events: list[dict[str, Any]] = []
    for n, entry in enumerate(doc["events"]):
        try:
            event = orjson.loads(base64.b64decode(entry["leaf"], validate=True))
            index = entry["leaf_index"]
        except (TypeError, KeyError, binascii.Error, orjson.JSONDecodeError) as e:
            raise ValueError(f"events[{n}]: expected leaf_index and a base64 JSON leaf ({e})") from e
        if not isinstance(event, dict) or type(index) is not int:
            raise TypeError(f"events[{n}]: expected an integer leaf_index and a JSON object leaf")
        kind = str(event.get("type", "?"))
        events.append(
            {
                "index": index,
                "time": event.get("time"),
                "type": kind,
                "summary": _summary(event),
                "event": event,
            }
        )
    started: dict[str, Any] = next((e["event"] for e in events if e["type"] == "execution.started"), {})
    ends = [e["type"] for e in events if e["type"] in ("execution.completed", "execution.terminated")]
    return {
        "execution": started.get("execution"),
        "principal": started.get("principal"),
        "outcome": ends[0].removeprefix("execution.") if ends else None,
        "events": events,
    }


def _summary(event: dict[str, Any]) -> str:
    """One line for a person about one logged event (its type alone if its fields are
    not what that type carries: the file is not verified here)."""
    try:
        return _describe(event)
    except (TypeError, ValueError, AttributeError):
        return str(event.get("type"))


def _describe(event: dict[str, Any]) -> str:
    kind, get = event.get("type"), event.get

    def part(name: str) -> dict[str, Any]:
        value = event.get(name)
        return value if isinstance(value, dict) else {}

    if kind == "key.declared":
        return f"{get('purpose', '?')} key declared ({get('algorithm', '?')})"
    if kind == "policy.activated":
        return f"policy bundle v{get('version')} activated by {get('signer')}: {get('bundle')}"
    if kind == "decision":
        request = part("request")
        what = f"{request.get('action', '?')} {request.get('resource', '?')}"
        return f"{get('decision')} for {get('principal')}: {what} ({get('reason', '')})"
    if kind == "warrant.issued":
        return f"warrant {get('warrant')} issued to {get('principal')}, expires {when(get('expires'))}"
    if kind == "execution.started":
        zone = get("zone") or "none"
        lease = duration(get("lease_ttl_ms"))
        executable = part("measurement").get("executable")
        return f"{get('execution')} started by {get('principal')}: {executable} (zone {zone}, lease {lease})"
    if kind == "execution.verified":
        return (
            f"re-verified ({', '.join(get('checked') or [])}): {get('result')} {get('reason', '')}".rstrip()
        )
    if kind == "execution.completed":
        return f"completed, exit status {get('exit_status')}, after {duration(get('duration_ms'))}"
    if kind == "execution.terminated":
        detail = f" ({get('detail')})" if get("detail") else ""
        return f"terminated: {get('reason')}{detail}, after {duration(get('duration_ms'))}"
    return str(kind)


def _timeline_text(shown: dict[str, Any]) -> str:
    """``proctor receipt show`` for a person."""
    head = f"execution {shown['execution']} of {shown['principal']}: {shown['outcome'] or 'no end recorded'}"
    verification = shown.get("verification")
    if verification is None:
        proof = "not verified here: run proctor verify FILE --log-key KEY (or give --log-key)"
    else:
        failed = verification["failed"]
        proof = ticks(
            [(verification["ok"], "verified" if failed is None else f"does not verify (step {failed})")]
        )
    rows = [(when(e["time"]), e["index"], e["type"], e["summary"]) for e in shown["events"]]
    return "\n".join([head, proof, "", table(rows, ("time", "index", "event", "what"))])


class _ReceiptCommand(TyperCommand):
    """``proctor receipt``, which also dispatches ``proctor receipt show FILE``
    (:meth:`proctor.cli._LazyGroup.resolve_command`)."""

    @cached_property
    def subcommands(self) -> dict[str, Any]:
        """``show``: a saved receipt's timeline."""
        sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        sub.command("show")(_receipt_show)
        return {"show": typer.main.get_command(sub)}


def register(app: typer.Typer) -> None:
    """Add ``run``, ``receipt`` (with ``receipt show``) and ``verify`` to the ``proctor`` app."""
    app.command("run", context_settings={"allow_interspersed_args": False})(_run)
    app.command("receipt", cls=_ReceiptCommand)(_receipt)
    app.command("verify")(_verify)
