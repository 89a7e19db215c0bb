"""Check a data directory's governance state against its lineage log.

:func:`audit_state` does the reading for the pure check
(:func:`proctor.governor.consistency.check_state`); the governor runs it when it
starts, ``proctor log verify`` after the log's own audit. Nothing stored beside the
log is trusted to shorten it (an attacker who can edit the tables can edit any summary
kept with them): the log is replayed every time, reading only what it must.

Steps:

1. One read transaction on the data directory's SQLite file, so that the entries,
   the checkpoint and the state rows all come from the same snapshot (an admin change
   commits its event and its rows together: a snapshot has both or neither).
2. The latest stored checkpoint verifies under the log's key and is no larger than
   the tree.
3. The entries are read in bulk, in index order, each hashed (RFC 9162 §2.1.1) and
   folded into the Merkle tree hash; at the checkpoint's size the hash must equal the
   signed root (RFC 9162 §2.1.1, MTH). So the events replayed are the ones the log
   signed, whatever else the database says. Entries after the latest checkpoint (the
   writer signs them when it next starts) are replayed unbound.
4. Only entries whose text names a state event type are parsed: canonical JSON
   (RFC 8785) writes the top-level member as ``"type":"<name>"``, so a byte search
   finds every candidate; the parse confirms the type. Unsigned entries are all parsed.
5. The rows are checked against the replayed events.

The state queries live here for now; they could move into
:class:`~proctor.store.state.StateStore` as read methods (all principals with their
stored attribute text, all bundles, all revocations, warrants by ``issued_index``).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from proctor.errors import CheckpointError, LogIntegrityError, NoteError, StoreError
from proctor.governor.consistency import (
    EVENT_TYPES,
    BundleRow,
    PrincipalRow,
    RevocationRow,
    StateReport,
    StateRows,
    WarrantRow,
    check_state,
)
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.merkle import EMPTY_ROOT
from proctor.note import NoteVerifier

__all__ = ["audit_state", "has_state"]

_PAGE = 4096
_MARKER = re.compile(
    b'"type":(?:' + b"|".join(re.escape(orjson.dumps(t)) for t in sorted(EVENT_TYPES)) + b")"
)


def has_state(db_path: str | Path) -> bool:
    """Whether the database holds governance state tables (``proctor init`` made it,
    not a bare log).

    Raises:
        StoreError: the database cannot be read.
    """
    conn = _connect(db_path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'state_schema'").fetchone()
    except sqlite3.Error as e:
        raise StoreError(f"cannot read {db_path}: {e}") from e
    finally:
        conn.close()
    return row is not None


def audit_state(db_path: str | Path, verifier: NoteVerifier) -> StateReport:
    """Check the state tables of ``db_path`` against its log, in one snapshot.

    Args:
        db_path: the data directory's SQLite file.
        verifier: the log's checkpoint key.

    Returns:
        The report (:class:`~proctor.governor.consistency.StateReport`).

    Raises:
        LogIntegrityError: the log itself fails: no checkpoint, a checkpoint that does
            not verify, a missing entry, or entries that do not hash to the signed root.
        StoreError: the database cannot be read, or a row holds a value of the wrong
            type where an integer belongs.
    """
    conn = _connect(db_path)
    try:
        conn.execute("BEGIN")  # one snapshot for everything below (WAL)
        size = _int(_one(conn, "SELECT value FROM meta WHERE key = 'tree_size'"), "meta tree_size")
        signed_size, root = _checkpoint(conn, verifier, size)
        rows = StateRows(
            principals=[
                PrincipalRow(_text(n), _text(k), _text(a), _text(z), _text(s))
                for n, k, a, z, s in conn.execute(
                    "SELECT name, public_key, attrs, zone, status FROM principals ORDER BY name"
                )
            ],
            bundles=[
                BundleRow(
                    _text(d), _int(v, f"bundles[{d}].version"), _text(doc), _int(i, f"bundles[{d}].log_index")
                )
                for d, v, doc, i in conn.execute("SELECT digest, version, doc, log_index FROM bundles")
            ],
            active_bundle=_active(conn),
            revocations=[
                RevocationRow(
                    _text(k),
                    _text(t),
                    _text(r),
                    _text(b),
                    _text(tm),
                    _int(i, f"revocations[{k}/{t}].log_index"),
                )
                for k, t, r, b, tm, i in conn.execute(
                    "SELECT kind, target, reason, by, time, log_index FROM revocations ORDER BY log_index"
                )
            ],
            warrants=_warrants(conn),
        )
        return check_state(_events(conn, size, signed_size, root), rows)
    except sqlite3.Error as e:
        raise StoreError(f"cannot read the state and the log of {db_path}: {e}") from e
    finally:
        conn.close()  # the read transaction ends with it


def _connect(db_path: str | Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {db_path}: {e}") from e
    return conn


def _one(conn: sqlite3.Connection, sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    return None if row is None else row[0]


def _active(conn: sqlite3.Connection) -> str | None:
    value = _one(conn, "SELECT value FROM meta WHERE key = 'active_bundle'")
    return None if value is None else _text(value)


def _checkpoint(conn: sqlite3.Connection, verifier: NoteVerifier, size: int) -> tuple[int, bytes]:
    """Step 2: the latest checkpoint's (size, root), verified."""
    row = conn.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
    if row is None:
        raise LogIntegrityError("no checkpoint is stored")
    try:
        cp = open_checkpoint(_text(row[1]), verifier)
    except (NoteError, CheckpointError) as e:
        raise LogIntegrityError(f"the latest stored checkpoint does not verify: {e}") from e
    if cp.size != row[0] or cp.size > size:
        raise LogIntegrityError(
            f"expected a checkpoint no larger than the tree ({size} entries), found one of size {cp.size} "
            f"(stored as {row[0]})"
        )
    return cp.size, cp.root_hash


