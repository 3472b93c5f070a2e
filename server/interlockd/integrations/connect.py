"""OAuth connect flows: from Connect to the callback to a stored connection.

``start`` makes a flow: a random ``state`` (only its hash is stored) and a PKCE
verifier (sealed), and the app's authorize URL with the S256 challenge.
``complete`` is the callback: it finds the flow by the state's hash, refuses
unknown, expired or finished flows, exchanges the code (with the verifier),
stores the connection and ends the flow; every failure ends the flow with a
reason. ``watch`` follows a flow until it ends — woken at once by a callback
in this process, and polling the store so a callback served by another
replica is seen too.

Knows the store and the apps' OAuth seam; nothing of HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import structlog

from interlockd.errors import FailedPrecondition, InvalidArgument, NotFound
from interlockd.integrations.base import App, OAuthApp, OAuthError
from interlockd.store.base import ConnectFlow, Integration, Store

log = structlog.get_logger(__name__)

#: Path of the OAuth callback on the daemon's HTTP side.
CALLBACK_PATH = "/v1/integrations/callback"
_POLL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class StartedFlow:
    flow: ConnectFlow
    authorize_url: str


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    """What the callback page tells the user."""

    ok: bool
    message: str


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier`` (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class ConnectFlows:
    """The connect flows of every sandbox, for the apps configured on the daemon."""

    def __init__(
        self,
        store: Store,
        apps: Mapping[str, App],
        *,
        public_url: str,
        flow_seconds: float = 600.0,
    ) -> None:
        self._store = store
        self._apps = dict(apps)
        self._callback_url = public_url.rstrip("/") + CALLBACK_PATH if public_url else ""
        self._flow_seconds = flow_seconds
        self._changed = asyncio.Event()

    @property
    def callback_url(self) -> str:
        return self._callback_url

    def oauth_app(self, name: str) -> OAuthApp:
        app = self._apps.get(name)
        if app is None:
            raise InvalidArgument(
                "app", f"unknown app {name!r}; available: {', '.join(sorted(self._apps)) or 'none'}"
            )
        if not isinstance(app, OAuthApp):
            raise InvalidArgument("app", f"{name!r} is not connected through OAuth")
        return app

    async def start(
        self, sandbox_id: str, app_name: str, end_user_id: str, *, for_end_user: bool
    ) -> StartedFlow:
        app = self.oauth_app(app_name)
        if not self._callback_url:
            raise FailedPrecondition(
                "connecting OAuth apps needs the daemon's public URL: set integrations.public_url"
            )
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters, within PKCE's 43-128
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=self._flow_seconds
        )
        flow = await self._store.create_connect_flow(
            sandbox_id,
            app=app.name,
            end_user_id=end_user_id,
            for_end_user=for_end_user,
            state_hash=_state_hash(state),
            code_verifier=verifier,
            expires_at=expires,
        )
        url = app.authorize_url(
            state=state, code_challenge=pkce_challenge(verifier), redirect_uri=self._callback_url
        )
        log.info("connect_started", sandbox_id=sandbox_id, flow_id=flow.id, app=app.name)
        return StartedFlow(flow, url)

    async def complete(self, state: str, code: str, error: str = "") -> CallbackOutcome:
        """Handle the provider's redirect back to the daemon."""
        found = await self._store.find_connect_flow(_state_hash(state)) if state else None
        if found is None:
            return CallbackOutcome(False, "This link is not a connect flow the router started.")
        flow, verifier = found
        if flow.status != "pending":
            return CallbackOutcome(False, f"This connect flow has already ended ({flow.status}).")
        if flow.expires_at <= datetime.datetime.now(datetime.UTC):
            await self._finish(flow, "expired", "the user did not finish in time")
            return CallbackOutcome(False, "This connect flow expired; start connecting again.")
        if error:
            await self._finish(flow, "failed", f"the provider answered {error}")
            return CallbackOutcome(False, f"Connecting failed: {error}.")
        if not code:
            await self._finish(flow, "failed", "the callback carried no code")
            return CallbackOutcome(False, "Connecting failed: no authorization code.")
        app = self.oauth_app(flow.app)
        try:
            result = await app.exchange(
                code=code, code_verifier=verifier, redirect_uri=self._callback_url
            )
        except OAuthError as exc:
            await self._finish(flow, "failed", f"the code exchange was refused: {exc.code}")
            return CallbackOutcome(False, f"Connecting failed: {exc.code}.")
        integration = await self._store.create_integration(
            flow.sandbox_id,
            kind="oauth",
            app=app.name,
            end_user_id=flow.end_user_id if flow.for_end_user else "",
            config=result.config,
            credentials=result.credentials,
        )
        ended = await self._finish(flow, "connected", "", integration.id)
        if ended.integration_id != integration.id:  # another callback won the race
            await self._store.set_integration_status(
                flow.sandbox_id, integration.id, "disconnected", "a duplicate callback"
            )
            return CallbackOutcome(False, "This connect flow has already ended.")
        log.info(
            "connect_completed",
            sandbox_id=flow.sandbox_id,
            flow_id=flow.id,
            app=app.name,
            integration_id=integration.id,
        )
        return CallbackOutcome(True, f"{app.name} is connected. You can close this page.")

    async def _finish(
        self, flow: ConnectFlow, status: str, reason: str, integration_id: str = ""
    ) -> ConnectFlow:
        ended = await self._store.finish_connect_flow(
            flow.sandbox_id,
            flow.id,
            status,  # type: ignore[arg-type]
            reason=reason,
            integration_id=integration_id,
        )
        self._changed.set()
        self._changed = asyncio.Event()
        return ended

    async def watch(
        self, sandbox_id: str, flow_id: str
    ) -> AsyncIterator[tuple[ConnectFlow, Integration | None]]:
        """The flow now and at each change, until it has ended (NotFound if not ours)."""
        last: ConnectFlow | None = None
        while True:
            flow = await self._store.get_connect_flow(sandbox_id, flow_id)
            if flow.status == "pending" and flow.expires_at <= datetime.datetime.now(datetime.UTC):
                flow = await self._finish(flow, "expired", "the user did not finish in time")
            if last is None or (flow.status, flow.reason) != (last.status, last.reason):
                integration = None
                if flow.integration_id:
                    try:
                        integration = await self._store.get_integration(
                            sandbox_id, flow.integration_id
                        )
                    except NotFound:
                        integration = None
                yield flow, integration
                last = flow
            if flow.status != "pending":
                return
            changed = self._changed
            remaining = (flow.expires_at - datetime.datetime.now(datetime.UTC)).total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(_POLL_SECONDS, remaining + 0.01))
