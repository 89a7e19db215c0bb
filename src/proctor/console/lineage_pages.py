"""The execution lineage explorer: ``/lineage`` (browse and search the log),
``/lineage/executions/{id}`` (an execution's timeline and authorization ancestry) and
``/lineage/executions/{id}/receipt`` (its receipt, for those allowed).

Access is the API's: the log is public (``/v1/log/...``), so anyone browses it and
sees any execution's timeline; a receipt holds warrant tokens, so only the execution's
principal or an admin, signed in (:func:`proctor.console.session.signed_in`), gets the
download link, and the download route refuses everyone else (403) before anything is
read.

Pages are read from the log through :mod:`proctor.console.lineage_views`; searches go
through the derived index of :mod:`proctor.console.lineage_index` (one per
application, in the data directory). Bad input is a 400 page saying what was
expected; an index that disagreed with the log is a 503 page saying it is being
rebuilt.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from proctor.console import session
from proctor.console.lineage_graph import BOX_H
from proctor.console.lineage_index import INDEX_FILE, LineageIndex, Query
from proctor.console.lineage_views import browse, execution_view
from proctor.console.web import page, secure
from proctor.errors import (
    LogIntegrityError,
    ProctorError,
    ProofRequestError,
    RequestShapeError,
    VerificationError,
)
from proctor.governor.service import Governor
from proctor.lineage.events import EVENT_TYPES

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "execution", "lineage", "lineage_index", "receipt", "router"]

router = APIRouter(include_in_schema=False)

DEFAULT_LIMIT = 50
"""Events per page unless asked for fewer or more."""
MAX_LIMIT = 100
"""The most events one page shows."""
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?Z?")
_made = threading.Lock()


def lineage_index(request: Request) -> LineageIndex:
    """The application's index of its governor's log (made on first use)."""
    state = request.app.state
    with _made:
        index = getattr(state, "lineage_index", None)
        if index is None:
            gov: Governor = state.governor
            index = LineageIndex(gov.data.path / INDEX_FILE, gov.log)
            state.lineage_index = index
    return index


def _governor(request: Request) -> Governor:
    gov: Governor = request.app.state.governor
    return gov


def _text(params: Any, name: str, pattern: re.Pattern[str] | None = None) -> str | None:
    value = str(params.get(name, "")).strip()
    if not value:
        return None
    if len(value) > 256 or (pattern is not None and not pattern.fullmatch(value)):
        wanted = "an id of letters, digits, _ and -" if pattern else "at most 256 characters"
        raise RequestShapeError(f"{name}: expected {wanted}, found {value[:80]!r}")
    return value


def _int(params: Any, name: str, low: int, high: int | None = None) -> int | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 19 or int(value) < low or (high is not None and int(value) > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise RequestShapeError(f"{name}: expected an integer {bound}, found {value[:40]!r}")
    return int(value)


def _when(params: Any, name: str) -> int | None:
    """A UTC time (``2026-12-03T10:00``, seconds and ``Z`` optional) as unix ms."""
    value = params.get(name, "").strip()
    if not value:
        return None
    if not _TIME.fullmatch(value):
        raise RequestShapeError(f"{name}: expected a UTC time like 2026-12-03T10:00, found {value[:40]!r}")
    try:
        when = datetime.fromisoformat(value.rstrip("Z")).replace(tzinfo=UTC)
    except ValueError as e:
        raise RequestShapeError(f"{name}: expected a real UTC time, found {value[:40]!r}") from e
    return int(when.timestamp() * 1000)


def _query(request: Request) -> tuple[Query, int | None, int | None, int, dict[str, str]]:
    params = request.query_params
    kind = _text(params, "type")
    if kind is not None and kind not in EVENT_TYPES:
        raise RequestShapeError(
            f"type: expected one of {', '.join(sorted(EVENT_TYPES))}, found {kind[:80]!r}"
        )
    query = Query(
        principal=_text(params, "principal"),
        execution=_text(params, "execution", _ID),
        warrant=_text(params, "warrant", _ID),
        type=kind,
        since=_when(params, "from"),
        until=_when(params, "to"),
    )
    if query.since is not None and query.until is not None and query.since >= query.until:
        raise RequestShapeError("from: expected a time before to")
    before, after = _int(params, "before", 0), _int(params, "after", 0)
    if before is not None and after is not None:
        raise RequestShapeError("expected before or after, found both")
    limit = _int(params, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT
    form = {k: params.get(k, "").strip() for k in ("principal", "execution", "warrant", "type", "from", "to")}
    if limit != DEFAULT_LIMIT:
        form["limit"] = str(limit)
    return query, before, after, limit, form


def _link(form: dict[str, str], **cursor: int) -> str:
    from urllib.parse import urlencode  # noqa: PLC0415 - only for the paging links

    kept = {k: v for k, v in form.items() if v}
    return "/lineage?" + urlencode({**kept, **{k: str(v) for k, v in cursor.items()}})


def _refusal(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return page(request, "lineage_error.html", {"title": title, "message": message}, status=status)


def _index_failed(request: Request, error: ProctorError) -> HTMLResponse:
    """503: the index named a leaf the log does not back (a leaf past the log's end
    too); it is thrown away and rebuilt, and nothing it answered is shown."""
    if isinstance(error, ProofRequestError):  # a leaf the log does not have: the index lied
        lineage_index(request).discard(f"it named a leaf the log does not have ({error})")
    return _refusal(request, 503, "Search index rebuilding", str(error))


@router.get("/lineage", response_class=HTMLResponse)
def lineage(request: Request) -> HTMLResponse:
    """Browse and search the log, newest first, a page at a time."""
    try:
        query, before, after, limit, form = _query(request)
    except RequestShapeError as e:
        return _refusal(request, 400, "Bad search", str(e))
    gov = _governor(request)
    try:
        listing = browse(gov.log, lineage_index(request), query, before=before, after=after, limit=limit)
    except (LogIntegrityError, ProofRequestError) as e:
        return _index_failed(request, e)
    context = {
        "listing": listing,
        "form": form,
        "types": sorted(EVENT_TYPES),
        "newer": None if listing.newer is None else _link(form, after=listing.newer),
        "older": None if listing.older is None else _link(form, before=listing.older),
        "newest": _link(form),
        "max_limit": MAX_LIMIT,
    }
    return page(request, "lineage.html", context)


def _may_have_receipt(request: Request, gov: Governor, principal: str) -> bool:
    who = session.signed_in(request)
    return who is not None and (who == principal or gov.is_admin(who))


@router.get("/lineage/executions/{execution_id}", response_class=HTMLResponse)
def execution(request: Request, execution_id: str) -> HTMLResponse:
    """An execution's timeline and its authorization ancestry."""
    if not _ID.fullmatch(execution_id):
        return _refusal(request, 404, "No such execution", "expected an execution id like ex_…")
    gov = _governor(request)
    try:
        view = execution_view(gov.log, lineage_index(request), execution_id)
    except (LogIntegrityError, ProofRequestError) as e:
        return _index_failed(request, e)
    if view is None:
        return _refusal(request, 404, "No such execution", f"the log has no start of {execution_id!r}")
    context = {"view": view, "receipt": _may_have_receipt(request, gov, view.principal), "box_h": BOX_H}
    return page(request, "lineage_execution.html", context)


