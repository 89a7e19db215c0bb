"""The MCP governing gateway (``proctor gateway mcp``): between an MCP client (the
agent) and an upstream MCP server, every ``tools/call`` authorized by the governor,
bound to the definition of the tool the agent was shown, leased while it runs and
recorded with a receipt; everything else forwarded.

- :mod:`~proctor.integrations.mcp.wire`: framing, size limits, validation.
- :mod:`~proctor.integrations.mcp.governance`: the governor's side of each call.
- :mod:`~proctor.integrations.mcp.session`: one agent session forwarded to one
  upstream session.
- :mod:`~proctor.integrations.mcp.stdio` and :mod:`~proctor.integrations.mcp.http`:
  the transports.
"""

from proctor.integrations.mcp.governance import ToolGovernance
from proctor.integrations.mcp.session import GatewaySession
from proctor.integrations.mcp.stdio import GatewayOptions, run_stdio

__all__ = ["GatewayOptions", "GatewaySession", "ToolGovernance", "run_stdio"]
