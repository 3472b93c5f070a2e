"""The seam between the turn orchestrator and an agent runtime.

A backend turns one provider-neutral :class:`TurnRequest` into a stream of
provider-neutral :data:`BackendEvent` values. Backends know nothing of gRPC,
the store, tenants or encryption: they receive plain messages and tool
schemas, and they execute tools only through the :class:`ToolRunner` they are
handed (which records every call durably before and after it runs).

Chat-completions-shaped providers implement :meth:`ChatLoopBackend.step` (one
provider call) and inherit the tool loop; runtimes that run their own loop
(managed agents) implement :meth:`AgentBackend.stream_turn` directly.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from interlockd.compute.base import SessionSpec

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one provider call or of a whole turn (summed).

    Same conventions as ``interlock.v1.Usage``: ``input_tokens`` includes the
    cached ones (``cache_read_tokens`` and ``cache_write_tokens`` are subsets of
    it) and ``output_tokens`` includes ``reasoning_tokens``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: JSON-schema'd, executed by the router.

    ``side_effecting`` is True unless the tool's source says it only reads
    (MCP ``readOnlyHint: true``, the built-in search, GitHub's read tools): a
    side-effecting call that may have started is never executed again (its
    outcome is reported unknown instead), so the safe default is to assume
    it has effects.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    side_effecting: bool = True


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """A tool call inside an assistant message of the context."""

    call_id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the context handed to a provider (OpenAI-like shape)."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCallPart, ...] = ()
    tool_call_id: str | None = None  # role == "tool": the call this answers
    name: str | None = None  # role == "tool": the tool's name


class ProviderState(abc.ABC):
    """What a backend may keep at the router between turns, scoped to one run's sandbox.

    Handed to backends that create long-lived resources at their provider
    (managed agents, environments) or need the sandbox's own credentials. Every
    method is confined to the sandbox of the run: a backend can never read or
    write another tenant's state through it.
    """

    @abc.abstractmethod
    async def secret(self, name: str) -> str | None:
        """The sandbox's secret ``name`` (e.g. its own provider API key), or None."""

    @abc.abstractmethod
    async def resource(
        self, kind: str, fingerprint: str, create: Callable[[], Awaitable[str]]
    ) -> str:
        """The id of the provider resource ``(kind, fingerprint)``, created once.

        Returns the stored id when there is one; otherwise calls ``create()``
        under a lock that holds across coroutines and daemon replicas sharing the
        store, stores its id and returns it. Concurrent callers with the same key
        get the same id and ``create`` runs once. Exceptions of ``create``
        propagate and store nothing.
        """

    @abc.abstractmethod
    async def forget_resource(self, kind: str, fingerprint: str, resource_id: str) -> None:
        """Drop the stored id if it is still ``resource_id`` (the provider lost it: 404)."""


@dataclass(frozen=True, slots=True)
class RuntimeAccess:
    """How a turn reaches its self-hosted runtime server, as placed by the scheduler.

    ``compute_session_id`` names the scheduler's compute session: it stays the
    same across suspend/resume and archive/restore (the runtime's state is
    kept) and changes when the session had to be created anew (state lost), so
    a backend that binds provider sessions to it can tell a lost one.
    """

    base_url: str  # no trailing slash
    headers: Mapping[str, str]  # the compute provider's routing headers (e.g. a preview token)
    api_key: str  # the runtime server's own key for this compute session; never log it
    compute_session_id: str


@dataclass(frozen=True, slots=True)
class RuntimeContext:
    """What the scheduler hands a runtime backend to describe a new compute session."""

    key: str  # the compute session's key (stable per sandbox, end user and agent)
    model: str  # the run's model
    api_key: str  # the key the runtime server must require (sealed in the store)
    #: The daemon's MCP endpoint and a bearer token scoped to this compute
    #: session: it opens the tools of whichever run currently uses the session.
    mcp_url: str
    mcp_token: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """Everything a backend needs for one turn, already within the model's budget."""

    model: str
    messages: Sequence[Message]
    tools: Sequence[ToolSpec] = ()
    max_output_tokens: int | None = None
    max_tool_iterations: int = 8
    # Provider-specific options from the request (e.g. a Google reasoning engine id).
    options: dict[str, str] = field(default_factory=dict)
    #: The caller's system prompt exactly as given. ``messages`` may carry it with
    #: per-turn notes appended; a backend that bakes the prompt into a long-lived
    #: resource uses this one so the resource stays the same from turn to turn.
    system: str = ""
    #: Backends that keep sessions (:attr:`AgentBackend.keeps_sessions`): the
    #: provider's session of this conversation to continue, or None for a new one.
    #: ``messages`` then hold only what that session has not seen yet (the
    #: system prompt, turns that ran elsewhere, the new user message).
    provider_session: str | None = None
    #: Router-side state of the run's sandbox (credentials, resource cache).
    state: ProviderState | None = None
    #: A stable, opaque id of the run's end user (within its sandbox) for
    #: providers that keep per-user state; reveals neither tenant nor user id.
    user_ref: str = ""
    #: Self-hosted runtimes (:attr:`AgentBackend.runtime`): where the compute
    #: scheduler placed this turn's runtime server. None for every other backend.
    runtime: RuntimeAccess | None = None


