"""What the lineage explorer shows, read from the log: pages of events, an execution's
timeline and its authorization ancestry.

Every event shown here is read from the log (:meth:`Log.leaf`), never from the index
(:mod:`proctor.console.lineage_index`), which only says which leaves to read. Each
event the index found is checked again against the search (:func:`_check`): an index
that named a leaf the log does not back is thrown away and rebuilt, and the page says
so instead of showing anything it answered (fail closed).

The ancestry of an execution follows what the log records: ``execution.started``
links (``parent``) to its ``warrant.issued``, which links to its ``decision``; a
delegated warrant's ``warrant.issued`` names its parent warrant (``parent_warrant``),
whose own ``warrant.issued`` the index finds (and the log confirms); the attenuation
blocks appended to the warrant a start presented are counted in the start's
``attenuations``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from proctor.console.lineage_graph import Ancestry, Node, Row, lay_out
from proctor.console.lineage_index import MAX_FACT_CHARS, EventFacts, LineageIndex, Query, facts
from proctor.errors import LogIntegrityError, ProofRequestError
from proctor.lineage.log import Log
from proctor.lineage.merkle import leaf_hash

__all__ = [
    "MAX_ANCESTRY",
    "MAX_TIMELINE",
    "ExecutionView",
    "Listing",
    "Shown",
    "browse",
    "execution_view",
]

MAX_TIMELINE = 200
"""The most events an execution's timeline shows after its start."""
MAX_ANCESTRY = 8
"""The most ancestor warrants followed up the delegation chain."""
_MAX_CHILDREN = 12
_SUMMARY = 240


@dataclass(frozen=True)
class Shown:
    """One event as the explorer shows it (read from the log)."""

    index: int
    type: str
    time: str
    principal: str
    derived: bool
    execution: str
    summary: str
    leaf_hash: str
    """Base64 of the RFC 9162 leaf hash of the bytes this row was rendered from: the
    browser's verify button checks the proven leaf against it."""
    pretty: str


@dataclass(frozen=True)
class Listing:
    """One page of events, newest first, with the cursors of its neighbours."""

    rows: list[Shown]
    size: int
    covered: int | None
    """How many leaves the search covered (the index's reach), ``None``: not searched."""
    newer: int | None
    older: int | None


def _read(log: Log, leaf: int) -> tuple[bytes, dict[str, Any]]:
    raw = log.leaf(leaf)
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise LogIntegrityError(f"entry {leaf} is not JSON", index=leaf) from e
    if type(event) is not dict:
        raise LogIntegrityError(f"entry {leaf} is not a JSON object", index=leaf)
    return raw, event


def _lie(index: LineageIndex, leaf: int, what: str) -> LogIntegrityError:
    index.discard(f"it named leaf {leaf} for {what}, which the log's event does not match")
    return LogIntegrityError(
        f"the search index named leaf {leaf} for {what}, but the log's event there does not match: "
        "the index is being rebuilt from the log (nothing it answered is shown)",
        index=leaf,
    )


def _resolver(log: Log, index: LineageIndex) -> Callable[[str, str], str | None]:
    """``resolve(kind, id)`` for :func:`facts`, the owner read from the log itself (the
    index only names the leaf of the execution's start or the warrant's issue)."""
    cache: dict[tuple[str, str], str | None] = {}

    def resolve(kind: str, ident: str) -> str | None:
        if (kind, ident) in cache:
            return cache[(kind, ident)]
        wanted = "execution.started" if kind == "execution" else "warrant.issued"
        leaf = index.first(kind, ident, wanted)
        owner = None
        if leaf is not None:
            _, event = _read(log, leaf)
            if event.get("type") != wanted or str(event.get(kind, ""))[:MAX_FACT_CHARS] != ident:
                raise _lie(index, leaf, f"the {kind} {ident!r}")
            owner = event.get("principal") if type(event.get("principal")) is str else None
        cache[(kind, ident)] = owner
        return owner

    return resolve


