"""A scriptable loopback fake of Vertex AI Agent Engine serving a deployed ADK agent.

It speaks the REST wire protocol the Google backend uses (httpx + google-auth, no
SDK): ``POST /v1/{engine}:query`` for the session methods and
``POST /v1/{engine}:streamQuery?alt=sse`` for a turn, answered with server-sent
events (one ``data: <ADK event JSON>`` frame per event; the end of the body is the
end of the turn)::

    async with FakeAgentEngine(token="ya29.test") as fake:
        fake.router_url = router.base_url  # the deployment's INTERLOCK_ROUTER_URL
        fake.enqueue(
            Turn()
            .dispatch("search", {"q": "weather"})
            .text("It is ", "sunny.")
            .usage(40, 3)
            .finish_reason("STOP")
        )
        # point the backend at fake.base_url and fake.engine.name, bearer "ya29.test"
        ...
        assert fake.last_session.messages == ["what is the weather?"]
        assert fake.dispatches[0].status == 200

Engines: the fake starts with one, :attr:`FakeAgentEngine.engine`
(``projects/interlock-test/locations/us-central1/reasoningEngines/4815162342``);
:meth:`FakeAgentEngine.add_engine` adds more. Any other engine is a 404.

Sessions belong to (engine, user_id): ``async_create_session`` makes one,
``async_get_session`` / ``async_delete_session`` read and delete it, and a turn on
a session of another engine or user is a 404 like an unknown id. A turn's
``state_delta`` is merged into the session state before the turn plays (as ADK's
``Runner.run_async(state_delta=...)`` does), so a dispatch in that turn already
sends the token it carries.

Each turn plays the next scripted :class:`Turn` — the session's own queue first,
then its engine's, then :attr:`FakeAgentEngine.default`. Text and thoughts stream
as ``partial: true`` chunks followed by one non-partial event repeating the whole
text under the same event id; ``usage_metadata`` and ``finish_reason`` ride on
non-partial model events only (a turn with several model calls carries several).
Like ADK's ``model_dump(exclude_none=True)``, absent values are dropped: a
non-partial event has no ``partial`` key, and zero ``thoughts_token_count`` /
``cached_content_token_count`` are left out.

:meth:`Turn.dispatch` emulates the deployed agent's one proxy tool calling back
into the router over real HTTP: a ``function_call`` event for ``dispatch``, a
``POST {router_url}/v1/tools/dispatch`` with the bearer token from the session
state (``interlock_dispatch_token``), then a ``function_response`` event carrying
the router's JSON body, whatever its status. Every exchange is recorded
(:class:`DispatchExchange`).

Requests are checked strictly — the bearer token, the path, the query string, the
body's ``class_method`` and every ``input`` field (unknown, missing or mistyped is
a 400 ``INVALID_ARGUMENT`` naming the field) — and errors come in Google's
envelope ``{"error": {"code", "message", "status"}}``. :meth:`FakeAgentEngine.fail`
scripts HTTP failures per class method. The fake records every request, every
session's messages, events and state, and every client that went away mid-stream;
tests wait on those with the ``wait_for_*`` helpers, which fail after a bounded
time instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple, Self

import httpx
import orjson
from aiohttp import web

__all__ = [
    "DEFAULT_AGENT_NAME",
    "DEFAULT_ENGINE_ID",
    "DEFAULT_LOCATION",
    "DEFAULT_PROJECT",
    "DISPATCH_PATH",
    "DISPATCH_TOOL",
    "FROM_STATE",
    "TOKEN_STATE_KEY",
    "WAIT_LIMIT",
    "ClassMethod",
    "DispatchExchange",
    "FakeAgentEngine",
    "FakeEngine",
    "FakeSession",
    "RecordedRequest",
    "Turn",
    "engine_name",
]

DEFAULT_PROJECT = "interlock-test"
DEFAULT_LOCATION = "us-central1"
DEFAULT_ENGINE_ID = "4815162342"
# The root agent's name: the ``author`` of every event the agent emits.
DEFAULT_AGENT_NAME = "interlock"
# The deployed agent's one proxy tool, and where it calls the router.
DISPATCH_TOOL = "dispatch"
DISPATCH_PATH = "/v1/tools/dispatch"
# The session state key the router puts its short-lived dispatch token under.
TOKEN_STATE_KEY = "interlock_dispatch_token"
# A wait_for_* that takes longer than this has failed: report it instead of hanging.
WAIT_LIMIT = 10.0

ClassMethod = Literal[
    "async_create_session",
    "async_get_session",
    "async_delete_session",
    "async_stream_query",
]


class _Method(NamedTuple):
    verb: Literal["query", "streamQuery"]
    required: frozenset[str]
    optional: frozenset[str]


_METHODS: dict[str, _Method] = {
    "async_create_session": _Method("query", frozenset({"user_id"}), frozenset({"state"})),
    "async_get_session": _Method("query", frozenset({"user_id", "session_id"}), frozenset()),
    "async_delete_session": _Method("query", frozenset({"user_id", "session_id"}), frozenset()),
    "async_stream_query": _Method(
        "streamQuery", frozenset({"message", "user_id", "session_id"}), frozenset({"state_delta"})
    ),
}
# Strings must also be non-empty.
_INPUT_TYPES: dict[str, type] = {
    "user_id": str,
    "session_id": str,
    "message": str,
    "state": dict,
    "state_delta": dict,
}
_PATH = re.compile(
    r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/reasoningEngines/(?P<engine>[^/:]+):(?P<verb>query|streamQuery)"
)
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# Agent Engine session ids are long decimal strings.
_session_ids = itertools.count(8_000_000_000_000_000_001)


def engine_name(project: str, location: str, engine_id: str) -> str:
    """The resource name of a reasoning engine, as the backend puts it in the URL."""
    return f"projects/{project}/locations/{location}/reasoningEngines/{engine_id}"


def _no_actions() -> dict[str, Any]:
    """What ADK's EventActions dumps as when nothing happened (empty dicts are not None)."""
    return {
        "state_delta": {},
        "artifact_delta": {},
        "requested_auth_configs": {},
        "requested_tool_confirmations": {},
    }


