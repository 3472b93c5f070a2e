"""A scriptable loopback fake of Claude Managed Agents (``client.beta.*``).

It serves the routes the official ``anthropic`` SDK calls — agents, environments,
sessions and session events, with the event stream as server-sent events — so a
test drives it with the unmodified SDK pointed at :attr:`FakeManagedAgents.base_url`::

    async with FakeManagedAgents(api_key="sk-test") as fake:
        fake.enqueue(
            Turn().custom_tool_use("search", {"q": "weather"}, id="sevt_call1"),
            Turn().message("It is ", "sunny.").usage(input_tokens=40, output_tokens=3),
        )
        client = AsyncAnthropic(api_key="sk-test", base_url=fake.base_url)
        ...
        session = fake.last_session
        assert [e["type"] for e in session.received] == ["user.message", "user.custom_tool_result"]

Request bodies are checked strictly against the request types of the SDK itself
(``anthropic.types.beta``): an unknown or missing field, a wrong type or an
unknown ``type`` tag is a 400 ``invalid_request_error`` naming the field, so a
backend cannot drift from the API by way of ``extra_body`` or a misspelt key.
On top of the types, the fake enforces the rules the SDK only documents or the
service is reported to apply: no ``$schema``/``$id``/``$defs``/``$ref``/
``additionalProperties`` in custom tool schemas, at most 50 ``initial_events``,
tool results only for the ids the session is waiting on, and so on.

Each ``user.message`` wakes the session and plays the next scripted :class:`Turn`
(the session's own queue first, then the global one, then :attr:`FakeManagedAgents.default`).
A turn is a list of steps built fluently; anything not scripted is filled in the
way the service does: ``session.status_running`` first, ``span.model_request_start``
/ ``span.model_request_end`` around the model's output, and a closing
``session.status_idle`` — ``requires_action`` with the ids of unanswered custom
tool uses, else ``end_turn``. Events go to every stream open on the session at
that moment (live only, never replayed) and into the history ``events.list``
pages through. A stream that asked for ``event_deltas[]=agent.message`` also gets
the ``event_start`` / ``event_delta`` preview of each message.

HTTP failures are scripted per endpoint with :meth:`FakeManagedAgents.fail`.
The fake records every request (:attr:`FakeManagedAgents.requests`), what each
session received and emitted (:class:`FakeSession`), and every stream the client
closed (:attr:`FakeManagedAgents.disconnects`); tests wait on those with the
``wait_for_*`` helpers, which give up after a bounded time instead of hanging.
"""

from __future__ import annotations

import asyncio
import collections.abc
import functools
import itertools
import re
import types
import typing
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Self

import orjson
import typing_extensions
from aiohttp import web
from anthropic.types.beta import (
    agent_create_params,
    agent_update_params,
    environment_create_params,
    session_create_params,
)
from anthropic.types.beta.sessions import event_send_params
from anthropic.types.beta.sessions.beta_managed_agents_session_event_type import (
    BetaManagedAgentsSessionEventType,
)

__all__ = [
    "BETA",
    "DEFAULT_USAGE",
    "Endpoint",
    "FakeManagedAgents",
    "FakeSession",
    "RecordedRequest",
    "Turn",
]

BETA = "managed-agents-2026-04-01"
# A wait_for_* that takes longer than this has failed: report it instead of hanging.
_WAIT_LIMIT = 10.0
# span.model_request_end carries this when the turn scripted no usage for the request.
DEFAULT_USAGE: Mapping[str, int] = {
    "input_tokens": 10,
    "output_tokens": 5,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}

Endpoint = Literal[
    "agents.create",
    "agents.retrieve",
    "agents.update",
    "environments.create",
    "environments.retrieve",
    "sessions.create",
    "sessions.retrieve",
    "sessions.delete",
    "events.stream",
    "events.send",
    "events.list",
]
_ENDPOINTS: frozenset[str] = frozenset(typing.get_args(Endpoint))

_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}_fake{next(_ids):08d}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---- the steps a turn is made of ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Thinking:
    pass


@dataclass(frozen=True, slots=True)
class _Message:
    pieces: tuple[str, ...]
    final: bool  # False: the preview is sent but the model request never finishes it


@dataclass(frozen=True, slots=True)
class _CustomToolUse:
    name: str
    input: dict[str, Any]
    id: str | None


@dataclass(frozen=True, slots=True)
class _ServerToolUse:
    name: str
    input: dict[str, Any]
    mcp_server: str | None  # None: a built-in agent tool
    result: tuple[dict[str, Any], ...]
    is_error: bool
    permission: Literal["allow", "ask", "deny"]
    id: str | None


@dataclass(frozen=True, slots=True)
class _Usage:
    usage: dict[str, int]


@dataclass(frozen=True, slots=True)
class _Event:
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _SessionError:
    error: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Idle:
    reason: str


@dataclass(frozen=True, slots=True)
class _Terminate:
    pass


@dataclass(frozen=True, slots=True)
class _Frame:
    data: bytes
    close: bool  # end every open stream after writing it


@dataclass(frozen=True, slots=True)
class _Disconnect:
    pass


@dataclass(frozen=True, slots=True)
class _Stall:
    pass


@dataclass(frozen=True, slots=True)
class _Delay:
    seconds: float


_Step = (
    _Thinking
    | _Message
    | _CustomToolUse
    | _ServerToolUse
    | _Usage
    | _Event
    | _SessionError
    | _Idle
    | _Terminate
    | _Frame
    | _Disconnect
    | _Stall
    | _Delay
)
_RetryStatus = Literal["retrying", "exhausted", "terminal"]
_IdleReason = Literal["end_turn", "retries_exhausted", "budget_reached", "refusal"]