# ---- events a backend yields -------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asked for a tool. Yielded before the backend runs it.

    ``provider_executed``: the provider runs the tool itself (a server-side
    tool of a managed runtime); the router only reports and records it.
    """

    call_id: str
    name: str
    arguments: str  # JSON text
    provider_executed: bool = False


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The outcome of a tool call, as returned by the :class:`ToolRunner`."""

    call_id: str
    name: str
    result: str  # JSON text; "" when error is set
    error: str = ""
    reused: bool = False  # a stored result of an already-completed call
    provider_executed: bool = False  # the result of a provider-run tool (see ToolCall)


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Usage of one provider call; the orchestrator sums them."""

    usage: Usage


StopReason = Literal[
    "end_turn", "max_tokens", "tool_limit", "content_filter", "refusal", "budget_reached"
]


@dataclass(frozen=True, slots=True)
class SessionBound:
    """The turn runs in this provider session, which now holds the turn's user message.

    Yielded by backends that keep sessions, once the message was delivered;
    the orchestrator stores the id with the conversation for the next turn
    (``""``: forget the stored one, the next turn starts a new session). The
    id is opaque to the router and sealed at rest. Not an event of the
    client's stream.
    """

    session_id: str


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """The last event of a successful turn."""

    stop_reason: StopReason


BackendEvent = (
    TextDelta | ThinkingDelta | ToolCall | ToolResult | UsageReport | SessionBound | TurnEnd
)


@dataclass(frozen=True, slots=True)
class StepEnd:
    """End of one provider call of a chat loop: why it stopped, what it asked for."""

    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the orchestrator needs to know about a model to assemble context."""

    context_window: int  # tokens
    max_output_tokens: int
    supports_tools: bool = True
    supports_thinking: bool = False


class ToolRunner(abc.ABC):
    """Executes tool calls on behalf of a backend, inside the run's sandbox."""

    @abc.abstractmethod
    async def run(self, call: ToolCall) -> ToolResult:
        """Execute ``call`` and return its result.

        The runner records the call durably before executing it and the result
        durably before returning, so a crash never loses a completed result and
        a side-effecting call that already completed is never executed again
        (its stored result comes back with ``reused=True``). Tool failures are
        returned as a result with ``error`` set, never raised; only
        cancellation propagates.
        """


