"""Outbound connections to integrations: where they may go, and the transport that enforces it.

- :mod:`.policy`: :class:`EgressPolicy` (public addresses only, plus the
  operator's ``mcp_allowed_networks``, never the daemon's own listeners) and
  the URL checks run when an MCP server is registered;
- :mod:`.transport`: :class:`GuardedTransport`, an httpx2 transport that
  resolves, checks and connects in one step (DNS rebinding gets nowhere).
"""

from interlockd.integrations.egress.policy import (
    EgressPolicy,
    Resolver,
    Target,
    UrlRefused,
    parse_url,
    refused_class,
    system_resolver,
)
from interlockd.integrations.egress.transport import EgressRefused, GuardedTransport

__all__ = [
    "EgressPolicy",
    "EgressRefused",
    "GuardedTransport",
    "Resolver",
    "Target",
    "UrlRefused",
    "parse_url",
    "refused_class",
    "system_resolver",
]
