"""The governor nodes that serve a store: who they are, where, and how far behind
(table ``nodes``; ``GET /v1/nodes``, ``proctor nodes``).

Each ``proctor serve`` process keeps one row, named by its ``--node``, up to date
with a heartbeat (:mod:`proctor.governor.nodes`): its zone, proctor version, URL,
start and heartbeat times (unix ms), the log size it has applied, and whether it
serves. The table is an operator's view, not governance state: nothing in it is
derived from the log or decides anything, so the state check at start-up does not
read it, and a row can be wrong only about the node that wrote it.

Rules (each query below):

1. One row per node name. A heartbeat writes its row only if the row is its own
   (the same ``instance``, a random id per process) or the owner's heartbeat is older
   than the caller's cut-off (the owner stopped or died): a second process started
   under a name that a live one serves does not hide it; its heartbeats are refused
   (:func:`put_node` returns ``False``) and it says so.
2. A clean shutdown marks the row ``stopped``, again only its own.
3. Rows are never deleted here: a node that went away stays listed (as ``stopped``, or
   ``stale`` once its heartbeat is old), so an operator sees it went.

The DDL (:data:`NODES_DDL`) is in the common subset too (:mod:`proctor.store.sql`):
both backends' state schemas create it as their step 2
(:mod:`proctor.store._state_schema`, :mod:`proctor.store.state_pg`). Query functions
take a :class:`~proctor.store.sql.Connection`; driver errors pass through (the state
store wraps them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proctor.errors import StoreError
from proctor.store.sql import Connection

__all__ = [
    "NODES_DDL",
    "NODE_STATUSES",
    "MAX_REASON",
    "NodeRecord",
    "put_node",
    "stop_node",
    "node",
    "nodes",
]

NODES_DDL = """CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY, instance TEXT NOT NULL, zone TEXT NOT NULL, version TEXT NOT NULL,
    url TEXT NOT NULL, started_ms BIGINT NOT NULL, heartbeat_ms BIGINT NOT NULL,
    applied BIGINT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL)"""
"""The ``nodes`` table, as both backends create it (state schema step 2)."""

NODE_STATUSES = ("serving", "not ready", "stopped")
"""What a node says of itself: it serves; it runs but is not ready (``reason`` says
why); it stopped cleanly. (``stale``, a heartbeat too old, is the reader's verdict,
never stored.)"""

MAX_REASON = 512
"""The longest ``reason`` stored (a longer one is cut)."""

_MAX_TEXT = 256


@dataclass(frozen=True)
class NodeRecord:
    """One node's row. Validated when built: a record one holds is well-formed.

    Raises:
        StoreError: a field of the wrong type, an empty name or instance, a status not
            in :data:`NODE_STATUSES`, a negative time or size, or text too long.
    """

    name: str
    instance: str
    zone: str
    version: str
    url: str
    started_ms: int
    heartbeat_ms: int
    applied: int
    status: str
    reason: str = ""

    def __post_init__(self) -> None:
        texts = {"name": self.name, "instance": self.instance, "zone": self.zone}
        texts |= {"version": self.version, "url": self.url}
        for field, value in texts.items():
            if type(value) is not str or len(value) > _MAX_TEXT:
                raise StoreError(
                    f"node {field}: expected text of at most {_MAX_TEXT} characters, found {value!r:.80}"
                )
        if not self.name or not self.instance:
            raise StoreError(
                f"node: expected a name and an instance, found {self.name!r} and {self.instance!r}"
            )
        numbers = {"started_ms": self.started_ms, "heartbeat_ms": self.heartbeat_ms, "applied": self.applied}
        for field, number in numbers.items():
            if type(number) is not int or number < 0:
                raise StoreError(f"node {self.name!r} {field}: expected an integer >= 0, found {number!r}")
        if self.status not in NODE_STATUSES:
            raise StoreError(
                f"node {self.name!r} status: expected one of {NODE_STATUSES}, found {self.status!r:.80}"
            )
        if type(self.reason) is not str or len(self.reason) > MAX_REASON:
            raise StoreError(f"node {self.name!r} reason: expected text of at most {MAX_REASON} characters")

    def row(self) -> tuple[Any, ...]:
        """The values in the table's column order."""
        return (
            self.name,
            self.instance,
            self.zone,
            self.version,
            self.url,
            self.started_ms,
            self.heartbeat_ms,
            self.applied,
            self.status,
            self.reason,
        )


def put_node(conn: Connection, record: NodeRecord, *, stale_before_ms: int) -> bool:
    """Insert or update ``record``'s row (module docstring, rule 1): an update only if
    the stored row is this instance's, or its heartbeat is older than
    ``stale_before_ms`` (its owner is gone; this instance takes the name over).

    Returns:
        Whether the row was written (``False``: a live process of another instance
        serves under this name).
    """
    cursor = conn.execute(
        "INSERT INTO nodes (name, instance, zone, version, url, started_ms, heartbeat_ms, applied, status, "
        "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, zone = excluded.zone, "
        "version = excluded.version, url = excluded.url, started_ms = excluded.started_ms, "
        "heartbeat_ms = excluded.heartbeat_ms, applied = excluded.applied, status = excluded.status, "
        "reason = excluded.reason "
        "WHERE nodes.instance = excluded.instance OR nodes.heartbeat_ms < ? OR nodes.status = ?",
        (*record.row(), stale_before_ms, "stopped"),
    )
    return cursor.rowcount == 1


def stop_node(conn: Connection, name: str, instance: str, now_ms: int) -> bool:
    """Mark this instance's row ``stopped`` at ``now_ms`` (rule 2); whether it was."""
    cursor = conn.execute(
        "UPDATE nodes SET status = ?, reason = ?, heartbeat_ms = ? WHERE name = ? AND instance = ?",
        ("stopped", "", now_ms, name, instance),
    )
    return cursor.rowcount == 1


def node(conn: Connection, name: str) -> NodeRecord | None:
    """The row of the node named ``name``, if any.

    Raises:
        StoreError: the stored row is not a well-formed node.
    """
    row = conn.execute(
        "SELECT name, instance, zone, version, url, started_ms, heartbeat_ms, applied, status, reason "
        "FROM nodes WHERE name = ?",
        (name,),
    ).fetchone()
    return None if row is None else _record(row)


def _record(row: Any) -> NodeRecord:
    try:
        return NodeRecord(*row)
    except (StoreError, TypeError) as e:
        raise StoreError(f"nodes: the row of {row[0]!r:.80} is not a node's: {e}") from e


def nodes(conn: Connection) -> list[NodeRecord]:
    """Every node's row, by name.

    Raises:
        StoreError: a stored row is not a well-formed node (named).
    """
    rows = conn.execute(
        "SELECT name, instance, zone, version, url, started_ms, heartbeat_ms, applied, status, reason "
        "FROM nodes"
    ).fetchall()
    return sorted((_record(row) for row in rows), key=lambda r: r.name)