class Turn:
    """The agent's work after one wake-up. Builder methods append steps and return ``self``.

    A turn ends at its end (``requires_action`` if it used custom tools, else
    ``end_turn``), or earlier at :meth:`idle`, :meth:`terminate`, or an
    :meth:`error` whose retry status is ``exhausted`` or ``terminal``; no step may
    follow one of those.
    """

    def __init__(self) -> None:
        self.steps: list[_Step] = []
        self._ended_by: str | None = None

    def _add(self, step: _Step) -> Self:
        if self._ended_by is not None:
            raise ValueError(f"the turn already ended with {self._ended_by}; start a new Turn")
        self.steps.append(step)
        return self

    def _end(self, step: _Step, what: str) -> Self:
        self._add(step)
        self._ended_by = what
        return self

    # -- what the model produces (inside a span.model_request_start/_end) --

    def thinking(self) -> Self:
        """An ``agent.thinking`` progress event (a start-only preview when asked for)."""
        return self._add(_Thinking())

    def message(self, *pieces: str) -> Self:
        """An ``agent.message`` whose text is the pieces joined; each piece is one delta."""
        return self._add(_Message(pieces or ("",), final=True))

    def partial_message(self, *pieces: str) -> Self:
        """Only the preview of a message (start and deltas), as when a request ends early."""
        return self._add(_Message(pieces or ("",), final=False))

    def custom_tool_use(
        self, name: str, input: dict[str, Any] | None = None, *, id: str | None = None
    ) -> Self:
        """An ``agent.custom_tool_use`` the client must answer; the turn then needs action."""
        return self._add(_CustomToolUse(name, input or {}, id))

    def tool_use(
        self,
        name: str,
        input: dict[str, Any] | None = None,
        *,
        result: str = "ok",
        is_error: bool = False,
        permission: Literal["allow", "ask", "deny"] = "allow",
        id: str | None = None,
    ) -> Self:
        """A built-in tool run server-side: ``agent.tool_use``, then ``agent.tool_result``.

        With ``permission="ask"`` the turn needs action instead, and the result
        follows once the client sends ``user.tool_confirmation`` with ``allow``.
        """
        content = ({"type": "text", "text": result},)
        return self._add(_ServerToolUse(name, input or {}, None, content, is_error, permission, id))

    def mcp_tool_use(
        self,
        server: str,
        name: str,
        input: dict[str, Any] | None = None,
        *,
        result: str = "ok",
        is_error: bool = False,
        permission: Literal["allow", "ask", "deny"] = "allow",
        id: str | None = None,
    ) -> Self:
        """Like :meth:`tool_use`, as ``agent.mcp_tool_use`` / ``agent.mcp_tool_result``."""
        content = ({"type": "text", "text": result},)
        return self._add(
            _ServerToolUse(name, input or {}, server, content, is_error, permission, id)
        )

    def usage(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_creation_input_tokens: int = 0,
        cache_read_input_tokens: int = 0,
    ) -> Self:
        """End the current model request (``span.model_request_end``) with this usage."""
        return self._add(
            _Usage(
                {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cache_creation_input_tokens": cache_creation_input_tokens,
                    "cache_read_input_tokens": cache_read_input_tokens,
                }
            )
        )

    def event(self, type: str, **fields: Any) -> Self:
        """Any session event as given (``id`` and ``processed_at`` filled in unless given)."""
        return self._add(_Event({"type": type, **fields}))

    # -- how the turn fails or ends --

    def error(
        self,
        type: str = "model_overloaded_error",
        message: str = "The model is overloaded.",
        *,
        retry_status: _RetryStatus = "retrying",
    ) -> Self:
        """A ``session.error``. ``retrying`` goes on with the next steps; ``exhausted``
        then idles with ``retries_exhausted``; ``terminal`` then terminates the session."""
        step = _SessionError(
            {"type": type, "message": message, "retry_status": {"type": retry_status}}
        )
        if retry_status == "retrying":
            return self._add(step)
        return self._end(step, f"error(retry_status={retry_status!r})")

    def idle(self, reason: _IdleReason) -> Self:
        """End the turn now with ``session.status_idle`` for this stop reason."""
        return self._end(_Idle(reason), f"idle({reason!r})")

    def terminate(self) -> Self:
        """``session.status_terminated``; the session accepts nothing more, its streams end."""
        return self._end(_Terminate(), "terminate()")

    # -- what happens to the streams --

    def ping(self) -> Self:
        """An ``event: ping`` frame on every open stream."""
        return self._add(_Frame(b'event: ping\ndata: {"type": "ping"}\n\n', close=False))

    def error_frame(self, type: str = "overloaded_error", message: str = "Overloaded") -> Self:
        """An ``event: error`` frame, then the streams end (the session itself goes on)."""
        body = {"type": "error", "error": {"type": type, "message": message}}
        return self._add(_Frame(b"event: error\ndata: " + orjson.dumps(body) + b"\n\n", True))

    def raw(self, data: bytes) -> Self:
        """Bytes written to every open stream as they are (framing included)."""
        return self._add(_Frame(data, close=False))

    def disconnect(self) -> Self:
        """Drop every open stream's connection mid-body; the session goes on unheard."""
        return self._add(_Disconnect())

    def stall(self) -> Self:
        """Send nothing more and keep the streams open, until an interrupt or shutdown."""
        return self._add(_Stall())

    def delay(self, seconds: float) -> Self:
        """Pause the turn."""
        return self._add(_Delay(seconds))


def _default_turn() -> Turn:
    return Turn().message("Hello from the fake.")


# ---- what the fake records ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the fake received it."""

    endpoint: str | None  # an Endpoint, or None for a path the API does not have
    method: str
    path: str
    query: dict[str, list[str]]  # raw names, brackets included: "event_deltas[]"
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON body, or None when there was none (or it was not JSON)


class _Control:
    """A marker on a stream's queue."""


_END = _Control()  # finish the body cleanly
_DROP = _Control()  # cut the connection mid-body


@dataclass(eq=False)
class _Listener:
    deltas: frozenset[str]
    queue: asyncio.Queue[bytes | _Control] = field(default_factory=asyncio.Queue)


@dataclass(eq=False)
class FakeSession:
    """A session and everything that happened to it."""

    id: str
    environment_id: str
    agent: dict[str, Any]  # the agent snapshot the session runs
    resource: dict[str, Any]  # the session object the API returns (status, usage kept current)
    received: list[dict[str, Any]] = field(default_factory=list)  # client events, as echoed
    history: list[dict[str, Any]] = field(default_factory=list)  # every event, in order
    unheard: list[dict[str, Any]] = field(default_factory=list)  # emitted with no stream open
    pending: list[str] = field(default_factory=list)  # event ids the session waits on
    deleted: bool = False
    turns: deque[Turn] = field(default_factory=deque)
    _listeners: list[_Listener] = field(default_factory=list)
    _player: asyncio.Task[None] | None = None
    _backlog: deque[dict[str, Any]] = field(default_factory=deque)  # wakes waiting their turn
    _span: str | None = None  # the open span.model_request_start id
    _results: list[dict[str, Any]] = field(default_factory=list)  # tool results not yet sent
    _deferred: dict[str, dict[str, Any]] = field(default_factory=dict)  # ask-tool results

    @property
    def status(self) -> str:
        return str(self.resource["status"])

    @property
    def streams(self) -> int:
        """How many event streams are open on the session now."""
        return len(self._listeners)

    @property
    def busy(self) -> bool:
        """Whether a turn is being played."""
        return self._player is not None

    def events(self, *types: str) -> list[dict[str, Any]]:
        """The session's history, only the given event types when any are given."""
        return [e for e in self.history if not types or e["type"] in types]


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    type: str
    message: str
    headers: dict[str, str]


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type or _ERROR_TYPES.get(status, "api_error")
        self.message = message
        self.headers = dict(headers or {})


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _error_response(error: _ApiError) -> web.Response:
    request_id = _new_id("req")
    body = {
        "type": "error",
        "error": {"type": error.type, "message": error.message},
        "request_id": request_id,
    }
    headers = {"request-id": request_id, **error.headers}
    return web.json_response(body, status=error.status, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _frame(event: Mapping[str, Any]) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


# ---- the server ---------------------------------------------------------------------

_Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]


