"""The seam between the turn orchestrator and an agent runtime.

A backend turns one provider-neutral :class:`TurnRequest` into a stream of
provider-neutral :data:`BackendEvent` values. Backends know nothing of gRPC,
the store, tenants or encryption: they receive plain messages and tool
schemas, and they execute tools only through the :class:`ToolRunner` they are
handed (which records every call durably before and after it runs).

Chat-completions-shaped providers implement :meth:`ChatLoopBackend.step` (one
provider call) and inherit the tool loop; runtimes that run their own loop
(managed agents) implement :meth:`AgentBackend.stream_turn` directly.

Also here, what every provider kind's settings share (:class:`BackendSettings`,
:class:`RemoteBackendSettings`) and the one allow-list rule of
:meth:`AgentBackend.model_info` (:func:`allow_listed_model_info`).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from interlockd.backends import catalog
from interlockd.errors import InvalidArgument
from interlockd.vocabulary import (
    BackendEvent,
    Message,
    ModelInfo,
    ProviderState,
    RuntimeAccess,
    RuntimeContext,
    SessionSpec,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallPart,
    ToolDispatch,
    ToolRunner,
    ToolSpec,
    TurnEnd,
    UsageReport,
)


class BackendSettings(BaseModel):
    """What every provider kind's table has; each kind's table accepts only its own keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The kind's name (each kind's model narrows it to a one-value Literal).
    kind: str
    #: Model used when a request names none.
    default_model: str = ""
    #: USD a run of a model without a known price reserves against spend budgets
    #: while it runs (0: nothing; see runs/reservation.py).
    estimate_usd_per_run: float = Field(default=0.0, ge=0)


class RemoteBackendSettings(BackendSettings):
    """A provider reached over HTTP."""

    #: Allow-list of models with their context windows (tokens); empty allows any.
    models: dict[str, int] = Field(default_factory=dict)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    read_timeout_seconds: float = Field(default=300.0, gt=0)

    def allowed_models(self, output_cap: int) -> dict[str, ModelInfo] | None:
        """The ``models`` allow-list as limits (a quarter of each window for output, at
        most ``output_cap``), or None when it is empty (any model)."""
        return {
            model: ModelInfo(context_window=window, max_output_tokens=min(output_cap, window // 4))
            for model, window in self.models.items()
        } or None


def allow_listed_model_info(
    provider: str,
    model: str,
    allowed: Mapping[str, ModelInfo] | None,
    *,
    family: str = "",
    default: ModelInfo | None = None,
) -> ModelInfo:
    """The limits of ``model`` served by a configured provider (``model_info``'s rule).

    ``allowed``, when given, is the provider's allow-list: any other model is
    refused. Without it, a model of ``family`` (a name prefix, "" for any) gets the
    catalog's limits; one the catalog does not know gets ``default``, or is refused
    when there is none. A refusal is InvalidArgument (field ``model``) naming the
    models it serves.
    """
    if not model:
        raise InvalidArgument("model", f"provider {provider!r} needs a model name")
    if allowed is not None:
        info = allowed.get(model)
    else:
        info = catalog.model_info(model) if model.startswith(family) else None
        info = info or default
    if info is not None:
        return info
    known = ", ".join(sorted(allowed) if allowed is not None else catalog.known_models(family))
    raise InvalidArgument(
        "model",
        f"provider {provider!r} does not serve model {model!r}; known models: "
        f"{known or 'none'} (others can be listed in providers.{provider}.models)",
    )


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
    #: Opens the run's dispatch channel, for runtimes whose tools call the router
    #: back over HTTP (a deployed agent's dispatch tool). None where the caller has
    #: no HTTP side to receive the calls.
    dispatch: ToolDispatch | None = None


# ---- events a backend yields -------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepEnd:
    """End of one provider call of a chat loop: why it stopped, what it asked for."""

    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]
    tool_calls: tuple[ToolCall, ...] = ()


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
