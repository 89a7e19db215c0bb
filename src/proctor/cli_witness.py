"""``proctor witness …`` (a C2SP tlog-witness of its own) and the implementation of
``proctor log cosign`` and ``proctor log verify --witness-policy`` (declared in
:mod:`proctor.cli`, which calls in here).

``proctor witness init|key|add-log|serve|status|clear-alarms`` work on the witness's own
data directory (``--data``, default ``./.proctor-witness``): its cosigner key and
state, nothing of a governor's. ``serve`` answers ``POST /add-checkpoint`` and
``/healthz``, ``/readyz``, ``/metrics`` (:mod:`proctor.orchestration.witness_http`).

Exit codes (:class:`proctor.exitcodes.ExitCode`): BAD_INPUT for bad arguments, an
unusable witness directory or key, a malformed policy file, or an address that cannot
be listened on; ``status`` exits VERIFY_FAILED while an alarm is open. ``log cosign``:
OK when the checkpoint now meets the policy's quorum; otherwise VERIFY_FAILED when a
witness found the log inconsistent with what it cosigned (422) or holds a larger tree
of it, UNAVAILABLE when a witness could not be reached, BAD_INPUT when one refused.
``log verify --witness-policy``: VERIFY_FAILED when a stored cosignature contradicts
the log or its latest checkpoint lacks the quorum.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from proctor.cli_output import DataOpt, JsonOpt, emit, fail, fields, table, ticks
from proctor.errors import ConfigError, KeyFormatError, ProctorError, VerificationError
from proctor.exitcodes import ExitCode
from proctor.orchestration.witness_dir import DEFAULT_WITNESS_DIR, WitnessDir

if TYPE_CHECKING:
    from proctor.governor.service import Governor
    from proctor.lineage.witness_policy import WitnessPolicy
    from proctor.orchestration.cosigning import WitnessedReport

__all__ = [
    "DEFAULT_LISTEN",
    "ServeWitnessOpt",
    "read_policy",
    "log_cosign",
    "witnessed",
    "attach_witness",
    "detach_witness",
    "register",
]

DEFAULT_LISTEN = "127.0.0.1:8710"

witness_app = typer.Typer(
    help="Run a witness: cosign logs' checkpoints only while they stay consistent (C2SP tlog-witness).",
    no_args_is_help=True,
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _open(data: Path) -> WitnessDir:
    try:
        return WitnessDir.open(data)
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")


def read_policy(path: Path) -> WitnessPolicy:
    """The witness policy in ``path``; exits BAD_INPUT naming what is wrong with it."""
    from proctor.lineage.witness_policy import MAX_POLICY_BYTES, WitnessPolicy  # noqa: PLC0415

    try:
        with path.open("rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
        return WitnessPolicy.from_text(raw)
    except OSError as e:
        fail(ExitCode.BAD_INPUT, f"error: cannot read the witness policy {path}: {e.strerror or e}")
    except ConfigError as e:
        fail(ExitCode.BAD_INPUT, f"error: {path}: {e}")


@witness_app.command("init")
def _init(
    name: Annotated[
        str,
        typer.Option(
            "--name", metavar="NAME", help="The witness's name: its key name, in every cosignature line."
        ),
    ],
    data: DataOpt = DEFAULT_WITNESS_DIR,
    json_out: JsonOpt = False,
) -> None:
    """Create a witness directory: a new cosigner key (Ed25519, cosignature/v1) and empty state.

    The directory must not exist or be empty; it is built beside it and renamed into
    place whole (mode 0700, key 0600).
    """
    try:
        made = WitnessDir.create(data, name=name)
        vkey = made.verifier().to_string()
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    emit({"data": str(made.path), "name": made.name, "vkey": vkey}, human=fields, json=json_out)


@witness_app.command("key")
def _key(data: DataOpt = DEFAULT_WITNESS_DIR) -> None:
    """Print the witness's verifier key (name+keyid+base64(0x04||key)), for policies."""
    try:
        typer.echo(_open(data).verifier().to_string())
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")


@witness_app.command("add-log")
def _add_log(
    vkey: Annotated[
        str,
        typer.Option(
            "--vkey", metavar="KEY", help="The log's verifier key (proctor log key); its name is the origin."
        ),
    ],
    data: DataOpt = DEFAULT_WITNESS_DIR,
    json_out: JsonOpt = False,
) -> None:
    """Trust a log: cosign checkpoints signed by this key (a running witness sees it at once)."""
    from proctor.note import NoteVerifier  # noqa: PLC0415

    try:
        key = NoteVerifier.from_string(vkey)
    except KeyFormatError as e:
        fail(ExitCode.BAD_INPUT, f"error: --vkey: expected a log verifier key: {e}")
    witness = _open(data)
    try:
        state = witness.state()
        try:
            added = state.add_log(key, added=_now())
        finally:
            state.close()
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    emit({"origin": key.name, "vkey": key.to_string(), "added": added}, human=fields, json=json_out)