def _summary(event: dict[str, Any]) -> str:
    """One line about the event, from its own fields (text: the template escapes it)."""
    kind = event.get("type")
    get = event.get
    if kind == "decision":
        req: dict[str, Any] = event["request"] if type(event.get("request")) is dict else {}
        text = f"{get('decision')} {req.get('action', '')} {req.get('resource', '')}: {get('reason', '')}"
    elif kind == "warrant.issued":
        parent = f", delegated from {get('parent_warrant')}" if get("parent_warrant") else ""
        text = f"warrant {get('warrant')} for decision {get('decision_index')}{parent}"
    elif kind == "execution.started":
        blocks = f", {get('attenuations')} attenuation block(s)" if get("attenuations") else ""
        zone = f" in zone {get('zone')}" if get("zone") else ""
        text = f"{get('execution')} under {get('warrant')}{zone}{blocks}"
    elif kind == "execution.completed":
        text = f"{get('execution')} completed, exit status {get('exit_status')}, {get('duration_ms')} ms"
    elif kind == "execution.terminated":
        text = f"{get('execution')} terminated ({get('reason')}) {get('detail', '')!s}"
    elif kind == "execution.verified":
        text = f"{get('execution')} re-verified: {get('result')} {get('reason', '')!s}"
    elif kind == "revocation":
        target: dict[str, Any] = event["target"] if type(event.get("target")) is dict else {}
        text = f"{target.get('kind')} {target.get('id')} revoked by {get('by')}: {get('reason', '')}"
    elif kind == "principal.changed":
        text = f"{get('principal')} {get('change')} by {get('by')}"
    elif kind == "policy.activated":
        text = f"bundle {get('bundle', get('digest', ''))}"
    else:
        text = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("v", "type", "time", "node"))
    return text if len(text) <= _SUMMARY else text[: _SUMMARY - 1] + "…"


