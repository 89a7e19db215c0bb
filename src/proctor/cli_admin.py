"""``proctor`` commands for the governor: serve, principals, policy, authorize, revoke, warrants.

Admin commands read the admin key from the data directory (``--data``) or ``--key``,
and act on a running governor (``--server URL`` or ``PROCTOR_SERVER``) or, when none
runs, directly on the data directory (:mod:`proctor.cli_access`). The ``policy`` and
``warrant`` commands are in :mod:`proctor.cli_policy` and :mod:`proctor.cli_warrant`.
Data is JSON when piped or with ``--json``, and for a person on a terminal
(:mod:`proctor.cli_output`). Exit codes: :class:`proctor.exitcodes.ExitCode`
(``authorize``: OK on allow, DENIED on deny or HTTP 401; otherwise, as every command
that asks a governor, BAD_INPUT for a refusal and UNAVAILABLE when the governor cannot
be reached or take the call: :func:`proctor.cli_output.error_code`).
"""

from __future__ import annotations

import gc
import hashlib
from pathlib import Path
from typing import Annotated, Any

import typer

from proctor.authorization.keys import PrincipalKey, valid_principal_name
from proctor.canonical import loads
from proctor.cli_access import KeyOpt, admin_access, error_code, exit_for
from proctor.cli_output import (
    DataOpt,
    GovernorOpt,
    JsonOpt,
    ServerOpt,
    StoreOpt,
    emit,
    fail,
    fields,
    table,
    when,
)
from proctor.cli_policy import policy_app
from proctor.cli_warrant import warrant_app
from proctor.cli_witness import ServeWitnessOpt, attach_witness, detach_witness
from proctor.client import GovernorClient, GovernorError
from proctor.config import load_config
from proctor.datadir import DEFAULT_DATA_DIR
from proctor.errors import CanonicalizationError, ProctorError
from proctor.exitcodes import ExitCode
from proctor.governor.identity import verify_attributes, verify_zone
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import DEFAULT_COMMIT_LINGER_S, Governor
from proctor.store.open import describe

__all__ = ["EXIT_DENIED", "EXIT_UNAVAILABLE", "register"]

# Public aliases kept for compatibility; the table is ExitCode.
EXIT_DENIED = ExitCode.DENIED
EXIT_UNAVAILABLE = ExitCode.UNAVAILABLE

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Principal name.")]

principal_app = typer.Typer(help="Register, suspend, resume and list principals.", no_args_is_help=True)


