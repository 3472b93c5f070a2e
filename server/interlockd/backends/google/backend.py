"""Vertex AI Agent Engine as an agent backend: deployed ADK agents over REST.

A turn: a bearer token (static, or ADC refreshed off the loop), the
conversation's engine session (``:query`` ``async_create_session`` when there is
none, it was lost, or the turn targets another engine), a dispatch channel
(opened through the turn request's ``dispatch``: this module never sees the
daemon's HTTP side) whose run-scoped token goes into the session state
(``state_delta``), then one
``:streamQuery?alt=sse`` POST whose ADK events are translated (``adk``) while
the deployed agent's ``dispatch`` callbacks — arriving on the daemon's HTTP
side — are executed with the run's tools and answered. The engine's session
has only what the router gives it: turns that ran elsewhere are handed over
ahead of the message.

httpx and google-auth only; the 270 MB Vertex SDK is for deploying, never here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from interlockd.backends.base import AgentBackend, TurnRequest, allow_listed_model_info
from interlockd.backends.google.adk import AdkTranslator, StreamError
from interlockd.backends.google.auth import TokenSource
from interlockd.backends.handover import split
from interlockd.errors import (
    FailedPrecondition,
    InvalidArgument,
    ProviderCredentialsRejected,
    ProviderError,
    ProviderPermissionDenied,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderSessionLost,
    ProviderTimeout,
    ProviderUnavailable,
)
from interlockd.vocabulary import (
    BackendEvent,
    DispatchCall,
    DispatchChannel,
    ModelInfo,
    SessionBound,
    ToolCall,
    ToolResult,
    ToolRunner,
    ToolSpec,
    TurnEnd,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: The session state key the deployed agent's dispatch tool reads its token from.
TOKEN_STATE_KEY = "interlock_dispatch_token"
_MAX_DETAIL = 300
_REFUSED = frozenset({429, 503})
_backoff = wait_exponential_jitter(initial=0.25, max=4.0)
_GRPC_TO_HTTP = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class _HttpFailure(Exception):
    """A non-2xx answer before the stream: status and the engine's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class _Engine:
    name: str  # projects/P/locations/L/reasoningEngines/ID
    base_url: str  # scheme://host, without /v1


@dataclass(frozen=True, slots=True)
class _Binding:
    engine: str
    session_id: str
    tools: str = ""  # fingerprint of the tool list the session was last told about

    def encode(self) -> str:
        return orjson.dumps(
            {"engine": self.engine, "session": self.session_id, "tools": self.tools}
        ).decode()

    @classmethod
    def decode(cls, value: str | None) -> _Binding | None:
        if not value:
            return None
        try:
            data = orjson.loads(value)
            return cls(str(data["engine"]), str(data["session"]), str(data.get("tools", "")))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return None


