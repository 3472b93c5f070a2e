"""The shared vocabulary of a turn: what every layer of the daemon speaks.

Usage, tool specs, context messages and model limits; the events a backend
yields while a turn runs; the seams a backend is handed (the run's
:class:`ToolRunner`, :class:`ProviderState` and, for hosted agents that call
tools back over HTTP, :class:`ToolDispatch`); and what a self-hosted
runtime and the compute it runs on agree on (:class:`SessionSpec`,
:class:`RuntimeContext`, :class:`RuntimeAccess`). The store, the providers,
the tools and the turn orchestrator all import these from here, so none of
them has to import another for a type. Plain data and ABCs only: nothing here
does I/O or knows gRPC, a provider, the store or a tenant.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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


@dataclass(eq=False)
class DispatchCall:
    """One tool call a hosted agent sent back to the router; its run resolves ``answer``."""

    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    answer: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class DispatchChannel(abc.ABC):
    """The dispatch callbacks of one run: how a hosted agent's tool calls reach it.

    A runtime whose tools are baked in at its provider (a deployed Vertex AI
    agent) carries one proxy tool that POSTs each call back to the router with
    :attr:`token`; the calls queue here for the backend streaming the turn,
    which runs them with the run's :class:`ToolRunner` and answers each.
    """

    @property
    @abc.abstractmethod
    def token(self) -> str:
        """The run-scoped bearer token the runtime sends with each call; never log it."""

    @abc.abstractmethod
    def bind_session(self, session_id: str) -> None:
        """Accept calls only from the provider session ``session_id`` from now on."""

    @abc.abstractmethod
    async def next_call(self) -> DispatchCall:
        """The next call that arrived, oldest first (waits for one)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Revoke the token; calls still waiting are answered that the run ended. Idempotent."""


class ToolDispatch(abc.ABC):
    """Opens a run's :class:`DispatchChannel` (handed to backends in the turn request)."""

    @abc.abstractmethod
    async def open(self, end_user_id: str, ttl: float) -> DispatchChannel:
        """A new channel and token for one run of ``end_user_id``, valid ``ttl`` seconds at
        most (accepted by every process sharing the store once this returns); the caller
        closes it when the turn ends."""


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """What to run in a compute session.

    Portable across providers: in ``command`` arguments and ``env`` values,
    ``{port}`` stands for the port the runtime must serve HTTP on (``port``
    where the session has a network of its own; a free port of the host on
    ``local``), ``{host}`` for the address it must bind (``127.0.0.1`` on
    ``local``; ``0.0.0.0`` where the provider routes traffic in from outside)
    and ``{state_dir}`` for the directory ``files`` are written to, which is
    also the runtime's working directory.
    """

    key: str  # stable, unique per (sandbox, end user, agent); providers name sessions from it
    command: Sequence[str]  # the runtime server to start (argv)
    port: int  # the port it serves HTTP on, inside the session
    env: Mapping[str, str] = field(default_factory=dict)  # secrets included: never log it
    files: Mapping[str, bytes] = field(default_factory=dict)  # relative path -> content
    labels: Mapping[str, str] = field(default_factory=dict)  # user_id, sandbox_id, agent_id, ...
    region: str = ""
    size: str = ""
    health_path: str = "/health"