@router.get("/lineage/executions/{execution_id}/receipt", response_model=None)
def receipt(request: Request, execution_id: str) -> Response:
    """The execution's receipt as a JSON download: its principal's or an admin's only."""
    gov = _governor(request)
    record = gov.state.execution(execution_id) if _ID.fullmatch(execution_id) else None
    # Refused alike whether it exists or not (no existence oracle), before anything is read.
    if record is None or not _may_have_receipt(request, gov, str(record["principal"])):
        return _refusal(
            request,
            403,
            "Receipt not available",
            "sign in to the console as the execution's principal or an admin",
        )
    try:
        body = _receipt_of(gov, execution_id)
    except VerificationError as e:
        return _refusal(request, 409, "No receipt yet", f"the receipt cannot be built yet: {e}")
    except ProctorError as e:
        return _refusal(request, 503, "Receipt unavailable", str(e))
    headers = {"Content-Disposition": f'attachment; filename="receipt-{execution_id}.json"'}
    return secure(JSONResponse(body, headers=headers))


def _receipt_of(gov: Governor, execution_id: str) -> dict[str, Any]:
    """The receipt as ``GET /v1/executions/{id}/receipt`` builds it."""
    if gov.cosigner is None:
        return gov.executions.receipt(execution_id)
    from proctor.governor.receipts import execution_receipt  # noqa: PLC0415 - only with witnesses

    return execution_receipt(
        execution_id,
        state=gov.state,
        log=gov.log,
        log_signer=gov.data.log_signer,
        witnessed=gov.cosigner.latest_witnessed(),
    )
