"""Issued warrants and the openings of decisions' argument commitments (tables
``warrants`` and ``openings``).

A warrant's row holds its id, principal, parent, decision index, expiry, issue time,
the index of its ``warrant.issued`` event and its token: rate counters, "revoke a
principal", parent chains and receipts read it. An opening is the salt and arguments
that a logged decision's argument commitment hides (:mod:`proctor.policy.commitment`),
kept here, privately, by decision index.

Query functions and writers as in :mod:`proctor.store.state_principals` (common SQL
subset, driver errors pass through).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from proctor.errors import StoreError
from proctor.store.records import StoredWarrant
from proctor.store.sql import Connection, not_in

__all__ = [
    "warrant_writer",
    "warrant",
    "warrant_chain",
    "warrant_times",
    "count_warrants",
    "opening_writer",
    "opening",
]


def warrant_writer(
    warrant_id: str,
    *,
    principal: str,
    parent: str,
    decision_index: int,
    expires: int,
    issued: int,
    token: str = "",
) -> Callable[..., None]:
    """The insert of an issued warrant's row, to run inside another transaction
    as ``write(conn, index=...)`` with the index of its ``warrant.issued`` event (the
    log commit that records the event: both or neither)."""
    row = (warrant_id, principal, parent, decision_index, expires, issued)

    def write(conn: Connection, index: int = -1) -> None:
        conn.execute(
            "INSERT INTO warrants (id, principal, parent, decision_index, expires, issued, issued_index, "
            "token) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (*row, index, token),
        )

    return write


def warrant(conn: Connection, warrant_id: str) -> StoredWarrant | None:
    """The issued warrant's record.

    Raises:
        StoreError: a column of its row holds a value of the wrong type.
    """
    row = conn.execute(
        "SELECT id, principal, parent, decision_index, expires, issued, issued_index, token "
        "FROM warrants WHERE id = ?",
        (warrant_id,),
    ).fetchone()
    if row is None:
        return None
    wid, principal, parent, decision_index, expires, issued, issued_index, token = row
    try:
        return StoredWarrant(
            id=str(wid),
            principal=str(principal),
            parent=str(parent),
            decision_index=int(decision_index),
            expires=int(expires),
            issued=int(issued),
            issued_index=int(issued_index),
            token=str(token),
        )
    except (TypeError, ValueError) as e:  # a row written by something else
        raise StoreError(f"warrants[{warrant_id}]: a column holds an unexpected value: {e}") from e


def warrant_chain(conn: Connection, warrant_id: str, *, limit: int = 32) -> list[str]:
    """The warrant and its ancestors, nearest first (bounded by ``limit``)."""
    chain: list[str] = []
    current = warrant_id
    while current and len(chain) < limit:
        chain.append(current)
        row = conn.execute("SELECT parent FROM warrants WHERE id = ?", (current,)).fetchone()
        current = "" if row is None else str(row[0])
    return chain


def warrant_times(conn: Connection, principal: str, since: int) -> list[int]:
    """Issue times (unix seconds) of the principal's warrants since ``since``, oldest first."""
    rows = conn.execute(
        "SELECT issued FROM warrants WHERE principal = ? AND issued >= ? ORDER BY issued",
        (principal, since),
    ).fetchall()
    return [int(t) for (t,) in rows]


def count_warrants(conn: Connection, principal: str, since: int, *, besides: Sequence[str] = ()) -> int:
    """Warrants issued to ``principal`` at or after unix time ``since``, leaving out the
    warrants ``besides`` (counted by the caller), in one snapshot."""
    row = conn.execute(
        "SELECT count(*) FROM warrants WHERE principal = ? AND issued >= ?"  # noqa: S608 - placeholders only
        + not_in("id", besides),
        (principal, since, *besides),
    ).fetchone()
    return int(row[0])


def opening_writer(opening: dict[str, Any]) -> Callable[..., None]:
    """The opening of a decision's argument commitment, written in the commit of the
    ``decision`` event as ``write(conn, index=...)`` (the decision's index)."""
    text = orjson.dumps(opening).decode()

    def write(conn: Connection, index: int = -1) -> None:
        conn.execute("INSERT INTO openings (decision_index, opening) VALUES (?, ?)", (index, text))

    return write


def opening(conn: Connection, decision_index: int) -> dict[str, Any] | None:
    """The opening of the decision at ``decision_index``, if one was kept."""
    row = conn.execute("SELECT opening FROM openings WHERE decision_index = ?", (decision_index,)).fetchone()
    return None if row is None else dict(orjson.loads(row[0]))