def _attrs(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(ExitCode.BAD_INPUT, f"error: expected --attr key=value, found {pair!r}")
        out[name] = value
    return out


# -- serve -------------------------------------------------------------------------


def _serve(
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8700,
    node: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="This governor node's name, in every event (default: HOST:PID)."),
    ] = None,
    shared: Annotated[
        bool,
        typer.Option(
            "--shared/--exclusive",
            metavar="",
            show_default=True,
            help="Serve the store together with other `proctor serve --shared` processes, each on its "
            "own address: nonces, leases, running counts and trust changes go through the store "
            "(ADR 0016). --exclusive: the only governor of its data directory.",
        ),
    ] = False,
    zone: Annotated[
        str,
        typer.Option(
            metavar="ZONE", help="This node's zone, in /v1/nodes and proctor nodes (default: none)."
        ),
    ] = "",
    workers: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Run N shared governor processes on this one address, under a parent that "
            "supervises them and stops them all on SIGTERM.",
        ),
    ] = None,
    commit_linger_ms: Annotated[
        float,
        typer.Option(
            metavar="MS",
            help="While busy, how long the log writer gathers appends into one commit (ms); "
            "a lone request never waits.",
        ),
    ] = DEFAULT_COMMIT_LINGER_S * 1000,
    mint_helper: Annotated[
        bool,
        typer.Option(
            "--mint-helper/--no-mint-helper",
            metavar="",
            show_default=True,
            help="Mint warrants in a helper process, off the event loop, while the log is busy "
            "(faster under load; a lone request mints on the event loop, which answers it sooner).",
        ),
    ] = True,
    max_streams: Annotated[
        int,
        typer.Option(
            envvar="PROCTOR_MAX_STREAMS",
            metavar="N",
            help="Event streams open at once (at most half the connections the descriptors allow).",
        ),
    ] = 1024,
    max_streams_per_principal: Annotated[
        int | None,
        typer.Option(
            envvar="PROCTOR_MAX_STREAMS_PER_PRINCIPAL",
            metavar="N",
            help="Event streams one principal may hold (default: max_streams in the \\[quotas] table "
            "of config.toml in the data directory, 64; \\[quotas.principals.NAME] tables still apply).",
        ),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            metavar="",
            show_default=True,
            help="Log one line per request to stderr: method, path, status, principal, microseconds.",
        ),
    ] = False,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            help="debug, info, warning or error (stderr).",
            case_sensitive=False,
        ),
    ] = "warning",
    witness: ServeWitnessOpt = None,
) -> None:
    """Run the governor (HTTP API, OpenAPI at /docs, /healthz, /readyz, /metrics)."""
    from proctor.console import mount as mount_pages  # noqa: PLC0415 - only this command serves them
    from proctor.governor.app import create_app  # noqa: PLC0415 - only this command needs the server
    from proctor.governor.nodes import heartbeat_while_serving  # noqa: PLC0415
    from proctor.governor.quotas import QuotaStreamSlots  # noqa: PLC0415
    from proctor.governor.server import (  # noqa: PLC0415
        configure_logging,
        default_node,
        hold_serving_mode,
        listening_socket,
        plan_limits,
        raise_fd_limit,
        serve,
    )

    try:
        if not 0 <= commit_linger_ms <= 100:
            fail(
                ExitCode.BAD_INPUT,
                f"error: expected --commit-linger-ms between 0 and 100, found {commit_linger_ms}",
            )
        configure_logging(log_level.lower(), access_log=access_log)
        if workers is not None:  # the parent: binds, starts the shared processes, supervises
            from proctor.governor.workers import run_workers  # noqa: PLC0415

            options: dict[str, object] = {"--data": data, "--store": store, "--host": host, "--port": port}
            options["--zone"], options["--witness"] = verify_zone(zone), witness
            options |= {"--log-level": log_level, "--commit-linger-ms": commit_linger_ms}
            options |= {
                "--max-streams": max_streams,
                "--max-streams-per-principal": max_streams_per_principal,
            }
            flags = ["--mint-helper" if mint_helper else "--no-mint-helper"]
            flags += ["--access-log" if access_log else "--no-access-log"]
            raise typer.Exit(run_workers(workers, options=options, flags=flags, node=node))
        node, zone = node or default_node(), verify_zone(zone)
        if max_streams_per_principal is None:  # the data directory's quota (the governor checks it)
            max_streams_per_principal = load_config(data).quotas.default.max_streams
        # Every descriptor the process may have, a reserve kept for its own files.
        limits = plan_limits(
            raise_fd_limit(), max_streams=max_streams, max_streams_per_principal=max_streams_per_principal
        )
        linger = commit_linger_ms / 1000
        governor = Governor(
            data, node=node, commit_linger_s=linger, mint_helper=mint_helper, store=store, shared=shared
        )
    except ProctorError as e:
        exit_for(e)
    try:
        try:
            serving = hold_serving_mode(governor.data.path, shared=shared, store=store)  # never both kinds
            governor.log.start_writing()
        except ProctorError as e:
            fail(ExitCode.UNAVAILABLE, f"error: {e}")  # take the append lock now: one governor per data dir
        attach_witness(witness, governor)  # proctor serve --witness DIR (governor.node_witness)
        governor.start_sweeper()
        slots = QuotaStreamSlots(
            governor.quotas, total=limits.max_streams, per_principal=limits.max_streams_per_principal
        )
        app = create_app(governor, streams=slots)
        mount_pages(app)  # the console, proof viewer, lineage explorer, health page, /docs
        # Everything loaded so far lives as long as the process: keep it out of the
        # cyclic collector's passes, which would otherwise walk it every time, and
        # collect the young generation less often (each request allocates hundreds of
        # short-lived objects that reference counting frees anyway). Measured: p99
        # under load 44 → 28 ms, throughput +3% (docs/benchmarks-history.md).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        try:
            sock = listening_socket(host, port)  # before the address is announced: a busy port fails here
        except ProctorError as e:
            exit_for(e)
        shown = f"[{host}]" if ":" in host else host
        where = f"data {data}" if store is None else f"data {data}, store {describe(store, data)}"
        where += ", shared" if shared else ""
        typer.echo(f"proctor: governor {node} on http://{shown}:{port} ({where})", err=True)
        registry, share = app.metrics.registry, app.rate_share
        with heartbeat_while_serving(governor, zone=zone, sock=sock, registry=registry, share=share):
            serve(app, sock=sock, limits=limits, log_level=log_level.lower(), access_log=access_log)
        serving.close()
    finally:
        governor.close()
        detach_witness(governor)


