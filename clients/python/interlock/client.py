"""A thin asyncio client for the Interlock router, over ``grpc.aio``.

The client adds three things to the generated stubs and nothing else: it sends
the right key with every call (a sandbox API key for ``AgentRouter``,
``Conversations``, ``Integrations`` and ``Agents``, the operator key for
``Sandboxes`` and pauses, either for ``Compute`` and ``Ledger``), it turns gRPC
failures into :mod:`interlock.errors`, and it unwraps single-field responses.
Requests and results stay the ``interlock.v1`` protobuf messages, so everything
the API offers is reachable without waiting for this module to learn about it.

::

    async with Client() as client:
        async for event in client.run("hello", end_user_id="u-1"):
            ...

The target and keys default to ``INTERLOCK_ADDRESS``, ``INTERLOCK_API_KEY``
and ``INTERLOCK_OPERATOR_KEY``. Every call takes a ``timeout`` (seconds) that
becomes its gRPC deadline, which the router honours too (a run's stops the
turn). Leaving a run's loop cancels the run on the router (see
:class:`RunStream`). The client opens a plaintext channel; pass your own
``channel`` (e.g. ``grpc.aio.secure_channel(...)``) for TLS; ``client.channel``
with ``client.metadata()`` lets the generated stubs share the connection.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Literal, TypeVar

import grpc
import grpc.aio

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
    router_pb2,
    router_pb2_grpc,
    sandboxes_pb2,
    sandboxes_pb2_grpc,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "ENV_ADDRESS",
    "ENV_API_KEY",
    "ENV_OPERATOR_KEY",
    "Client",
    "Compute",
    "Conversations",
    "Integrations",
    "Ledger",
    "RunStream",
    "Sandboxes",
    "from_env",
]

_T = TypeVar("_T")
_RunCall = grpc.aio.UnaryStreamCall[router_pb2.RunRequest, events_pb2.AgentEvent]


async def _unary(call: Awaitable[_T]) -> _T:
    """Await a unary call, translating its failure into the client's errors."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc


class RunStream(AsyncIterator[events_pb2.AgentEvent]):
    """The events of one run, as they arrive.

    The call starts on the first event asked for, so a stream that is never
    iterated never reaches the router. Leaving the loop in any way —
    ``break``, ``return``, an exception out of its body — cancels the run on
    the router at once and raises nothing: each ``async for`` gets an
    iteration of its own that cancels the call when the loop lets go of it.
    Leaving ``async with client.run(...) as stream`` does the same.
    Cancelling the task that iterates cancels the call and lets
    ``asyncio.CancelledError`` through.

    :meth:`cancel` from elsewhere (another task, a callback) makes the
    iteration raise :class:`~interlock.errors.Cancelled`, so the consumer
    can tell a stream someone stopped from one that ended.

    Errors the router returns before the first event raise the matching
    :class:`~interlock.errors.InterlockError`, a passing ``timeout``
    raises :class:`~interlock.errors.DeadlineExceeded`, and a connection lost
    mid-stream (the daemon killed or restarted) raises
    :class:`~interlock.errors.Unavailable`: run it again with the same
    ``request_id`` and the daemon resumes the turn. A failure the router
    reports after the run started arrives as the stream's last event
    (``error``), not as an exception.
    """

    def __init__(self, start: Callable[[], _RunCall]) -> None:
        self._start = start
        self._call: _RunCall | None = None
        self._done = False
        self._cancelled = False

    def __aiter__(self) -> _RunIteration:
        return _RunIteration(self)

    async def __anext__(self) -> events_pb2.AgentEvent:
        if self._cancelled:
            raise self._cancelled_error()
        if self._done:
            raise StopAsyncIteration
        if self._call is None:
            self._call = self._start()
        try:
            event = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            self._done = True
            raise from_rpc_error(exc) from exc
        except asyncio.CancelledError:
            # grpc.aio raises CancelledError both when our task is cancelled and
            # when the call was cancelled under a pending read (cancel() from
            # another task). Only the latter is the stream's own end.
            task = asyncio.current_task()
            if self._cancelled and task is not None and not task.cancelling():
                raise self._cancelled_error() from None
            self.cancel()
            raise
        if not isinstance(event, events_pb2.AgentEvent):  # grpc.aio.EOF: the stream ended OK
            self._done = True
            raise StopAsyncIteration
        return event

    @staticmethod
    def _cancelled_error() -> Cancelled:
        return Cancelled(grpc.StatusCode.CANCELLED, "the run was cancelled by the client")

    def cancel(self) -> bool:
        """Cancel the run on the router; iterating it afterwards raises Cancelled.

        Returns False if the call had not started or had already ended (then
        what it sent can still be read).
        """
        if self._done:
            return False
        if self._call is not None and self._call.done():
            return False  # ended on its own: what it sent can still be read
        self._done = True
        self._cancelled = True
        return self._call.cancel() if self._call is not None else False

    def _abandon(self) -> None:
        """Cancel the call of a stream its consumer let go of, from any thread."""
        call = self._call
        if self._done or call is None or call.done():
            return
        self._done = True
        self._cancelled = True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = _call_loop(call)
        if loop is None or loop is running:
            call.cancel()
        elif not loop.is_closed():
            # grpc.aio calls belong to their loop: the garbage collector may
            # drop an iteration on another thread.
            loop.call_soon_threadsafe(call.cancel)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._abandon()

    async def aclose(self) -> None:
        """Same as :meth:`cancel`; present so ``contextlib.aclosing`` works."""
        self.cancel()

    async def __aenter__(self) -> RunStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


