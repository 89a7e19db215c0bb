"""``proctor nodes``: the governor nodes serving a store, with their zone, version,
last heartbeat and lag (:mod:`proctor.governor.nodes`).

Over ``--server URL`` (or ``PROCTOR_SERVER``) the request is signed with ``--key``
(default: the data directory's admin key; any active principal may ask:
``GET /v1/nodes``). Without a server the store is read directly: the data directory's
file, or the PostgreSQL database of ``--store``. That is safe while governors run (it
takes no lock and writes nothing but a pending safe schema step), and it is how an
operator looks when no governor answers.

A node whose heartbeat is older than a few intervals is shown ``stale``, whatever its
row says; ``lag`` is how many log entries it has not applied.

Exit codes (:class:`proctor.exitcodes.ExitCode`): BAD_INPUT for bad arguments, an
unreadable key or store, or a refusal (403: the key's principal is not active);
UNAVAILABLE when the governor cannot be reached or take the call (429, 5xx).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from proctor.authorization.keys import PrincipalKey
from proctor.cli_access import exit_for
from proctor.cli_output import (
    DataOpt,
    JsonOpt,
    StoreOpt,
    duration,
    emit,
    fail,
    printable,
    server_option,
    table,
)
from proctor.client import GovernorClient
from proctor.datadir import DEFAULT_DATA_DIR, DataDir
from proctor.errors import ProctorError
from proctor.exitcodes import ExitCode
from proctor.governor.nodes import nodes_view

__all__ = ["register"]

NodesServerOpt = Annotated[
    str | None,
    server_option(
        "Without it the store itself is read (--data, or --store): safe while governors run on it."
    ),
]

SignerOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        metavar="FILE",
        help="Key that signs the request to --server: any active principal's "
        "(default: keys/admin.key in the data directory).",
    ),
]


def _nodes(
    zone: Annotated[
        str | None, typer.Option("--zone", metavar="ZONE", help="Only the nodes of this zone.")
    ] = None,
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: NodesServerOpt = None,
    key: SignerOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the governor nodes: zone, status, version, URL, last heartbeat, applied log size, lag."""
    try:
        doc = _from_server(server, key, data, zone) if server else _from_store(data, store, zone)
    except ProctorError as e:
        exit_for(e)
    emit(doc, human=_text, json=json_out)


def _from_server(server: str, key: Path | None, data: Path, zone: str | None) -> dict[str, Any]:
    try:
        if key is None:  # the data directory's own key: only from a directory that passes its checks
            DataDir.open(data)
        signer = PrincipalKey.load(key or data / "keys" / "admin.key")
    except (ProctorError, OSError) as e:
        fail(ExitCode.BAD_INPUT, f"error: cannot load the signing key: {e}")
    path = "/v1/nodes" + ("" if zone is None else "?" + urlencode({"zone": zone}))
    with GovernorClient(server, signer) as client:
        doc: dict[str, Any] = client.json("GET", path)
    return doc


def _from_store(data: Path, store: str | None, zone: str | None) -> dict[str, Any]:
    from proctor.store.open import open_stores  # noqa: PLC0415 - loads the store layer

    root = DataDir.open(data)
    stores = open_stores(store, db_path=root.db_path, lock_path=root.lock_path, shared=True)
    try:
        records = stores.state.nodes()
        size = stores.log.tree_size()  # after the rows, as GET /v1/nodes reads them
    finally:
        stores.state.close()
        stores.sequencer.close()
        stores.log.close()
    return nodes_view(records, log_size=size, now_ms=int(time.time() * 1000), zone=zone)


def _text(doc: dict[str, Any]) -> str:
    rows = [
        (
            n["node"],
            n["zone"] or "-",
            n["status"],
            n["version"],
            n["url"] or "-",
            f"{duration(n['heartbeat_age_ms'])} ago",
            n["applied"],
            n["lag"],
        )
        for n in doc["nodes"]
    ]
    headers = ("node", "zone", "status", "version", "url", "heartbeat", "applied", "lag")
    shown = table([[printable(str(c)) for c in r] for r in rows], headers, empty="no nodes")
    reasons = [f"{printable(n['node'])}: {printable(n['reason'])}" for n in doc["nodes"] if n.get("reason")]
    return "\n".join([shown, *reasons, f"(log size {doc['log_size']})"])


def register(app: typer.Typer) -> None:
    """Add ``proctor nodes`` to the ``proctor`` app."""
    app.command("nodes")(_nodes)