@dataclass
class FakeManagedAgents:
    """A Claude Managed Agents server on 127.0.0.1 (a free port), for one test.

    ``api_key``, when set, is required as ``Authorization: Bearer`` or ``x-api-key``
    (401 otherwise); when unset, some credential must still be sent.
    """

    api_key: str | None = None
    default: Turn = field(default_factory=_default_turn)
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)  # latest
    environments: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    sessions: dict[str, FakeSession] = field(default_factory=dict, init=False)
    created: Counter[str] = field(default_factory=Counter, init=False)  # agent/environment/session
    disconnects: int = field(default=0, init=False)  # streams the client closed
    base_url: str = field(default="", init=False)
    _agent_versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict, init=False)
    _queue: deque[Turn] = field(default_factory=deque, init=False)
    _failures: dict[str, deque[_Failure]] = field(default_factory=dict, init=False)
    # Set (and replaced) whenever anything a wait_for_* looks at changes.
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _players: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _crashes: list[BaseException] = field(default_factory=list, init=False)  # bugs in the fake

    # ---- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        routes: list[tuple[str, str, Endpoint, _Handler]] = [
            ("POST", "/v1/agents", "agents.create", self._agents_create),
            ("GET", "/v1/agents/{id}", "agents.retrieve", self._agents_retrieve),
            ("POST", "/v1/agents/{id}", "agents.update", self._agents_update),
            ("POST", "/v1/environments", "environments.create", self._environments_create),
            ("GET", "/v1/environments/{id}", "environments.retrieve", self._environments_get),
            ("POST", "/v1/sessions", "sessions.create", self._sessions_create),
            ("GET", "/v1/sessions/{id}", "sessions.retrieve", self._sessions_retrieve),
            ("DELETE", "/v1/sessions/{id}", "sessions.delete", self._sessions_delete),
            ("GET", "/v1/sessions/{id}/events/stream", "events.stream", self._events_stream),
            ("POST", "/v1/sessions/{id}/events", "events.send", self._events_send),
            ("GET", "/v1/sessions/{id}/events", "events.list", self._events_list),
        ]
        for method, path, endpoint, handler in routes:
            app.router.add_route(method, path, self._serve(endpoint, handler))
        app.router.add_route("*", "/{tail:.*}", self._serve(None, self._unknown_route))
        # handler_cancellation: a client that goes away cancels its stream handler,
        # which is how the fake observes disconnects.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for session in self.sessions.values():
            await self._stop_player(session)
            self._close_streams(session, _END)
        for player in list(self._players):
            player.cancel()
        await asyncio.gather(*self._players, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._crashes and exc_info[0] is None:
            raise AssertionError("a scripted turn crashed in the fake") from self._crashes[0]

    # ---- scripting -------------------------------------------------------------------

    def enqueue(self, *turns: Turn, session_id: str | None = None) -> None:
        """Play ``turns`` on the next wake-ups, of that session only when one is named."""
        if session_id is None:
            self._queue.extend(turns)
        else:
            self._session(session_id).turns.extend(turns)

    def fail(
        self,
        endpoint: Endpoint,
        status: int,
        message: str | None = None,
        *,
        type: str | None = None,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``endpoint`` with an Anthropic error body.

        The error type follows the status (429 ``rate_limit_error``, 529
        ``overloaded_error``, ...) unless given. A 429 carries ``retry-after``
        (1 second unless given: pass a small float to keep SDK retries fast).
        """
        if endpoint not in _ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {sorted(_ENDPOINTS)}")
        headers = {}
        if retry_after is None and status == 429:
            retry_after = 1
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        kind = type or _ERROR_TYPES.get(status, "api_error")
        failure = _Failure(status, kind, message or f"scripted {kind} ({status})", headers)
        self._failures.setdefault(endpoint, deque()).extend([failure] * times)

    # ---- observing -------------------------------------------------------------------

    @property
    def last_session(self) -> FakeSession:
        """The session created last."""
        if not self.sessions:
            raise AssertionError("the fake has no sessions")
        return next(reversed(self.sessions.values()))

    def requests_to(self, endpoint: Endpoint) -> list[RecordedRequest]:
        """The requests received for one endpoint, in order."""
        return [r for r in self.requests if r.endpoint == endpoint]

    async def wait_for_requests(self, count: int, endpoint: Endpoint | None = None) -> None:
        """Return once ``count`` requests (to ``endpoint``, when given) have been received."""
        what = f"{count} request(s)" + (f" to {endpoint}" if endpoint else "")
        await self._wait(
            lambda: len(self.requests_to(endpoint) if endpoint else self.requests) >= count, what
        )

    async def wait_for_events(
        self, session_id: str, count: int, type: str | None = None
    ) -> list[dict[str, Any]]:
        """Return the session's received client events once there are ``count`` (of ``type``)."""

        def matching() -> list[dict[str, Any]]:
            session = self.sessions.get(session_id)
            received = session.received if session else []
            return [e for e in received if type is None or e["type"] == type]

        await self._wait(
            lambda: len(matching()) >= count, f"{count} {type or 'client'} event(s) on {session_id}"
        )
        return matching()

    async def wait_for_stream(self, session_id: str, count: int = 1) -> None:
        """Return once ``count`` event streams are open on the session."""
        await self._wait(
            lambda: session_id in self.sessions and self.sessions[session_id].streams >= count,
            f"{count} open stream(s) on {session_id}",
        )

    async def wait_for_idle(self, session_id: str) -> FakeSession:
        """Return the session once no turn is playing and it is idle or terminated."""
        await self._wait(
            lambda: (
                session_id in self.sessions
                and not self.sessions[session_id].busy
                and self.sessions[session_id].status in ("idle", "terminated")
            ),
            f"{session_id} to go idle",
        )
        return self.sessions[session_id]

    async def wait_for_disconnects(self, count: int = 1) -> None:
        """Return once the client has closed ``count`` event streams."""
        await self._wait(lambda: self.disconnects >= count, f"{count} disconnect(s)")

    async def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(_WAIT_LIMIT):
                while not predicate():
                    if self._crashes:
                        raise AssertionError("a scripted turn crashed") from self._crashes[0]
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"the fake saw no {what} within {_WAIT_LIMIT}s (requests: {len(self.requests)}, "
                f"sessions: {len(self.sessions)}, disconnects: {self.disconnects})"
            ) from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- the HTTP layer ------------------------------------------------------------

    def _serve(
        self, endpoint: Endpoint | None, handler: _Handler
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body = None
            query: dict[str, list[str]] = {}
            for key, value in request.query.items():
                query.setdefault(key, []).append(value)
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.requests.append(
                RecordedRequest(endpoint, request.method, request.path, query, headers, body)
            )
            self._notify()
            try:
                failures = self._failures.get(endpoint or "")
                if failures:
                    failure = failures.popleft()
                    raise _ApiError(failure.status, failure.message, failure.type, failure.headers)
                self._check_headers(headers)
                allowed = _QUERY.get(endpoint or "", frozenset())
                if unknown := sorted(set(query) - allowed):
                    raise _ApiError(
                        400, f"{unknown[0]}: unknown query parameter; expected {sorted(allowed)}"
                    )
                return await handler(request, body)
            except _ApiError as error:
                return _error_response(error)

        return serve

    def _check_headers(self, headers: Mapping[str, str]) -> None:
        bearer = headers.get("authorization", "")
        credentials = {headers.get("x-api-key"), bearer.removeprefix("Bearer ")} - {None, ""}
        if not credentials:
            raise _ApiError(401, "x-api-key header is required")
        if self.api_key is not None and self.api_key not in credentials:
            raise _ApiError(401, "invalid x-api-key")
        if "anthropic-version" not in headers:
            raise _ApiError(400, "anthropic-version: header is required")
        betas = [b.strip() for b in headers.get("anthropic-beta", "").split(",")]
        if BETA not in betas:
            raise _ApiError(400, f"anthropic-beta: this endpoint needs the {BETA!r} beta header")

    async def _unknown_route(self, request: web.Request, body: Any) -> web.StreamResponse:
        raise _ApiError(404, f"{request.method} {request.path}: no such route")

    def _session(self, session_id: str) -> FakeSession:
        session = self.sessions.get(session_id)
        if session is None or session.deleted:
            raise _ApiError(404, f"session {session_id!r} not found")
        return session

    # ---- agents and environments ------------------------------------------------------

    async def _agents_create(self, request: web.Request, body: Any) -> web.StreamResponse:
        _check_params(body, agent_create_params.AgentCreateParams)
        _check_agent_rules(body)
        now = _now()
        agent = _agent_resource(_new_id("agent"), body, version=1, created_at=now, updated_at=now)
        self._agent_versions[agent["id"]] = [agent]
        self.agents[agent["id"]] = agent
        self.created["agent"] += 1
        self._notify()
        return web.json_response(agent, dumps=_dumps)

    async def _agents_retrieve(self, request: web.Request, body: Any) -> web.StreamResponse:
        agent_id = request.match_info["id"]
        version = request.query.get("version")
        return web.json_response(
            self._agent(agent_id, int(version) if version else None), dumps=_dumps
        )

    async def _agents_update(self, request: web.Request, body: Any) -> web.StreamResponse:
        _check_params(body, agent_update_params.AgentUpdateParams)
        current = self._agent(request.match_info["id"])
        if "version" in body and body["version"] != current["version"]:
            # The SDK says the update "fails"; which status the service uses is not
            # documented. 400, not 409: the SDK would retry a 409 as a lock timeout.
            raise _ApiError(
                400,
                f"version: {body['version']} is not the agent's current version "
                f"({current['version']}); retrieve the agent and retry",
            )
        merged = {k: v for k, v in current.items() if k in _AGENT_FIELDS}
        for key, value in body.items():
            if key == "metadata":
                patched = {**current["metadata"], **(value or {})}
                merged["metadata"] = {k: v for k, v in patched.items() if v is not None}
            elif key != "version":
                merged[key] = value
        if not merged.get("name"):
            raise _ApiError(400, "name: must not be empty")
        _check_agent_rules(merged)
        candidate = _agent_resource(
            current["id"],
            merged,
            version=current["version"],
            created_at=current["created_at"],
            updated_at=current["updated_at"],
        )
        if candidate != current:  # only a change makes a new version
            candidate = {**candidate, "version": current["version"] + 1, "updated_at": _now()}
            self._agent_versions[current["id"]].append(candidate)
            self.agents[current["id"]] = candidate
            self._notify()
        return web.json_response(candidate, dumps=_dumps)

    def _agent(self, agent_id: str, version: int | None = None) -> dict[str, Any]:
        versions = self._agent_versions.get(agent_id)
        if not versions:
            raise _ApiError(404, f"agent {agent_id!r} not found")
        if version is None:
            return versions[-1]
        if not 1 <= version <= len(versions):
            raise _ApiError(404, f"agent {agent_id!r} has no version {version}")
        return versions[version - 1]

    async def _environments_create(self, request: web.Request, body: Any) -> web.StreamResponse:
        _check_params(body, environment_create_params.EnvironmentCreateParams)
        _check_metadata(body.get("metadata"), "metadata")
        if body.get("scope") == "account":
            raise _ApiError(400, "scope: API organizations support only 'organization'")
        now = _now()
        environment = {
            "id": _new_id("env"),
            "type": "environment",
            "name": body["name"],
            "description": body.get("description"),
            "metadata": body.get("metadata") or {},
            "config": _environment_config(body.get("config")),
            "scope": "organization",
            "created_at": now,
            "updated_at": now,
            "archived_at": None,
        }
        self.environments[environment["id"]] = environment
        self.created["environment"] += 1
        self._notify()
        return web.json_response(environment, dumps=_dumps)

    async def _environments_get(self, request: web.Request, body: Any) -> web.StreamResponse:
        environment = self.environments.get(request.match_info["id"])
        if environment is None:
            raise _ApiError(404, f"environment {request.match_info['id']!r} not found")
        return web.json_response(environment, dumps=_dumps)

    # ---- sessions ---------------------------------------------------------------------

    async def _sessions_create(self, request: web.Request, body: Any) -> web.StreamResponse:
        _check_params(body, session_create_params.SessionCreateParams)
        agent = self._session_agent(body["agent"])
        if body["environment_id"] not in self.environments:
            raise _ApiError(
                404, f"environment_id: environment {body['environment_id']!r} not found"
            )
        _check_metadata(body.get("metadata"), "metadata")
        initial = body.get("initial_events") or []
        if len(initial) > 50:
            raise _ApiError(400, f"initial_events: at most 50 events, got {len(initial)}")
        for i, event in enumerate(initial):
            _check_event_content(event, f"initial_events.{i}")
        now = _now()
        resource = {
            "id": _new_id("sesn"),
            "type": "session",
            "status": "idle",
            "agent": agent,
            "environment_id": body["environment_id"],
            "title": body.get("title"),
            "metadata": body.get("metadata") or {},
            "vault_ids": list(body.get("vault_ids") or []),
            "resources": [],
            "outcome_evaluations": [],
            "budget": None,
            "stats": {"active_seconds": 0.0, "duration_seconds": 0.0},
            "usage": {
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
            },
            "created_at": now,
            "updated_at": now,
            "archived_at": None,
            "deployment_id": None,
        }
        session = FakeSession(resource["id"], body["environment_id"], agent, resource)
        self.sessions[session.id] = session
        self.created["session"] += 1
        self._notify()
        # Processed like events sent right after creation: no stream can be open yet.
        self._accept(session, initial)
        return web.json_response(resource, dumps=_dumps)

    def _session_agent(self, reference: str | dict[str, Any]) -> dict[str, Any]:
        """The agent snapshot a session runs, from the ``agent`` field of sessions.create."""
        if isinstance(reference, str):
            agent = self._agent(reference)
        else:
            agent = self._agent(reference["id"], reference.get("version"))
        snapshot = {k: v for k, v in agent.items() if k in _SESSION_AGENT_FIELDS}
        if isinstance(reference, dict) and reference["type"] == "agent_with_overrides":
            overrides = {k: v for k, v in reference.items() if k not in ("type", "id", "version")}
            merged = {**{k: v for k, v in agent.items() if k in _AGENT_FIELDS}, **overrides}
            _check_agent_rules(merged, "agent.")
            snapshot.update(
                {
                    k: v
                    for k, v in _agent_resource(agent["id"], merged, 0, "", "").items()
                    if k in overrides
                }
            )
        return snapshot

    async def _sessions_retrieve(self, request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response(self._session(request.match_info["id"]).resource, dumps=_dumps)

    async def _sessions_delete(self, request: web.Request, body: Any) -> web.StreamResponse:
        session = self._session(request.match_info["id"])
        await self._stop_player(session)
        self._emit(session, "session.deleted")
        self._close_streams(session, _END)
        session.deleted = True
        self._notify()
        return web.json_response({"id": session.id, "type": "session_deleted"}, dumps=_dumps)

    # ---- session events -----------------------------------------------------------

    async def _events_stream(self, request: web.Request, body: Any) -> web.StreamResponse:
        session = self._session(request.match_info["id"])
        deltas = frozenset(request.query.getall("event_deltas[]", []))
        if unknown := sorted(deltas - {"agent.message", "agent.thinking"}):
            raise _ApiError(
                400, f"event_deltas: {unknown[0]!r} is not one of 'agent.message', 'agent.thinking'"
            )
        listener = _Listener(deltas)
        # Registered before the headers go out: a client sends its message as soon
        # as it has them, and the events of that turn must reach this stream.
        session._listeners.append(listener)
        self._notify()
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                "request-id": _new_id("req"),
            }
        )
        try:
            await response.prepare(request)  # StreamResponse sends the headers now
            while True:
                item = await listener.queue.get()
                if item is _END:
                    await response.write_eof()
                    return response
                if item is _DROP:
                    assert request.transport is not None
                    # close(), not abort(): what was written still reaches the
                    # client (an RST could discard it), then the body is cut short.
                    request.transport.close()
                    return response
                assert isinstance(item, bytes)
                await response.write(item)
        except ConnectionResetError:  # the client went away as the stream was ending
            self.disconnects += 1
            return response
        except asyncio.CancelledError:  # the client went away (handler_cancellation)
            self.disconnects += 1
            raise
        finally:
            if listener in session._listeners:
                session._listeners.remove(listener)
            self._notify()

    async def _events_send(self, request: web.Request, body: Any) -> web.StreamResponse:
        _check_params(body, event_send_params.EventSendParams)
        session = self._session(request.match_info["id"])
        if session.status == "terminated":
            raise _ApiError(400, f"session {session.id!r} is terminated and accepts no events")
        events = body["events"]
        if not events:
            raise _ApiError(400, "events: List should have at least 1 item")
        self._check_batch(session, events)
        echoed = self._accept(session, events)
        return web.json_response({"data": echoed}, dumps=_dumps)

    def _check_batch(self, session: FakeSession, events: list[dict[str, Any]]) -> None:
        """What the service refuses in an events.send batch beyond the request types."""
        pending = set(session.pending)
        answered: set[str] = set()
        for i, event in enumerate(events):
            path = f"events.{i}"
            _check_event_content(event, path)
            kind = event["type"]
            if kind == "user.interrupt":
                pending.clear()  # an interrupt ends the wait; later answers have nothing to answer
            if kind in ("user.custom_tool_result", "user.tool_confirmation"):
                key = "custom_tool_use_id" if kind == "user.custom_tool_result" else "tool_use_id"
                target = event[key]
                wanted = (
                    "agent.custom_tool_use"
                    if kind == "user.custom_tool_result"
                    else "agent.tool_use or agent.mcp_tool_use"
                )
                if target not in pending or (kind == "user.tool_confirmation") != (
                    target in session._deferred
                ):
                    raise _ApiError(
                        400,
                        f"{path}.{key}: {target!r} is not a pending {wanted} event of this "
                        f"session; the session is waiting on {sorted(pending) or 'nothing'}",
                    )
                if target in answered:
                    raise _ApiError(400, f"{path}.{key}: {target!r} is answered twice")
                answered.add(target)
            denial = event.get("deny_message") is not None and event.get("result") != "deny"
            if kind == "user.tool_confirmation" and denial:
                raise _ApiError(400, f"{path}.deny_message: only allowed when result is 'deny'")
            if kind == "user.tool_result":
                environment = self.environments[session.environment_id]
                if environment["config"]["type"] != "self_hosted":
                    raise _ApiError(
                        400, f"{path}: user.tool_result is only valid on self_hosted environments"
                    )
            if kind == "system.message":
                previous = events[i - 1]["type"] if i else None
                if i != len(events) - 1 or previous not in _SYSTEM_MESSAGE_FOLLOWS:
                    raise _ApiError(
                        400,
                        f"{path}: system.message must be the final event and follow a "
                        "user.message, user.tool_result or user.custom_tool_result",
                    )

    def _accept(self, session: FakeSession, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Record, echo and act on client events already checked; return them as echoed."""
        echoed = []
        answered = False
        for sent in events:
            event = self._emit(session, **sent)
            session.received.append(event)
            echoed.append(event)
            kind = event["type"]
            if kind == "user.interrupt":
                # Answers or messages earlier in this batch would have woken the session.
                self._interrupt(session, woken=answered or bool(session._backlog))
                answered = False
            elif kind in ("user.message", "user.define_outcome"):
                session._backlog.append(event)
            elif kind == "user.custom_tool_result":
                session.pending.remove(event["custom_tool_use_id"])
                answered = True
            elif kind == "user.tool_confirmation":
                session.pending.remove(event["tool_use_id"])
                result = session._deferred.pop(event["tool_use_id"])
                if event["result"] == "allow":
                    session._results.append(result)
                answered = True
        self._notify()
        if session.busy:
            return echoed  # the playing turn picks up answers and wakes when it ends
        if answered and session.pending:
            self._idle(session, {"type": "requires_action", "event_ids": list(session.pending)})
        elif answered or session._backlog:
            if not answered:
                session._backlog.popleft()
            self._start_turn(session)
        return echoed

    async def _events_list(self, request: web.Request, body: Any) -> web.StreamResponse:
        session = self._session(request.match_info["id"])
        query = request.query
        wanted = set(query.getall("types[]", []))
        if unknown := sorted(wanted - _EVENT_TYPES):
            raise _ApiError(400, f"types: {unknown[0]!r} is not a session event type")
        order = query.get("order", "asc")
        if order not in ("asc", "desc"):
            raise _ApiError(400, f"order: must be 'asc' or 'desc', not {order!r}")
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            raise _ApiError(400, "limit: Input should be a valid integer") from None
        if not 1 <= limit <= 100:
            raise _ApiError(400, f"limit: must be between 1 and 100, not {limit}")
        events = [e for e in session.history if not wanted or e["type"] in wanted]
        for op in ("gt", "gte", "lt", "lte"):
            bound = query.get(f"created_at[{op}]")
            if bound is not None:
                events = [e for e in events if _compare(e["processed_at"], op, bound)]
        if order == "desc":
            events.reverse()
        page = query.get("page", "page_0")
        if not re.fullmatch(r"page_\d+", page):
            raise _ApiError(400, f"page: {page!r} is not a cursor this endpoint returned")
        start = int(page.removeprefix("page_"))
        end = start + limit
        next_page = f"page_{end}" if end < len(events) else None
        return web.json_response({"data": events[start:end], "next_page": next_page}, dumps=_dumps)

    # ---- playing turns --------------------------------------------------------------

    def _emit(self, session: FakeSession, type: str, **fields: Any) -> dict[str, Any]:
        """Put an event into the session's history and on every open stream."""
        event = {"type": type, "id": _new_id("sevt"), "processed_at": _now(), **fields}
        session.history.append(event)
        if not session._listeners:
            session.unheard.append(event)
        frame = _frame(event)
        for listener in session._listeners:
            listener.queue.put_nowait(frame)
        self._notify()
        return event

    def _preview(self, session: FakeSession, kind: str, event: dict[str, Any]) -> None:
        """An event_start/event_delta, only to streams that asked for previews of ``kind``."""
        frame = _frame(event)
        for listener in session._listeners:
            if kind in listener.deltas:
                listener.queue.put_nowait(frame)

    def _close_streams(self, session: FakeSession, how: _Control) -> None:
        for listener in session._listeners:
            listener.queue.put_nowait(how)
        session._listeners.clear()
        self._notify()

    def _next_turn(self, session: FakeSession) -> Turn:
        if session.turns:
            return session.turns.popleft()
        return self._queue.popleft() if self._queue else self.default

    def _start_turn(self, session: FakeSession, *, announce: bool = True) -> None:
        if announce:
            self._emit(session, "session.status_running")
        session.resource["status"] = "running"
        player = asyncio.create_task(self._play(session, self._next_turn(session)))
        session._player = player
        self._players.add(player)
        player.add_done_callback(self._player_done)

    def _player_done(self, player: asyncio.Task[None]) -> None:
        self._players.discard(player)
        error = None if player.cancelled() else player.exception()
        if error is not None:
            self._crashes.append(error)  # surfaced by _wait and __aexit__
            self._notify()

    async def _stop_player(self, session: FakeSession) -> None:
        player, session._player = session._player, None
        if player is not None:
            player.cancel()
            await asyncio.gather(player, return_exceptions=True)

    def _open_span(self, session: FakeSession) -> None:
        """Before model output: a model request, a new one once tool results are due."""
        if session._results:
            self._close_span(session)  # the request that used the tools is over
        if session._span is None:
            session._span = self._emit(session, "span.model_request_start")["id"]

    def _close_span(
        self,
        session: FakeSession,
        usage: Mapping[str, int] | None = None,
        *,
        is_error: bool = False,
    ) -> None:
        if session._span is not None:
            usage = dict(usage or DEFAULT_USAGE)
            self._emit(
                session,
                "span.model_request_end",
                model_request_start_id=session._span,
                model_usage=usage,
                is_error=is_error,
            )
            session._span = None
            totals = session.resource["usage"]
            totals["input_tokens"] += usage["input_tokens"]
            totals["output_tokens"] += usage["output_tokens"]
            totals["cache_read_input_tokens"] += usage["cache_read_input_tokens"]
            totals["cache_creation"]["ephemeral_5m_input_tokens"] += usage[
                "cache_creation_input_tokens"
            ]
        results, session._results = session._results, []
        for result in results:
            self._emit(session, **result)

    def _idle(self, session: FakeSession, stop_reason: dict[str, Any], **fields: Any) -> None:
        session.resource["status"] = "idle"
        session.resource["updated_at"] = _now()
        self._emit(session, "session.status_idle", stop_reason=stop_reason, **fields)

    def _terminate(self, session: FakeSession) -> None:
        session.resource["status"] = "terminated"
        session.pending.clear()
        session._backlog.clear()
        self._emit(session, "session.status_terminated")
        self._close_streams(session, _END)

    def _interrupt(self, session: FakeSession, *, woken: bool) -> None:
        """End whatever the session is doing and idle (a cancelled player closes no span)."""
        if session._player is None and not session.pending and not woken:
            return
        if session._player is not None:
            session._player.cancel()
            session._player = None
        session._results.clear()
        self._close_span(session)
        session.pending.clear()
        session._deferred.clear()
        session._backlog.clear()
        self._idle(session, {"type": "end_turn"})

    async def _play(self, session: FakeSession, turn: Turn) -> None:
        """Play one turn on the session; every event goes through :meth:`_emit`."""
        awaiting: list[str] = []
        if session._results:  # results of confirmed tools come before anything new
            self._close_span(session)
        for step in turn.steps:
            match step:
                case _Thinking():
                    self._open_span(session)
                    event_id = _new_id("sevt")
                    start = {
                        "type": "event_start",
                        "event": {"type": "agent.thinking", "id": event_id},
                    }
                    self._preview(session, "agent.thinking", start)
                    self._emit(session, "agent.thinking", id=event_id)
                case _Message(pieces, final):
                    self._open_span(session)
                    event_id = _new_id("sevt")
                    start = {
                        "type": "event_start",
                        "event": {"type": "agent.message", "id": event_id},
                    }
                    self._preview(session, "agent.message", start)
                    for piece in pieces:
                        delta = {
                            "type": "event_delta",
                            "event_id": event_id,
                            "delta": {
                                "type": "content_delta",
                                "index": 0,
                                "content": {"type": "text", "text": piece},
                            },
                        }
                        self._preview(session, "agent.message", delta)
                    if final:
                        text = "".join(pieces)
                        content = [{"type": "text", "text": text}]
                        self._emit(session, "agent.message", id=event_id, content=content)
                case _CustomToolUse(name, input, given_id):
                    self._open_span(session)
                    event_id = given_id or _new_id("sevt")
                    self._emit(
                        session, "agent.custom_tool_use", id=event_id, name=name, input=input
                    )
                    session.pending.append(event_id)  # the client may answer right away
                    awaiting.append(event_id)
                case _ServerToolUse():
                    self._open_span(session)
                    awaiting.extend(self._server_tool_use(session, step))
                case _Usage(usage):
                    if session._span is None:
                        session._span = self._emit(session, "span.model_request_start")["id"]
                    self._close_span(session, usage)
                case _Event(event):
                    self._emit(session, **event)
                case _SessionError(error):
                    self._close_span(session, is_error=True)
                    self._emit(session, "session.error", error=error)
                    if error["retry_status"]["type"] == "exhausted":
                        self._end_turn(session, {"type": "retries_exhausted"})
                        return
                    if error["retry_status"]["type"] == "terminal":
                        session._player = None
                        self._terminate(session)
                        return
                case _Idle(reason):
                    self._end_turn(session, {"type": reason})
                    return
                case _Terminate():
                    self._close_span(session)
                    session._player = None
                    self._terminate(session)
                    return
                case _Frame(data, close):
                    for listener in session._listeners:
                        listener.queue.put_nowait(data)
                    if close:
                        self._close_streams(session, _END)
                case _Disconnect():
                    self._close_streams(session, _DROP)
                case _Stall():
                    await asyncio.Event().wait()  # until an interrupt or shutdown cancels us
                case _Delay(seconds):
                    await asyncio.sleep(seconds)
        remaining = [event_id for event_id in awaiting if event_id in session.pending]
        if remaining:
            self._end_turn(session, {"type": "requires_action", "event_ids": remaining})
        elif awaiting:  # every tool use was answered while the turn played: carry on
            self._close_span(session)
            session._player = None
            self._start_turn(session, announce=False)
        else:
            self._end_turn(session, {"type": "end_turn"})

    def _server_tool_use(self, session: FakeSession, step: _ServerToolUse) -> list[str]:
        """Emit a built-in or MCP tool use; return its id when it waits on a confirmation."""
        event_id = step.id or _new_id("sevt")
        fields: dict[str, Any] = {"name": step.name, "input": step.input}
        if step.mcp_server is not None:
            fields["mcp_server_name"] = step.mcp_server
        use_type = "agent.tool_use" if step.mcp_server is None else "agent.mcp_tool_use"
        self._emit(session, use_type, id=event_id, evaluated_permission=step.permission, **fields)
        result: dict[str, Any] = {
            "type": "agent.tool_result" if step.mcp_server is None else "agent.mcp_tool_result",
            "tool_use_id" if step.mcp_server is None else "mcp_tool_use_id": event_id,
            "content": list(step.result),
            "is_error": step.is_error,
        }
        if step.permission == "ask":
            session._deferred[event_id] = result
            session.pending.append(event_id)
            return [event_id]
        if step.permission == "allow":
            session._results.append(result)  # sent once this model request has ended
        return []

    def _end_turn(self, session: FakeSession, stop_reason: dict[str, Any]) -> None:
        self._close_span(session)
        session._player = None
        fields = {}
        if stop_reason["type"] == "refusal":
            fields["stop_details"] = {"type": "refusal", "category": None, "explanation": None}
        self._idle(session, stop_reason, **fields)
        if stop_reason["type"] != "requires_action" and session._backlog:
            session._backlog.popleft()
            self._start_turn(session)


# ---- a strict server's request checks, from the SDK's own request types ---------------

# Keys of the SDK's *Params TypedDicts that travel as headers, not in the body.
_HEADER_PARAMS = frozenset({"betas", "workspace_id"})
_SCHEMA_KEYWORDS = ("$schema", "$id", "$defs", "$ref", "additionalProperties")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
_EVENT_TYPES = frozenset(typing.get_args(BetaManagedAgentsSessionEventType))
# The query parameters each endpoint takes (none where not listed), as the SDK spells them.
_QUERY: dict[str, frozenset[str]] = {
    "agents.retrieve": frozenset({"version"}),
    "events.stream": frozenset({"event_deltas[]"}),
    "events.list": frozenset(
        {"limit", "order", "page", "types[]"}
        | {f"created_at[{op}]" for op in ("gt", "gte", "lt", "lte")}
    ),
}
_SYSTEM_MESSAGE_FOLLOWS = ("user.message", "user.tool_result", "user.custom_tool_result")
_AGENT_FIELDS = frozenset(
    {
        "name",
        "description",
        "model",
        "system",
        "tools",
        "mcp_servers",
        "skills",
        "metadata",
        "multiagent",
        "execution_identity",
    }
)
_SESSION_AGENT_FIELDS = frozenset(
    {
        "id",
        "type",
        "version",
        "name",
        "description",
        "model",
        "system",
        "tools",
        "mcp_servers",
        "skills",
        "multiagent",
        "execution_identity",
    }
)


def _check_params(body: Any, params: type) -> None:
    """400 unless ``body`` fits the SDK's request TypedDict exactly (no more, no less)."""
    problem = _check(body, params, "", top=True)
    if problem is not None:
        raise _ApiError(400, problem)


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


@functools.cache
def _fields(typed_dict: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A TypedDict's field types (wrappers removed) and its required keys."""
    hints = typing_extensions.get_type_hints(typed_dict, include_extras=True)
    total = getattr(typed_dict, "__total__", True)
    required = set()
    fields = {}
    for key, hint in hints.items():
        origin: Any = typing.get_origin(hint)
        if origin is typing_extensions.Required or (
            total and origin is not typing_extensions.NotRequired
        ):
            required.add(key)
        if origin in (typing_extensions.Required, typing_extensions.NotRequired):
            hint = typing.get_args(hint)[0]
        fields[key] = hint
    return fields, frozenset(required)


def _check(value: Any, hint: Any, path: str, *, top: bool = False) -> str | None:
    """Why ``value`` does not fit the type ``hint``, pydantic-style, or None when it does."""
    origin = typing.get_origin(hint)
    where = path or "body"
    if hint is Any or hint is object:
        return None
    if origin is typing.Annotated:
        return _check(value, typing.get_args(hint)[0], path)
    if origin is typing.Union or origin is types.UnionType:
        return _check_union(value, typing.get_args(hint), path)
    if origin is typing.Literal:
        options = typing.get_args(hint)
        if value in options and type(value) is type(options[options.index(value)]):
            return None
        return f"{where}: Input should be {' or '.join(repr(o) for o in options)}"
    if hint is type(None):
        return None if value is None else f"{where}: Input should be None"
    if hint is str:
        return None if isinstance(value, str) else f"{where}: Input should be a valid string"
    if hint is bool:
        return None if isinstance(value, bool) else f"{where}: Input should be a valid boolean"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"{where}: Input should be a valid integer"
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"{where}: Input should be a valid number"
    if hint is datetime:
        return None if isinstance(value, str) else f"{where}: Input should be a valid datetime"
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence):
        if not isinstance(value, list):
            return f"{where}: Input should be a valid list"
        (item,) = typing.get_args(hint)
        for i, element in enumerate(value):
            if (problem := _check(element, item, _join(path, i))) is not None:
                return problem
        return None
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return f"{where}: Input should be a valid dictionary"
        _, item = typing.get_args(hint)
        for key, element in value.items():
            if (problem := _check(element, item, _join(path, key))) is not None:
                return problem
        return None
    if typing_extensions.is_typeddict(hint):
        return _check_object(value, hint, path, top)
    # A construct the SDK did not use when this was written: fail loudly, not silently.
    raise TypeError(f"the fake cannot check {path or 'the body'} against {hint!r}")


def _check_object(value: Any, typed_dict: type, path: str, top: bool) -> str | None:
    if not isinstance(value, dict):
        return f"{path or 'body'}: Input should be a valid dictionary or object"
    fields, required = _fields(typed_dict)
    if top:
        fields = {k: v for k, v in fields.items() if k not in _HEADER_PARAMS}
    for key in sorted(required):
        if key not in value:
            return f"{_join(path, key)}: Field required"
    extra = getattr(typed_dict, "__extra_items__", typing_extensions.NoExtraItems)
    for key, element in value.items():
        if key in fields:
            hint = fields[key]
        elif extra is not typing_extensions.NoExtraItems:
            hint = extra
        else:
            return f"{_join(path, key)}: Extra inputs are not permitted"
        if (problem := _check(element, hint, _join(path, key))) is not None:
            return problem
    return None


def _check_union(value: Any, options: tuple[Any, ...], path: str) -> str | None:
    if value is None and type(None) in options:
        return None
    if isinstance(value, dict):
        # Tagged unions: the option whose `type` literal matches decides.
        tagged = [o for o in options if value.get("type") in _type_tags(o)]
        if len(tagged) == 1:
            return _check(value, tagged[0], path)
        tags = sorted({tag for o in options for tag in _type_tags(o)})
        if tags and not tagged:
            return (
                f"{_join(path, 'type')}: Input tag {value.get('type')!r} does not match any "
                f"of the expected tags: {', '.join(repr(t) for t in tags)}"
            )
    problems = [_check(value, option, path) for option in options]
    if None in problems:
        return None
    # The deepest complaint is the most useful one.
    return max((p for p in problems if p is not None), key=lambda p: p.split(":")[0].count("."))


def _type_tags(option: Any) -> tuple[str, ...]:
    if typing.get_origin(option) is typing.Annotated:
        option = typing.get_args(option)[0]
    if not typing_extensions.is_typeddict(option):
        return ()
    hint = _fields(option)[0].get("type")
    if typing.get_origin(hint) is not typing.Literal:
        return ()
    return tuple(str(tag) for tag in typing.get_args(hint))


# ---- rules the types do not carry -------------------------------------------------------


def _check_metadata(metadata: Mapping[str, Any] | None, path: str) -> None:
    if not metadata:
        return
    if len(metadata) > 16:
        raise _ApiError(400, f"{path}: at most 16 pairs, got {len(metadata)}")
    for key, value in metadata.items():
        if len(key) > 64:
            raise _ApiError(400, f"{_join(path, key)}: keys are at most 64 characters")
        if value is not None and len(value) > 512:
            raise _ApiError(400, f"{_join(path, key)}: values are at most 512 characters")


def _check_agent_rules(agent: Mapping[str, Any], prefix: str = "") -> None:
    """Tool, MCP server and metadata rules of agents.create/update (and session overrides)."""
    tools = agent.get("tools") or []
    servers = agent.get("mcp_servers") or []
    if len(tools) > 256:
        raise _ApiError(400, f"{prefix}tools: at most 256 tools, got {len(tools)}")
    if len(servers) > 20:
        raise _ApiError(400, f"{prefix}mcp_servers: at most 20 servers, got {len(servers)}")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if tool["type"] != "custom":
            continue
        path = f"{prefix}tools.{i}"
        if not _TOOL_NAME.fullmatch(tool["name"]):
            raise _ApiError(
                400,
                f"{path}.name: 1-128 letters, digits, underscores and hyphens, "
                f"not {tool['name']!r}",
            )
        if tool["name"] in names:
            raise _ApiError(
                400, f"{path}.name: tool names must be unique; {tool['name']!r} repeats"
            )
        names.add(tool["name"])
        if (problem := _schema_keyword(tool["input_schema"], f"{path}.input_schema")) is not None:
            raise _ApiError(400, problem)
    server_names = [server["name"] for server in servers]
    if len(set(server_names)) != len(server_names):
        raise _ApiError(400, f"{prefix}mcp_servers: server names must be unique")
    referenced = {tool["mcp_server_name"] for tool in tools if tool["type"] == "mcp_toolset"}
    for name in sorted(referenced - set(server_names)):
        raise _ApiError(400, f"{prefix}tools: mcp_toolset names {name!r}, which is no mcp_server")
    for name in sorted(set(server_names) - referenced):
        raise _ApiError(
            400, f"{prefix}mcp_servers: {name!r} is referenced by no mcp_toolset in tools"
        )
    _check_metadata(agent.get("metadata"), f"{prefix}metadata")


def _schema_keyword(schema: Any, path: str) -> str | None:
    """The first JSON Schema keyword the service is reported to reject, with its path."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            if (problem := _schema_keyword(item, _join(path, i))) is not None:
                return problem
    elif isinstance(schema, dict):
        for key, value in schema.items():
            if key in _SCHEMA_KEYWORDS:
                return (
                    f"{_join(path, key)}: the JSON Schema keyword {key!r} is not supported in "
                    "custom tool input schemas; inline definitions and drop it"
                )
            children = (
                value.values() if key == "properties" and isinstance(value, dict) else [value]
            )
            names = list(value) if key == "properties" and isinstance(value, dict) else [None]
            for name, child in zip(names, children, strict=True):
                sub = _join(_join(path, key), name) if name is not None else _join(path, key)
                if (problem := _schema_keyword(child, sub)) is not None:
                    return problem
    return None


def _check_event_content(event: Mapping[str, Any], path: str) -> None:
    if event["type"] == "user.message" and not event["content"]:
        raise _ApiError(400, f"{path}.content: List should have at least 1 item")


def _compare(stamp: str, op: str, bound: str) -> bool:
    def parse(value: str) -> datetime:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    try:
        left, right = parse(stamp), parse(bound)
    except ValueError:
        raise _ApiError(400, f"created_at[{op}]: {bound!r} is not an RFC 3339 timestamp") from None
    return {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[op]


# ---- resources as the API returns them ------------------------------------------------------


def _agent_resource(
    agent_id: str, body: Mapping[str, Any], version: int, created_at: str, updated_at: str
) -> dict[str, Any]:
    model = body["model"]
    if isinstance(model, str):
        model = {"id": model}
    model = {"speed": "standard", **model}
    if isinstance(model.get("effort"), str):
        model["effort"] = {"type": model["effort"]}
    return {
        "id": agent_id,
        "type": "agent",
        "name": body["name"],
        "description": body.get("description"),
        "model": model,
        "system": body.get("system"),
        "tools": [_tool_resource(tool) for tool in body.get("tools") or []],
        "mcp_servers": list(body.get("mcp_servers") or []),
        "skills": list(body.get("skills") or []),
        "metadata": dict(body.get("metadata") or {}),
        "multiagent": body.get("multiagent"),
        "execution_identity": body.get("execution_identity") or {"type": "service_account"},
        "version": version,
        "created_at": created_at,
        "updated_at": updated_at,
        "archived_at": None,
    }


def _tool_resource(tool: Mapping[str, Any]) -> dict[str, Any]:
    if tool["type"] == "custom":
        return dict(tool)
    default = {"enabled": True, "permission_policy": {"type": "always_allow"}}
    return {
        **tool,
        "configs": list(tool.get("configs") or []),
        "default_config": {**default, **(tool.get("default_config") or {})},
    }


def _environment_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    if config is not None and config["type"] == "self_hosted":
        return {"type": "self_hosted"}
    config = config or {"type": "cloud"}
    networking = dict(config.get("networking") or {"type": "unrestricted"})
    if networking["type"] == "limited":
        networking = {
            "allow_mcp_servers": False,
            "allow_package_managers": False,
            **{k: v for k, v in networking.items() if v is not None},
        }
        networking.setdefault("allowed_hosts", [])
    packages: dict[str, list[str]] = {
        "apt": [],
        "cargo": [],
        "gem": [],
        "go": [],
        "npm": [],
        "pip": [],
    }
    given = config.get("packages") or {}
    packages.update({k: list(v) for k, v in given.items() if k != "type" and v is not None})
    return {"type": "cloud", "networking": networking, "packages": {"type": "packages", **packages}}