def _call_loop(call: _RunCall) -> asyncio.AbstractEventLoop | None:
    """The event loop a grpc.aio call runs on, when grpc says (a private attribute)."""
    loop = getattr(call, "_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


class _RunIteration(AsyncIterator[events_pb2.AgentEvent]):
    """One ``async for`` over a :class:`RunStream`.

    The loop holds the only reference to it, so CPython drops it the moment
    the loop is left — by ``break``, ``return`` or an exception — and that
    cancels the call; a loop that ran to the end has nothing left to cancel.
    """

    def __init__(self, stream: RunStream) -> None:
        self._stream = stream

    def __aiter__(self) -> _RunIteration:
        return self

    async def __anext__(self) -> events_pb2.AgentEvent:
        return await self._stream.__anext__()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stream._abandon()


class Client:
    """Connection to one Interlock daemon.

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

    A ``channel`` passed in is used as is and left open on :meth:`close`; the
    caller owns it. Create the client inside a running event loop.
    """

    def __init__(
        self,
        target: str | None = None,
        api_key: str | None = None,
        *,
        operator_key: str | None = None,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.target = from_env(target, ENV_ADDRESS) or DEFAULT_ADDRESS
        self._api_key = from_env(api_key, ENV_API_KEY)
        self._operator_key = from_env(operator_key, ENV_OPERATOR_KEY)
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else grpc.aio.insecure_channel(self.target)
        self._router = router_pb2_grpc.AgentRouterStub(self._channel)
        self.sandboxes = Sandboxes(self._channel, self._operator_key)
        self.conversations = Conversations(self._channel, self._api_key)
        self.integrations = Integrations(self._channel, self._api_key)
        self.compute = Compute(self._channel, self._operator_key, self._api_key)
        self.agents = Agents(self._channel, self._api_key)
        self.ledger = Ledger(self._channel, self._api_key, self._operator_key)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def channel(self) -> grpc.aio.Channel:
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

    async def close(self) -> None:
        """Close the channel if the client created it; cancels calls in flight."""
        if self._owns_channel:
            await self._channel.close(None)

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
    ) -> RunStream:
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
        return RunStream(lambda: self._router.Run(request, timeout=timeout, metadata=metadata))

    async def run_text(
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
        # A gRPC deadline, not asyncio.timeout(): it travels to the router,
        # which then stops the provider call and the tools on its side too.
        timeout: float | None = None,  # noqa: ASYNC109
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
        async with stream:
            async for event in stream:
                outcome.add(event)
        return outcome


class Sandboxes:
    """Administration of sandboxes, their API keys and quotas (operator key)."""

    def __init__(self, channel: grpc.aio.Channel, operator_key: str | None) -> None:
        self._stub = sandboxes_pb2_grpc.SandboxesStub(channel)
        self._key = operator_key

    def _metadata(self) -> Metadata:
        return operator_metadata(self._key)

    async def create(
        self,
        name: str,
        *,
        quotas: sandboxes_pb2.Quotas | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> sandboxes_pb2.Sandbox:
        """Create a sandbox; ``quotas`` unset means unlimited."""
        request = sandboxes_pb2.CreateSandboxRequest(name=name, quotas=quotas)
        response = await _unary(
            self._stub.CreateSandbox(request, timeout=timeout, metadata=self._metadata())
        )
        return response.sandbox

    async def get(
        self,
        sandbox_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> sandboxes_pb2.Sandbox:
        """Read one sandbox."""
        request = sandboxes_pb2.GetSandboxRequest(sandbox_id=sandbox_id)
        response = await _unary(
            self._stub.GetSandbox(request, timeout=timeout, metadata=self._metadata())
        )
        return response.sandbox

    async def list(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> sandboxes_pb2.ListSandboxesResponse:
        """One page of sandboxes in creation order; see :meth:`list_all` for all of them."""
        request = sandboxes_pb2.ListSandboxesRequest(page_size=page_size, page_token=page_token)
        return await _unary(
            self._stub.ListSandboxes(request, timeout=timeout, metadata=self._metadata())
        )

    async def list_all(
        self,
        *,
        page_size: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> AsyncIterator[sandboxes_pb2.Sandbox]:
        """Every sandbox, fetching pages as the iteration needs them."""
        page_token = ""
        while True:
            page = await self.list(timeout=timeout, page_size=page_size, page_token=page_token)
            for sandbox in page.sandboxes:
                yield sandbox
            page_token = page.next_page_token
            if not page_token:
                return

    async def delete(
        self,
        sandbox_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> None:
        """Delete a sandbox and everything in it, its encryption keys included."""
        request = sandboxes_pb2.DeleteSandboxRequest(sandbox_id=sandbox_id)
        await _unary(self._stub.DeleteSandbox(request, timeout=timeout, metadata=self._metadata()))

    async def set_quotas(
        self,
        sandbox_id: str,
        quotas: sandboxes_pb2.Quotas,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> sandboxes_pb2.Sandbox:
        """Replace a sandbox's quotas entirely (zero means unlimited)."""
        request = sandboxes_pb2.SetQuotasRequest(sandbox_id=sandbox_id, quotas=quotas)
        response = await _unary(
            self._stub.SetQuotas(request, timeout=timeout, metadata=self._metadata())
        )
        return response.sandbox

    async def create_api_key(
        self,
        sandbox_id: str,
        *,
        name: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> sandboxes_pb2.CreateApiKeyResponse:
        """Create an API key; the response's ``secret`` is the only copy there will be."""
        request = sandboxes_pb2.CreateApiKeyRequest(sandbox_id=sandbox_id, name=name)
        return await _unary(
            self._stub.CreateApiKey(request, timeout=timeout, metadata=self._metadata())
        )

    async def list_api_keys(
        self,
        sandbox_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> builtins.list[sandboxes_pb2.ApiKey]:
        """A sandbox's keys, revoked ones included, in creation order (no secrets)."""
        request = sandboxes_pb2.ListApiKeysRequest(sandbox_id=sandbox_id)
        response = await _unary(
            self._stub.ListApiKeys(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.api_keys)

    async def revoke_api_key(
        self,
        sandbox_id: str,
        key_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> sandboxes_pb2.ApiKey:
        """Revoke a key; it stops working at once. Returns the revoked key."""
        request = sandboxes_pb2.RevokeApiKeyRequest(sandbox_id=sandbox_id, key_id=key_id)
        response = await _unary(
            self._stub.RevokeApiKey(request, timeout=timeout, metadata=self._metadata())
        )
        return response.api_key

    async def set_secret(
        self,
        sandbox_id: str,
        name: str,
        value: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> None:
        """Store (or replace) a secret of the sandbox, e.g. ``anthropic_api_key``.

        Sealed at rest with the sandbox's key; write-only: no call returns it.
        """
        request = sandboxes_pb2.SetSecretRequest(sandbox_id=sandbox_id, name=name, value=value)
        await _unary(self._stub.SetSecret(request, timeout=timeout, metadata=self._metadata()))

    async def list_secrets(
        self,
        sandbox_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> builtins.list[str]:
        """The names of a sandbox's secrets, sorted (never their values)."""
        request = sandboxes_pb2.ListSecretsRequest(sandbox_id=sandbox_id)
        response = await _unary(
            self._stub.ListSecrets(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.names)

    async def delete_secret(
        self,
        sandbox_id: str,
        name: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> None:
        """Delete a secret; deleting an absent one is not an error."""
        request = sandboxes_pb2.DeleteSecretRequest(sandbox_id=sandbox_id, name=name)
        await _unary(self._stub.DeleteSecret(request, timeout=timeout, metadata=self._metadata()))


class Conversations:
    """Reading and deleting an end user's conversations (sandbox API key).

    Every call names the end user: conversations are private to one, and the
    router answers NOT_FOUND for a session that belongs to someone else.
    """

    def __init__(self, channel: grpc.aio.Channel, api_key: str | None) -> None:
        self._stub = conversations_pb2_grpc.ConversationsStub(channel)
        self._key = api_key

    def _metadata(self) -> Metadata:
        return api_key_metadata(self._key)

    async def list(
        self,
        *,
        end_user_id: str,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> conversations_pb2.ListConversationsResponse:
        """One page of the end user's conversations, most recently active first."""
        request = conversations_pb2.ListConversationsRequest(
            end_user_id=end_user_id, page_size=page_size, page_token=page_token
        )
        return await _unary(
            self._stub.ListConversations(request, timeout=timeout, metadata=self._metadata())
        )

    async def list_all(
        self,
        *,
        end_user_id: str,
        page_size: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> AsyncIterator[conversations_pb2.Conversation]:
        """Every conversation of the end user, fetching pages as needed."""
        page_token = ""
        while True:
            page = await self.list(
                timeout=timeout,
                end_user_id=end_user_id,
                page_size=page_size,
                page_token=page_token,
            )
            for conversation in page.conversations:
                yield conversation
            page_token = page.next_page_token
            if not page_token:
                return

    async def get(
        self,
        session_id: str,
        *,
        end_user_id: str,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> conversations_pb2.GetConversationResponse:
        """The conversation's summary and one page of its entries, oldest first."""
        request = conversations_pb2.GetConversationRequest(
            end_user_id=end_user_id,
            session_id=session_id,
            page_size=page_size,
            page_token=page_token,
        )
        return await _unary(
            self._stub.GetConversation(request, timeout=timeout, metadata=self._metadata())
        )

    async def delete(
        self,
        session_id: str,
        *,
        end_user_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> None:
        """Delete a conversation and everything stored for it."""
        request = conversations_pb2.DeleteConversationRequest(
            end_user_id=end_user_id, session_id=session_id
        )
        await _unary(
            self._stub.DeleteConversation(request, timeout=timeout, metadata=self._metadata())
        )


class Integrations:
    """Data sources of the sandbox — OAuth apps, MCP servers — and their connections (API key).

    A connection is for one end user or for the whole sandbox; its tools are
    offered to every run of that end user (or of anyone in the sandbox). OAuth
    apps connect in two steps: :meth:`connect` returns the URL to send the end
    user to, then :meth:`wait_connected` (or :meth:`watch_connect`) follows the
    flow until the end user has finished::

        started = await client.integrations.connect("github", end_user_id="u-1")
        print("open", started.authorize_url)
        integration = await client.integrations.wait_connected(started.flow_id)
    """

    def __init__(self, channel: grpc.aio.Channel, api_key: str | None) -> None:
        self._stub = integrations_pb2_grpc.IntegrationsStub(channel)
        self._key = api_key

    def _metadata(self) -> Metadata:
        return api_key_metadata(self._key)

    async def catalog(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> builtins.list[integrations_pb2.CatalogEntry]:
        """What can be connected on this daemon, by name, with the tools each provides.

        An entry with ``available`` false is known but not configured by the
        operator: connecting it fails.
        """
        request = integrations_pb2.CatalogRequest()
        response = await _unary(
            self._stub.Catalog(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.entries)

    async def connect(
        self,
        app: str,
        *,
        end_user_id: str,
        scope: ConnectScope = "end_user",
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
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
        return await _unary(self._stub.Connect(request, timeout=timeout, metadata=self._metadata()))

    async def watch_connect(
        self,
        flow_id: str,
        *,
        # A gRPC deadline, not asyncio.timeout(): the daemon stops watching too.
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncGenerator[integrations_pb2.WatchConnectResponse, None]:
        """The connect flow's state now and at every change, until it has ended.

        The last update is ``CONNECTED`` (with ``integration``), ``FAILED`` or
        ``EXPIRED`` (with ``reason``). The call starts on the first iteration
        and is cancelled when the generator is closed (``contextlib.aclosing``)
        or the consuming task is cancelled. A flow of another sandbox, or none,
        is NotFound; ``timeout`` passing is DeadlineExceeded.
        """
        request = integrations_pb2.WatchConnectRequest(flow_id=flow_id)
        call = self._stub.WatchConnect(request, timeout=timeout, metadata=self._metadata())
        try:
            async for update in call:
                yield update
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            call.cancel()

    async def wait_connected(
        self,
        flow_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline, as for watch_connect
    ) -> integrations_pb2.Integration:
        """Wait until the connect flow ends and return the new integration.

        A flow that failed (the end user declined, the provider refused) or
        expired raises :class:`~interlock.errors.ConnectFailed` with its
        ``state`` and ``reason``. ``timeout`` (seconds) bounds the wait, not
        the flow: DeadlineExceeded leaves the flow open until it expires, and
        waiting again picks it up.
        """
        async with contextlib.aclosing(self.watch_connect(flow_id, timeout=timeout)) as updates:
            async for update in updates:
                integration = connect_result(update)
                if integration is not None:
                    return integration
        raise Unavailable(
            grpc.StatusCode.UNAVAILABLE,
            f"the watch of connect flow {flow_id} ended before the flow did; wait again",
        )

    async def add_mcp_server(
        self,
        name: str,
        url: str,
        *,
        end_user_id: str = "",
        bearer_token: str = "",
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
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
        response = await _unary(
            self._stub.AddMcpServer(request, timeout=timeout, metadata=self._metadata())
        )
        return response.integration

    async def list(
        self,
        end_user_id: str = "",
        include_disconnected: bool = False,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> builtins.list[integrations_pb2.Integration]:
        """Integrations, oldest first.

        With ``end_user_id``: that end user's and the sandbox-wide ones (what
        their runs get); without: every integration of the sandbox.
        Disconnected ones only with ``include_disconnected``.
        """
        request = integrations_pb2.ListIntegrationsRequest(
            end_user_id=end_user_id, include_disconnected=include_disconnected
        )
        response = await _unary(
            self._stub.ListIntegrations(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.integrations)

    async def disconnect(
        self,
        integration_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> integrations_pb2.Integration:
        """Revoke the grant upstream (OAuth apps), then archive the integration; return it.

        Its tools disappear from later runs. Disconnecting twice is not an
        error. If the provider refuses to revoke, FailedPrecondition and the
        integration stays connected.
        """
        request = integrations_pb2.DisconnectRequest(integration_id=integration_id)
        response = await _unary(
            self._stub.Disconnect(request, timeout=timeout, metadata=self._metadata())
        )
        return response.integration


class Compute:
    """Operating runs and compute: kill switches, compute sessions, providers, placements.

    Pauses need the operator key. The other calls use the sandbox API key when
    the client has one, and then see only that sandbox; a client with only the
    operator key (and ``INTERLOCK_API_KEY`` unset) sees every sandbox::

        for session in await client.compute.sessions(status="running"):
            await client.compute.suspend(session.id)
    """

    def __init__(
        self, channel: grpc.aio.Channel, operator_key: str | None, api_key: str | None = None
    ) -> None:
        self._stub = compute_pb2_grpc.ComputeStub(channel)
        self._key = operator_key
        self._api_key = api_key

    def _metadata(self) -> Metadata:
        return operator_metadata(self._key)

    def _either(self) -> Metadata:
        return api_key_or_operator_metadata(self._api_key, self._key)

    async def pause(
        self,
        scope: str,
        *,
        target: str = "",
        sandbox_id: str = "",
        reason: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> compute_pb2.SetPauseResponse:
        """Pause runs in ``scope`` ("global", "end_user", "agent_provider",
        "compute_provider"); runs in flight it covers end with an Error event."""
        request = compute_pb2.SetPauseRequest(
            scope=pause_scope(scope), sandbox_id=sandbox_id, target=target, reason=reason
        )
        return await _unary(
            self._stub.SetPause(request, timeout=timeout, metadata=self._metadata())
        )

    async def unpause(
        self,
        scope: str,
        *,
        target: str = "",
        sandbox_id: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> bool:
        """Clear a pause; False if there was none."""
        request = compute_pb2.ClearPauseRequest(
            scope=pause_scope(scope), sandbox_id=sandbox_id, target=target
        )
        response = await _unary(
            self._stub.ClearPause(request, timeout=timeout, metadata=self._metadata())
        )
        return response.cleared

    async def pauses(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> builtins.list[compute_pb2.Pause]:
        """The pauses in force, oldest first."""
        request = compute_pb2.ListPausesRequest()
        response = await _unary(
            self._stub.ListPauses(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.pauses)

    async def sessions(
        self,
        *,
        end_user_id: str = "",
        agent: str = "",
        status: str = "",
        provider: str = "",
        sandbox_id: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
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
        response = await _unary(
            self._stub.ListComputeSessions(request, timeout=timeout, metadata=metadata)
        )
        return list(response.sessions)

    async def suspend(
        self,
        session_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> compute_pb2.ComputeSession:
        """Stop a running session now, keeping its state (waits for a run using it);
        return the session. Another sandbox's session is NotFound."""
        request = compute_pb2.SuspendComputeSessionRequest(session_id=session_id)
        response = await _unary(
            self._stub.SuspendComputeSession(request, timeout=timeout, metadata=self._either())
        )
        return response.session

    async def resume(
        self,
        session_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> compute_pb2.ComputeSession:
        """Start a suspended or archived session again, ahead of a run; return it."""
        request = compute_pb2.ResumeComputeSessionRequest(session_id=session_id)
        response = await _unary(
            self._stub.ResumeComputeSession(request, timeout=timeout, metadata=self._either())
        )
        return response.session

    async def destroy(
        self,
        session_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> compute_pb2.ComputeSession:
        """Delete a session and its state at its provider (waits for a run using it);
        return it, destroyed. The key's next run starts a new session."""
        request = compute_pb2.DestroyComputeSessionRequest(session_id=session_id)
        response = await _unary(
            self._stub.DestroyComputeSession(request, timeout=timeout, metadata=self._either())
        )
        return response.session

    async def providers(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> builtins.list[compute_pb2.ComputeProviderStatus]:
        """The compute providers in order of preference: health, load, start times, prices."""
        request = compute_pb2.ListComputeProvidersRequest()
        response = await _unary(
            self._stub.ListComputeProviders(request, timeout=timeout, metadata=self._either())
        )
        return list(response.providers)

    async def explain(
        self,
        run_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> compute_pb2.ExplainPlacementResponse:
        """Where a run's runtime was placed and why, with every provider considered.
        A run that was not placed on compute (or of another sandbox) is NotFound."""
        request = compute_pb2.ExplainPlacementRequest(run_id=run_id)
        return await _unary(
            self._stub.ExplainPlacement(request, timeout=timeout, metadata=self._either())
        )


class Agents:
    """Saved agents of the sandbox (API key): run one with ``run(..., agent=slug)``."""

    def __init__(self, channel: grpc.aio.Channel, api_key: str | None) -> None:
        self._stub = agents_pb2_grpc.AgentsStub(channel)
        self._key = api_key

    def _metadata(self) -> Metadata:
        return api_key_metadata(self._key)

    async def put(
        self,
        agent: agents_pb2.Agent,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> agents_pb2.Agent:
        """Create or replace the agent ``agent.slug``."""
        request = agents_pb2.PutAgentRequest(agent=agent)
        return (
            await _unary(self._stub.PutAgent(request, timeout=timeout, metadata=self._metadata()))
        ).agent

    async def get(
        self,
        slug: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> agents_pb2.Agent:
        """Read one agent."""
        request = agents_pb2.GetAgentRequest(slug=slug)
        return (
            await _unary(self._stub.GetAgent(request, timeout=timeout, metadata=self._metadata()))
        ).agent

    async def list(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> builtins.list[agents_pb2.Agent]:
        """The sandbox's agents by slug."""
        request = agents_pb2.ListAgentsRequest()
        response = await _unary(
            self._stub.ListAgents(request, timeout=timeout, metadata=self._metadata())
        )
        return list(response.agents)

    async def delete(
        self,
        slug: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> None:
        """Delete an agent."""
        request = agents_pb2.DeleteAgentRequest(slug=slug)
        await _unary(self._stub.DeleteAgent(request, timeout=timeout, metadata=self._metadata()))


# -- the ledger --------------------------------------------------------------

#: What a usage summary adds up by ("day" is the UTC day).
UsageGroup = Literal["end_user", "agent", "run", "provider", "day"]
#: What a ledger entry bills.
LedgerKind = Literal["tokens", "compute"]

_USAGE_GROUPS: dict[str, ledger_pb2.UsageGroupBy.ValueType] = {
    "end_user": ledger_pb2.USAGE_GROUP_BY_END_USER,
    "agent": ledger_pb2.USAGE_GROUP_BY_AGENT,
    "run": ledger_pb2.USAGE_GROUP_BY_RUN,
    "provider": ledger_pb2.USAGE_GROUP_BY_PROVIDER,
    "day": ledger_pb2.USAGE_GROUP_BY_DAY,
}
_LEDGER_KINDS: dict[str, ledger_pb2.LedgerEntryKind.ValueType] = {
    "": ledger_pb2.LEDGER_ENTRY_KIND_UNSPECIFIED,
    "tokens": ledger_pb2.LEDGER_ENTRY_KIND_TOKENS,
    "compute": ledger_pb2.LEDGER_ENTRY_KIND_COMPUTE,
}


def usage_group(by: str) -> ledger_pb2.UsageGroupBy.ValueType:
    """The API's value of a summary grouping; ValueError for an unknown one."""
    try:
        return _USAGE_GROUPS[by]
    except KeyError:
        raise ValueError(f"group by one of {', '.join(_USAGE_GROUPS)}, not {by!r}") from None


def ledger_filter(
    *,
    run_id: str = "",
    end_user_id: str = "",
    agent: str = "",
    provider: str = "",
    kind: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> ledger_pb2.LedgerFilter:
    """The filter message of ledger calls. Naive datetimes are taken as UTC; ``kind`` is
    "tokens", "compute" or "" (both); ValueError for another."""
    if kind not in _LEDGER_KINDS:
        raise ValueError(f"kind must be tokens or compute, not {kind!r}")
    result = ledger_pb2.LedgerFilter(
        run_id=run_id,
        end_user_id=end_user_id,
        agent=agent,
        provider=provider,
        kind=_LEDGER_KINDS[kind],
    )
    if since is not None:
        result.start_time.FromDatetime(since)
    if until is not None:
        result.end_time.FromDatetime(until)
    return result


def ledger_metadata(api_key: str | None, operator_key: str | None, sandbox_id: str) -> Metadata:
    """A ledger call reads the API key's sandbox, or with the operator key the one named."""
    return operator_metadata(operator_key) if sandbox_id else api_key_metadata(api_key)


class Ledger:
    """What runs cost: ledger entries and usage summaries.

    With the API key a call reads that sandbox's ledger; pass ``sandbox_id``
    to read any sandbox's with the operator key. Every call takes the same
    filters: ``run_id``, ``end_user_id``, ``agent`` (a saved agent's slug),
    ``provider``, ``kind`` ("tokens" or "compute") and the time range
    ``since`` (inclusive) to ``until`` (exclusive)::

        by_user = await client.ledger.summarize_all("end_user", since=last_monday)
        for row in by_user.summaries:
            print(row.key, row.total_cost_usd)
    """

    def __init__(
        self, channel: grpc.aio.Channel, api_key: str | None, operator_key: str | None
    ) -> None:
        self._stub = ledger_pb2_grpc.LedgerStub(channel)
        self._api_key = api_key
        self._operator_key = operator_key

    async def list(
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
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
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
        return await _unary(
            self._stub.ListLedgerEntries(request, timeout=timeout, metadata=metadata)
        )

    async def list_all(
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
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> AsyncIterator[ledger_pb2.LedgerEntry]:
        """Every matching ledger entry, newest first, fetching pages as the iteration needs."""
        page_token = ""
        while True:
            page = await self.list(
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
            for entry in page.entries:
                yield entry
            page_token = page.next_page_token
            if not page_token:
                return

    async def summarize(
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
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
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
        return await _unary(self._stub.SummarizeUsage(request, timeout=timeout, metadata=metadata))

    async def summarize_all(
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
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> ledger_pb2.SummarizeUsageResponse:
        """Every group of :meth:`summarize`, all pages merged into one response."""
        merged = ledger_pb2.SummarizeUsageResponse()
        page_token = ""
        while True:
            page = await self.summarize(
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
            del merged.budgets[:]  # the same on every page: keep the last
            merged.budgets.extend(page.budgets)
            page_token = page.next_page_token
            if not page_token:
                return merged
