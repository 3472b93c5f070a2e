"""Claude Managed Agents as an agent backend, through the official ``anthropic`` SDK.

A turn: the agent and environment for this configuration (created once, see
``resources``), the conversation's session (continued, or created when there is
none, when the agent changed, or when the service lost it), the event stream
opened *before* the user message is sent (the stream is live-only), then the
session's events translated into the neutral ones until it goes idle:

- ``event_delta`` previews of ``agent.message`` (asked for with
  ``event_deltas[]=agent.message``) → TextDelta as produced; the final
  ``agent.message`` adds only what the previews did not carry;
- ``agent.thinking`` → an empty ThinkingDelta, a progress signal (the service
  sends no thinking text);
- ``agent.custom_tool_use`` → ToolCall, executed by the router's ToolRunner →
  ToolResult; the results are sent in one batch when the session idles with
  ``requires_action``;
- ``agent.tool_use`` / ``agent.mcp_tool_use`` and their results → ToolCall /
  ToolResult marked provider-executed; a tool that asks for confirmation is
  denied (nobody is there to confirm it);
- ``span.model_request_end`` → usage (cache tokens included);
- idle ``end_turn`` / ``budget_reached`` / ``refusal`` → TurnEnd; idle
  ``retries_exhausted``, termination and a cut stream → a provider error
  carrying the service's last ``session.error`` message.

``events`` owns that mapping (no I/O); this module runs the custom tools and
answers the session. A turn that ends early (cancelled, failed, tool limit)
interrupts the session so it does not keep working unheard. The Anthropic key is the sandbox's own
secret ``anthropic_api_key`` when it has one, else the deployment's.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic
import httpx2
import orjson
import structlog

from interlockd.backends.anthropic import errors, events
from interlockd.backends.anthropic.events import TurnState
from interlockd.backends.anthropic.resources import AgentConfig, CreateBudget, EnvironmentConfig
from interlockd.backends.base import AgentBackend, TurnRequest, allow_listed_model_info
from interlockd.backends.handover import Handover, split
from interlockd.errors import (
    ProviderCredentialsRejected,
    ProviderError,
    ProviderProtocolError,
    ProviderSessionLost,
    ProviderUnavailable,
)
from interlockd.vocabulary import (
    BackendEvent,
    ModelInfo,
    ProviderState,
    SessionBound,
    ToolRunner,
    TurnEnd,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: The sandbox secret holding a sandbox's own Anthropic key.
API_KEY_SECRET = "anthropic_api_key"
#: SDK clients kept open (one per distinct key: the deployment's and sandboxes' own).
_MAX_CLIENTS = 64
#: How long an interrupt sent while a turn is abandoned may take.
_INTERRUPT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class _Binding:
    """The provider session of a conversation and what it runs on (stored sealed)."""

    session_id: str
    agent_id: str
    environment_id: str

    def encode(self) -> str:
        return orjson.dumps(
            {"session": self.session_id, "agent": self.agent_id, "env": self.environment_id}
        ).decode()

    @classmethod
    def decode(cls, value: str | None) -> _Binding | None:
        if not value:
            return None
        try:
            data = orjson.loads(value)
            return cls(str(data["session"]), str(data["agent"]), str(data["env"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None  # not ours (or from an older format): start a new session


class AnthropicBackend(AgentBackend):
    """``provider: "anthropic"`` (or the configured name): Claude Managed Agents."""

    keeps_sessions = True

    def __init__(
        self,
        provider: str = "anthropic",
        *,
        api_key: str = "",
        base_url: str = "",
        models: Mapping[str, ModelInfo] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        creates_per_minute: float = 60.0,
        networking: str = "unrestricted",
        token_deltas: bool = True,
        max_attempts: int = 3,
    ) -> None:
        self.provider = provider
        self._api_key = api_key
        self._base_url = base_url or None
        self._models = dict(models) if models else None
        self._timeout = httpx2.Timeout(read_timeout, connect=connect_timeout)
        self._budget = CreateBudget(creates_per_minute)
        self._environment_config = EnvironmentConfig(networking)
        self._token_deltas = token_deltas
        self._attempts = max_attempts
        self._clients: OrderedDict[str, anthropic.AsyncAnthropic] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()

    # ---- the AgentBackend contract ---------------------------------------------

    def model_info(self, model: str) -> ModelInfo:
        return allow_listed_model_info(self.provider, model, self._models, family="claude-")

    async def stream_turn(
        self, request: TurnRequest, tools: ToolRunner
    ) -> AsyncIterator[BackendEvent]:
        if request.state is None:
            raise ValueError("AnthropicBackend needs the run's ProviderState")
        state = request.state
        client = await self._client(state)
        handover = split(request.messages, request.system)
        agent = AgentConfig.build(request.model, request.system, request.tools)
        environment_id = await self._environment(client, state)
        agent_id = await self._agent(client, state, agent)
        binding = _Binding.decode(request.provider_session)
        reused = binding is not None
        if binding is not None and (binding.agent_id, binding.environment_id) != (
            agent_id,
            environment_id,
        ):
            raise ProviderSessionLost(
                self.provider,
                "the agent changed (model, system prompt or tools); "
                "the conversation continues in a new session",
            )
        if binding is None:
            binding = await self._new_session(client, state, agent, agent_id, environment_id)
        async for event in self._turn(client, binding, reused, handover, request, tools):
            yield event

    async def aclose(self) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=_INTERRUPT_TIMEOUT)
        clients, self._clients = self._clients, OrderedDict()
        for client in clients.values():
            await client.close()

    # ---- credentials and resources ----------------------------------------------

    async def _client(self, state: ProviderState) -> anthropic.AsyncAnthropic:
        key = await state.secret(API_KEY_SECRET) or self._api_key
        if not key:
            raise ProviderCredentialsRejected(
                self.provider,
                f"no Anthropic API key is configured: set providers.{self.provider}.api_key "
                f"or the sandbox's secret {API_KEY_SECRET}",
            )
        digest = hashlib.sha256(key.encode()).hexdigest()
        client = self._clients.get(digest)
        if client is None:
            # Retries are ours (errors.call): only before the first event, and never
            # a resend of the user's message that may have been delivered.
            client = anthropic.AsyncAnthropic(
                api_key=key, base_url=self._base_url, timeout=self._timeout, max_retries=0
            )
            self._clients[digest] = client
            if len(self._clients) > _MAX_CLIENTS:
                _, evicted = self._clients.popitem(last=False)
                self._spawn(evicted.close())
        else:
            self._clients.move_to_end(digest)
        return client

    async def _call(
        self, doing: str, fn: Callable[[], Awaitable[T]], *, idempotent: bool = True
    ) -> T:
        return await errors.call(
            self.provider, doing, fn, attempts=self._attempts, idempotent=idempotent
        )

    async def _environment(self, client: anthropic.AsyncAnthropic, state: ProviderState) -> str:
        config = self._environment_config

        async def create() -> str:
            await self._budget.acquire()
            created = await self._call(
                "creating the environment",
                lambda: client.beta.environments.create(**config.create_params()),
            )
            return created.id

        return await state.resource("environment", config.fingerprint, create)

    async def _agent(
        self, client: anthropic.AsyncAnthropic, state: ProviderState, agent: AgentConfig
    ) -> str:
        async def create() -> str:
            await self._budget.acquire()
            created = await self._call(
                "creating the agent", lambda: client.beta.agents.create(**agent.create_params())
            )
            return created.id

        return await state.resource("agent", agent.fingerprint, create)

    async def _new_session(
        self,
        client: anthropic.AsyncAnthropic,
        state: ProviderState,
        agent: AgentConfig,
        agent_id: str,
        environment_id: str,
    ) -> _Binding:
        async def create(agent_id: str, environment_id: str) -> str:
            session = await self._call(
                "creating the session",
                lambda: client.beta.sessions.create(
                    agent=agent_id, environment_id=environment_id, title="interlock"
                ),
            )
            return session.id

        try:
            session_id = await create(agent_id, environment_id)
        except ProviderError as exc:
            if errors.status_of(exc.__cause__) != 404:
                raise
            # The service no longer has the agent or environment we stored (deleted,
            # or another account's key): forget both and create them once more.
            await state.forget_resource("agent", agent.fingerprint, agent_id)
            await state.forget_resource(
                "environment", self._environment_config.fingerprint, environment_id
            )
            environment_id = await self._environment(client, state)
            agent_id = await self._agent(client, state, agent)
            session_id = await create(agent_id, environment_id)
        return _Binding(session_id, agent_id, environment_id)

    # ---- the turn ---------------------------------------------------------------

    async def _turn(
        self,
        client: anthropic.AsyncAnthropic,
        binding: _Binding,
        reused: bool,
        handover: Handover,
        request: TurnRequest,
        tools: ToolRunner,
    ) -> AsyncIterator[BackendEvent]:
        session_id = binding.session_id

        def lost(exc: ProviderError) -> ProviderError:
            if reused and errors.status_of(exc.__cause__) == 404:
                return ProviderSessionLost(self.provider, f"session {session_id} is gone")
            return exc

        try:
            stream = await self._call(
                "opening the session's event stream",
                lambda: client.beta.sessions.events.stream(
                    session_id,
                    event_deltas=["agent.message"] if self._token_deltas else anthropic.omit,
                ),
            )
        except ProviderError as exc:
            raise lost(exc) from exc.__cause__
        turn = TurnState(request.max_tool_iterations, idle=True)  # nothing to stop yet
        try:
            try:
                await self._call(
                    "sending the user message",
                    lambda: client.beta.sessions.events.send(
                        session_id, events=[_user_message(handover)]
                    ),
                    idempotent=False,
                )
            except ProviderError as exc:
                raise lost(exc) from exc.__cause__
            turn.idle = False  # the session is working on the message from here on
            yield SessionBound(binding.encode())
            async for event in self._events(stream):
                async for out in self._translate(client, session_id, event, turn, tools):
                    yield out
                if turn.failure == "terminated":
                    yield SessionBound("")  # never continue a terminated session
                    raise ProviderUnavailable(
                        self.provider, f"the session was terminated{turn.last_error_note}"
                    )
                if turn.failure == "retries_exhausted":
                    raise ProviderUnavailable(
                        self.provider, f"the session gave up after retrying{turn.last_error_note}"
                    )
                if turn.end is not None:
                    yield TurnEnd(turn.end)
                    return
            raise ProviderUnavailable(
                self.provider,
                f"the event stream ended before the turn finished{turn.last_error_note}",
            )
        finally:
            if not turn.idle:
                self._spawn(self._interrupt(client, session_id))
            await stream.close()

    async def _events(self, stream: anthropic.AsyncStream[Any]) -> AsyncIterator[dict[str, Any]]:
        """The stream's events as plain dicts; its failures as provider errors."""
        iterator = stream.__aiter__()
        while True:
            try:
                event = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
                raise errors.provider_error(self.provider, exc, "the event stream") from exc
            # Plain data: event and error types newer than the SDK stay readable
            # (the SDK's unions do not list them, so no serializer warnings either).
            yield event.to_dict(warnings=False) if hasattr(event, "to_dict") else dict(event)

    async def _translate(
        self,
        client: anthropic.AsyncAnthropic,
        session_id: str,
        event: dict[str, Any],
        turn: TurnState,
        tools: ToolRunner,
    ) -> AsyncIterator[BackendEvent]:
        kind = event.get("type", "")
        if kind == "agent.custom_tool_use":
            call = events.custom_tool_call(event)
            yield call
            result = await tools.run(call)
            turn.results[call.call_id] = result
            yield result
        elif kind == "session.status_idle" and events.idle_reason(event) == "requires_action":
            await self._answer(client, session_id, event, turn)
        else:
            for out in events.translate(self.provider, session_id, event, turn):
                yield out

    async def _answer(
        self,
        client: anthropic.AsyncAnthropic,
        session_id: str,
        idle: dict[str, Any],
        turn: TurnState,
    ) -> None:
        """Answer every event the session waits on, in one batch."""
        turn.cycles += 1
        if turn.cycles > turn.max_cycles:
            turn.end = "tool_limit"  # the interrupt on the way out stops the session
            return
        batch = events.tool_answers(idle, turn)
        if not batch:
            raise ProviderProtocolError(self.provider, "the session required action on nothing")
        try:
            await client.beta.sessions.events.send(session_id, events=batch)
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            raise errors.provider_error(self.provider, exc, "sending tool results") from exc

    async def _interrupt(self, client: anthropic.AsyncAnthropic, session_id: str) -> None:
        try:
            async with asyncio.timeout(_INTERRUPT_TIMEOUT):
                await client.beta.sessions.events.send(
                    session_id, events=[{"type": "user.interrupt"}]
                )
        except Exception as exc:  # best effort: the session stops on its own eventually
            log.warning(
                "anthropic_interrupt_failed", session_id=session_id, error=errors.detail(exc)
            )

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _user_message(handover: Handover) -> Any:
    content = [{"type": "text", "text": handover.message}]
    if handover.transcript:
        content.insert(0, {"type": "text", "text": handover.transcript})
    return {"type": "user.message", "content": content}