def _events(
    conn: sqlite3.Connection, size: int, signed_size: int, root: bytes
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Steps 3 and 4: the state events of entries ``[0, size)``, bound to ``root``."""
    sha256 = hashlib.sha256
    marked = _MARKER.search
    stack: list[bytes] = []  # roots of the complete subtrees so far, largest first
    if signed_size == 0 and root != EMPTY_ROOT:
        raise LogIntegrityError("the checkpoint of size 0 does not have the empty root", index=0)
    cursor = conn.execute("SELECT idx, data FROM entries WHERE idx < ? ORDER BY idx", (size,))
    expected = 0
    while rows := cursor.fetchmany(_PAGE):
        for idx, data in rows:
            if idx != expected:
                raise LogIntegrityError(f"entry {expected} is missing", index=expected)
            raw = bytes(data)
            node = sha256(b"\x00" + raw).digest()
            expected += 1
            n = expected
            while not n & 1:  # fold the subtrees this leaf completes
                node = sha256(b"\x01" + stack.pop() + node).digest()
                n >>= 1
            stack.append(node)
            if expected == signed_size and _fold(stack) != root:
                raise LogIntegrityError(
                    f"the entries do not hash to the root of the signed checkpoint of size {signed_size}",
                    index=signed_size - 1,
                )
            if idx < signed_size and marked(raw) is None:
                continue
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise LogIntegrityError(f"entry {idx} is not JSON: {e}", index=idx) from e
            if isinstance(event, dict) and event.get("type") in EVENT_TYPES:
                yield idx, event
    if expected < size:
        raise LogIntegrityError(f"entry {expected} is missing", index=expected)


def _fold(stack: list[bytes]) -> bytes:
    """The tree hash from the complete subtrees, folded from the right (RFC 9162 §2.1.1)."""
    acc = stack[-1]
    for left in reversed(stack[:-1]):
        acc = hashlib.sha256(b"\x01" + left + acc).digest()
    return acc


def _warrants(conn: sqlite3.Connection) -> Iterator[WarrantRow]:
    """The warrant rows by ``issued_index`` (streamed: the table can be large)."""
    cursor = conn.execute(
        "SELECT id, principal, parent, decision_index, expires, issued_index, token FROM warrants "
        "ORDER BY issued_index, id"
    )
    while rows := cursor.fetchmany(_PAGE):
        for wid, principal, parent, decision, expires, issued, token in rows:
            where = f"warrants[{wid}]"
            yield WarrantRow(
                _text(wid),
                _text(principal),
                _text(parent),
                _int(decision, where + ".decision_index"),
                _int(expires, where + ".expires"),
                _int(issued, where + ".issued_index"),
                _text(token),
            )


def _text(value: Any) -> str:
    """A column as the governor reads it (``str(...)``), bytes decoded."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _int(value: Any, where: str) -> int:
    if type(value) is int:
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StoreError(f"{where}: expected an integer, found {value!r}") from None