def _event_id() -> str:
    return str(uuid.uuid4())  # ADK's Event.new_id()


def _call_id() -> str:
    return f"adk-{uuid.uuid4()}"  # ADK's generated function call ids


# ---- the steps a turn is made of ------------------------------------------------


class _FromState(enum.Enum):
    TOKEN = "the session state's interlock_dispatch_token"


# Turn.dispatch(token=FROM_STATE): send the token the session state holds, if any.
FROM_STATE = _FromState.TOKEN


@dataclass(frozen=True, slots=True)
class _Meta:
    """What usage() and finish_reason() put on a non-partial model event."""

    usage: dict[str, int] | None = None
    finish_reason: str | None = None


_NO_META = _Meta()


@dataclass(frozen=True, slots=True)
class _Output:
    chunks: tuple[str, ...]
    thought: bool
    partial: bool  # False: only the aggregated event, as without SSE streaming
    meta: _Meta = _NO_META


@dataclass(frozen=True, slots=True)
class _FunctionCall:
    name: str
    args: dict[str, Any]
    id: str | None
    meta: _Meta = _NO_META


@dataclass(frozen=True, slots=True)
class _FunctionResponse:
    name: str
    response: dict[str, Any]
    id: str | None


@dataclass(frozen=True, slots=True)
class _Dispatch:
    tool_name: str
    arguments: dict[str, Any]
    token: str | _FromState | None
    id: str | None
    meta: _Meta = _NO_META  # on the function_call event


@dataclass(frozen=True, slots=True)
class _Standalone:
    """An event with usage_metadata / finish_reason and no content."""

    meta: _Meta


@dataclass(frozen=True, slots=True)
class _Error:
    code: int | str
    message: str


@dataclass(frozen=True, slots=True)
class _Event:
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Raw:
    data: bytes


@dataclass(frozen=True, slots=True)
class _Delay:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Stall:
    pass


@dataclass(frozen=True, slots=True)
class _Disconnect:
    pass


_Step = (
    _Output
    | _FunctionCall
    | _FunctionResponse
    | _Dispatch
    | _Standalone
    | _Error
    | _Event
    | _Raw
    | _Delay
    | _Stall
    | _Disconnect
)
# Steps whose (non-partial) model event usage() and finish_reason() attach to.
_Carrier = _Output | _FunctionCall | _Dispatch | _Standalone


