"""The governor service: composes identity (L1), policy (L2), verification (L3),
lineage (L5) and, later, orchestration (L6) behind an HTTP API."""

from proctor.governor.model import AuthorizeRequest, AuthorizeResult
from proctor.governor.service import Governor, initialize

__all__ = ["Governor", "initialize", "AuthorizeRequest", "AuthorizeResult"]
