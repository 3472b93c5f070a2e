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
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

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
from interlock.errors import Cancelled, Unavailable, from_rpc_error
from interlock.outcome import RunOutcome
from interlock.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    compute_pb2,
    compute_pb2_grpc,
    conversations_pb2,
    conversations_pb2_grpc,
    events_pb2,
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
if TYPE_CHECKING:  # grpc.CallIterator exists only in the type stubs
    _RunCall = grpc.CallIterator[events_pb2.AgentEvent]


def _unary(call: Callable[[], _T]) -> _T:
    """Make a unary call, translating its failure into the client's errors."""
    try:
        return call()
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from exc


class SyncRunStream(Iterator[events_pb2.AgentEvent]):
    """The events of one run, as they arrive (the blocking :class:`~interlock.RunStream`).

    The call starts on the first event asked for. Leaving the loop in any
    way — ``break``, ``return``, an exception — or leaving ``with
    client.run(...) as stream`` cancels the run on the router at once and
    raises nothing. :meth:`cancel` from another thread makes the iteration
    raise :class:`~interlock.errors.Cancelled`. Errors the router returns
    before the first event raise the matching
    :class:`~interlock.errors.InterlockError`, a passing ``timeout``
    :class:`~interlock.errors.DeadlineExceeded`, a connection lost mid-stream
    :class:`~interlock.errors.Unavailable` (retry with the same
    ``request_id`` to resume the turn); a failure after the run started
    arrives as the stream's last event (``error``).
    """

    def __init__(self, start: Callable[[], _RunCall]) -> None:
        self._start = start
        self._call: _RunCall | None = None
        self._events: Iterator[events_pb2.AgentEvent] | None = None
        self._done = False
        self._cancelled = False

    def __iter__(self) -> Iterator[events_pb2.AgentEvent]:
        return _SyncRunIteration(self)

    def __next__(self) -> events_pb2.AgentEvent:
        if self._cancelled:
            raise _cancelled_error()
        if self._done:
            raise StopIteration
        if self._events is None:
            self._call = self._start()
            self._events = iter(self._call)
        try:
            return next(self._events)
        except StopIteration:
            self._done = True
            raise
        except grpc.RpcError as exc:
            self._done = True
            # cancel() from another thread ends a pending read with CANCELLED:
            # the caller can tell that from a failure by its own error.
            if (
                self._cancelled
                and isinstance(exc, grpc.Call)
                and exc.code() is grpc.StatusCode.CANCELLED
            ):
                raise _cancelled_error() from None
            raise from_rpc_error(exc) from exc

    def cancel(self) -> bool:
        """Cancel the run on the router; iterating it afterwards raises Cancelled.

        Returns False if the call had not started or had already ended (then
        what it sent can still be read).
        """
        if self._done:
            return False
        call = self._call
        if call is not None and not call.is_active():
            return False
        self._done = True
        self._cancelled = True
        # grpc-stubs leaves RpcContext.cancel unannotated; it returns a bool.
        return bool(call.cancel()) if call is not None else False  # type: ignore[no-untyped-call]

    def _abandon(self) -> None:
        """Cancel the call of a stream its consumer let go of."""
        if self._call is not None:
            self.cancel()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._abandon()

    def close(self) -> None:
        """Same as :meth:`cancel`; present so ``contextlib.closing`` works."""
        self.cancel()

    def __enter__(self) -> SyncRunStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


def _cancelled_error() -> Cancelled:
    return Cancelled(grpc.StatusCode.CANCELLED, "the run was cancelled by the client")


class _SyncRunIteration(Iterator[events_pb2.AgentEvent]):
    """One ``for`` loop over a :class:`SyncRunStream`; dropped when the loop is left,
    which cancels the call (a loop run to the end has nothing left to cancel)."""

    def __init__(self, stream: SyncRunStream) -> None:
        self._stream = stream

    def __iter__(self) -> _SyncRunIteration:
        return self

    def __next__(self) -> events_pb2.AgentEvent:
        return self._stream.__next__()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stream._abandon()