@witness_app.command("serve")
def _serve(
    data: DataOpt = DEFAULT_WITNESS_DIR,
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            metavar="ADDRESS",
            help="HOST:PORT to listen on ([::1]:PORT for IPv6).",
            show_default=True,
        ),
    ] = DEFAULT_LISTEN,
) -> None:
    """Serve the witness: POST /add-checkpoint, GET /healthz, /readyz, /metrics."""
    from proctor.orchestration.witness import Witness  # noqa: PLC0415
    from proctor.orchestration.witness_http import bind, parse_listen, serve  # noqa: PLC0415

    witness_dir = _open(data)
    try:
        host, port = parse_listen(listen)
        state = witness_dir.state()
        witness = Witness(state, witness_dir.cosigner())
        sock = bind(host, port)
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    typer.echo(
        f"proctor: witness {witness.name} listening on http://{listen} "
        f"({len(state.logs())} log key(s) trusted, {state.open_alarm_count()} open alarm(s))",
        err=True,
    )
    try:
        serve(witness, sock)
    finally:
        state.close()


def _status_text(doc: dict[str, Any]) -> str:
    logs = table(
        [(r["origin"], r["cosigned_size"], r["cosigned_at"]) for r in doc["logs"]],
        ["origin", "cosigned size", "cosigned at"],
        empty="(no log trusted: proctor witness add-log --vkey KEY)",
    )
    alarms = table(
        [(a["id"], a["origin"], a["raised"], a["reason"], a["detail"]) for a in doc["alarms"]],
        ["id", "origin", "raised", "reason", "detail"],
        empty="(none)",
    )
    return f"witness {doc['name']}\nkey {doc['vkey']}\n\n{logs}\n\nopen alarms:\n{alarms}"


@witness_app.command("status")
def _status(data: DataOpt = DEFAULT_WITNESS_DIR, json_out: JsonOpt = False) -> None:
    """Show the trusted logs, the last checkpoint cosigned for each, and open alarms (exit 1 if any)."""
    witness = _open(data)
    try:
        state = witness.state()
        try:
            doc = {
                "name": witness.name,
                "vkey": witness.verifier().to_string(),
                "logs": state.logs(),
                "alarms": [a.to_json() for a in state.alarms(open_only=True)],
            }
        finally:
            state.close()
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    emit(doc, human=_status_text, json=json_out)
    if doc["alarms"]:
        fail(ExitCode.VERIFY_FAILED, f"{len(doc['alarms'])} open alarm(s): a log showed an inconsistent view")


@witness_app.command("clear-alarms")
def _clear_alarms(
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why the alarm is cleared (kept with it).")
    ],
    alarm_id: Annotated[
        int | None, typer.Option("--id", metavar="N", help="Clear only this alarm (default: every open one).")
    ] = None,
    data: DataOpt = DEFAULT_WITNESS_DIR,
    json_out: JsonOpt = False,
) -> None:
    """Clear open alarms once the evidence was looked at: /readyz is ready again."""
    if not reason.strip():
        fail(ExitCode.BAD_INPUT, "error: --reason: expected why the alarm is cleared, found nothing")
    witness = _open(data)
    try:
        state = witness.state()
        try:
            cleared = state.clear_alarms(reason=reason, at=_now(), alarm_id=alarm_id)
            remaining = state.open_alarm_count()
        finally:
            state.close()
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    if alarm_id is not None and not cleared:
        fail(ExitCode.BAD_INPUT, f"error: --id {alarm_id}: no open alarm has that id")
    emit({"cleared": cleared, "open_alarms": remaining}, human=fields, json=json_out)


# -- the log's side: proctor log cosign, proctor log verify --witness-policy ------------


