"""proctor: execution governance.

Nothing executes without authorization, nothing keeps running once trust is gone, and
everything that happened can be proven afterwards. See ``docs/architecture.md``:
the package tree follows the six layers of the Execution Governance Reference
Architecture, and its section "What each package may import" gives the import rules.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("proctor")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