def _shown(leaf: int, raw: bytes, event: dict[str, Any], found: EventFacts) -> Shown:
    pretty = orjson.dumps(event, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return Shown(
        index=leaf,
        type=found.type,
        time=str(event.get("time", "")),
        principal=found.principal or "",
        derived=found.derived is not None and found.principal is not None,
        execution=found.execution or "",
        summary=_summary(event),
        leaf_hash=base64.b64encode(leaf_hash(raw)).decode(),
        pretty=pretty,
    )


def _check(index: LineageIndex, leaf: int, query: Query, found: EventFacts, until: int | None) -> None:
    """The log's event at ``leaf`` must match what the index was asked (invariant 1)."""
    for column in ("principal", "execution", "warrant", "parent_warrant", "type"):
        wanted = getattr(query, column)
        if wanted is not None and getattr(found, column) != wanted[:MAX_FACT_CHARS]:
            raise _lie(index, leaf, f"{column} = {wanted!r}")
    if until is not None and found.time is not None and found.time >= until:
        raise _lie(index, leaf, "the time range")


def _show(log: Log, index: LineageIndex, leaves: list[int], query: Query | None) -> list[Shown]:
    resolve = _resolver(log, index)
    rows = []
    for leaf in leaves:
        raw, event = _read(log, leaf)
        found = facts(event, resolve)
        if query is not None:
            _check(index, leaf, query, found, query.until)
        rows.append(_shown(leaf, raw, event, found))
    return rows


def browse(
    log: Log, index: LineageIndex, query: Query, *, before: int | None, after: int | None, limit: int
) -> Listing:
    """One page of events matching ``query``, newest first: the ``limit`` below leaf
    ``before`` (default: the newest), or the ``limit`` just above ``after``.

    Without search fields the page is read from the log directly (no index); with
    them, the index names the leaves (covering what it indexed so far).

    Raises:
        LogIntegrityError: the index named a leaf the log does not back (rebuilt).
    """
    reach = index.refresh()  # also starts the background catch-up on a fresh index
    size = log.size
    covered: int | None = None
    if query.needs_index or query.since is not None or query.until is not None:
        covered = reach
        leaves = index.search(query, below=before, above=after, limit=limit + 1)
        checked: Query | None = query
    else:
        checked = None
        if after is not None:
            leaves = list(range(min(size, after + 1 + limit + 1) - 1, after, -1))
        else:
            top = size if before is None else max(0, min(before, size))
            leaves = list(range(top - 1, max(-1, top - 1 - (limit + 1)), -1))
    more = len(leaves) > limit
    if after is not None:
        leaves = leaves[-limit:] if more else leaves
        newer = leaves[0] if more and leaves else None
        older = leaves[-1] if leaves else None
    else:
        leaves = leaves[:limit]
        newer = leaves[0] if before is not None and leaves else None
        older = leaves[-1] if more and leaves else None
    return Listing(_show(log, index, leaves, checked), size, covered, newer, older)


def _linked(
    log: Log, child: dict[str, Any], want: str, field_name: str | None = None
) -> tuple[int, bytes, dict[str, Any]] | None:
    """The event ``child``'s ``parent`` link names, if it is of type ``want``."""
    parent = child.get("parent")
    if type(parent) is not dict or type(parent.get("index")) is not int:
        return None
    try:
        raw, event = _read(log, parent["index"])
    except ProofRequestError:
        return None
    if event.get("type") != want or (
        field_name is not None and event.get(field_name) != child.get(field_name)
    ):
        return None
    return parent["index"], raw, event


@dataclass
class ExecutionView:
    """An execution's page: its timeline, its start, its ancestry."""

    id: str
    principal: str
    warrant: str
    status: str
    timeline: list[Shown]
    ancestry: Ancestry
    covered: int
    truncated: bool


def _warrant_issue(log: Log, index: LineageIndex, warrant: str) -> tuple[int, dict[str, Any]] | None:
    leaf = index.first("warrant", warrant, "warrant.issued")
    if leaf is None:
        return None
    _, event = _read(log, leaf)
    if event.get("type") != "warrant.issued" or event.get("warrant") != warrant:
        raise _lie(index, leaf, f"the warrant {warrant!r}")
    return leaf, event


def _execution_of(log: Log, index: LineageIndex, warrant: str) -> tuple[int, dict[str, Any]] | None:
    leaf = index.first("warrant", warrant, "execution.started")
    if leaf is None:
        return None
    _, event = _read(log, leaf)
    if event.get("type") != "execution.started" or event.get("warrant") != warrant:
        raise _lie(index, leaf, f"the execution of warrant {warrant!r}")
    return leaf, event


def _warrant_node(ident: str, leaf: int, event: dict[str, Any], current: bool = False) -> Node:
    return Node(
        key=f"w:{ident}",
        kind="warrant",
        title=f"warrant {ident}",
        lines=[f"warrant {ident}", f"{event.get('principal', '')} · leaf {leaf}", ""],
        leaf=leaf,
        current=current,
    )


def _execution_node(leaf: int, event: dict[str, Any], current: bool = False) -> Node:
    ident = str(event.get("execution", ""))
    blocks = event.get("attenuations")
    narrowed = f"{blocks} attenuation block(s)" if type(blocks) is int and blocks > 0 else ""
    return Node(
        key=f"e:{ident}",
        kind="execution",
        title=f"execution {ident}" + (f" ({narrowed})" if narrowed else ""),
        lines=[f"execution {ident}", f"{event.get('principal', '')} · leaf {leaf}", narrowed],
        leaf=leaf,
        href=f"/lineage/executions/{ident}",
        current=current,
    )


def _ancestry(
    log: Log,
    index: LineageIndex,
    started: tuple[int, dict[str, Any]],
    issued: tuple[int, dict[str, Any]] | None,
) -> Ancestry:
    """The warrant chain up from the started warrant (``parent_warrant``, each issue
    found by the index and read from the log), their executions, and the warrants
    delegated from this one."""
    warrant = str(started[1].get("warrant", ""))
    chain: list[tuple[str, int, dict[str, Any]]] = []
    parent: Any = None
    if issued is not None:
        chain.append((warrant, issued[0], issued[1]))
        parent = issued[1].get("parent_warrant")
        while type(parent) is str and parent and len(chain) <= MAX_ANCESTRY:
            found = _warrant_issue(log, index, parent)
            if found is None:
                break
            chain.append((parent, found[0], found[1]))
            parent = found[1].get("parent_warrant")
    truncated = type(parent) is str and bool(parent) and len(chain) > MAX_ANCESTRY
    rows: list[Row] = []
    for ident, leaf, event in reversed(chain):  # the root first
        if ident == warrant:
            rows.append(Row(_warrant_node(ident, leaf, event, True), _execution_node(*started, current=True)))
        else:
            ran = _execution_of(log, index, ident)
            rows.append(
                Row(_warrant_node(ident, leaf, event), None if ran is None else _execution_node(*ran))
            )
    if not chain:  # no warrant.issued behind it: the execution alone
        rows.append(Row(None, _execution_node(*started, current=True)))
        return lay_out(rows)
    below = index.search(
        Query(parent_warrant=warrant, type="warrant.issued"), below=None, above=-1, limit=_MAX_CHILDREN
    )
    for leaf in sorted(below):
        _, event = _read(log, leaf)
        ident = event.get("warrant")
        if (
            event.get("type") != "warrant.issued"
            or event.get("parent_warrant") != warrant
            or type(ident) is not str
        ):
            raise _lie(index, leaf, f"a warrant delegated from {warrant!r}")
        ran = _execution_of(log, index, ident)
        rows.append(
            Row(_warrant_node(ident, leaf, event), None if ran is None else _execution_node(*ran), child=True)
        )
    return lay_out(rows, truncated=truncated)


def execution_view(log: Log, index: LineageIndex, execution_id: str) -> ExecutionView | None:
    """The execution ``execution_id`` as the log records it, or ``None`` if the
    indexed part of the log has no start of it.

    Raises:
        LogIntegrityError: the index named a leaf the log does not back (rebuilt).
    """
    covered = index.refresh()
    wanted = execution_id[:MAX_FACT_CHARS]
    leaf = index.first("execution", wanted, "execution.started")
    if leaf is None:
        return None
    raw, started = _read(log, leaf)
    if started.get("type") != "execution.started" or started.get("execution") != execution_id:
        raise _lie(index, leaf, f"the start of {execution_id!r}")
    issued = _linked(log, started, "warrant.issued", "warrant")
    decision = _linked(log, issued[2], "decision") if issued is not None else None
    warrant = str(started.get("warrant", ""))
    later = index.search(Query(execution=wanted), below=None, above=leaf, limit=MAX_TIMELINE + 1)
    later += index.search(Query(warrant=warrant, type="revocation"), below=None, above=leaf, limit=10)
    truncated = len(later) > MAX_TIMELINE
    resolve = _resolver(log, index)
    timeline: list[Shown] = []
    for item in (decision, issued):
        if item is not None:
            timeline.append(_shown(item[0], item[1], item[2], facts(item[2], resolve)))
    timeline.append(_shown(leaf, raw, started, facts(started, resolve)))
    status = "running"
    for i in sorted(set(later))[:MAX_TIMELINE]:
        r, e = _read(log, i)
        found = facts(e, resolve)
        if found.execution != wanted and found.warrant != warrant:
            raise _lie(index, i, f"an event of {execution_id!r}")
        if found.type in ("execution.completed", "execution.terminated"):
            status = found.type.split(".")[1]
        elif found.type == "revocation" and status == "running":
            status = "revoked"
        timeline.append(_shown(i, r, e, found))
    return ExecutionView(
        id=execution_id,
        principal=str(started.get("principal", "")),
        warrant=warrant,
        status=status,
        timeline=timeline,
        ancestry=_ancestry(log, index, (leaf, started), None if issued is None else (issued[0], issued[2])),
        covered=covered,
        truncated=truncated,
    )
