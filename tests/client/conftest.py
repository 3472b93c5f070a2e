"""A small real gRPC server for the client and CLI tests.

The servicers here are test doubles of the daemon's API, not of the client:
they run behind a real ``grpc.aio`` server on 127.0.0.1:0 and the code under
test talks to them over the wire. They check the bearer key exactly as the
daemon's auth interceptor is specified to (``authorization: Bearer <key>``),
record what they received, and answer from scripts or small in-memory tables.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import grpc.aio
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from interlock.v1 import (
    conversations_pb2,
    conversations_pb2_grpc,
    events_pb2,
    router_pb2,
    router_pb2_grpc,
    sandboxes_pb2,
    sandboxes_pb2_grpc,
)

API_KEY = "ik_test_sandbox_key"
OPERATOR_KEY = "ik_test_operator_key"
T0 = 1_800_000_000  # 2027-01-15T08:00:00Z, a fixed clock for stable output

_EVENT_FIELDS: dict[type[Message], str] = {
    events_pb2.RunStarted: "run_started",
    events_pb2.TextDelta: "text_delta",
    events_pb2.ThinkingDelta: "thinking_delta",
    events_pb2.ToolCall: "tool_call",
    events_pb2.ToolResult: "tool_result",
    events_pb2.Finish: "finish",
    events_pb2.Error: "error",
}

EventsFactory = Callable[..., list[events_pb2.AgentEvent]]


def make_events(*payloads: Message, run_id: str = "run_01test") -> list[events_pb2.AgentEvent]:
    """Wrap event payloads into AgentEvents with seq 1, 2, ... and fixed times."""
    events = []
    for seq, payload in enumerate(payloads, start=1):
        event = events_pb2.AgentEvent(
            run_id=run_id, seq=seq, time=timestamp_pb2.Timestamp(seconds=T0 + seq)
        )
        getattr(event, _EVENT_FIELDS[type(payload)]).CopyFrom(payload)
        events.append(event)
    return events


def weather_run() -> list[events_pb2.AgentEvent]:
    """A complete run: text, one tool call and its result, more text, finish."""
    return make_events(
        events_pb2.RunStarted(session_id="ses_01test", provider="local", model="smollm2"),
        events_pb2.TextDelta(text="Let me check. "),
        events_pb2.ToolCall(call_id="c1", name="get_weather", arguments_json='{"city": "Paris"}'),
        events_pb2.ToolResult(call_id="c1", name="get_weather", result_json='{"temp_c": 21}'),
        events_pb2.TextDelta(text="It is 21 °C"),
        events_pb2.TextDelta(text=" in Paris."),
        events_pb2.Finish(
            stop_reason=events_pb2.STOP_REASON_END_TURN,
            usage=events_pb2.Usage(
                input_tokens=12, output_tokens=34, cache_read_tokens=5, cache_write_tokens=0
            ),
            cost=events_pb2.Cost(token_usd=0.000123),
            session_id="ses_01test",
        ),
    )


def _authorized(context: grpc.aio.ServicerContext, key: str) -> bool:
    metadata = dict(context.invocation_metadata() or ())
    return metadata.get("authorization") == f"Bearer {key}"


class ScriptedRouter(router_pb2_grpc.AgentRouterServicer):
    """AgentRouter.Run streaming ``script`` to callers holding the sandbox key.

    ``status`` makes Run fail before the first event; ``hold`` keeps the
    stream open after the script until the client goes away, which sets
    ``cancelled``. ``started`` is set once an authorised run begins streaming.
    """

    def __init__(self) -> None:
        self.script: list[events_pb2.AgentEvent] = weather_run()
        self.status: tuple[grpc.StatusCode, str] | None = None
        # Trailing metadata sent with ``status`` (e.g. grpc-status-details-bin).
        self.trailer: tuple[tuple[str, str | bytes], ...] = ()
        self.hold = False
        self.requests: list[router_pb2.RunRequest] = []
        self.authorization: list[str | None] = []
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def Run(
        self,
        request: router_pb2.RunRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[events_pb2.AgentEvent]:
        self.authorization.append(dict(context.invocation_metadata() or ()).get("authorization"))
        if not _authorized(context, API_KEY):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown API key")
        self.requests.append(request)
        if self.status is not None:
            await context.abort(*self.status, trailing_metadata=self.trailer)
        self.started.set()
        completed = False
        try:
            for event in self.script:
                yield event
            if self.hold:
                await asyncio.Event().wait()  # until the client cancels
            completed = True
        finally:
            # A cancelled call reaches a generator as CancelledError when it
            # waits, or as GeneratorExit when it is parked at a yield.
            if not completed:
                self.cancelled.set()


def _page(token: str, size: int, default: int) -> tuple[int, int]:
    start = int(token or 0)
    return start, start + (size or default)


class FakeSandboxes(sandboxes_pb2_grpc.SandboxesServicer):
    """An in-memory Sandboxes service behind the operator key."""

    def __init__(self) -> None:
        self.sandboxes: dict[str, sandboxes_pb2.Sandbox] = {}
        self.keys: dict[str, sandboxes_pb2.ApiKey] = {}
        self.requests: list[Message] = []
        # The deadline each call arrived with, in seconds left (None: no deadline).
        self.time_remaining: list[float | None] = []

    async def _admit(self, request: Message, context: grpc.aio.ServicerContext) -> None:
        if not _authorized(context, OPERATOR_KEY):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown operator key")
        self.requests.append(request)
        self.time_remaining.append(context.time_remaining())

    async def _sandbox(
        self, sandbox_id: str, context: grpc.aio.ServicerContext
    ) -> sandboxes_pb2.Sandbox:
        if sandbox_id not in self.sandboxes:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"sandbox {sandbox_id} does not exist")
        return self.sandboxes[sandbox_id]

    async def CreateSandbox(self, request, context):
        await self._admit(request, context)
        sandbox_id = f"sbx_{len(self.sandboxes) + 1:026d}"
        sandbox = sandboxes_pb2.Sandbox(
            sandbox_id=sandbox_id,
            name=request.name,
            create_time=timestamp_pb2.Timestamp(seconds=T0),
            quotas=request.quotas,
        )
        self.sandboxes[sandbox_id] = sandbox
        return sandboxes_pb2.CreateSandboxResponse(sandbox=sandbox)

    async def GetSandbox(self, request, context):
        await self._admit(request, context)
        return sandboxes_pb2.GetSandboxResponse(
            sandbox=await self._sandbox(request.sandbox_id, context)
        )

    async def ListSandboxes(self, request, context):
        await self._admit(request, context)
        start, end = _page(request.page_token, request.page_size, 100)
        everything = list(self.sandboxes.values())
        return sandboxes_pb2.ListSandboxesResponse(
            sandboxes=everything[start:end],
            next_page_token=str(end) if end < len(everything) else "",
        )

    async def DeleteSandbox(self, request, context):
        await self._admit(request, context)
        await self._sandbox(request.sandbox_id, context)
        del self.sandboxes[request.sandbox_id]
        return sandboxes_pb2.DeleteSandboxResponse()

    async def SetQuotas(self, request, context):
        await self._admit(request, context)
        sandbox = await self._sandbox(request.sandbox_id, context)
        sandbox.quotas.CopyFrom(request.quotas)
        return sandboxes_pb2.SetQuotasResponse(sandbox=sandbox)

    async def CreateApiKey(self, request, context):
        await self._admit(request, context)
        await self._sandbox(request.sandbox_id, context)
        key_id = f"key_{len(self.keys) + 1:026d}"
        secret = f"ik_secret_{len(self.keys) + 1}"
        key = sandboxes_pb2.ApiKey(
            key_id=key_id,
            sandbox_id=request.sandbox_id,
            name=request.name,
            prefix=secret[:8],
            create_time=timestamp_pb2.Timestamp(seconds=T0),
        )
        self.keys[key_id] = key
        return sandboxes_pb2.CreateApiKeyResponse(api_key=key, secret=secret)

    async def ListApiKeys(self, request, context):
        await self._admit(request, context)
        await self._sandbox(request.sandbox_id, context)
        keys = [k for k in self.keys.values() if k.sandbox_id == request.sandbox_id]
        return sandboxes_pb2.ListApiKeysResponse(api_keys=keys)

    async def RevokeApiKey(self, request, context):
        await self._admit(request, context)
        key = self.keys.get(request.key_id)
        if key is None or key.sandbox_id != request.sandbox_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"key {request.key_id} does not exist")
        key.revoke_time.CopyFrom(timestamp_pb2.Timestamp(seconds=T0 + 60))
        return sandboxes_pb2.RevokeApiKeyResponse(api_key=key)


class FakeConversations(conversations_pb2_grpc.ConversationsServicer):
    """An in-memory Conversations service behind the sandbox key, per end user."""

    def __init__(self) -> None:
        # (end_user_id, session_id) -> (summary, entries)
        self.stored: dict[
            tuple[str, str],
            tuple[conversations_pb2.Conversation, list[conversations_pb2.WindowEntry]],
        ] = {}
        self.requests: list[Message] = []

    def add(
        self, end_user_id: str, session_id: str, entries: list[conversations_pb2.WindowEntry]
    ) -> None:
        summary = conversations_pb2.Conversation(
            session_id=session_id,
            end_user_id=end_user_id,
            create_time=timestamp_pb2.Timestamp(seconds=T0),
            update_time=timestamp_pb2.Timestamp(seconds=T0 + len(entries)),
            last_provider="local",
            last_model="smollm2",
            entry_count=len(entries),
        )
        self.stored[(end_user_id, session_id)] = (summary, entries)

    async def _admit(self, request: Message, context: grpc.aio.ServicerContext) -> None:
        if not _authorized(context, API_KEY):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown API key")
        self.requests.append(request)

    async def ListConversations(self, request, context):
        await self._admit(request, context)
        mine = [s for (user, _), (s, _) in self.stored.items() if user == request.end_user_id]
        return conversations_pb2.ListConversationsResponse(conversations=mine)

    async def GetConversation(self, request, context):
        await self._admit(request, context)
        found = self.stored.get((request.end_user_id, request.session_id))
        if found is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"session {request.session_id} does not exist"
            )
        summary, entries = found
        start, end = _page(request.page_token, request.page_size, 2)  # small pages: paging shows
        return conversations_pb2.GetConversationResponse(
            conversation=summary,
            entries=entries[start:end],
            next_page_token=str(end) if end < len(entries) else "",
        )

    async def DeleteConversation(self, request, context):
        await self._admit(request, context)
        if self.stored.pop((request.end_user_id, request.session_id), None) is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"session {request.session_id} does not exist"
            )
        return conversations_pb2.DeleteConversationResponse()


@dataclass
class FakeDaemon:
    """The running test server and its servicers."""

    address: str
    router: ScriptedRouter
    sandboxes: FakeSandboxes
    conversations: FakeConversations
    api_key: str = API_KEY
    operator_key: str = OPERATOR_KEY


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's INTERLOCK_* and colour settings out of the tests."""
    for name in ("INTERLOCK_ADDRESS", "INTERLOCK_API_KEY", "INTERLOCK_OPERATOR_KEY", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake_daemon() -> AsyncIterator[FakeDaemon]:
    """A real grpc.aio server on 127.0.0.1:0 serving the three test servicers."""
    server = grpc.aio.server()
    running = FakeDaemon("", ScriptedRouter(), FakeSandboxes(), FakeConversations())
    router_pb2_grpc.add_AgentRouterServicer_to_server(running.router, server)
    sandboxes_pb2_grpc.add_SandboxesServicer_to_server(running.sandboxes, server)
    conversations_pb2_grpc.add_ConversationsServicer_to_server(running.conversations, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    running.address = f"127.0.0.1:{port}"
    try:
        yield running
    finally:
        await server.stop(None)


@pytest.fixture
def weather_events() -> list[events_pb2.AgentEvent]:
    """The complete scripted run the test router streams by default."""
    return weather_run()


@pytest.fixture
def events() -> EventsFactory:
    """The AgentEvent builder (seq numbering, fixed clock) for scripting runs."""
    return make_events