class GoogleAgentEngineBackend(AgentBackend):
    """``provider: "google"`` (or the configured name): a deployed ADK agent."""

    keeps_sessions = True

    def __init__(
        self,
        provider: str,
        *,
        project: str = "",
        location: str = "us-central1",
        reasoning_engine_id: str = "",
        base_url: str = "",
        access_token: str = "",
        credentials: Any = None,
        models: Mapping[str, ModelInfo] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        max_attempts: int = 3,
        dispatch_token_seconds: float = 900.0,
        tool_timeout: float = 30.0,
    ) -> None:
        self.provider = provider
        self._project = project
        self._location = location
        self._default_engine = reasoning_engine_id
        self._base_url = base_url.rstrip("/")
        self._tokens = TokenSource(provider, static_token=access_token, credentials=credentials)
        self._models = dict(models) if models else None
        self._attempts = max_attempts
        self._token_seconds = dispatch_token_seconds
        self._tool_timeout = tool_timeout
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )

    # ---- the AgentBackend contract ---------------------------------------------

    def model_info(self, model: str) -> ModelInfo:
        return allow_listed_model_info(self.provider, model, self._models, family="gemini-")

    def check_options(self, options: Mapping[str, str]) -> None:
        self._engine(options)

    async def stream_turn(
        self, request: TurnRequest, tools: ToolRunner
    ) -> AsyncIterator[BackendEvent]:
        engine = self._engine(request.options)
        handover = split(request.messages, request.system)
        binding = _Binding.decode(request.provider_session)
        if binding is not None and binding.engine != engine.name:
            raise ProviderSessionLost(self.provider, "the turn targets another deployed agent")
        reused = binding is not None
        user = request.user_ref
        if binding is None:
            binding = _Binding(engine.name, await self._create_session(engine, user))
        message = handover.message
        if handover.transcript:
            message = f"{handover.transcript}\n\n{message}"
        # The deployed agent's one tool is dispatch; it learns which tools it can
        # dispatch to from the router, whenever that list is new to the session.
        tools_seen = _tools_fingerprint(request.tools)
        if request.tools and tools_seen != binding.tools:
            message = f"{_tools_block(request.tools)}\n\n{message}"
        binding = dataclasses.replace(binding, tools=tools_seen)
        if not reused and request.system:
            message = f"<instructions>\n{request.system}\n</instructions>\n\n{message}"
        channel = await self._open_dispatch(request, user)
        channel.bind_session(binding.session_id)
        try:
            async for event in self._stream(
                engine, binding, reused, user, message, channel, request, tools
            ):
                yield event
        finally:
            channel.close()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _open_dispatch(self, request: TurnRequest, user: str) -> DispatchChannel:
        # The deployed agent's tools all go through its dispatch callback: a turn
        # without a channel to answer it could run no tool at all.
        if request.dispatch is None:
            raise FailedPrecondition(
                f"{self.provider} needs the daemon's HTTP tool dispatch, which this turn lacks"
            )
        return await request.dispatch.open(user, self._token_seconds)

    # ---- the engine ---------------------------------------------------------------

    def _engine(self, options: Mapping[str, str]) -> _Engine:
        given = options.get("reasoning_engine_id") or self._default_engine
        if not given:
            raise InvalidArgument(
                "google.reasoning_engine_id",
                f"is required for {self.provider} (or configure "
                f"providers.{self.provider}.reasoning_engine_id)",
            )
        if given.startswith("projects/"):
            name = given
            location = given.split("/")[3]
        else:
            location = options.get("location") or self._location
            if not self._project:
                raise InvalidArgument(
                    "google.reasoning_engine_id",
                    f"a bare ID needs providers.{self.provider}.project; "
                    "or pass the full resource name",
                )
            name = f"projects/{self._project}/locations/{location}/reasoningEngines/{given}"
        if self._base_url:
            base = self._base_url
        elif location == "global":
            base = "https://aiplatform.googleapis.com"
        else:
            base = f"https://{location}-aiplatform.googleapis.com"
        return _Engine(name, base)

    async def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self._tokens.token()}"}

    async def _create_session(self, engine: _Engine, user: str) -> str:
        url = f"{engine.base_url}/v1/{engine.name}:query"
        body = {"class_method": "async_create_session", "input": {"user_id": user}}

        async def create() -> str:
            response = await self._http.post(url, json=body, headers=await self._headers())
            if response.status_code != 200:
                raise _HttpFailure(response.status_code, _envelope_message(response.content))
            try:
                return str(response.json()["output"]["id"])
            except (ValueError, KeyError, TypeError):
                raise ProviderProtocolError(
                    self.provider, "async_create_session answered without a session id"
                ) from None

        return await self._retrying("creating the session", create, idempotent=True)

    async def _retrying(self, doing: str, fn: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        def transient(exc: BaseException) -> bool:
            if isinstance(exc, _HttpFailure):
                return exc.status in _REFUSED or (idempotent and exc.status >= 500)
            if isinstance(exc, httpx.ConnectError):
                return True  # never sent
            return idempotent and isinstance(exc, httpx.TransportError)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=_backoff,
            retry=retry_if_exception(transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await fn()
        except _HttpFailure as exc:
            raise self._failure(exc.status, exc.message, doing) from exc
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(self.provider, f"{doing} timed out") from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(self.provider, f"{doing} failed: {_short(exc)}") from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _failure(self, status: int, message: str, doing: str) -> ProviderError:
        why = f"{doing} failed ({status}): {message}"
        if status == 401:
            return ProviderCredentialsRejected(
                self.provider,
                f"the Google credentials were rejected (401: {message}); fix the access "
                f"token or the Application Default Credentials of providers.{self.provider}",
            )
        if status == 403:
            return ProviderPermissionDenied(self.provider, why)
        if status == 429:
            return ProviderRateLimited(self.provider, why)
        if status >= 500:
            return ProviderUnavailable(self.provider, why)
        if status in (400, 404, 409, 413):
            return ProviderRejected(self.provider, why)
        return ProviderError(self.provider, why)

    # ---- the turn -------------------------------------------------------------------

    async def _stream(
        self,
        engine: _Engine,
        binding: _Binding,
        reused: bool,
        user: str,
        message: str,
        channel: DispatchChannel,
        request: TurnRequest,
        tools: ToolRunner,
    ) -> AsyncIterator[BackendEvent]:
        url = f"{engine.base_url}/v1/{engine.name}:streamQuery?alt=sse"
        body = {
            "class_method": "async_stream_query",
            "input": {
                "message": message,
                "user_id": user,
                "session_id": binding.session_id,
                "state_delta": {TOKEN_STATE_KEY: channel.token},
            },
        }

        async def open_stream() -> httpx.Response:
            req = self._http.build_request("POST", url, json=body, headers=await self._headers())
            response = await self._http.send(req, stream=True)
            if response.status_code != 200:
                content = await response.aread()
                await response.aclose()
                raise _HttpFailure(response.status_code, _envelope_message(content))
            return response

        try:
            response = await self._retrying("starting the turn", open_stream, idempotent=False)
        except ProviderRejected as exc:
            failure = exc.__cause__
            if reused and isinstance(failure, _HttpFailure) and failure.status == 404:
                raise ProviderSessionLost(
                    self.provider, f"session {binding.session_id} is gone"
                ) from exc
            raise
        try:
            yield SessionBound(binding.encode())
            translator = AdkTranslator()
            async for item in _merge(_events(response, self.provider), channel):
                if isinstance(item, DispatchCall):
                    async for event in self._dispatched(item, tools):
                        yield event
                    continue
                translated = translator.translate(item)
                if isinstance(translated, StreamError):
                    raise self._in_stream_error(translated)
                for event in translated:
                    yield event
            yield TurnEnd(translator.stop_reason)
        finally:
            await response.aclose()

    async def _dispatched(
        self, call: DispatchCall, tools: ToolRunner
    ) -> AsyncIterator[BackendEvent]:
        """Run a tool the deployed agent sent back, and answer it."""
        tool_call = ToolCall(call.call_id, call.tool_name, orjson.dumps(call.arguments).decode())
        try:
            yield tool_call
            result = await tools.run(tool_call)
            yield result
        except BaseException:
            if not call.answer.done():
                call.answer.set_result({"error": "the run ended before the tool finished"})
            raise
        if not call.answer.done():
            call.answer.set_result(_answer(result))

    def _in_stream_error(self, error: StreamError) -> ProviderError:
        status = error.code if isinstance(error.code, int) else _GRPC_TO_HTTP.get(str(error.code))
        if status is None:
            return ProviderUnavailable(self.provider, f"the agent failed: {error.message}")
        return self._failure(status, error.message, "the agent")


def _tools_fingerprint(tools: Sequence[ToolSpec]) -> str:
    listed = [[t.name, t.description, t.parameters] for t in tools]
    return hashlib.sha256(orjson.dumps(listed, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _tools_block(tools: Sequence[ToolSpec]) -> str:
    lines = [
        "<router_tools>",
        "Call these through your dispatch tool: dispatch(tool_name=<name>, arguments=<object>).",
    ]
    for t in tools:
        schema = orjson.dumps(t.parameters, option=orjson.OPT_SORT_KEYS).decode()
        lines.append(f"- {t.name}: {t.description} Arguments: {schema}")
    lines.append("</router_tools>")
    return "\n".join(lines)


def _answer(result: ToolResult) -> dict[str, Any]:
    if result.error:
        return {"error": result.error}
    try:
        return {"result": orjson.loads(result.result)}
    except orjson.JSONDecodeError:
        return {"result": result.result}


async def _events(response: httpx.Response, provider: str) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of an Agent Engine SSE body (bare JSON lines accepted too)."""
    try:
        async for raw in response.aiter_lines():
            line = raw.strip()
            while line.startswith("data:"):  # a second prefix has been seen in the wild
                line = line[5:].strip()
            if not line or line.startswith((":", "event:", "id:", "retry:")):
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ProviderProtocolError(
                    provider, f"the event stream carried a line that is not JSON: {line[:80]!r}"
                ) from None
            if isinstance(event, dict):
                yield event
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(provider, "the event stream stalled past the read timeout") from exc
    except httpx.TransportError as exc:
        raise ProviderUnavailable(provider, f"the event stream broke: {_short(exc)}") from exc


async def _merge(
    events: AsyncIterator[dict[str, Any]], channel: DispatchChannel
) -> AsyncIterator[dict[str, Any] | DispatchCall]:
    """Engine events and dispatch callbacks, as they come; ends with the event stream."""
    next_event: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(anext(events))
    next_call: asyncio.Future[DispatchCall] = asyncio.ensure_future(channel.next_call())
    try:
        while True:
            waiting: set[asyncio.Future[Any]] = {next_event, next_call}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if next_call in done:
                yield next_call.result()
                next_call = asyncio.ensure_future(channel.next_call())
            if next_event in done:
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    return
                yield event
                next_event = asyncio.ensure_future(anext(events))
    finally:
        for pending in (next_event, next_call):
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        if hasattr(events, "aclose"):
            await events.aclose()


def _envelope_message(content: bytes) -> str:
    """The message of a Google error envelope, or the body's start."""
    try:
        data = orjson.loads(content)
        message = data["error"]["message"]
        if isinstance(message, str) and message:
            return message[:_MAX_DETAIL]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    text = content.decode("utf-8", "replace").strip()
    return text[:_MAX_DETAIL] or "no details"


def _short(exc: BaseException) -> str:
    text = " ".join((str(exc) or type(exc).__name__).split())
    return text[:_MAX_DETAIL]