class SyncClient:
    """Blocking connection to one Interlock daemon; see :class:`interlock.Client`.

    ``target``, ``api_key`` and ``operator_key`` default to the same
    environment variables. A ``channel`` passed in is used as is and left open
    on :meth:`close`. The client is safe to share between threads.
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
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else grpc.insecure_channel(self.target)
        self._router = router_pb2_grpc.AgentRouterStub(self._channel)
        self._operator_key = operator = from_env(operator_key, ENV_OPERATOR_KEY)
        self.sandboxes = SyncSandboxes(self._channel, operator)
        self.conversations = SyncConversations(self._channel, self._api_key)
        self.integrations = SyncIntegrations(self._channel, self._api_key)
        self.compute = SyncCompute(self._channel, operator, self._api_key)
        self.agents = SyncAgents(self._channel, self._api_key)
        self.ledger = SyncLedger(self._channel, self._api_key, operator)

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
        """Run one agent turn and stream its events (see :meth:`interlock.Client.run`)."""
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

        An ``error`` event does not raise: it lands in ``RunOutcome.error``.
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
    """Sandboxes, API keys, quotas and secrets (operator key); see :class:`interlock.Sandboxes`."""

    def __init__(self, channel: grpc.Channel, operator_key: str | None) -> None:
        self._stub = sandboxes_pb2_grpc.SandboxesStub(channel)
        self._key = operator_key

    def _metadata(self) -> Metadata:
        return operator_metadata(self._key)

    def create(
        self,
        name: str,
        *,
        quotas: sandboxes_pb2.Quotas | None = None,
        timeout: float | None = None,
    ) -> sandboxes_pb2.Sandbox:
        """Create a sandbox; ``quotas`` unset means unlimited."""
        request = sandboxes_pb2.CreateSandboxRequest(name=name, quotas=quotas)
        return _unary(
            lambda: self._stub.CreateSandbox(request, timeout=timeout, metadata=self._metadata())
        ).sandbox

    def get(self, sandbox_id: str, *, timeout: float | None = None) -> sandboxes_pb2.Sandbox:
        """Read one sandbox."""
        request = sandboxes_pb2.GetSandboxRequest(sandbox_id=sandbox_id)
        return _unary(
            lambda: self._stub.GetSandbox(request, timeout=timeout, metadata=self._metadata())
        ).sandbox

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
            page = self.list(page_size=page_size, page_token=page_token, timeout=timeout)
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
        return _unary(
            lambda: self._stub.SetQuotas(request, timeout=timeout, metadata=self._metadata())
        ).sandbox

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
        return list(
            _unary(
                lambda: self._stub.ListApiKeys(request, timeout=timeout, metadata=self._metadata())
            ).api_keys
        )

    def revoke_api_key(
        self, sandbox_id: str, key_id: str, *, timeout: float | None = None
    ) -> sandboxes_pb2.ApiKey:
        """Revoke a key; it stops working at once. Returns the revoked key."""
        request = sandboxes_pb2.RevokeApiKeyRequest(sandbox_id=sandbox_id, key_id=key_id)
        return _unary(
            lambda: self._stub.RevokeApiKey(request, timeout=timeout, metadata=self._metadata())
        ).api_key

    def set_secret(
        self, sandbox_id: str, name: str, value: str, *, timeout: float | None = None
    ) -> None:
        """Store (or replace) a secret of the sandbox; write-only."""
        request = sandboxes_pb2.SetSecretRequest(sandbox_id=sandbox_id, name=name, value=value)
        _unary(lambda: self._stub.SetSecret(request, timeout=timeout, metadata=self._metadata()))

    def list_secrets(self, sandbox_id: str, *, timeout: float | None = None) -> builtins.list[str]:
        """The names of a sandbox's secrets, sorted (never their values)."""
        request = sandboxes_pb2.ListSecretsRequest(sandbox_id=sandbox_id)
        return list(
            _unary(
                lambda: self._stub.ListSecrets(request, timeout=timeout, metadata=self._metadata())
            ).names
        )

    def delete_secret(self, sandbox_id: str, name: str, *, timeout: float | None = None) -> None:
        """Delete a secret; deleting an absent one is not an error."""
        request = sandboxes_pb2.DeleteSecretRequest(sandbox_id=sandbox_id, name=name)
        _unary(lambda: self._stub.DeleteSecret(request, timeout=timeout, metadata=self._metadata()))