class Turn:
    """What the deployed agent streams for one ``async_stream_query``.

    Builder methods append steps and return ``self``. The turn ends when its steps
    run out (the body ends cleanly), or at :meth:`disconnect`; a :meth:`stall`
    holds it until the client goes away or the fake shuts down. A turn may be
    played more than once (as the default is): ids are made as it plays.
    """

    def __init__(self) -> None:
        self.steps: list[_Step] = []

    def _add(self, step: _Step) -> Self:
        self.steps.append(step)
        return self

    # -- what the model produces --

    def text(self, *chunks: str, partial: bool = True) -> Self:
        """Answer text: one ``partial`` event per chunk, then one event with the whole text.

        All under one event id. ``partial=False`` sends only the whole-text event.
        """
        if not chunks:
            raise ValueError("text() needs at least one chunk")
        return self._add(_Output(chunks, thought=False, partial=partial))

    def thought(self, *chunks: str, partial: bool = True) -> Self:
        """Reasoning: like :meth:`text`, with parts marked ``"thought": true``."""
        if not chunks:
            raise ValueError("thought() needs at least one chunk")
        return self._add(_Output(chunks, thought=True, partial=partial))

    def function_call(
        self, name: str, args: Mapping[str, Any] | None = None, *, id: str | None = None
    ) -> Self:
        """A ``function_call`` part for an agent-internal tool (a new ``adk-`` id unless given)."""
        return self._add(_FunctionCall(name, dict(args or {}), id))

    def function_response(
        self, name: str, response: Mapping[str, Any] | None = None, *, id: str | None = None
    ) -> Self:
        """The ``function_response`` part answering the turn's latest call of ``name``.

        As real ADK event dumps show, its event has ``content.role: "user"`` while its
        ``author`` is the agent (not ``"user"``, which only the caller's message has).
        """
        return self._add(_FunctionResponse(name, dict(response or {}), id))

    def dispatch(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        token: str | _FromState | None = FROM_STATE,
        id: str | None = None,
    ) -> Self:
        """The deployed agent calls the router's tool ``tool_name`` through its proxy tool.

        Emits the ``function_call`` of ``dispatch``, POSTs to the router (the bearer
        token from the session state unless ``token`` is given; ``None`` sends no
        Authorization header), then emits the ``function_response`` with the
        router's JSON body. See :class:`DispatchExchange`.
        """
        return self._add(_Dispatch(tool_name, dict(arguments or {}), token, id))

    def usage(
        self,
        prompt: int,
        candidates: int,
        thoughts: int = 0,
        cached: int = 0,
        *,
        separate: bool = False,
    ) -> Self:
        """``usage_metadata`` on the previous step's non-partial model event.

        That is the whole-text event of :meth:`text` / :meth:`thought`, or the
        ``function_call`` event of :meth:`function_call` / :meth:`dispatch`. After
        any other step, or with ``separate=True``, it is an event of its own with
        no content. ``total_token_count`` is prompt + candidates + thoughts; zero
        thoughts and cached counts are left out, as Gemini leaves them out.
        """
        usage = {"prompt_token_count": prompt, "candidates_token_count": candidates}
        if thoughts:
            usage["thoughts_token_count"] = thoughts
        if cached:
            usage["cached_content_token_count"] = cached
        usage["total_token_count"] = prompt + candidates + thoughts
        return self._attach("usage", usage, separate=separate)

    def finish_reason(self, reason: str, *, separate: bool = False) -> Self:
        """``finish_reason`` ("STOP", "MAX_TOKENS", "SAFETY", ...) placed like :meth:`usage`."""
        return self._attach("finish_reason", reason, separate=separate)

    def _attach(self, key: Literal["usage", "finish_reason"], value: Any, separate: bool) -> Self:
        last = self.steps[-1] if self.steps else None
        if separate or not isinstance(last, _Carrier):
            return self._add(_Standalone(replace(_Meta(), **{key: value})))
        if getattr(last.meta, key) is not None:
            raise ValueError(
                f"the previous step already has {key}; pass separate=True for an event of its own"
            )
        self.steps[-1] = replace(last, meta=replace(last.meta, **{key: value}))
        return self

    def event(self, **fields: Any) -> Self:
        """Any ADK event as given (``id``, ``invocation_id``, ``author``, ``timestamp`` and
        ``actions`` filled in unless given), e.g. one final event with thought and text parts."""
        return self._add(_Event(fields))

    # -- how the turn fails or ends --

    def error(self, code: int | str = 500, message: str = "Internal error encountered.") -> Self:
        """An in-stream error: a top-level ``{"code", "message"}`` object without content."""
        return self._add(_Error(code, message))

    def raw(self, data: bytes) -> Self:
        """Bytes written to the stream as they are (framing included)."""
        return self._add(_Raw(data))

    def delay(self, seconds: float) -> Self:
        """Pause the stream."""
        return self._add(_Delay(seconds))

    def stall(self) -> Self:
        """Send nothing more and keep the stream open until the client goes away."""
        return self._add(_Stall())

    def disconnect(self) -> Self:
        """Cut the connection here: the client sees the body end mid-stream."""
        return self._add(_Disconnect())


def _default_turn() -> Turn:
    return Turn().text("Hello from the ", "fake agent engine.").usage(10, 5).finish_reason("STOP")


# ---- what the fake records ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON body, or None when there was none (or it was not JSON)
    engine: str | None  # the engine resource name in the path, when the path has one

    @property
    def class_method(self) -> str | None:
        """The body's ``class_method``, when it has one."""
        if isinstance(self.body, dict) and isinstance(self.body.get("class_method"), str):
            return str(self.body["class_method"])
        return None


@dataclass(frozen=True, slots=True)
class DispatchExchange:
    """One call the deployed agent's ``dispatch`` tool made to the router."""

    call_id: str  # the function_call id, also sent as ``call_id``
    session_id: str
    user_id: str
    url: str  # {router_url}/v1/tools/dispatch
    headers: dict[str, str]  # what the fake sent: content-type and, when any, authorization
    body: dict[str, Any]  # {tool_name, arguments, call_id, user_id, session_id}
    status: int | None  # the router's HTTP status; None when it could not be reached
    response: Any  # the router's parsed JSON body; None when none or not JSON
    error: str | None  # why there was no JSON answer, when there was none
    function_response: dict[str, Any]  # what the model was given back

    @property
    def tool_name(self) -> str:
        return str(self.body["tool_name"])

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.body["arguments"])


