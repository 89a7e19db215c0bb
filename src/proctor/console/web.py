"""What every page shares: the templates, the security headers, the static assets.

Every page is rendered on the server from a Jinja2 template with autoescaping on, so
log content (principal names, commands, arguments: anything a principal chose) is
always text, never markup. Scripts and styles come only from ``/static`` (this
package's ``static`` folder, nothing from a CDN): the Content-Security-Policy allows
no inline script, no ``eval`` and no other origin, so a ``<script>`` smuggled into an
event and somehow not escaped would still not run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

__all__ = ["BIDI_CONTROLS", "CSP", "SECURITY_HEADERS", "page", "secure", "templates", "visible"]

#: The pages' Content-Security-Policy: scripts, styles, images and fetches from this
#: origin only; no inline script or style, no ``eval``, no framing, no plugins, forms
#: post only here. (``data:`` images: the browser's own icons in form controls.)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)

#: Sent with every page (and :func:`secure` adds them to any response).
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}

#: The Unicode bidirectional controls (embeddings, overrides, isolates, marks): text the
#: log holds could use them to show a name, a path or a reason other than it is
#: ("Trojan Source"), and HTML escaping leaves them in place.
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(value: Any) -> Any:
    """``value`` with each bidirectional control shown as its code point (``\\u202e``)
    instead of applied; anything but a plain string (numbers, markup) as it is."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return BIDI_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    return value


#: The pages' templates (``templates/``), HTML autoescaped, an undefined name an error,
#: every value shown with its bidirectional controls visible (:func:`visible`).
templates = jinja2.Environment(
    loader=jinja2.PackageLoader("proctor.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=visible,
)


def secure(response: Response) -> Response:
    """``response`` with :data:`SECURITY_HEADERS` (those it does not set itself)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def page(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The page ``template`` rendered with ``context`` (plus ``request`` and ``nav``,
    the path of the page, for the navigation's current link), with the security headers."""
    values = {"request": request, "nav": request.url.path, **(context or {})}
    html = templates.get_template(template).render(values)
    return secure(HTMLResponse(html, status_code=status, headers=dict(headers or {})))  # type: ignore[return-value]
