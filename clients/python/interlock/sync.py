# Code generated from interlock/client.py by clients/python/tools/generate_sync.py. DO NOT EDIT.
"""The blocking facade of :class:`interlock.Client`, for code without an event loop.

Same calls, same arguments, same results and errors as the asyncio client,
over a blocking ``grpc`` channel (no event loop or thread of its own)::

    with SyncClient() as client:
        with client.run("hello", end_user_id="u-1") as stream:
            for event in stream:
                ...
        outcome = client.run_text("and again", end_user_id="u-1")

Runs take a ``timeout`` that becomes the call's gRPC deadline; the short
administrative calls take one too. The client opens a plaintext channel;
pass your own ``channel`` (e.g. ``grpc.secure_channel(...)``) for TLS.

This module is generated from :mod:`interlock.client` (edit that, then run
``clients/python/tools/generate_sync.py``); the run stream is
:mod:`interlock.sync_stream`.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc

from interlock.calls import (
    DEFAULT_ADDRESS,
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_OPERATOR_KEY,
    ComputeOptionsLike,
    ConnectScope,
    Metadata,
    add_mcp_server_request,
    api_key_metadata,
    api_key_or_operator_metadata,
    connect_request,
    connect_result,
    from_env,
    list_compute_sessions_request,
    operator_metadata,
    pause_scope,
    run_request,
)
from interlock.client import UsageGroup, ledger_filter, ledger_metadata, usage_group
from interlock.errors import Unavailable, from_rpc_error
from interlock.outcome import RunOutcome
from interlock.sync_stream import SyncRunStream
from interlock.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    compute_pb2,
    compute_pb2_grpc,
    conversations_pb2,
    conversations_pb2_grpc,
    integrations_pb2,
    integrations_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
    router_pb2_grpc,
    sandboxes_pb2,
    sandboxes_pb2_grpc,
)

__all__ = [
    "SyncAgents",
    "SyncClient",
    "SyncCompute",
    "SyncConversations",
    "SyncIntegrations",
    "SyncLedger",
    "SyncRunStream",
    "SyncSandboxes",
]

_T = TypeVar("_T")


def _unary(call: Callable[[], _T]) -> _T:
    """Make a unary call, translating its failure into the client's errors."""
    try:
        return call()
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from exc


def _cancel(call: grpc.CallIterator[Any]) -> None:
    """Cancel a streaming call (a no-op once it has ended)."""
    call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it unannotated


