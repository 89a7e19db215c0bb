"""The Python SDK: govern tool functions inside Python agent code.

- :class:`Client` / :class:`AsyncClient`: a principal's signed calls to a governor
  (``authorize``, ``revoke``, ``receipt``, ``verify``, ``delegate`` …).
- :func:`governed`: ``@governed(client, tool=...)`` and ``with governed(...)``: the
  function or block runs only under a warrant for its exact arguments and definition,
  holds a lease while it runs, and its end and result digest are logged with a receipt.
- :class:`~proctor.errors.DeniedError`, :class:`~proctor.errors.TerminatedError`.

Re-exported at the top of the package (``proctor.Client``, ``proctor.governed`` …),
loaded only when first used. See docs/sdk.md.
"""

from proctor.errors import DeniedError, TerminatedError
from proctor.integrations.sdk.aclient import AsyncClient
from proctor.integrations.sdk.client import Client
from proctor.integrations.sdk.definition import function_definition
from proctor.integrations.sdk.governed import Governed, GovernedCall, governed
from proctor.integrations.sdk.results import Approval, Authorization, Finished, Lease, Renewal

__all__ = [
    "Approval",
    "AsyncClient",
    "Authorization",
    "Client",
    "DeniedError",
    "Finished",
    "Governed",
    "GovernedCall",
    "Lease",
    "Renewal",
    "TerminatedError",
    "function_definition",
    "governed",
]
