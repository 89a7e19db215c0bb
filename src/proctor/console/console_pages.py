"""The governance console (``/console``): admins only, signed in (:mod:`.session`).

========================== ======= =====================================================
route                      method  what
========================== ======= =====================================================
``/console/signin``        GET     the sign-in page (key file, or a pasted token)
``/console/signin/challenge`` GET  a fresh challenge (JSON) for the page's script
``/console/signin``        POST    verify, set the session cookie, go to ``/console``
``/console/signout``       POST    remove the cookie
``/console``               GET     executions, principals, policy, decisions, approvals
``/console/live.json``     GET     the same, for the page's poll every 2 s
``/console/policy``        GET     the bundles' history, one bundle's text, a diff
``/console/confirm``       GET     what an action will do, with its confirm button
``/console/act``           POST    do it; show the log event it recorded
========================== ======= =====================================================

Without a valid session a page redirects to the sign-in page (303), the JSON answers
401 and a POST is refused with 401; a POST without this origin's ``Origin`` header or
this session's CSRF token is refused with 403, a page saying why. Every POST
(sign-in included) must come from this origin.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from proctor.console import console_data
from proctor.console.console_actions import ACTIONS, perform
from proctor.console.session import (
    MAX_SESSION_S,
    Session,
    clear_cookie,
    csrf_token,
    new_challenge,
    session_of,
    set_cookie,
    sign_in,
    signed_in,
    verify_post,
)
from proctor.console.web import page, secure, templates
from proctor.errors import AuthenticationError, PrincipalError, ProctorError
from proctor.governor.boundary import refusal

__all__ = [
    "act",
    "challenge",
    "confirm",
    "console",
    "console_session",
    "live_json",
    "policy",
    "router",
    "signin",
    "signin_page",
    "signout",
    "signout_page",
]

router = APIRouter(include_in_schema=False)

_MAX_FORM = 8192
#: The console's pages send the referrer (and a POST's ``Origin``) to this origin only:
#: with ``no-referrer`` a browser sends ``Origin: null`` with a form's POST.
_SAME_ORIGIN = {"Referrer-Policy": "same-origin"}


def console_session(request: Request) -> str | None:
    """For the header of every page: the admin signed in, or ``None``."""
    return signed_in(request)


templates.globals["console_session"] = console_session


def _page(request: Request, template: str, context: dict[str, Any], *, status: int = 200) -> Response:
    return page(
        request, template, {"referrer": "same-origin", **context}, status=status, headers=_SAME_ORIGIN
    )


def _to_signin() -> Response:
    return secure(RedirectResponse("/console/signin", status_code=303))


def _refused(request: Request, status: int, why: str) -> Response:
    return _page(request, "console_refused.html", {"status": status, "why": why}, status=status)


_FORM_TYPE = "application/x-www-form-urlencoded"


async def _form(request: Request) -> dict[str, str] | tuple[int, str]:
    """The urlencoded form of a POST (at most a few KiB; one value per field), or the
    status and reason of its refusal: nothing is made of a body that is not one."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != _FORM_TYPE:
        return 415, f"Expected a form ({_FORM_TYPE}), found {kind or 'no Content-Type'!r:.80}."
    body = await request.body()
    if len(body) > _MAX_FORM:
        return 413, f"Expected a form of at most {_MAX_FORM} bytes, found {len(body)}."
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=16)
    except UnicodeDecodeError:
        return 400, "Expected a form in UTF-8, found other bytes."
    except ValueError:
        return 400, "Expected a form of at most 16 fields."
    repeated = sorted(k for k, v in parsed.items() if len(v) != 1)
    if repeated:
        return 400, f"Expected each field once, found {', '.join(repeated)[:80]!r} repeated."
    return {k: v[0] for k, v in parsed.items()}


async def _posted(request: Request) -> tuple[Session, dict[str, str]] | Response:
    """The session and form of a console POST, or the refusal: 401 without a session,
    403 from another origin or without this session's CSRF token."""
    session = session_of(request)
    if session is None:
        return _refused(request, 401, "You are not signed in (or your session ended): sign in again.")
    form = await _form(request)
    if isinstance(form, tuple):
        return _refused(request, form[0], f"{form[1]} Nothing was done.")
    try:
        verify_post(request, session, form.get("csrf", ""))
    except AuthenticationError as e:
        why = (
            "This request did not come from a page of this console: expected this site's Origin "
            "header, found it missing or another site's."
            if e.reason == "origin"
            else "This form's CSRF token is missing or not this session's (expected the token of a page "
            "of this session): reload the page and try again."
        )
        return _refused(request, 403, f"{why} Nothing was done.")
    return session, form


# -- sign-in ------------------------------------------------------------------------


