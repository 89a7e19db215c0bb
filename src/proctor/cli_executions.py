"""``proctor executions list|show``: what is running, and what ran.

Over ``--server URL`` (or ``PROCTOR_SERVER``) the request is signed with ``--key``
(default: the data directory's admin key): an admin sees every execution, any other
principal only its own (``GET /v1/executions``, ``GET /v1/executions/{id}``;
:mod:`proctor.governor.execution_views`). Without a server the data directory is read
directly, by an admin only, and only while no governor runs on it: the command takes
the log's append lock first, so a running governor (whose leases are newer than its
tables) makes it exit UNAVAILABLE (3) instead of showing stale leases.

Exit codes (:class:`proctor.exitcodes.ExitCode`): BAD_INPUT for bad arguments, an
unreadable key, or a refusal (no such execution: 404); UNAVAILABLE when the governor
cannot be reached or take the call (429, 5xx), or holds the data directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from proctor.cli_access import AdminAccess, admin_access, exit_for
from proctor.cli_output import (
    DataOpt,
    JsonOpt,
    ServerOpt,
    StoreOpt,
    duration,
    emit,
    fail,
    fields,
    table,
    when,
)
from proctor.datadir import DEFAULT_DATA_DIR
from proctor.errors import ProctorError
from proctor.exitcodes import ExitCode
from proctor.governor.execution_views import DEFAULT_LIMIT, MAX_LIMIT, list_executions, show_execution

__all__ = ["register"]

executions_app = typer.Typer(
    help="List and show executions: running ones by default, yours unless you are an admin.",
    no_args_is_help=True,
)

SignerOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        metavar="FILE",
        help="Key that signs the request: a principal's (its own executions) or an admin's "
        "(default: keys/admin.key in the data directory).",
    ),
]


def _local(access: AdminAccess) -> Any:
    """The data directory's governor, once no running governor holds the directory."""
    governor = access.governor
    if governor is None:  # admin_access gives a client or a governor, never neither
        fail(ExitCode.UNAVAILABLE, "error: no governor and no data directory to read")
    try:
        governor.log.start_writing()  # the append lock: held by a running governor
    except ProctorError as e:
        exit_for(e)
    return governor


@executions_app.command("list")
def _list(
    status: Annotated[
        str,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="running (still running or terminating) or all.",
            show_default=True,
        ),
    ] = "running",
    principal: Annotated[
        str | None,
        typer.Option(
            "--principal", metavar="NAME", help="Only this principal's (admins; others see only their own)."
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", metavar="N", help=f"At most this many, newest first (1-{MAX_LIMIT})."),
    ] = DEFAULT_LIMIT,
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: SignerOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List executions: id, principal, resource, zone, status, start and lease."""
    with admin_access(data, server, key, store) as access:
        try:
            if access.client is not None:
                query = {"status": status, "limit": str(limit)}
                if principal is not None:
                    query["principal"] = principal
                doc = access.client.json("GET", f"/v1/executions?{urlencode(query)}")
            else:
                governor = _local(access)
                doc = list_executions(governor, access.name, status=status, principal=principal, limit=limit)
        except ProctorError as e:
            exit_for(e)
    emit(doc, human=_list_text, json=json_out)


@executions_app.command("show")
def _show(
    execution: Annotated[str, typer.Argument(metavar="ID", help="Execution id (ex_…).")],
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: SignerOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one execution: its status, times, lease, warrant, bundle and log indices."""
    with admin_access(data, server, key, store) as access:
        try:
            if access.client is not None:
                doc = access.client.json("GET", f"/v1/executions/{quote(execution, safe='')}")
            else:
                doc = show_execution(_local(access), access.name, execution)
        except ProctorError as e:
            exit_for(e)
    emit(doc, human=_show_text, json=json_out)


def _lease(ex: dict[str, Any]) -> str:
    """The lease for a person: when it was last renewed, and what is left of it."""
    if ex.get("lease_remaining_ms") is None:
        return "-"
    remaining = ex["lease_remaining_ms"]
    left = f"{duration(remaining)} left" if remaining >= 0 else f"lapsed {duration(-remaining)} ago"
    return f"renewed {duration(ex.get('lease_age_ms'))} ago, {left}"


def _list_text(doc: dict[str, Any]) -> str:
    rows = [
        (
            ex["id"],
            ex["principal"],
            ex["resource"],
            ex["zone"] or "-",
            ex["status"] + (f" ({ex['reason']})" if ex.get("reason") else ""),
            when(ex["started"]),
            _lease(ex),
        )
        for ex in doc["executions"]
    ]
    what = "running executions" if doc.get("status") == "running" else "executions"
    text = table(
        rows, ("id", "principal", "resource", "zone", "status", "started", "lease"), empty=f"no {what}"
    )
    if doc.get("truncated"):
        text += f"\n(the newest {doc['limit']}; more match: raise --limit)"
    return text


def _show_text(ex: dict[str, Any]) -> str:
    shown = {
        "execution": ex["id"],
        "principal": ex["principal"],
        "action": ex["action"],
        "resource": ex["resource"],
        "zone": ex["zone"] or "-",
        "status": ex["status"] + (f" ({ex['reason']})" if ex.get("reason") else ""),
        "started": ex["started"],
        "ended": ex["ended"],
        "lease": _lease(ex)
        if ex.get("lease_remaining_ms") is not None
        else f"ttl {duration(ex['lease_ttl_ms'])}",
        "warrant": ex["warrant"],
        "bundle": ex["bundle"],
        "log indices": ex["log_indices"],
    }
    return fields(shown)


def register(app: typer.Typer) -> None:
    """Add ``executions`` (``list``, ``show``) to the ``proctor`` app."""
    app.add_typer(executions_app, name="executions")