@dataclass(eq=False)
class FakeSession:
    """An ADK session on one engine, for one user, and everything that happened to it."""

    id: str
    engine: str  # the engine resource name
    user_id: str
    app_name: str
    state: dict[str, Any]
    last_update_time: float
    messages: list[str] = field(default_factory=list)  # user messages, one per turn
    state_deltas: list[dict[str, Any]] = field(default_factory=list)  # as received, per turn
    events: list[dict[str, Any]] = field(default_factory=list)  # every ADK event streamed
    # What ADK persists: the user's events and the non-partial agent events.
    history: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # in-stream error objects sent
    dispatches: list[DispatchExchange] = field(default_factory=list)
    turns: deque[Turn] = field(default_factory=deque)  # scripted for this session only
    turns_played: int = 0
    disconnects: int = 0  # streams of this session the client went away from
    deleted: bool = False

    def resource(self) -> dict[str, Any]:
        """The session as the ``:query`` session methods return it."""
        return {
            "id": self.id,
            "app_name": self.app_name,
            "user_id": self.user_id,
            "state": dict(self.state),
            "events": list(self.history),
            "last_update_time": self.last_update_time,
        }

    def final_texts(self) -> list[str]:
        """The answer text of each non-partial event that has some (thoughts excluded)."""
        texts = []
        for event in self.events:
            if event.get("partial"):
                continue
            parts = (event.get("content") or {}).get("parts") or []
            text = "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))
            if text:
                texts.append(text)
        return texts


@dataclass(eq=False)
class FakeEngine:
    """One deployed agent: ``projects/{project}/locations/{location}/reasoningEngines/{id}``."""

    project: str
    location: str
    id: str
    agent_name: str = DEFAULT_AGENT_NAME
    turns: deque[Turn] = field(default_factory=deque)  # scripted for this engine's sessions

    @property
    def name(self) -> str:
        return engine_name(self.project, self.location, self.id)

    @property
    def app_name(self) -> str:
        # Deployed AdkApps are named after their reasoning engine id.
        return self.id


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    status_name: str
    message: str
    headers: dict[str, str]


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        status_name: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.status_name = status_name or _STATUS_NAMES.get(status, "UNKNOWN")
        self.message = message
        self.headers = dict(headers or {})