@router.get("/console/signin")
def signin_page(request: Request) -> Response:
    """The sign-in page."""
    return _page(request, "console_signin.html", {"error": "", "max_minutes": MAX_SESSION_S // 60})


@router.get("/console/signin/challenge")
def challenge(request: Request) -> Response:
    """A fresh sign-in challenge for this origin (JSON)."""
    return secure(JSONResponse(new_challenge(request)))


@router.post("/console/signin")
async def signin(request: Request) -> Response:
    """Verify a signed statement or a pasted token; on success the session cookie."""
    form = await _form(request)
    if isinstance(form, tuple):
        context = {"error": f"Not signed in: {form[1]}", "max_minutes": MAX_SESSION_S // 60}
        return _page(request, "console_signin.html", context, status=form[0])
    try:
        session = sign_in(request, form.get("token", "").strip())
    except (ProctorError, ValueError) as e:
        origin = isinstance(e, AuthenticationError) and e.reason == "origin"
        status = 403 if origin or isinstance(e, PrincipalError) else 401
        context = {"error": f"Not signed in: {e}", "max_minutes": MAX_SESSION_S // 60}
        return _page(request, "console_signin.html", context, status=status)
    response = secure(RedirectResponse("/console", status_code=303))
    set_cookie(response, request, session)
    return response


@router.get("/console/signout")
def signout_page(request: Request) -> Response:
    """The sign-out button (a POST with this session's CSRF token)."""
    session = session_of(request)
    if session is None:
        return _to_signin()
    return _page(request, "console_signout.html", {"csrf": csrf_token(session)})


@router.post("/console/signout")
async def signout(request: Request) -> Response:
    """Sign out: the cookie is removed."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    response = secure(RedirectResponse("/console/signin", status_code=303))
    clear_cookie(response, request)
    return response


# -- pages ------------------------------------------------------------------------------


@router.get("/console")
def console(request: Request) -> Response:
    """The console: what runs, who may act, which policy decides, what was decided."""
    session = session_of(request)
    if session is None:
        return _to_signin()
    governor = request.app.state.governor
    data = console_data.live(governor, session.principal)
    return _page(request, "console.html", {"admin": session.principal, "data": data, "actions": ACTIONS})


@router.get("/console/live.json")
def live_json(request: Request) -> Response:
    """What the console page refreshes (401 without a session)."""
    session = session_of(request)
    if session is None:
        return secure(
            JSONResponse({"error": "unauthenticated", "message": "sign in at /console/signin"}, 401)
        )
    return secure(JSONResponse(console_data.live(request.app.state.governor, session.principal)))


@router.get("/console/policy")
def policy(request: Request, old: str = "", new: str = "", show: str = "") -> Response:
    """The policy bundles: their history, one bundle's files, the diff of two."""
    session = session_of(request)
    if session is None:
        return _to_signin()
    governor = request.app.state.governor
    history = console_data.bundle_history(governor)
    shown = show or history["active"] or ""
    diff = console_data.bundle_diff(governor, old, new) if old and new else None
    context = {
        "history": history,
        "shown": shown,
        "files": console_data.policy_text(governor, shown) if shown else None,
        "old": old,
        "new": new,
        "diff": diff,
    }
    return _page(request, "console_policy.html", context)


@router.get("/console/confirm")
def confirm(request: Request, action: str = "", target: str = "") -> Response:
    """What ``action`` on ``target`` will do, and the button that does it."""
    session = session_of(request)
    if session is None:
        return _to_signin()
    if action not in ACTIONS or not target or len(target) > 200:
        return _refused(request, 422, "Unknown action or target: go back to the console and pick one.")
    chosen = ACTIONS[action]
    context = {
        "action": action,
        "chosen": chosen,
        "target": target,
        "effect": chosen.effect.format(target=target),
        "csrf": csrf_token(session),
    }
    return _page(request, "console_confirm.html", context)


@router.post("/console/act")
async def act(request: Request) -> Response:
    """Do the confirmed action; show the event it recorded, with its leaf index."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    session, form = posted
    action, target, reason = form.get("action", ""), form.get("target", ""), form.get("reason", "")[:500]
    label = ACTIONS[action].label if action in ACTIONS else action
    governor = request.app.state.governor
    try:
        done = await run_in_threadpool(
            perform, governor, action, target, reason=reason or "console", by=session.principal
        )
    except ProctorError as e:
        failed: dict[str, Any] = {"label": label, "target": target, "error": str(e), "done": None}
        return _page(request, "console_done.html", failed, status=refusal(e)[0])
    event = orjson.dumps(done.event, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    context: dict[str, Any] = {
        "label": label,
        "target": target,
        "error": "",
        "done": done,
        "event": event,
        "lineage": f"/lineage?index={done.index}",
        "timeline": f"/lineage/executions/{quote(target, safe='')}" if action == "revoke-execution" else "",
    }
    return _page(request, "console_done.html", context)
