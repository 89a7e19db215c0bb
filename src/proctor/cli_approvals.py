"""``proctor approve ID [--deny]`` and ``proctor approvals list|show``: the admin's side
of approvals (:mod:`proctor.governor.approvals`).

An allow whose policy says ``@approval("required")`` issues no warrant: the requester
gets an approval id and waits. An admin decides out of band, here: over ``--server URL``
(or ``PROCTOR_SERVER``) the request is signed with ``--key`` (default: the data
directory's admin key), and the governor accepts it only from an active admin who is
not the requester (``POST /v1/approvals/{id}/approve`` or ``/deny``,
``GET /v1/approvals``). Without a server the data directory is used directly, by an
admin, and only while no governor runs on it.

Exit codes (:class:`proctor.exitcodes.ExitCode`): BAD_INPUT for bad arguments, an
unreadable key, or a refusal (not an admin, the requester's own, no such approval, not
pending); UNAVAILABLE when the governor cannot be reached or take the call, or holds
the data directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from proctor.cli_access import AdminAccess, admin_access, exit_for
from proctor.cli_output import DataOpt, JsonOpt, ServerOpt, StoreOpt, emit, fail, fields, table, when
from proctor.datadir import DEFAULT_DATA_DIR
from proctor.errors import ProctorError
from proctor.exitcodes import ExitCode
from proctor.store.state_approvals import APPROVAL_STATUSES

__all__ = ["register"]

approvals_app = typer.Typer(
    help='List and show approvals asked for by @approval("required").', no_args_is_help=True
)

KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        metavar="FILE",
        help="An admin's key that signs the request (default: keys/admin.key in the data directory).",
    ),
]


def _local(access: AdminAccess) -> Any:
    """The data directory's governor, once no running governor holds the directory."""
    governor = access.governor
    if governor is None:  # admin_access gives a client or a governor, never neither
        fail(ExitCode.UNAVAILABLE, "error: no governor and no data directory to use")
    try:
        governor.log.start_writing()  # the append lock: held by a running governor
    except ProctorError as e:
        exit_for(e)
    return governor


def _approve(
    approval: Annotated[str, typer.Argument(metavar="ID", help="Approval id (ap_…).")],
    deny: Annotated[bool, typer.Option("--deny", help="Deny it instead (the requester is refused).")] = False,
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why, for the log.")] = "",
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Approve (or --deny) a pending approval: the requester may then use it once, for
    exactly the call it asked for, until it expires."""
    verdict = "deny" if deny else "approve"
    with admin_access(data, server, key, store) as access:
        try:
            if access.client is not None:
                doc = access.client.json(
                    "POST", f"/v1/approvals/{quote(approval, safe='')}/{verdict}", {"reason": reason}
                )
            else:
                approvals = _local(access).authorizer.approvals
                doc = approvals.decide(approval, approve=not deny, by=access.name, reason=reason)
        except ProctorError as e:
            exit_for(e)
    emit(
        doc,
        human=lambda d: f"approval {d['id']} {d['status']} by {d['decided_by']} (log index {d['log_index']})",
        json=json_out,
    )


@approvals_app.command("list")
def _list(
    status: Annotated[
        str | None,
        typer.Option("--status", metavar="STATUS", help=f"Only these: {', '.join(APPROVAL_STATUSES)}."),
    ] = None,
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List approvals, newest first: id, status, principal, action, resource, expiry."""
    if status is not None and status not in APPROVAL_STATUSES:
        fail(
            ExitCode.BAD_INPUT,
            f"error: --status: expected one of {', '.join(APPROVAL_STATUSES)}, found {status!r}",
        )
    with admin_access(data, server, key, store) as access:
        try:
            if access.client is not None:
                query = f"?{urlencode({'status': status})}" if status is not None else ""
                doc = access.client.json("GET", f"/v1/approvals{query}")
            else:
                doc = _local(access).authorizer.approvals.listed(status)
        except ProctorError as e:
            exit_for(e)
    emit(doc, human=_list_text, json=json_out)


@approvals_app.command("show")
def _show(
    approval: Annotated[str, typer.Argument(metavar="ID", help="Approval id (ap_…).")],
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one approval: what it is for, its status, who decided, the warrant that used it."""
    with admin_access(data, server, key, store) as access:
        try:
            if access.client is not None:
                doc = access.client.json("GET", f"/v1/approvals/{quote(approval, safe='')}")
            else:
                doc = _local(access).authorizer.approvals.show(approval, caller=access.name, admin=True)
        except ProctorError as e:
            exit_for(e)
    emit(doc, human=fields, json=json_out)


def _list_text(doc: dict[str, Any]) -> str:
    rows = [
        (a["id"], a["status"], a["principal"], a["action"], a["resource"], when(a["expires_at"]))
        for a in doc["approvals"]
    ]
    return table(rows, ("id", "status", "principal", "action", "resource", "expires"), empty="no approvals")


def register(app: typer.Typer) -> None:
    """Add ``approve`` and ``approvals`` (``list``, ``show``) to the ``proctor`` app."""
    app.command("approve")(_approve)
    app.add_typer(approvals_app, name="approvals")