class SyncClient:
    """Blocking connection to one Interlock daemon.

    ``target`` is a gRPC target (``host:port``); it defaults to
    ``INTERLOCK_ADDRESS``, then ``127.0.0.1:7600``. ``api_key`` (a sandbox key;
    default ``INTERLOCK_API_KEY``) authenticates :meth:`run`,
    :attr:`conversations` and :attr:`integrations`; ``operator_key`` (default
    ``INTERLOCK_OPERATOR_KEY``) authenticates :attr:`sandboxes` and the pauses of
    :attr:`compute`. :attr:`ledger` uses the API key, or the operator key when a
    call names a ``sandbox_id``. Compute sessions, providers and placements use
    the API key when there is one (its own sandbox), else the operator key (every
    sandbox).
    A key that is needed but missing raises :class:`~interlock.errors.MissingCredentials`
    before anything is sent.

    A ``channel`` passed in (a blocking ``grpc.Channel``, e.g.
    ``grpc.secure_channel(...)``) is used as is and left open on :meth:`close`;
    the caller owns it. The client needs no event loop and is safe to share
    between threads.
    """

    def __init__(
        self,
        target: str | None = None,
        api_key: str | None = None,
        *,
        operator_key: str | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = from_env(target, ENV_ADDRESS) or DEFAULT_ADDRESS
        self._api_key = from_env(api_key, ENV_API_KEY)
        self._operator_key = from_env(operator_key, ENV_OPERATOR_KEY)
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else grpc.insecure_channel(self.target)
        self._router = router_pb2_grpc.AgentRouterStub(self._channel)
        self.sandboxes = SyncSandboxes(self._channel, self._operator_key)
        self.conversations = SyncConversations(self._channel, self._api_key)
        self.integrations = SyncIntegrations(self._channel, self._api_key)
        self.compute = SyncCompute(self._channel, self._operator_key, self._api_key)
        self.agents = SyncAgents(self._channel, self._api_key)
        self.ledger = SyncLedger(self._channel, self._api_key, self._operator_key)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def channel(self) -> grpc.Channel:
        """The client's channel, for the generated stubs of ``interlock.v1``::

        stub = agents_pb2_grpc.AgentsStub(client.channel)
        stub.ListAgents(request, metadata=client.metadata())
        """
        return self._channel

    def metadata(self, *, operator: bool = False) -> Metadata:
        """The key header a generated stub's call needs: the sandbox API key, or the
        operator key with ``operator=True``; MissingCredentials without it."""
        return (
            operator_metadata(self._operator_key) if operator else api_key_metadata(self._api_key)
        )

    def close(self) -> None:
        """Close the channel if the client created it; cancels calls in flight."""
        if self._owns_channel:
            self._channel.close()

    def run(
        self,
        message: str,
        *,
        end_user_id: str,
        session_id: str = "",
        provider: str = "",
        model: str = "",
        system: str = "",
        tools: Iterable[str] = (),
        request_id: str = "",
        labels: Mapping[str, str] | None = None,
        max_output_tokens: int = 0,
        google_engine: str = "",
        google_location: str = "",
        agent: str = "",
        compute: ComputeOptionsLike | None = None,
        timeout: float | None = None,
    ) -> SyncRunStream:
        """Run one agent turn and stream its events.

        Empty ``session_id`` starts a new conversation (its id arrives in the
        first event); empty ``provider``/``model`` use the daemon's defaults;
        ``tools`` restricts the tools the model may call; a repeated
        ``request_id`` replays the recorded run instead of running it again.
        ``google_engine`` / ``google_location`` name the deployed agent of a
        Google turn (a reasoning engine resource name, or an ID and region).
        ``agent`` runs a saved agent by slug (its provider, model, system
        prompt and tools apply; leave those empty).
        ``compute`` places a self-hosted runtime (``hermes``) on compute: a
        ``ComputeOptions`` or its fields by name, e.g. ``{"provider":
        "daytona", "policy": "cost-aware", "region": "us"}``.
        ``timeout`` bounds the whole run, in seconds. See ``RunRequest`` in
        ``proto/interlock/v1/router.proto`` for the limits the router enforces.
        """
        metadata = api_key_metadata(self._api_key)
        request = run_request(
            message,
            end_user_id=end_user_id,
            session_id=session_id,
            provider=provider,
            model=model,
            system=system,
            tools=tools,
            request_id=request_id,
            labels=labels,
            max_output_tokens=max_output_tokens,
            google_engine=google_engine,
            google_location=google_location,
            agent=agent,
            compute=compute,
        )
        return SyncRunStream(lambda: self._router.Run(request, timeout=timeout, metadata=metadata))

    def run_text(
        self,
        message: str,
        *,
        end_user_id: str,
        session_id: str = "",
        provider: str = "",
        model: str = "",
        system: str = "",
        tools: Iterable[str] = (),
        request_id: str = "",
        labels: Mapping[str, str] | None = None,
        max_output_tokens: int = 0,
        google_engine: str = "",
        google_location: str = "",
        agent: str = "",
        compute: ComputeOptionsLike | None = None,
        timeout: float | None = None,
    ) -> RunOutcome:
        """Run one turn to its end and return what it said (see :meth:`run`).

        An ``error`` event does not raise: it lands in ``RunOutcome.error``;
        call :meth:`RunOutcome.raise_for_error` to turn it into an exception.
        """
        outcome = RunOutcome()
        stream = self.run(
            message,
            end_user_id=end_user_id,
            session_id=session_id,
            provider=provider,
            model=model,
            system=system,
            tools=tools,
            request_id=request_id,
            labels=labels,
            max_output_tokens=max_output_tokens,
            google_engine=google_engine,
            google_location=google_location,
            agent=agent,
            compute=compute,
            timeout=timeout,
        )
        with stream:
            for event in stream:
                outcome.add(event)
        return outcome


class SyncSandboxes:
    """Administration of sandboxes, their API keys and quotas (operator key)."""

    def __init__(self, channel: grpc.Channel, operator_key: str | None) -> None:
        self._stub = sandboxes_pb2_grpc.SandboxesStub(channel)
        self._key = operator_key

    def _metadata(self) -> Metadata:
        return operator_metadata(self._key)

    def create(
        self, name: str, *, quotas: sandboxes_pb2.Quotas | None = None, timeout: float | None = None
    ) -> sandboxes_pb2.Sandbox:
        """Create a sandbox; ``quotas`` unset means unlimited."""
        request = sandboxes_pb2.CreateSandboxRequest(name=name, quotas=quotas)
        response = _unary(
            lambda: self._stub.CreateSandbox(request, timeout=timeout, metadata=self._metadata())
        )
        return response.sandbox

    def get(self, sandbox_id: str, *, timeout: float | None = None) -> sandboxes_pb2.Sandbox:
        """Read one sandbox."""
        request = sandboxes_pb2.GetSandboxRequest(sandbox_id=sandbox_id)
        response = _unary(
            lambda: self._stub.GetSandbox(request, timeout=timeout, metadata=self._metadata())
        )
        return response.sandbox

    def list(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> sandboxes_pb2.ListSandboxesResponse:
        """One page of sandboxes in creation order; see :meth:`list_all` for all of them."""
        request = sandboxes_pb2.ListSandboxesRequest(page_size=page_size, page_token=page_token)
        return _unary(
            lambda: self._stub.ListSandboxes(request, timeout=timeout, metadata=self._metadata())
        )

    def list_all(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[sandboxes_pb2.Sandbox]:
        """Every sandbox, fetching pages as the iteration needs them."""
        page_token = ""
        while True:
            page = self.list(timeout=timeout, page_size=page_size, page_token=page_token)
            yield from page.sandboxes
            page_token = page.next_page_token
            if not page_token:
                return

    def delete(self, sandbox_id: str, *, timeout: float | None = None) -> None:
        """Delete a sandbox and everything in it, its encryption keys included."""
        request = sandboxes_pb2.DeleteSandboxRequest(sandbox_id=sandbox_id)
        _unary(
            lambda: self._stub.DeleteSandbox(request, timeout=timeout, metadata=self._metadata())
        )

    def set_quotas(
        self, sandbox_id: str, quotas: sandboxes_pb2.Quotas, *, timeout: float | None = None
    ) -> sandboxes_pb2.Sandbox:
        """Replace a sandbox's quotas entirely (zero means unlimited)."""
        request = sandboxes_pb2.SetQuotasRequest(sandbox_id=sandbox_id, quotas=quotas)
        response = _unary(
            lambda: self._stub.SetQuotas(request, timeout=timeout, metadata=self._metadata())
        )
        return response.sandbox

    def create_api_key(
        self, sandbox_id: str, *, name: str, timeout: float | None = None
    ) -> sandboxes_pb2.CreateApiKeyResponse:
        """Create an API key; the response's ``secret`` is the only copy there will be."""
        request = sandboxes_pb2.CreateApiKeyRequest(sandbox_id=sandbox_id, name=name)
        return _unary(
            lambda: self._stub.CreateApiKey(request, timeout=timeout, metadata=self._metadata())
        )

    def list_api_keys(
        self, sandbox_id: str, *, timeout: float | None = None
    ) -> builtins.list[sandboxes_pb2.ApiKey]:
        """A sandbox's keys, revoked ones included, in creation order (no secrets)."""
        request = sandboxes_pb2.ListApiKeysRequest(sandbox_id=sandbox_id)
        response = _unary(
            lambda: self._stub.ListApiKeys(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.api_keys)

    def revoke_api_key(
        self, sandbox_id: str, key_id: str, *, timeout: float | None = None
    ) -> sandboxes_pb2.ApiKey:
        """Revoke a key; it stops working at once. Returns the revoked key."""
        request = sandboxes_pb2.RevokeApiKeyRequest(sandbox_id=sandbox_id, key_id=key_id)
        response = _unary(
            lambda: self._stub.RevokeApiKey(request, timeout=timeout, metadata=self._metadata())
        )
        return response.api_key

    def set_secret(
        self, sandbox_id: str, name: str, value: str, *, timeout: float | None = None
    ) -> None:
        """Store (or replace) a secret of the sandbox, e.g. ``anthropic_api_key``.

        Sealed at rest with the sandbox's key; write-only: no call returns it.
        """
        request = sandboxes_pb2.SetSecretRequest(sandbox_id=sandbox_id, name=name, value=value)
        _unary(lambda: self._stub.SetSecret(request, timeout=timeout, metadata=self._metadata()))

    def list_secrets(self, sandbox_id: str, *, timeout: float | None = None) -> builtins.list[str]:
        """The names of a sandbox's secrets, sorted (never their values)."""
        request = sandboxes_pb2.ListSecretsRequest(sandbox_id=sandbox_id)
        response = _unary(
            lambda: self._stub.ListSecrets(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.names)

    def delete_secret(self, sandbox_id: str, name: str, *, timeout: float | None = None) -> None:
        """Delete a secret; deleting an absent one is not an error."""
        request = sandboxes_pb2.DeleteSecretRequest(sandbox_id=sandbox_id, name=name)
        _unary(lambda: self._stub.DeleteSecret(request, timeout=timeout, metadata=self._metadata()))


class SyncConversations:
    """Reading and deleting an end user's conversations (sandbox API key).

    Every call names the end user: conversations are private to one, and the
    router answers NOT_FOUND for a session that belongs to someone else.
    """

    def __init__(self, channel: grpc.Channel, api_key: str | None) -> None:
        self._stub = conversations_pb2_grpc.ConversationsStub(channel)
        self._key = api_key

    def _metadata(self) -> Metadata:
        return api_key_metadata(self._key)

    def list(
        self,
        *,
        end_user_id: str,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> conversations_pb2.ListConversationsResponse:
        """One page of the end user's conversations, most recently active first."""
        request = conversations_pb2.ListConversationsRequest(
            end_user_id=end_user_id, page_size=page_size, page_token=page_token
        )
        return _unary(
            lambda: self._stub.ListConversations(
                request, timeout=timeout, metadata=self._metadata()
            )
        )

    def list_all(
        self, *, end_user_id: str, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[conversations_pb2.Conversation]:
        """Every conversation of the end user, fetching pages as needed."""
        page_token = ""
        while True:
            page = self.list(
                timeout=timeout, end_user_id=end_user_id, page_size=page_size, page_token=page_token
            )
            yield from page.conversations
            page_token = page.next_page_token
            if not page_token:
                return

    def get(
        self,
        session_id: str,
        *,
        end_user_id: str,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> conversations_pb2.GetConversationResponse:
        """The conversation's summary and one page of its entries, oldest first."""
        request = conversations_pb2.GetConversationRequest(
            end_user_id=end_user_id,
            session_id=session_id,
            page_size=page_size,
            page_token=page_token,
        )
        return _unary(
            lambda: self._stub.GetConversation(request, timeout=timeout, metadata=self._metadata())
        )

    def delete(self, session_id: str, *, end_user_id: str, timeout: float | None = None) -> None:
        """Delete a conversation and everything stored for it."""
        request = conversations_pb2.DeleteConversationRequest(
            end_user_id=end_user_id, session_id=session_id
        )
        _unary(
            lambda: self._stub.DeleteConversation(
                request, timeout=timeout, metadata=self._metadata()
            )
        )


class SyncIntegrations:
    """Data sources of the sandbox — OAuth apps, MCP servers — and their connections (API key).

    A connection is for one end user or for the whole sandbox; its tools are
    offered to every run of that end user (or of anyone in the sandbox). OAuth
    apps connect in two steps: :meth:`connect` returns the URL to send the end
    user to, then :meth:`wait_connected` (or :meth:`watch_connect`) follows the
    flow until the end user has finished::

        started = client.integrations.connect("github", end_user_id="u-1")
        print("open", started.authorize_url)
        integration = client.integrations.wait_connected(started.flow_id)
    """

    def __init__(self, channel: grpc.Channel, api_key: str | None) -> None:
        self._stub = integrations_pb2_grpc.IntegrationsStub(channel)
        self._key = api_key

    def _metadata(self) -> Metadata:
        return api_key_metadata(self._key)

    def catalog(
        self, *, timeout: float | None = None
    ) -> builtins.list[integrations_pb2.CatalogEntry]:
        """What can be connected on this daemon, by name, with the tools each provides.

        An entry with ``available`` false is known but not configured by the
        operator: connecting it fails.
        """
        request = integrations_pb2.CatalogRequest()
        response = _unary(
            lambda: self._stub.Catalog(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.entries)

    def connect(
        self,
        app: str,
        *,
        end_user_id: str,
        scope: ConnectScope = "end_user",
        timeout: float | None = None,
    ) -> integrations_pb2.ConnectResponse:
        """Start connecting an OAuth app (e.g. ``"github"``) for an end user.

        Send the end user to the response's ``authorize_url``, then follow its
        ``flow_id`` with :meth:`wait_connected`. ``scope="sandbox"`` makes the
        connection serve every end user of the sandbox (``end_user_id`` still
        names who grants it). An app the daemon does not configure is
        InvalidArgument; OAuth without the daemon's public URL is
        FailedPrecondition.
        """
        request = connect_request(app, end_user_id=end_user_id, scope=scope)
        return _unary(
            lambda: self._stub.Connect(request, timeout=timeout, metadata=self._metadata())
        )

    def watch_connect(
        self, flow_id: str, *, timeout: float | None = None
    ) -> Generator[integrations_pb2.WatchConnectResponse, None, None]:
        """The connect flow's state now and at every change, until it has ended.

        The last update is ``CONNECTED`` (with ``integration``), ``FAILED`` or
        ``EXPIRED`` (with ``reason``). The call starts on the first iteration
        and is cancelled when the generator is closed (``contextlib.closing``)
        or collected. A flow of another sandbox, or none,
        is NotFound; ``timeout`` passing is DeadlineExceeded.
        """
        request = integrations_pb2.WatchConnectRequest(flow_id=flow_id)
        call = self._stub.WatchConnect(request, timeout=timeout, metadata=self._metadata())
        try:
            yield from call
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            _cancel(call)

    def wait_connected(
        self, flow_id: str, timeout: float | None = None
    ) -> integrations_pb2.Integration:
        """Wait until the connect flow ends and return the new integration.

        A flow that failed (the end user declined, the provider refused) or
        expired raises :class:`~interlock.errors.ConnectFailed` with its
        ``state`` and ``reason``. ``timeout`` (seconds) bounds the wait, not
        the flow: DeadlineExceeded leaves the flow open until it expires, and
        waiting again picks it up.
        """
        with contextlib.closing(self.watch_connect(flow_id, timeout=timeout)) as updates:
            for update in updates:
                integration = connect_result(update)
                if integration is not None:
                    return integration
        raise Unavailable(
            grpc.StatusCode.UNAVAILABLE,
            f"the watch of connect flow {flow_id} ended before the flow did; wait again",
        )

    def add_mcp_server(
        self,
        name: str,
        url: str,
        *,
        end_user_id: str = "",
        bearer_token: str = "",
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> integrations_pb2.Integration:
        """Register an MCP server (Streamable HTTP) as an integration; return it.

        ``name`` (1-32 of a-z, 0-9, ``-``) namespaces its tools
        (``mcp__<name>__<tool>``); ``url`` is https, or http to a loopback
        address. Empty ``end_user_id`` makes it serve the whole sandbox.
        ``bearer_token`` and ``headers`` are sent to the server on every call;
        they are sealed at rest and no call returns them. Adding a name again
        for the same end user replaces the earlier one.
        """
        request = add_mcp_server_request(
            name, url, end_user_id=end_user_id, bearer_token=bearer_token, headers=headers
        )
        response = _unary(
            lambda: self._stub.AddMcpServer(request, timeout=timeout, metadata=self._metadata())
        )
        return response.integration

    def list(
        self,
        end_user_id: str = "",
        include_disconnected: bool = False,
        *,
        timeout: float | None = None,
    ) -> builtins.list[integrations_pb2.Integration]:
        """Integrations, oldest first.

        With ``end_user_id``: that end user's and the sandbox-wide ones (what
        their runs get); without: every integration of the sandbox.
        Disconnected ones only with ``include_disconnected``.
        """
        request = integrations_pb2.ListIntegrationsRequest(
            end_user_id=end_user_id, include_disconnected=include_disconnected
        )
        response = _unary(
            lambda: self._stub.ListIntegrations(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.integrations)

    def disconnect(
        self, integration_id: str, *, timeout: float | None = None
    ) -> integrations_pb2.Integration:
        """Revoke the grant upstream (OAuth apps), then archive the integration; return it.

        Its tools disappear from later runs. Disconnecting twice is not an
        error. If the provider refuses to revoke, FailedPrecondition and the
        integration stays connected.
        """
        request = integrations_pb2.DisconnectRequest(integration_id=integration_id)
        response = _unary(
            lambda: self._stub.Disconnect(request, timeout=timeout, metadata=self._metadata())
        )
        return response.integration


class SyncCompute:
    """Operating runs and compute: kill switches, compute sessions, providers, placements.

    Pauses need the operator key. The other calls use the sandbox API key when
    the client has one, and then see only that sandbox; a client with only the
    operator key (and ``INTERLOCK_API_KEY`` unset) sees every sandbox::

        for session in client.compute.sessions(status="running"):
            client.compute.suspend(session.id)
    """

    def __init__(
        self, channel: grpc.Channel, operator_key: str | None, api_key: str | None = None
    ) -> None:
        self._stub = compute_pb2_grpc.ComputeStub(channel)
        self._key = operator_key
        self._api_key = api_key

    def _metadata(self) -> Metadata:
        return operator_metadata(self._key)

    def _either(self) -> Metadata:
        return api_key_or_operator_metadata(self._api_key, self._key)

    def pause(
        self,
        scope: str,
        *,
        target: str = "",
        sandbox_id: str = "",
        reason: str = "",
        timeout: float | None = None,
    ) -> compute_pb2.SetPauseResponse:
        """Pause runs in ``scope`` ("global", "end_user", "agent_provider",
        "compute_provider"); runs in flight it covers end with an Error event."""
        request = compute_pb2.SetPauseRequest(
            scope=pause_scope(scope), sandbox_id=sandbox_id, target=target, reason=reason
        )
        return _unary(
            lambda: self._stub.SetPause(request, timeout=timeout, metadata=self._metadata())
        )

    def unpause(
        self, scope: str, *, target: str = "", sandbox_id: str = "", timeout: float | None = None
    ) -> bool:
        """Clear a pause; False if there was none."""
        request = compute_pb2.ClearPauseRequest(
            scope=pause_scope(scope), sandbox_id=sandbox_id, target=target
        )
        response = _unary(
            lambda: self._stub.ClearPause(request, timeout=timeout, metadata=self._metadata())
        )
        return response.cleared

    def pauses(self, *, timeout: float | None = None) -> builtins.list[compute_pb2.Pause]:
        """The pauses in force, oldest first."""
        request = compute_pb2.ListPausesRequest()
        response = _unary(
            lambda: self._stub.ListPauses(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.pauses)

    def sessions(
        self,
        *,
        end_user_id: str = "",
        agent: str = "",
        status: str = "",
        provider: str = "",
        sandbox_id: str = "",
        timeout: float | None = None,
    ) -> builtins.list[compute_pb2.ComputeSession]:
        """Compute sessions, oldest first, narrowed by the filters given.

        ``status`` is "creating", "running", "suspended", "archived", "failed"
        or "destroyed" (ValueError for another); empty means every status but
        destroyed. ``sandbox_id`` narrows the operator's view to one sandbox
        (the operator key is used when the client has one, as for the ledger;
        an API key alone may only name its own sandbox, else InvalidArgument).
        """
        request = list_compute_sessions_request(
            sandbox_id=sandbox_id,
            end_user_id=end_user_id,
            agent=agent,
            status=status,
            provider=provider,
        )
        metadata = self._metadata() if sandbox_id and self._key else self._either()
        response = _unary(
            lambda: self._stub.ListComputeSessions(request, timeout=timeout, metadata=metadata)
        )
        return list(response.sessions)

    def suspend(
        self, session_id: str, *, timeout: float | None = None
    ) -> compute_pb2.ComputeSession:
        """Stop a running session now, keeping its state (waits for a run using it);
        return the session. Another sandbox's session is NotFound."""
        request = compute_pb2.SuspendComputeSessionRequest(session_id=session_id)
        response = _unary(
            lambda: self._stub.SuspendComputeSession(
                request, timeout=timeout, metadata=self._either()
            )
        )
        return response.session

    def resume(
        self, session_id: str, *, timeout: float | None = None
    ) -> compute_pb2.ComputeSession:
        """Start a suspended or archived session again, ahead of a run; return it."""
        request = compute_pb2.ResumeComputeSessionRequest(session_id=session_id)
        response = _unary(
            lambda: self._stub.ResumeComputeSession(
                request, timeout=timeout, metadata=self._either()
            )
        )
        return response.session

    def destroy(
        self, session_id: str, *, timeout: float | None = None
    ) -> compute_pb2.ComputeSession:
        """Delete a session and its state at its provider (waits for a run using it);
        return it, destroyed. The key's next run starts a new session."""
        request = compute_pb2.DestroyComputeSessionRequest(session_id=session_id)
        response = _unary(
            lambda: self._stub.DestroyComputeSession(
                request, timeout=timeout, metadata=self._either()
            )
        )
        return response.session

    def providers(
        self, *, timeout: float | None = None
    ) -> builtins.list[compute_pb2.ComputeProviderStatus]:
        """The compute providers in order of preference: health, load, start times, prices."""
        request = compute_pb2.ListComputeProvidersRequest()
        response = _unary(
            lambda: self._stub.ListComputeProviders(
                request, timeout=timeout, metadata=self._either()
            )
        )
        return list(response.providers)

    def explain(
        self, run_id: str, *, timeout: float | None = None
    ) -> compute_pb2.ExplainPlacementResponse:
        """Where a run's runtime was placed and why, with every provider considered.
        A run that was not placed on compute (or of another sandbox) is NotFound."""
        request = compute_pb2.ExplainPlacementRequest(run_id=run_id)
        return _unary(
            lambda: self._stub.ExplainPlacement(request, timeout=timeout, metadata=self._either())
        )


class SyncAgents:
    """Saved agents of the sandbox (API key): run one with ``run(..., agent=slug)``."""

    def __init__(self, channel: grpc.Channel, api_key: str | None) -> None:
        self._stub = agents_pb2_grpc.AgentsStub(channel)
        self._key = api_key

    def _metadata(self) -> Metadata:
        return api_key_metadata(self._key)

    def put(self, agent: agents_pb2.Agent, *, timeout: float | None = None) -> agents_pb2.Agent:
        """Create or replace the agent ``agent.slug``."""
        request = agents_pb2.PutAgentRequest(agent=agent)
        return _unary(
            lambda: self._stub.PutAgent(request, timeout=timeout, metadata=self._metadata())
        ).agent

    def get(self, slug: str, *, timeout: float | None = None) -> agents_pb2.Agent:
        """Read one agent."""
        request = agents_pb2.GetAgentRequest(slug=slug)
        return _unary(
            lambda: self._stub.GetAgent(request, timeout=timeout, metadata=self._metadata())
        ).agent

    def list(self, *, timeout: float | None = None) -> builtins.list[agents_pb2.Agent]:
        """The sandbox's agents by slug."""
        request = agents_pb2.ListAgentsRequest()
        response = _unary(
            lambda: self._stub.ListAgents(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.agents)

    def delete(self, slug: str, *, timeout: float | None = None) -> None:
        """Delete an agent."""
        request = agents_pb2.DeleteAgentRequest(slug=slug)
        _unary(lambda: self._stub.DeleteAgent(request, timeout=timeout, metadata=self._metadata()))


class SyncLedger:
    """What runs cost: ledger entries and usage summaries.

    With the API key a call reads that sandbox's ledger; pass ``sandbox_id``
    to read any sandbox's with the operator key. Every call takes the same
    filters: ``run_id``, ``end_user_id``, ``agent`` (a saved agent's slug),
    ``provider``, ``kind`` ("tokens" or "compute") and the time range
    ``since`` (inclusive) to ``until`` (exclusive)::

        by_user = client.ledger.summarize_all("end_user", since=last_monday)
        for row in by_user.summaries:
            print(row.key, row.total_cost_usd)
    """

    def __init__(
        self, channel: grpc.Channel, api_key: str | None, operator_key: str | None
    ) -> None:
        self._stub = ledger_pb2_grpc.LedgerStub(channel)
        self._api_key = api_key
        self._operator_key = operator_key

    def list(
        self,
        *,
        run_id: str = "",
        end_user_id: str = "",
        agent: str = "",
        provider: str = "",
        kind: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        sandbox_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> ledger_pb2.ListLedgerEntriesResponse:
        """One page of ledger entries, newest first; see :meth:`list_all` for all of them."""
        request = ledger_pb2.ListLedgerEntriesRequest(
            sandbox_id=sandbox_id,
            filter=ledger_filter(
                run_id=run_id,
                end_user_id=end_user_id,
                agent=agent,
                provider=provider,
                kind=kind,
                since=since,
                until=until,
            ),
            page_size=page_size,
            page_token=page_token,
        )
        metadata = ledger_metadata(self._api_key, self._operator_key, sandbox_id)
        return _unary(
            lambda: self._stub.ListLedgerEntries(request, timeout=timeout, metadata=metadata)
        )

    def list_all(
        self,
        *,
        run_id: str = "",
        end_user_id: str = "",
        agent: str = "",
        provider: str = "",
        kind: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        sandbox_id: str = "",
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[ledger_pb2.LedgerEntry]:
        """Every matching ledger entry, newest first, fetching pages as the iteration needs."""
        page_token = ""
        while True:
            page = self.list(
                timeout=timeout,
                run_id=run_id,
                end_user_id=end_user_id,
                agent=agent,
                provider=provider,
                kind=kind,
                since=since,
                until=until,
                sandbox_id=sandbox_id,
                page_size=page_size,
                page_token=page_token,
            )
            yield from page.entries
            page_token = page.next_page_token
            if not page_token:
                return

    def summarize(
        self,
        by: UsageGroup,
        *,
        run_id: str = "",
        end_user_id: str = "",
        agent: str = "",
        provider: str = "",
        kind: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        sandbox_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> ledger_pb2.SummarizeUsageResponse:
        """One page of usage and cost per ``by`` group, by key, with the total of everything
        matched; see :meth:`summarize_all` for every group at once."""
        request = ledger_pb2.SummarizeUsageRequest(
            sandbox_id=sandbox_id,
            filter=ledger_filter(
                run_id=run_id,
                end_user_id=end_user_id,
                agent=agent,
                provider=provider,
                kind=kind,
                since=since,
                until=until,
            ),
            group_by=usage_group(by),
            page_size=page_size,
            page_token=page_token,
        )
        metadata = ledger_metadata(self._api_key, self._operator_key, sandbox_id)
        return _unary(
            lambda: self._stub.SummarizeUsage(request, timeout=timeout, metadata=metadata)
        )

    def summarize_all(
        self,
        by: UsageGroup,
        *,
        run_id: str = "",
        end_user_id: str = "",
        agent: str = "",
        provider: str = "",
        kind: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        sandbox_id: str = "",
        page_size: int = 0,
        timeout: float | None = None,
    ) -> ledger_pb2.SummarizeUsageResponse:
        """Every group of :meth:`summarize`, all pages merged into one response."""
        merged = ledger_pb2.SummarizeUsageResponse()
        page_token = ""
        while True:
            page = self.summarize(
                by,
                timeout=timeout,
                run_id=run_id,
                end_user_id=end_user_id,
                agent=agent,
                provider=provider,
                kind=kind,
                since=since,
                until=until,
                sandbox_id=sandbox_id,
                page_size=page_size,
                page_token=page_token,
            )
            merged.summaries.extend(page.summaries)
            merged.total.CopyFrom(page.total)
            del merged.budgets[:]
            merged.budgets.extend(page.budgets)
            page_token = page.next_page_token
            if not page_token:
                return merged