class SyncConversations:
    """An end user's conversations (sandbox API key); see :class:`interlock.Conversations`."""

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
                end_user_id=end_user_id,
                page_size=page_size,
                page_token=page_token,
                timeout=timeout,
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
    """OAuth apps and MCP servers of the sandbox (API key); see :class:`interlock.Integrations`.

    :meth:`wait_connected` returns the new integration and raises
    :class:`~interlock.errors.ConnectFailed` when the flow failed or expired.
    """

    def __init__(self, channel: grpc.Channel, api_key: str | None) -> None:
        self._stub = integrations_pb2_grpc.IntegrationsStub(channel)
        self._key = api_key

    def _metadata(self) -> Metadata:
        return api_key_metadata(self._key)

    def catalog(
        self, *, timeout: float | None = None
    ) -> builtins.list[integrations_pb2.CatalogEntry]:
        """What can be connected on this daemon, with the tools each provides."""
        request = integrations_pb2.CatalogRequest()
        return list(
            _unary(
                lambda: self._stub.Catalog(request, timeout=timeout, metadata=self._metadata())
            ).entries
        )

    def connect(
        self,
        app: str,
        *,
        end_user_id: str,
        scope: ConnectScope = "end_user",
        timeout: float | None = None,
    ) -> integrations_pb2.ConnectResponse:
        """Start connecting an OAuth app for an end user: the URL to send them to and a flow id."""
        request = connect_request(app, end_user_id=end_user_id, scope=scope)
        return _unary(
            lambda: self._stub.Connect(request, timeout=timeout, metadata=self._metadata())
        )

    def watch_connect(
        self, flow_id: str, *, timeout: float | None = None
    ) -> Generator[integrations_pb2.WatchConnectResponse, None, None]:
        """The connect flow's state now and at every change, until it has ended.

        The call starts on the first ``next()`` and is cancelled when the
        generator is closed (``contextlib.closing``) or collected.
        """
        request = integrations_pb2.WatchConnectRequest(flow_id=flow_id)
        call = self._stub.WatchConnect(request, timeout=timeout, metadata=self._metadata())
        try:
            yield from call
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it unannotated

    def wait_connected(
        self, flow_id: str, timeout: float | None = None
    ) -> integrations_pb2.Integration:
        """Wait until the connect flow ends; the new integration, or ConnectFailed.

        ``timeout`` bounds the wait, not the flow (DeadlineExceeded leaves it open).
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
        """Register an MCP server as an integration; its token and headers are never returned."""
        request = add_mcp_server_request(
            name, url, end_user_id=end_user_id, bearer_token=bearer_token, headers=headers
        )
        return _unary(
            lambda: self._stub.AddMcpServer(request, timeout=timeout, metadata=self._metadata())
        ).integration

    def list(
        self,
        end_user_id: str = "",
        include_disconnected: bool = False,
        *,
        timeout: float | None = None,
    ) -> builtins.list[integrations_pb2.Integration]:
        """An end user's and the sandbox-wide integrations (without one: all), oldest first."""
        request = integrations_pb2.ListIntegrationsRequest(
            end_user_id=end_user_id, include_disconnected=include_disconnected
        )
        return list(
            _unary(
                lambda: self._stub.ListIntegrations(
                    request, timeout=timeout, metadata=self._metadata()
                )
            ).integrations
        )

    def disconnect(
        self, integration_id: str, *, timeout: float | None = None
    ) -> integrations_pb2.Integration:
        """Revoke the grant upstream (OAuth apps), then archive the integration; return it."""
        request = integrations_pb2.DisconnectRequest(integration_id=integration_id)
        return _unary(
            lambda: self._stub.Disconnect(request, timeout=timeout, metadata=self._metadata())
        ).integration


