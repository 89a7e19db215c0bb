"""Mounting the pages on the governor's application: static assets, the index, the
API reference, and each page's router."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from proctor.console import console_pages, health_pages, lineage_pages, proofs_pages
from proctor.console.web import page, secure

__all__ = ["STATIC", "docs", "index", "mount", "router"]

#: Where the package's ``static`` folder is served: every script, style and vendored
#: library of the pages (nothing is loaded from another origin).
STATIC = "/static"

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    """What this governor serves, with a link to each page."""
    return page(request, "index.html")


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    """The API reference: Swagger UI, its assets served from :data:`STATIC`."""
    return page(request, "docs.html")


class _StaticFiles(StaticFiles):
    """The package's static folder, every answer with the security headers."""

    async def get_response(self, path: str, scope: MutableMapping[str, Any]) -> Response:
        return secure(await super().get_response(path, scope))


def mount(app: FastAPI) -> None:
    """Serve the pages on ``app`` (the governor's application: its ``state.governor``)."""
    app.mount(STATIC, _StaticFiles(packages=[("proctor.console", "static")]), name="static")
    app.include_router(router)
    for pages in (console_pages, proofs_pages, lineage_pages, health_pages):
        app.include_router(pages.router)
