"""Agent integrations: governing AI agents' tool calls where they happen.

- :mod:`proctor.integrations.sdk`: the Python SDK (``proctor.Client``, ``@governed``),
  for tool functions inside Python agent code.
- :mod:`proctor.integrations.mcp`: the Model Context Protocol governing gateway
  (``proctor gateway mcp``), between an MCP client and an upstream MCP server.

Both are clients of the governor, like the enforcer: they reach it only over HTTP
(:mod:`proctor.client`) and import no governor code.
"""

__all__: list[str] = []