def log_cosign(
    data: Path, policy_path: Path, *, timeout: float, json_out: bool, store_url: str | None = None
) -> None:
    """``proctor log cosign``: submit the latest checkpoint to the policy's witnesses.

    ``store_url``: the log's PostgreSQL database (``--store``), else the data directory's file.
    """
    import httpx  # noqa: PLC0415

    from proctor.datadir import DataDir  # noqa: PLC0415
    from proctor.lineage.log import Log  # noqa: PLC0415
    from proctor.orchestration.cosigning import collect_cosignatures, open_witnessed_store  # noqa: PLC0415

    policy = read_policy(policy_path)
    if timeout <= 0:
        fail(ExitCode.BAD_INPUT, f"error: --timeout: expected a positive number of seconds, found {timeout}")
    try:
        log = Log.open(data, store=store_url)
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    try:
        store = open_witnessed_store(store_url, DataDir.open(data).db_path)
    except ProctorError as e:
        log.close()
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    try:
        with httpx.Client(timeout=timeout) as client:
            signer = DataDir.open(data).log_signer()  # each request says it is from the log
            report = collect_cosignatures(log, store, policy, client=client, signer=signer)
    except ProctorError as e:
        fail(
            ExitCode.VERIFY_FAILED if isinstance(e, VerificationError) else ExitCode.BAD_INPUT, f"error: {e}"
        )
    finally:
        store.close()
        log.close()

    def human(doc: dict[str, Any]) -> str:
        steps = [
            (w["outcome"] == "cosigned", f"{w['witness']}: {w['outcome']}: {w['detail']}")
            for w in doc["witnesses"]
        ]
        steps.append((doc["quorum"]["satisfied"], doc["quorum"]["detail"]))
        return ticks(steps)

    emit(report.to_json(), human=human, json=json_out)
    if report.quorum.satisfied:
        return
    outcomes = {w.outcome for w in report.witnesses}
    if outcomes & {"inconsistent", "ahead", "invalid"}:
        code = ExitCode.VERIFY_FAILED
    elif "unreachable" in outcomes:
        code = ExitCode.UNAVAILABLE
    else:
        code = ExitCode.BAD_INPUT
    for w in report.witnesses:
        if w.outcome != "cosigned":
            typer.echo(f"proctor: witness {w.witness}: {w.outcome}: {w.detail}", err=True)
    fail(
        code, f"the checkpoint of size {report.size} does not meet the witness policy: {report.quorum.detail}"
    )


def witnessed(data: Path, policy_path: Path, *, store_url: str | None = None) -> WitnessedReport:
    """``proctor log verify --witness-policy``: hold the log of ``data`` (in ``store_url``'s
    PostgreSQL database when given) to the policy."""
    from proctor.datadir import DataDir  # noqa: PLC0415
    from proctor.orchestration.cosigning import check_witnessed, open_witnessed_store  # noqa: PLC0415

    policy = read_policy(policy_path)
    try:
        data_dir = DataDir.open(data)
        store = open_witnessed_store(store_url, data_dir.db_path)
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    try:
        return check_witnessed(store, data_dir.log_verifier(), policy)
    except ProctorError as e:
        fail(ExitCode.VERIFY_FAILED, f"witness verification failed: {e}")
    finally:
        store.close()


# -- a governor node as a witness: proctor serve --witness DIR ---------------------------

ServeWitnessOpt = Annotated[
    Path | None,
    typer.Option(
        "--witness",
        envvar="PROCTOR_WITNESS",
        metavar="DIR",
        help="Also witness this deployment's log with the witness directory DIR (proctor witness "
        "init): C2SP add-checkpoint at /witness/add-checkpoint on this port; an inconsistency makes "
        "the node not ready.",
    ),
]
"""``proctor serve --witness DIR`` (declared here, used by :mod:`proctor.cli_admin`)."""


def attach_witness(path: Path | None, governor: Governor) -> None:
    """``proctor serve --witness DIR``: make ``governor`` a witness of its log (before its
    app is built, which then serves the witness's routes); exits BAD_INPUT when the
    directory is not a usable witness directory."""
    if path is None:
        return
    from proctor.governor.node_witness import NodeWitness  # noqa: PLC0415

    try:
        governor.witness = NodeWitness.open(path, governor.log)
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: --witness {path}: {e}")
    typer.echo(f"proctor: witness {governor.witness.name} at /witness (state {path})", err=True)


def detach_witness(governor: Governor) -> None:
    """Close the witness :func:`attach_witness` gave ``governor``, if any."""
    if governor.witness is not None:
        governor.witness.close()


def register(app: typer.Typer) -> None:
    """Add ``witness`` (``init``, ``key``, ``add-log``, ``serve``, ``status``,
    ``clear-alarms``) to the ``proctor`` app."""
    app.add_typer(witness_app, name="witness")