# -- principals ----------------------------------------------------------------------


@principal_app.command("add")
def _principal_add(
    name: NameArg,
    out: Annotated[
        Path,
        typer.Option("--out", metavar="FILE", help="Where to write the new private key (mode 0600)."),
    ],
    attr: Annotated[
        list[str] | None,
        typer.Option("--attr", metavar="KEY=VALUE", help="Attribute key=value (repeatable)."),
    ] = None,
    zone: Annotated[
        str, typer.Option("--zone", metavar="ZONE", help="The principal's zone (trust boundary).")
    ] = "",
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a principal and write its private key."""
    attrs = _attrs(attr or [])
    try:
        verify_attributes(attrs)
        verify_zone(zone)
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    if out.exists():
        fail(ExitCode.BAD_INPUT, f"error: {out} exists; refusing to overwrite a key")
    if not valid_principal_name(name):
        fail(ExitCode.BAD_INPUT, f"error: expected a principal name of [A-Za-z0-9._-], found {name!r}")
    new_key = PrincipalKey.generate(name)
    with admin_access(data, server, key, store) as admin:
        try:
            if admin.client is not None:
                body = {"name": name, "public_key": new_key.public_key_b64, "attrs": attrs, "zone": zone}
                record = admin.client.json("POST", "/v1/principals", body)
            elif admin.governor is not None:
                record = admin.governor.add_principal(
                    name, new_key.public_key_b64, attrs=attrs, zone=zone, by=admin.name
                ).to_json()
        except ProctorError as e:
            exit_for(e)
    new_key.save(out)
    emit({"principal": record, "key_file": str(out)}, human=fields, json=json_out)


def _set_status(
    name: str,
    status: str,
    data: Path,
    store: str | None,
    server: str | None,
    key: Path | None,
    json_out: bool,
) -> None:
    with admin_access(data, server, key, store) as admin:
        try:
            if admin.client is not None:
                verb = "suspend" if status == "suspended" else "resume"
                record = admin.client.json("POST", f"/v1/principals/{name}/{verb}")
            elif admin.governor is not None:
                record = admin.governor.set_principal_status(name, status, by=admin.name).to_json()
        except ProctorError as e:
            exit_for(e)
    emit(record, human=fields, json=json_out)


@principal_app.command("suspend")
def _principal_suspend(
    name: NameArg,
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Suspend a principal: every request it makes is denied."""
    _set_status(name, "suspended", data, store, server, key, json_out)


@principal_app.command("resume")
def _principal_resume(
    name: NameArg,
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Resume a suspended principal."""
    _set_status(name, "active", data, store, server, key, json_out)


@principal_app.command("list")
def _principal_list(
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List principals."""
    with admin_access(data, server, key, store) as admin:
        try:
            if admin.client is not None:
                records = admin.client.json("GET", "/v1/principals")
            elif admin.governor is not None:
                records = [p.to_json() for p in admin.governor.state.principals()]
        except ProctorError as e:
            exit_for(e)
    emit(records, human=_principals_table, json=json_out)


def _principals_table(records: list[dict[str, Any]]) -> str:
    rows = [
        (
            p.get("name"),
            p.get("status"),
            p.get("zone") or "-",
            " ".join(f"{k}={v}" for k, v in sorted((p.get("attrs") or {}).items())) or "-",
            when(p.get("updated")),
        )
        for p in records
    ]
    return table(rows, ("name", "status", "zone", "attributes", "updated"), empty="no principals")


# -- authorize, revoke -------------------------------------------------------------


def _authorize(
    action: Annotated[str, typer.Option("--action", metavar="ACTION", help="exec, mcp.call or tool.call.")],
    resource: Annotated[
        str, typer.Option("--resource", metavar="RESOURCE", help="Executable path or server/tool.")
    ],
    key: Annotated[Path, typer.Option("--key", metavar="FILE", help="The principal's key file.")],
    server: GovernorOpt,
    context: Annotated[
        str | None,
        typer.Option(metavar="JSON", help="JSON object: zone, executable_digest, arguments, parent_warrant."),
    ] = None,
    argv: Annotated[
        list[str] | None, typer.Argument(metavar="ARGV", help="The exact argument vector (after --).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Ask the governor; print the decision (and warrant). Exit 0 (OK) on allow, 77 (DENIED) on deny."""
    doc: dict[str, Any] = {"action": action, "resource": resource, "argv": list(argv or [])}
    if context:
        try:
            extra = loads(context)  # the governor's parser: NaN (sent as null) and lossy numbers refused
        except CanonicalizationError as e:
            fail(ExitCode.BAD_INPUT, f"error: --context: expected JSON: {e}")
        if not isinstance(extra, dict):
            fail(ExitCode.BAD_INPUT, "error: --context: expected a JSON object")
        doc.update(extra)
    if action == "exec" and "executable_digest" not in doc:
        # An exec warrant binds the executable's content: hash the file named here.
        try:
            with open(resource, "rb") as f:
                doc["executable_digest"] = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            fail(
                ExitCode.BAD_INPUT, f"error: --resource {resource}: cannot hash the executable: {e.strerror}"
            )
    try:
        AuthorizeRequest.from_json(doc)
        principal_key = PrincipalKey.load(key)
    except (ProctorError, OSError) as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    try:
        with GovernorClient(server, principal_key) as client:
            result = client.authorize(doc)
    except GovernorError as e:
        fail(error_code(e) if e.status != 401 else ExitCode.DENIED, f"error: {e}")
    emit(result, human=fields, json=json_out)
    if not result.get("allow"):
        decision = result.get("decision", {})
        typer.echo(
            f"proctor: denied: {decision.get('reason', '')} (policies: {decision.get('policies', [])})",
            err=True,
        )
        raise typer.Exit(ExitCode.DENIED)


def _revoke(
    warrant: Annotated[str | None, typer.Option("--warrant", metavar="ID", help="Warrant id.")] = None,
    execution: Annotated[str | None, typer.Option("--execution", metavar="ID", help="Execution id.")] = None,
    principal: Annotated[
        str | None, typer.Option("--principal", metavar="NAME", help="Principal name (all its warrants).")
    ] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", metavar="DIGEST", help="Policy bundle digest.")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why (recorded).")] = "",
    successor: Annotated[
        str | None,
        typer.Option(
            "--successor",
            metavar="NAME",
            help="With --principal ADMIN: an active principal that becomes admin in the same "
            "change (required to revoke the last admin).",
        ),
    ] = None,
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a warrant, an execution, a principal or a policy bundle (recorded in the log).

    A revoked principal loses every right, admin included. Revoking something that
    does not exist fails (exit 2, BAD_INPUT) and records nothing.
    """
    given = [(k, v) for k, v in (("warrant", warrant), ("execution", execution),
                                  ("principal", principal), ("policy", policy)) if v]  # fmt: skip
    if len(given) != 1:
        fail(ExitCode.BAD_INPUT, "error: give exactly one of --warrant, --execution, --principal, --policy")
    kind, target = given[0]
    if successor is not None and kind != "principal":
        fail(ExitCode.BAD_INPUT, "error: --successor goes with --principal (the admin it succeeds)")
    with admin_access(data, server, key, store) as admin:
        try:
            if admin.client is not None:
                body = {"kind": kind, "target": target, "reason": reason}
                if successor:
                    body["successor"] = successor
                result = admin.client.json("POST", "/v1/revocations", body)
            elif admin.governor is not None:
                result = admin.governor.revoke(
                    kind, str(target), reason=reason, by=admin.name, successor=successor or ""
                )
        except ProctorError as e:
            exit_for(e)
    emit(result, human=fields, json=json_out)


def register(app: typer.Typer) -> None:
    """Add the governor commands to the ``proctor`` app."""
    app.command("serve")(_serve)
    app.command("authorize", context_settings={"allow_interspersed_args": False})(_authorize)
    app.command("revoke")(_revoke)
    app.add_typer(principal_app, name="principal")
    app.add_typer(policy_app, name="policy")
    app.add_typer(warrant_app, name="warrant")
