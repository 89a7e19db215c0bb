"""proctor: execution governance.

Nothing executes without authorization, nothing keeps running once trust is gone, and
everything that happened can be proven afterwards. See ``docs/architecture.md``:
the package tree follows the six layers of the Execution Governance Reference
Architecture, and its section "What each package may import" gives the import rules.

The Python SDK is at the top (``proctor.Client``, ``proctor.AsyncClient``,
``proctor.governed``, ``proctor.DeniedError``; :mod:`proctor.integrations.sdk`), loaded
on first use so that ``import proctor`` (and ``proctor run``) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AsyncClient", "Client", "DeniedError", "TerminatedError", "__version__", "governed"]

_SDK = frozenset({"AsyncClient", "Client", "DeniedError", "TerminatedError", "governed"})


def __getattr__(name: str) -> Any:
    """Load the SDK's names, and ``__version__``, when first asked for (PEP 562).

    Imported by name at run time, not by an import statement: the package root is
    imported by every layer (``__version__``), and a static import here would make each
    of them depend on the SDK (the import-linter layers contract). Typed code imports
    from :mod:`proctor.integrations.sdk` directly.
    """
    if name in _SDK:
        value = getattr(importlib.import_module("proctor.integrations.sdk"), name)
        globals()[name] = value
        return value
    if name == "__version__":  # the installed metadata, read once when first asked for
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - ~30 ms

        try:
            found = version("proctor")
        except PackageNotFoundError:  # running from a source tree without installing
            found = "0.0.0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'proctor' has no attribute {name!r}")
