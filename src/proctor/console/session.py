"""Console sign-in: who is signed in on a request (being built).

The interface the other pages rely on: :func:`signed_in` returns the admin principal
signed in on ``request`` (its session), or ``None``.
"""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["signed_in"]


def signed_in(request: Request) -> str | None:
    """The admin signed in on ``request``, or ``None`` (nobody, until sign-in is built)."""
    return None
