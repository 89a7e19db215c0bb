"""``proctor log``: read, prove and verify the lineage log (key, checkpoint, entry,
proof, consistency, verify, cosign, append).

Loaded when ``proctor log`` is invoked (:mod:`proctor.cli`, ``_LAZY_COMMANDS``), so that
``proctor run`` does not import the log and its stores.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from proctor.cli_output import DataOpt, JsonOpt, StoreOpt, emit, exit_code_of, fail, fields, ticks
from proctor.datadir import DEFAULT_DATA_DIR, DataDir
from proctor.errors import (
    ConfigError,
    EventError,
    LineageError,
    ProctorError,
)
from proctor.exitcodes import ExitCode

if TYPE_CHECKING:
    from proctor.lineage.log import Log

__all__ = ["register"]

log_app = typer.Typer(help="Read, prove and verify the lineage log.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``proctor log`` to the ``proctor`` app."""
    app.add_typer(log_app, name="log")


def _open(data: Path, store: str | None = None) -> Log:
    from proctor.lineage.log import Log  # noqa: PLC0415 - only when a log command runs

    try:
        return Log.open(data, store=store)
    except ProctorError as e:
        fail(exit_code_of(e), f"error: {e}")


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
            fail(exit_code_of(e), f"error: {e}")


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
            fail(exit_code_of(e), f"error: {e}")
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
            fail(exit_code_of(e), f"error: {e}")


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
            fail(exit_code_of(e), f"error: {e}")


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
            from proctor.store.open import open_snapshot, store_has_state  # noqa: PLC0415

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
    from proctor.lineage.events import Event  # noqa: PLC0415

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
            fail(exit_code_of(e), f"error: {e}")
        emit({"indices": indices, "tree_size": log.size}, human=fields, json=json_out)
