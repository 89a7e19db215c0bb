# Types of the package root (__init__.py loads the SDK's names lazily, PEP 562; this
# stub gives them their types without an import the layers contract would count).
from proctor.integrations.sdk import AsyncClient as AsyncClient
from proctor.integrations.sdk import Client as Client
from proctor.integrations.sdk import DeniedError as DeniedError
from proctor.integrations.sdk import TerminatedError as TerminatedError
from proctor.integrations.sdk import governed as governed

__version__: str
__all__ = ["AsyncClient", "Client", "DeniedError", "TerminatedError", "__version__", "governed"]
