"""MCP servers as integrations: their tools listed, namespaced, validated and called.

- :mod:`.source`: :class:`McpSource` (one connected server's tools, over the
  official SDK's Streamable HTTP or stdio client) and :class:`McpSources`
  (one source per connection, as the run's tool registry asks for them),
  reaching HTTP servers only where :mod:`interlockd.integrations.egress` allows;
- :mod:`.naming`: ``mcp__<server>__<tool>`` names every provider accepts.

A tool's arguments are checked against its JSON schema before it is called
(:class:`interlockd.tools.validation.ArgumentValidator`, compiled once per listing).
"""

from interlockd.integrations.mcp.source import (
    TRANSPORT_HEADERS,
    McpSource,
    McpSources,
    McpTool,
    McpUnavailable,
)

__all__ = ["TRANSPORT_HEADERS", "McpSource", "McpSources", "McpTool", "McpUnavailable"]