class SyncCompute:
    """Kill switches (operator key), compute sessions, providers and placements (the API
    key when there is one, else the operator key); see :class:`interlock.Compute`."""

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
        """Pause runs in ``scope``; see :meth:`interlock.Compute.pause`."""
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
        return _unary(
            lambda: self._stub.ClearPause(request, timeout=timeout, metadata=self._metadata())
        ).cleared

    def pauses(self, *, timeout: float | None = None) -> builtins.list[compute_pb2.Pause]:
        """The pauses in force, oldest first."""
        request = compute_pb2.ListPausesRequest()
        return list(
            _unary(
                lambda: self._stub.ListPauses(request, timeout=timeout, metadata=self._metadata())
            ).pauses
        )

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
        """Compute sessions, oldest first; see :meth:`interlock.Compute.sessions`."""
        request = list_compute_sessions_request(
            sandbox_id=sandbox_id,
            end_user_id=end_user_id,
            agent=agent,
            status=status,
            provider=provider,
        )
        return list(
            _unary(
                lambda: self._stub.ListComputeSessions(
                    request,
                    timeout=timeout,
                    metadata=self._metadata() if sandbox_id and self._key else self._either(),
                )
            ).sessions
        )

    def suspend(
        self, session_id: str, *, timeout: float | None = None
    ) -> compute_pb2.ComputeSession:
        """Stop a running session now, keeping its state; return the session."""
        request = compute_pb2.SuspendComputeSessionRequest(session_id=session_id)
        return _unary(
            lambda: self._stub.SuspendComputeSession(
                request, timeout=timeout, metadata=self._either()
            )
        ).session

    def resume(
        self, session_id: str, *, timeout: float | None = None
    ) -> compute_pb2.ComputeSession:
        """Start a suspended or archived session again, ahead of a run; return it."""
        request = compute_pb2.ResumeComputeSessionRequest(session_id=session_id)
        return _unary(
            lambda: self._stub.ResumeComputeSession(
                request, timeout=timeout, metadata=self._either()
            )
        ).session

    def destroy(
        self, session_id: str, *, timeout: float | None = None
    ) -> compute_pb2.ComputeSession:
        """Delete a session and its state at its provider; return it, destroyed."""
        request = compute_pb2.DestroyComputeSessionRequest(session_id=session_id)
        return _unary(
            lambda: self._stub.DestroyComputeSession(
                request, timeout=timeout, metadata=self._either()
            )
        ).session

    def providers(
        self, *, timeout: float | None = None
    ) -> builtins.list[compute_pb2.ComputeProviderStatus]:
        """The compute providers in order of preference: health, load, start times, prices."""
        request = compute_pb2.ListComputeProvidersRequest()
        return list(
            _unary(
                lambda: self._stub.ListComputeProviders(
                    request, timeout=timeout, metadata=self._either()
                )
            ).providers
        )

    def explain(
        self, run_id: str, *, timeout: float | None = None
    ) -> compute_pb2.ExplainPlacementResponse:
        """Where a run's runtime was placed and why; see :meth:`interlock.Compute.explain`."""
        request = compute_pb2.ExplainPlacementRequest(run_id=run_id)
        return _unary(
            lambda: self._stub.ExplainPlacement(request, timeout=timeout, metadata=self._either())
        )


class SyncAgents:
    """Saved agents of the sandbox (API key); see :class:`interlock.Agents`."""

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
        return list(
            _unary(
                lambda: self._stub.ListAgents(request, timeout=timeout, metadata=self._metadata())
            ).agents
        )

    def delete(self, slug: str, *, timeout: float | None = None) -> None:
        """Delete an agent."""
        request = agents_pb2.DeleteAgentRequest(slug=slug)
        _unary(lambda: self._stub.DeleteAgent(request, timeout=timeout, metadata=self._metadata()))


class SyncLedger:
    """Ledger entries and usage summaries (API key, or operator key with ``sandbox_id``);
    see :class:`interlock.Ledger`."""

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
                timeout=timeout,
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
        """One page of usage and cost per ``by`` group, with the total of everything matched."""
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
                timeout=timeout,
            )
            merged.summaries.extend(page.summaries)
            merged.total.CopyFrom(page.total)
            page_token = page.next_page_token
            if not page_token:
                return merged
