"""Vertex AI Agent Engine (``provider kind "google"``): deployed ADK agents over REST.

Needs the ``google`` extra (google-auth) unless a static access token is
configured. ``backend`` runs turns; ``adk`` translates ADK events; ``auth``
keeps the OAuth token fresh off the event loop.
"""

from interlockd.backends.google.backend import GoogleAgentEngineBackend

__all__ = ["GoogleAgentEngineBackend"]
