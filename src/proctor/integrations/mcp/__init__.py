"""The MCP governing gateway (issue 13): every tools/call authorized, bound and recorded."""
