"""GitHub as an integration: OAuth connect, self-refreshing tokens, REST tools.

``app`` is the catalog entry the daemon registers; ``oauth`` the web flow's
calls, ``token`` the refresh discipline, ``api`` the REST calls and ``tools``
what models see.
"""

from interlockd.integrations.github.api import GitHubAPI, Page
from interlockd.integrations.github.app import DEFAULT_SCOPES, GitHubApp
from interlockd.integrations.github.oauth import GitHubOAuth, TokenGrant
from interlockd.integrations.github.token import GitHubAccessToken, reconnect_command
from interlockd.integrations.github.tools import TOOL_SPECS

__all__ = [
    "DEFAULT_SCOPES",
    "TOOL_SPECS",
    "GitHubAPI",
    "GitHubAccessToken",
    "GitHubApp",
    "GitHubOAuth",
    "Page",
    "TokenGrant",
    "reconnect_command",
]