class AgentBackend(abc.ABC):
    """One agent runtime, selected by the request's provider string."""

    #: The provider string this backend is registered under: a class attribute
    #: for single-instance backends, set per instance by configurable ones (one
    #: OpenAI-compatible backend per configured provider).
    provider: str

    #: True for runtimes that keep the conversation in a session of their own
    #: (managed agents). The orchestrator then passes the stored session in
    #: :attr:`TurnRequest.provider_session`, hands over only what it has not
    #: seen, records :class:`SessionBound`, and retries once with a fresh
    #: session (and the whole window) when the backend raises
    #: :class:`interlockd.errors.ProviderSessionLost`.
    keeps_sessions: bool = False

    #: True for self-hosted runtimes that run on compute the router places
    #: (Hermes): before each turn the orchestrator asks the compute scheduler
    #: for a running session described by :meth:`session_spec` and passes it
    #: in :attr:`TurnRequest.runtime`.
    runtime: bool = False

    async def prepare_runtime(self) -> None:  # noqa: B027 - optional hook
        """Get ready to describe a session (runtime backends only): e.g. start the local
        model server whose URL goes into the spec. The scheduler awaits it before every
        :meth:`session_spec`; it must be cheap once done."""

    def session_spec(self, context: RuntimeContext) -> SessionSpec:
        """The compute session to start for this runtime (runtime backends only).

        Pure: the same context gives the same spec; the scheduler fingerprints
        it and recreates a session whose spec changed.
        """
        raise NotImplementedError(f"{type(self).__name__} is not a self-hosted runtime")

    @abc.abstractmethod
    def model_info(self, model: str) -> ModelInfo:
        """Return the limits of ``model``.

        Raise :class:`interlockd.errors.InvalidArgument` (field ``model``) for a
        model this backend cannot run. Called before the user message is
        recorded, so a bad model stores nothing.
        """

    def check_options(self, options: Mapping[str, str]) -> None:  # noqa: B027 - optional hook
        """Validate the request's provider options before anything is stored.

        Raise :class:`interlockd.errors.InvalidArgument` naming the field. The
        default accepts anything (most backends take no options).
        """

    @abc.abstractmethod
    def stream_turn(self, request: TurnRequest, tools: ToolRunner) -> AsyncIterator[BackendEvent]:
        """Run one turn and yield its events in order.

        Contract:
        - Text and thinking are yielded as they arrive from the provider.
        - For every tool the model calls, yield :class:`ToolCall`, then obtain
          the result from ``tools.run(...)`` and yield that :class:`ToolResult`.
        - Yield a :class:`UsageReport` for every provider call that reports usage.
        - End with exactly one :class:`TurnEnd` on success.
        - On failure raise a :class:`interlockd.errors.ProviderError` subclass:
          ``ProviderUnavailable`` when the provider could not be reached or
          answered 5xx/429, ``ProviderProtocolError`` for a malformed answer.
        - Cancellation (the caller closing the iterator or cancelling its task)
          must close the upstream connection promptly.
        - Backends that keep sessions yield :class:`SessionBound` once the user
          message reached the session, and raise ``ProviderSessionLost`` (only
          before any other event) when ``request.provider_session`` is gone.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release connections and child processes. Called once at shutdown."""


class ChatLoopBackend(AgentBackend):
    """A backend whose provider runs one model call at a time; the loop is ours."""

    @abc.abstractmethod
    def step(
        self, request: TurnRequest
    ) -> AsyncIterator[TextDelta | ThinkingDelta | UsageReport | StepEnd]:
        """Make one provider call with ``request.messages`` and yield its events.

        Yield text/thinking deltas as they arrive, usage when reported, and
        finally exactly one :class:`StepEnd` carrying the fully assembled tool
        calls (arguments joined from all streamed fragments) when the model
        asked for tools.
        """

    async def stream_turn(
        self, request: TurnRequest, tools: ToolRunner
    ) -> AsyncIterator[BackendEvent]:
        messages = list(request.messages)
        for _ in range(request.max_tool_iterations + 1):
            step_request = TurnRequest(
                model=request.model,
                messages=messages,
                tools=request.tools,
                max_output_tokens=request.max_output_tokens,
                max_tool_iterations=request.max_tool_iterations,
                options=request.options,
                system=request.system,
                state=request.state,
                user_ref=request.user_ref,
            )
            text: list[str] = []
            end: StepEnd | None = None
            events = self.step(step_request)
            try:
                async for event in events:
                    if isinstance(event, StepEnd):
                        end = event
                        continue
                    if isinstance(event, TextDelta):
                        text.append(event.text)
                    yield event
            finally:
                # A caller that stops iterating mid-step must close the upstream
                # response now, not whenever the step generator is collected.
                if isinstance(events, AsyncGenerator):
                    await events.aclose()
            if end is None:
                raise AssertionError(f"{type(self).__name__}.step ended without StepEnd")
            if end.finish_reason != "tool_calls" or not end.tool_calls:
                yield TurnEnd(_STOP_REASONS[end.finish_reason])
                return
            messages.append(
                Message(
                    role="assistant",
                    content="".join(text),
                    tool_calls=tuple(
                        ToolCallPart(c.call_id, c.name, c.arguments) for c in end.tool_calls
                    ),
                )
            )
            for call in end.tool_calls:
                yield call
                result = await tools.run(call)
                yield result
                messages.append(
                    Message(
                        role="tool",
                        content=result.result if not result.error else _error_json(result.error),
                        tool_call_id=call.call_id,
                        name=call.name,
                    )
                )
        yield TurnEnd("tool_limit")


_STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "tool_calls": "end_turn",
    "length": "max_tokens",
    "content_filter": "content_filter",
}


def _error_json(error: str) -> str:
    return orjson.dumps({"error": error}).decode()
