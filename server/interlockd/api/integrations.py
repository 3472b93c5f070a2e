"""The Integrations servicer: catalog, OAuth connect flows, MCP servers, list, disconnect.

Thin: validate, authenticate the sandbox key, call the store or the connect
flows, map to protos. Revoking upstream happens before archiving, so a
disconnected integration never leaves a live grant behind it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping

import structlog

from interlock.v1 import integrations_pb2 as pb
from interlockd.api import validation as v
from interlockd.api.auth import Authenticator
from interlockd.api.handlers import Context, streaming, unary
from interlockd.api.sandboxes import timestamp
from interlockd.errors import FailedPrecondition, InvalidArgument
from interlockd.integrations.base import App, OAuthApp, OAuthError
from interlockd.integrations.connect import ConnectFlows
from interlockd.integrations.egress import EgressPolicy, UrlRefused
from interlockd.integrations.mcp import TRANSPORT_HEADERS
from interlockd.store.base import ConnectFlow, Integration, Store

log = structlog.get_logger(__name__)

_KINDS = {"oauth": pb.INTEGRATION_KIND_OAUTH, "mcp": pb.INTEGRATION_KIND_MCP}
_STATUSES = {
    "active": pb.INTEGRATION_STATUS_ACTIVE,
    "broken": pb.INTEGRATION_STATUS_BROKEN,
    "disconnected": pb.INTEGRATION_STATUS_DISCONNECTED,
}
_STATES = {
    "pending": pb.CONNECT_STATE_PENDING,
    "connected": pb.CONNECT_STATE_CONNECTED,
    "failed": pb.CONNECT_STATE_FAILED,
    "expired": pb.CONNECT_STATE_EXPIRED,
}
_SERVER_NAME = re.compile(r"[a-z0-9-]{1,32}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
_MAX_HEADERS = 16


def integration_proto(i: Integration) -> pb.Integration:
    out = pb.Integration(
        integration_id=i.id,
        kind=_KINDS.get(i.kind, pb.INTEGRATION_KIND_CUSTOM),
        app=i.app,
        end_user_id=i.end_user_id,
        status=_STATUSES[i.status],
        status_reason=i.status_reason,
        account=str(i.config.get("login") or i.config.get("url") or ""),
        create_time=timestamp(i.created_at),
    )
    if i.last_used_at is not None:
        out.last_used_time.CopyFrom(timestamp(i.last_used_at))
    return out


def _flow_update(flow: ConnectFlow, integration: Integration | None) -> pb.WatchConnectResponse:
    out = pb.WatchConnectResponse(flow_id=flow.id, state=_STATES[flow.status], reason=flow.reason)
    if integration is not None:
        out.integration.CopyFrom(integration_proto(integration))
    return out


async def _mcp_url(url: str, egress: EgressPolicy) -> str:
    try:
        return (await egress.check_new_url(url)).url
    except UrlRefused as exc:
        raise InvalidArgument("url", str(exc)) from None


def _headers(headers: Mapping[str, str], *, bearer: bool) -> dict[str, str]:
    if len(headers) > _MAX_HEADERS:
        raise InvalidArgument("headers", f"at most {_MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidArgument("headers", f"invalid header name {name!r}")
        lower = name.lower()
        # Refused now rather than at the first run: the transport sets these, and a
        # tenant-chosen Host or Content-Length would let one request smuggle another.
        if lower in TRANSPORT_HEADERS or lower.startswith("proxy-"):
            raise InvalidArgument("headers", f"{name} is set by the transport; leave it out")
        if lower == "authorization" and bearer:
            raise InvalidArgument("headers", "Authorization conflicts with bearer_token; send one")
        if lower in seen:
            raise InvalidArgument("headers", f"{name} is given twice")
        seen.add(lower)
        if len(value) > 8192 or not _HEADER_VALUE.fullmatch(value):
            raise InvalidArgument(
                "headers", f"value of {name} must be at most 8192 printable ASCII characters"
            )
    return dict(headers)


class IntegrationsServicer:
    def __init__(
        self,
        auth: Authenticator,
        store: Store,
        apps: Mapping[str, App],
        flows: ConnectFlows,
        *,
        egress: EgressPolicy | None = None,
    ) -> None:
        """``egress``: where MCP servers may be registered (default: public addresses only)."""
        self._auth = auth
        self._store = store
        self._apps = dict(apps)
        self._flows = flows
        self._egress = egress or EgressPolicy()

    @unary
    async def Catalog(self, request: pb.CatalogRequest, context: Context) -> pb.CatalogResponse:
        await self._auth.sandbox(context)
        entries = [
            pb.CatalogEntry(
                app=app.name,
                kind=_KINDS.get(app.kind, pb.INTEGRATION_KIND_CUSTOM),
                description=app.description,
                tools=[
                    pb.IntegrationTool(
                        name=s.name, description=s.description, side_effecting=s.side_effecting
                    )
                    for s in app.tool_specs()
                ],
                available=bool(self._flows.callback_url) or not isinstance(app, OAuthApp),
            )
            for app in sorted(self._apps.values(), key=lambda a: a.name)
        ]
        return pb.CatalogResponse(entries=entries)

    @unary
    async def Connect(self, request: pb.ConnectRequest, context: Context) -> pb.ConnectResponse:
        principal = await self._auth.sandbox(context)
        end_user = v.end_user_id(request.end_user_id)
        app = v.short_text(request.app, "app", 64)
        if not app:
            raise InvalidArgument("app", "is required (see Catalog)")
        started = await self._flows.start(
            principal.sandbox_id,
            app,
            end_user,
            for_end_user=request.scope != pb.CONNECT_SCOPE_SANDBOX,
        )
        return pb.ConnectResponse(
            flow_id=started.flow.id,
            authorize_url=started.authorize_url,
            expire_time=timestamp(started.flow.expires_at),
        )

    @streaming
    async def WatchConnect(
        self, request: pb.WatchConnectRequest, context: Context
    ) -> AsyncIterator[pb.WatchConnectResponse]:
        principal = await self._auth.sandbox(context)
        flow_id = v.identifier(request.flow_id, "flow_id")
        async for flow, integration in self._flows.watch(principal.sandbox_id, flow_id):
            yield _flow_update(flow, integration)

    @unary
    async def AddMcpServer(
        self, request: pb.AddMcpServerRequest, context: Context
    ) -> pb.AddMcpServerResponse:
        principal = await self._auth.sandbox(context)
        if not _SERVER_NAME.fullmatch(request.name):
            raise InvalidArgument("name", "must be 1-32 of a-z, 0-9 and '-'")
        end_user = v.end_user_id(request.end_user_id) if request.end_user_id else ""
        url = await _mcp_url(request.url, self._egress)
        headers = _headers(request.headers, bearer=bool(request.bearer_token))
        if request.bearer_token:
            headers["Authorization"] = (
                f"Bearer {v.secret_value(request.bearer_token, 'bearer_token')}"
            )
        integration = await self._store.create_integration(
            principal.sandbox_id,
            kind="mcp",
            app=request.name,
            end_user_id=end_user,
            config={"transport": "http", "url": url},
            credentials={"headers": headers},
        )
        return pb.AddMcpServerResponse(integration=integration_proto(integration))

    @unary
    async def ListIntegrations(
        self, request: pb.ListIntegrationsRequest, context: Context
    ) -> pb.ListIntegrationsResponse:
        principal = await self._auth.sandbox(context)
        end_user = v.end_user_id(request.end_user_id) if request.end_user_id else None
        listed = await self._store.list_integrations(
            principal.sandbox_id,
            end_user_id=end_user,
            include_disconnected=request.include_disconnected,
        )
        return pb.ListIntegrationsResponse(integrations=[integration_proto(i) for i in listed])

    @unary
    async def Disconnect(
        self, request: pb.DisconnectRequest, context: Context
    ) -> pb.DisconnectResponse:
        principal = await self._auth.sandbox(context)
        integration_id = v.identifier(request.integration_id, "integration_id")
        integration = await self._store.get_integration(principal.sandbox_id, integration_id)
        if integration.status != "disconnected":
            app = self._apps.get(integration.app)
            if integration.kind == "oauth" and isinstance(app, OAuthApp):
                credentials = await self._store.read_integration_credentials(
                    principal.sandbox_id, integration_id
                )
                try:
                    await app.revoke(credentials)
                except OAuthError as exc:
                    raise FailedPrecondition(
                        f"{app.name} refused to revoke the grant ({exc.code}); "
                        "the integration stays connected"
                    ) from None
            integration = await self._store.set_integration_status(
                principal.sandbox_id, integration_id, "disconnected", "disconnected by request"
            )
        return pb.DisconnectResponse(integration=integration_proto(integration))
