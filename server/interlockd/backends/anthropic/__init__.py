"""Claude Managed Agents (``provider kind "anthropic"``), through the official SDK.

Needs the ``anthropic`` extra. ``backend`` runs turns; ``resources`` keeps the
agents and environments; ``errors`` maps SDK failures and owns the retry policy.
"""

from interlockd.backends.anthropic.backend import API_KEY_SECRET, AnthropicBackend

__all__ = ["API_KEY_SECRET", "AnthropicBackend"]