def _error_response(error: _ApiError) -> web.Response:
    body = {"error": {"code": error.status, "message": error.message, "status": error.status_name}}
    return web.json_response(body, status=error.status, headers=error.headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(eq=False)
class _Play:
    """One turn being played on one stream."""

    engine: FakeEngine
    session: FakeSession
    invocation_id: str
    response: web.StreamResponse
    calls: dict[str, str] = field(default_factory=dict)  # tool name -> its latest call id


# ---- the server ---------------------------------------------------------------------


@dataclass
class FakeAgentEngine:
    """Vertex AI Agent Engine on 127.0.0.1 (a free port), for one test.

    Every request needs ``Authorization: Bearer <token>`` (401 otherwise); change
    :attr:`token` to make the one in use expire. Set :attr:`router_url` before a
    turn dispatches.
    """

    token: str
    router_url: str | None = None
    default: Turn = field(default_factory=_default_turn)
    dispatch_timeout: float = 10.0  # seconds the dispatch tool waits for the router
    base_url: str = field(default="", init=False)  # http://127.0.0.1:PORT
    engine: FakeEngine = field(init=False)  # the one the fake starts with
    engines: dict[str, FakeEngine] = field(default_factory=dict, init=False)  # by name
    sessions: dict[str, FakeSession] = field(default_factory=dict, init=False)  # by id
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    dispatches: list[DispatchExchange] = field(default_factory=list, init=False)
    sessions_created: int = field(default=0, init=False)  # by async_create_session
    open_streams: int = field(default=0, init=False)
    turns_ended: int = field(default=0, init=False)  # streams ended in any way
    disconnects: int = field(default=0, init=False)  # streams the client went away from
    _failures: dict[str, deque[_Failure]] = field(default_factory=dict, init=False)
    # Set (and replaced) whenever anything a wait_for_* looks at changes.
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _closing: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _http: httpx.AsyncClient | None = field(default=None, init=False)
    _crashes: list[BaseException] = field(default_factory=list, init=False)  # bugs in the fake

    def __post_init__(self) -> None:
        self.engine = self.add_engine(DEFAULT_ENGINE_ID)

    # ---- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that goes away cancels its stream handler,
        # which is how the fake observes disconnects.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        # trust_env=False: the deployed agent calls the router URL directly, never via a proxy.
        self._http = httpx.AsyncClient(timeout=self.dispatch_timeout, trust_env=False)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing.set()  # stalled streams end cleanly
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._crashes and exc_info[0] is None:
            raise AssertionError("a scripted turn crashed in the fake") from self._crashes[0]

    # ---- engines and scripting ---------------------------------------------------------

    @staticmethod
    def engine_name(project: str, location: str, engine_id: str) -> str:
        """The resource name of a reasoning engine (same as the module's :func:`engine_name`)."""
        return engine_name(project, location, engine_id)

    def add_engine(
        self,
        engine_id: str,
        *,
        project: str = DEFAULT_PROJECT,
        location: str = DEFAULT_LOCATION,
        agent_name: str = DEFAULT_AGENT_NAME,
    ) -> FakeEngine:
        """Deploy another agent; requests to engines never added are a 404."""
        engine = FakeEngine(project, location, engine_id, agent_name)
        if engine.name in self.engines:
            raise ValueError(f"{engine.name} is already deployed")
        self.engines[engine.name] = engine
        return engine

    def query_url(self, engine: FakeEngine | None = None) -> str:
        """The ``:query`` URL of ``engine`` (the default one unless given)."""
        return f"{self.base_url}/v1/{(engine or self.engine).name}:query"

    def stream_query_url(self, engine: FakeEngine | None = None) -> str:
        """The ``:streamQuery?alt=sse`` URL of ``engine`` (the default one unless given)."""
        return f"{self.base_url}/v1/{(engine or self.engine).name}:streamQuery?alt=sse"

    def add_session(
        self,
        user_id: str,
        state: Mapping[str, Any] | None = None,
        *,
        engine: FakeEngine | None = None,
    ) -> FakeSession:
        """A session that exists already, as one made in an earlier process (not counted
        in :attr:`sessions_created`)."""
        engine = engine or self.engine
        session = FakeSession(
            id=str(next(_session_ids)),
            engine=engine.name,
            user_id=user_id,
            app_name=engine.app_name,
            state=dict(state or {}),
            last_update_time=time.time(),
        )
        self.sessions[session.id] = session
        self._notify()
        return session

    def enqueue(
        self, *turns: Turn, session_id: str | None = None, engine: FakeEngine | None = None
    ) -> None:
        """Play ``turns`` on the next turns: of that session when one is named, else of
        ``engine`` (the default one unless given)."""
        if session_id is not None:
            session = self.sessions.get(session_id)
            if session is None:
                raise ValueError(f"no session {session_id!r}; enqueue on its engine instead")
            session.turns.extend(turns)
        else:
            (engine or self.engine).turns.extend(turns)

    def fail(
        self,
        class_method: ClassMethod,
        status: int,
        message: str | None = None,
        *,
        times: int = 1,
        retry_after: float | None = None,
        status_name: str | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``class_method`` with ``status`` and Google's
        error envelope (``status_name`` follows the status: 403 ``PERMISSION_DENIED``, 429
        ``RESOURCE_EXHAUSTED``, 503 ``UNAVAILABLE`` ...), with ``retry-after`` when given.

        The failure comes before authentication and validation, as a front end's would.
        """
        if class_method not in _METHODS:
            raise ValueError(f"unknown class_method {class_method!r}; one of {sorted(_METHODS)}")
        name = status_name or _STATUS_NAMES.get(status)
        if name is None:
            raise ValueError(f"no status name known for {status}; pass status_name")
        headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        failure = _Failure(status, name, message or f"scripted {name} ({status})", headers)
        self._failures.setdefault(class_method, deque()).extend([failure] * times)

    # ---- observing -------------------------------------------------------------------

    @property
    def last_session(self) -> FakeSession:
        """The session created last."""
        if not self.sessions:
            raise AssertionError("the fake has no sessions")
        return next(reversed(self.sessions.values()))

    def requests_to(self, class_method: ClassMethod) -> list[RecordedRequest]:
        """The requests received for one class method, in order."""
        return [r for r in self.requests if r.class_method == class_method]

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, *, within: float = WAIT_LIMIT
    ) -> None:
        """Return once ``predicate()`` holds; fail naming ``what`` after ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                while True:
                    if self._crashes:
                        raise AssertionError("a scripted turn crashed") from self._crashes[0]
                    if predicate():
                        return
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"the fake saw no {what} within {within}s (requests: {len(self.requests)}, "
                f"sessions: {len(self.sessions)}, open streams: {self.open_streams}, "
                f"disconnects: {self.disconnects}, dispatches: {len(self.dispatches)})"
            ) from None

    async def wait_for_requests(
        self, count: int, class_method: ClassMethod | None = None, *, within: float = WAIT_LIMIT
    ) -> list[RecordedRequest]:
        """Return the requests (of ``class_method``, when given) once there are ``count``."""

        def matching() -> list[RecordedRequest]:
            return self.requests_to(class_method) if class_method else list(self.requests)

        what = f"{count} request(s)" + (f" of {class_method}" if class_method else "")
        await self.wait_until(lambda: len(matching()) >= count, what, within=within)
        return matching()

    async def wait_for_sessions(self, count: int, *, within: float = WAIT_LIMIT) -> None:
        """Return once ``async_create_session`` has made ``count`` sessions."""
        await self.wait_until(
            lambda: self.sessions_created >= count, f"{count} created session(s)", within=within
        )

    async def wait_for_stream(self, count: int = 1, *, within: float = WAIT_LIMIT) -> None:
        """Return once ``count`` turn streams are open at the same time."""
        await self.wait_until(
            lambda: self.open_streams >= count, f"{count} open stream(s)", within=within
        )

    async def wait_for_turns(self, count: int, *, within: float = WAIT_LIMIT) -> None:
        """Return once ``count`` turn streams have ended, in any way."""
        await self.wait_until(
            lambda: self.turns_ended >= count, f"{count} ended turn(s)", within=within
        )

    async def wait_for_disconnects(self, count: int = 1, *, within: float = WAIT_LIMIT) -> None:
        """Return once the client has gone away from ``count`` turn streams."""
        await self.wait_until(
            lambda: self.disconnects >= count, f"{count} disconnect(s)", within=within
        )

    async def wait_for_dispatches(
        self, count: int, *, within: float = WAIT_LIMIT
    ) -> list[DispatchExchange]:
        """Return the dispatch exchanges once ``count`` have completed."""
        await self.wait_until(
            lambda: len(self.dispatches) >= count, f"{count} dispatch(es)", within=within
        )
        return list(self.dispatches)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- the HTTP layer ------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        query: dict[str, list[str]] = {}
        for key, value in request.query.items():
            query.setdefault(key, []).append(value)
        headers = {k.lower(): v for k, v in request.headers.items()}
        match = _PATH.fullmatch(request.path)
        name = engine_name(match["project"], match["location"], match["engine"]) if match else None
        self.requests.append(
            RecordedRequest(request.method, request.path, query, headers, body, name)
        )
        self._notify()
        try:
            self._scripted_failure(match["verb"] if match else None, body)
            self._check_auth(headers)
            if match is None or request.method != "POST":
                raise _ApiError(404, f"{request.method} {request.path}: no such method")
            engine = self.engines.get(str(name))
            if engine is None:
                raise _ApiError(404, f"ReasoningEngine {name} does not exist")
            verb = match["verb"]
            self._check_query(verb, query)
            class_method, input = self._check_body(verb, headers, raw, body)
            if class_method == "async_stream_query":
                return await self._stream_query(request, engine, input)
            return self._query(engine, class_method, input)
        except _ApiError as error:
            return _error_response(error)

    def _scripted_failure(self, verb: str | None, body: Any) -> None:
        method = body.get("class_method") if isinstance(body, dict) else None
        if not isinstance(method, str) or method not in _METHODS:
            return
        failures = self._failures.get(method)
        if failures and _METHODS[method].verb == verb:
            failure = failures.popleft()
            raise _ApiError(failure.status, failure.message, failure.status_name, failure.headers)

    def _check_auth(self, headers: Mapping[str, str]) -> None:
        challenge = {"www-authenticate": 'Bearer realm="https://accounts.google.com/"'}
        authorization = headers.get("authorization")
        if authorization is None:
            raise _ApiError(
                401,
                "Request is missing required authentication credential. Expected OAuth 2 "
                "access token, login cookie or other valid authentication credential.",
                headers=challenge,
            )
        if authorization != f"Bearer {self.token}":
            raise _ApiError(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                headers=challenge,
            )

    def _check_query(self, verb: str, query: Mapping[str, list[str]]) -> None:
        allowed = {"alt"} if verb == "streamQuery" else set()
        if unknown := sorted(set(query) - allowed):
            raise _ApiError(
                400, f"{unknown[0]}: unknown query parameter; :{verb} takes {sorted(allowed)}"
            )
        if verb == "streamQuery" and query.get("alt") != ["sse"]:
            raise _ApiError(
                400, "alt: :streamQuery is served as server-sent events only; pass ?alt=sse"
            )

    def _check_body(
        self, verb: str, headers: Mapping[str, str], raw: bytes, body: Any
    ) -> tuple[str, dict[str, Any]]:
        """The class method and its input, or a 400 naming the field at fault."""
        content_type = headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise _ApiError(400, f"Content-Type: must be application/json, not {content_type!r}")
        if body is None and raw:
            raise _ApiError(400, "Invalid JSON payload received: the body is not JSON")
        if not isinstance(body, dict):
            raise _ApiError(400, "the request body must be a JSON object")
        for key in body:
            if key not in ("class_method", "input"):
                raise _ApiError(400, f"{key}: unknown field; the body takes class_method and input")
        if "class_method" not in body:
            raise _ApiError(400, "class_method: required field missing")
        method = body["class_method"]
        if not isinstance(method, str) or method not in _METHODS:
            served = sorted(m for m, spec in _METHODS.items() if spec.verb == verb)
            raise _ApiError(
                400,
                f"class_method: {method!r} is not a method of this agent; "
                f":{verb} serves {', '.join(served)}",
            )
        spec = _METHODS[method]
        if spec.verb != verb:
            raise _ApiError(400, f"class_method: {method} is served by :{spec.verb}, not :{verb}")
        if "input" not in body:
            raise _ApiError(400, "input: required field missing")
        input = body["input"]
        if not isinstance(input, dict):
            raise _ApiError(400, "input: must be an object")
        known = spec.required | spec.optional
        for key in input:
            if key not in known:
                raise _ApiError(
                    400, f"input.{key}: unknown field; {method} takes {', '.join(sorted(known))}"
                )
        for key in sorted(spec.required - set(input)):
            raise _ApiError(400, f"input.{key}: required field missing")
        for key, value in input.items():
            expected = _INPUT_TYPES[key]
            if not isinstance(value, expected):
                kind = "a string" if expected is str else "an object"
                raise _ApiError(400, f"input.{key}: must be {kind}, not {type(value).__name__}")
            if expected is str and not value:
                raise _ApiError(400, f"input.{key}: must not be empty")
        return method, input

    def _owned_session(self, engine: FakeEngine, user_id: str, session_id: str) -> FakeSession:
        """The session, when it is this engine's and this user's (404 otherwise, as when
        there is no such session)."""
        session = self.sessions.get(session_id)
        if (
            session is None
            or session.deleted
            or session.engine != engine.name
            or session.user_id != user_id
        ):
            raise _ApiError(404, f"Session not found: {engine.name}/sessions/{session_id}")
        return session

    # ---- the session methods (:query) -------------------------------------------------

    def _query(
        self, engine: FakeEngine, class_method: str, input: Mapping[str, Any]
    ) -> web.Response:
        output: dict[str, Any] | None
        if class_method == "async_create_session":
            session = self.add_session(input["user_id"], input.get("state"), engine=engine)
            self.sessions_created += 1
            output = session.resource()
        elif class_method == "async_get_session":
            output = self._owned_session(engine, input["user_id"], input["session_id"]).resource()
        else:
            session = self._owned_session(engine, input["user_id"], input["session_id"])
            session.deleted = True
            output = None
        self._notify()
        return web.json_response({"output": output}, dumps=_dumps)

    # ---- a turn (:streamQuery) -----------------------------------------------------------

    async def _stream_query(
        self, request: web.Request, engine: FakeEngine, input: Mapping[str, Any]
    ) -> web.StreamResponse:
        session = self._owned_session(engine, input["user_id"], input["session_id"])
        delta = input.get("state_delta")
        if delta is not None:
            session.state_deltas.append(dict(delta))
            session.state.update(delta)  # before the turn plays, as ADK's Runner does
        session.messages.append(input["message"])
        invocation_id = f"e-{uuid.uuid4()}"
        now = time.time()
        session.history.append(
            {
                "content": {"role": "user", "parts": [{"text": input["message"]}]},
                "invocation_id": invocation_id,
                "author": "user",
                "actions": {**_no_actions(), "state_delta": dict(delta or {})},
                "id": _event_id(),
                "timestamp": now,
            }
        )
        session.last_update_time = now
        turn = self._next_turn(engine, session)
        session.turns_played += 1
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        play = _Play(engine, session, invocation_id, response)
        self.open_streams += 1
        self._notify()
        try:
            await response.prepare(request)  # StreamResponse sends the headers now
            if await self._play(request, play, turn):
                await response.write_eof()
        except ConnectionResetError:  # the client went away as the fake wrote
            self._disconnected(session)
        except asyncio.CancelledError:  # the client went away (handler_cancellation)
            self._disconnected(session)
            raise
        except Exception as error:  # a bug in the fake or the test's script: surface it
            self._crashes.append(error)
            with contextlib.suppress(Exception):  # the stream may be gone already
                await self._send(play, {"code": 500, "message": f"the fake crashed: {error!r}"})
                await response.write_eof()
        finally:
            self.open_streams -= 1
            self.turns_ended += 1
            self._notify()
        return response

    def _disconnected(self, session: FakeSession) -> None:
        self.disconnects += 1
        session.disconnects += 1

    def _next_turn(self, engine: FakeEngine, session: FakeSession) -> Turn:
        if session.turns:
            return session.turns.popleft()
        if engine.turns:
            return engine.turns.popleft()
        return self.default

    async def _play(self, request: web.Request, play: _Play, turn: Turn) -> bool:
        """Stream the turn's steps; False when it cut the connection instead of ending."""
        for step in turn.steps:
            match step:
                case _Output(chunks, thought, partial, meta):
                    event_id = _event_id()
                    if partial:
                        for chunk in chunks:
                            part = _text_part(chunk, thought)
                            await self._emit(play, "model", [part], id=event_id, partial=True)
                    whole = _text_part("".join(chunks), thought)
                    await self._emit(play, "model", [whole], id=event_id, meta=meta)
                case _FunctionCall(name, args, given_id, meta):
                    call_id = given_id or _call_id()
                    play.calls[name] = call_id
                    call = {"id": call_id, "name": name, "args": args}
                    await self._emit(play, "model", [{"function_call": call}], meta=meta)
                case _FunctionResponse(name, response, given_id):
                    call_id = given_id or play.calls.get(name) or _call_id()
                    answer = {"id": call_id, "name": name, "response": response}
                    await self._emit(play, "user", [{"function_response": answer}])
                case _Dispatch():
                    await self._dispatch(play, step)
                case _Standalone(meta):
                    await self._emit(play, None, None, meta=meta)
                case _Error(code, message):
                    error = {"code": code, "message": message}
                    play.session.errors.append(error)
                    await self._send(play, error)
                case _Event(fields):
                    await self._send_event(play, self._fill(play, fields))
                case _Raw(data):
                    await play.response.write(data)
                case _Delay(seconds):
                    await asyncio.sleep(seconds)
                case _Stall():
                    # Until the client goes away (the handler is cancelled) or the fake
                    # shuts down: then the body ends cleanly, the rest of the turn unplayed.
                    await self._closing.wait()
                    return True
                case _Disconnect():
                    assert request.transport is not None
                    # close(), not abort(): what was written still reaches the
                    # client (an RST could discard it), then the body is cut short.
                    request.transport.close()
                    return False
        return True

    async def _dispatch(self, play: _Play, step: _Dispatch) -> None:
        """The deployed agent's proxy tool: function_call, POST to the router, function_response."""
        call_id = step.id or _call_id()
        call = {
            "id": call_id,
            "name": DISPATCH_TOOL,
            "args": {"tool_name": step.tool_name, "arguments": step.arguments},
        }
        await self._emit(play, "model", [{"function_call": call}], meta=step.meta)
        exchange = await self._call_router(play.session, call_id, step)
        self.dispatches.append(exchange)
        play.session.dispatches.append(exchange)
        self._notify()
        answer = {"id": call_id, "name": DISPATCH_TOOL, "response": exchange.function_response}
        await self._emit(play, "user", [{"function_response": answer}])

    async def _call_router(
        self, session: FakeSession, call_id: str, step: _Dispatch
    ) -> DispatchExchange:
        if self.router_url is None:
            raise AssertionError(
                "a turn dispatched but router_url is not set (the deployment's router URL)"
            )
        assert self._http is not None
        url = self.router_url.rstrip("/") + DISPATCH_PATH
        token = session.state.get(TOKEN_STATE_KEY) if step.token is FROM_STATE else step.token
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        body = {
            "tool_name": step.tool_name,
            "arguments": step.arguments,
            "call_id": call_id,
            "user_id": session.user_id,
            "session_id": session.id,
        }
        status: int | None = None
        parsed: Any = None
        error: str | None = None
        try:
            reply = await self._http.post(url, content=orjson.dumps(body), headers=headers)
        except httpx.HTTPError as exc:
            error = f"the router could not be reached: {type(exc).__name__}: {exc}"
        else:
            status = reply.status_code
            try:
                parsed = orjson.loads(reply.content)
            except orjson.JSONDecodeError:
                error = f"the router answered {status} with a body that is not JSON"
        if error is not None:
            function_response: dict[str, Any] = {"error": error}
        elif isinstance(parsed, dict):
            function_response = parsed
        else:
            function_response = {"result": parsed}  # ADK wraps a tool's non-dict return
        return DispatchExchange(
            call_id=call_id,
            session_id=session.id,
            user_id=session.user_id,
            url=url,
            headers=headers,
            body=body,
            status=status,
            response=parsed,
            error=error,
            function_response=function_response,
        )

    # ---- writing events ----------------------------------------------------------------

    def _fill(self, play: _Play, fields: Mapping[str, Any]) -> dict[str, Any]:
        """An agent event: the given fields with ADK's bookkeeping filled in."""
        return {
            **fields,
            "invocation_id": fields.get("invocation_id", play.invocation_id),
            "author": fields.get("author", play.engine.agent_name),
            "actions": fields.get("actions", _no_actions()),
            "id": fields.get("id", _event_id()),
            "timestamp": fields.get("timestamp", time.time()),
        }

    async def _emit(
        self,
        play: _Play,
        role: str | None,
        parts: list[dict[str, Any]] | None,
        *,
        id: str | None = None,
        partial: bool = False,
        meta: _Meta = _NO_META,
    ) -> None:
        fields: dict[str, Any] = {}
        if parts is not None:
            fields["content"] = {"role": role, "parts": parts}
        if partial:
            fields["partial"] = True
        if meta.finish_reason is not None:
            fields["finish_reason"] = meta.finish_reason
        if meta.usage is not None:
            fields["usage_metadata"] = dict(meta.usage)
        if id is not None:
            fields["id"] = id
        await self._send_event(play, self._fill(play, fields))

    async def _send_event(self, play: _Play, event: dict[str, Any]) -> None:
        session = play.session
        session.events.append(event)
        if not event.get("partial"):
            session.history.append(event)  # ADK persists only what is not partial
            session.last_update_time = event["timestamp"]
        await self._send(play, event)

    async def _send(self, play: _Play, value: Mapping[str, Any]) -> None:
        self._notify()
        await play.response.write(b"data: " + orjson.dumps(value) + b"\n\n")


def _text_part(text: str, thought: bool) -> dict[str, Any]:
    return {"text": text, "thought": True} if thought else {"text": text}
