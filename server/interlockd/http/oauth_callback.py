"""``GET /v1/integrations/callback``: where OAuth providers send the user back.

Hands ``state``, ``code`` and ``error`` to the connect flows and shows the
user a one-line page saying whether it worked. The page never echoes what
came in the query (it could be anything).
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from interlockd.integrations.connect import CALLBACK_PATH, ConnectFlows

_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Interlock</title></head>"
    "<body><p>{message}</p></body></html>"
)


def callback_route(flows: ConnectFlows) -> Route:
    """The route serving the OAuth callback of ``flows``."""

    async def callback(request: Request) -> HTMLResponse:
        query = request.query_params
        outcome = await flows.complete(
            query.get("state", ""), query.get("code", ""), query.get("error", "")
        )
        return HTMLResponse(
            _PAGE.format(message=html.escape(outcome.message)),
            status_code=200 if outcome.ok else 400,
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    return Route(CALLBACK_PATH, callback, methods=["GET"])
