"""Hermes (Nous Research hermes-agent) as a self-hosted runtime (provider kind ``"hermes"``).

``config`` renders the compute session that runs ``hermes gateway run``;
``stream`` reads its streamed answers; ``backend`` runs turns against it.
"""

from interlockd.backends.hermes.backend import HermesBackend
from interlockd.backends.hermes.config import HermesSettings, find_executable

__all__ = ["HermesBackend", "HermesSettings", "find_executable"]
