"""The provider call a new run begins while its admission commits: a refused run never
reaches the provider, the call carries the messages the committed window gives, a call
that fails before its first event withdraws the run, and nothing reaches the client
before the run is durable."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

from interlock.v1 import conversations_pb2 as cpb
from interlock.v1 import router_pb2, sandboxes_pb2
from interlockd.context.window import Budget, assemble
from interlockd.runs.request import RunInput
from interlockd.vocabulary import Message
from tests.conftest import DaemonFactory, RunningDaemon
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI, Reply

SYSTEM = "You are a terse assistant. Answer in one line."


def providers(fake_a: FakeOpenAI, fake_b: FakeOpenAI, **fake: Any) -> dict[str, Any]:
    """conftest's two OpenAI-compatible providers, with ``fake`` settings added to the first."""
    return {
        "fake": {
            "kind": "openai",
            "base_url": fake_a.base_url,
            "default_model": "fake-model",
            "api_key": "sk-test-a",
            **fake,
        },
        "fake_b": {
            "kind": "openai",
            "base_url": fake_b.base_url,
            "default_model": "fake-model-b",
            "api_key": "sk-test-b",
        },
    }


def wire(message: Message) -> dict[str, Any]:
    """``message`` as OpenAI's chat completions API spells it."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.tool_calls:
        calls = [
            {
                "id": c.call_id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in message.tool_calls
        ]
        return {"role": message.role, "content": message.content, "tool_calls": calls}
    return {"role": message.role, "content": message.content}


async def budget_of(daemon: RunningDaemon, *, provider: str = "fake", system: str = "") -> Budget:
    """The budget admission gives a turn of u-1 on ``provider`` (the daemon's own rule)."""
    admission = daemon.daemon.orchestrator._admission
    prepared = await admission.prepare(
        RunInput(
            sandbox_id=daemon.sandbox_id,
            end_user_id="u-1",
            message="",
            provider=provider,
            system=system,
        )
    )
    return prepared.budget


async def committed_context(
    daemon: RunningDaemon, session: str, *, provider: str = "fake", system: str = ""
) -> tuple[list[dict[str, Any]], bool]:
    """What the provider was sent before calls began early: assembled from the store once
    the user message is committed, without the window cache; and whether turns were dropped."""
    context = await assemble(
        daemon.daemon.store,
        daemon.sandbox_id,
        session,
        system=system,
        budget=await budget_of(daemon, provider=provider, system=system),
        tool_messages=True,
        cached=False,
    )
    return [wire(m) for m in context.messages], context.dropped


async def held_turn(
    daemon: RunningDaemon,
    fake: FakeOpenAI,
    message: str,
    *,
    session: str,
    request_id: str,
    provider: str = "fake",
    system: str = "",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """Run a turn the provider holds without answering; return the messages the provider
    received, the committed context, whether it dropped turns; then cancel the turn."""
    seen = len(fake.requests)
    fake.enqueue(Reply().stall())
    call = daemon.router.Run(
        router_pb2.RunRequest(
            end_user_id="u-1",
            message=message,
            session_id=session,
            request_id=request_id,
            provider=provider,
            system=system,
        ),
        metadata=daemon.auth(),
        timeout=30,
    )
    await fake.wait_for_requests(seen + 1)
    received = fake.requests[seen].body["messages"]

    async def committed() -> None:
        window = await daemon.window(session)
        assert (window[-1].kind, window[-1].text) == (cpb.ENTRY_KIND_USER, message)

    # The call may reach the provider before its admission has committed.
    await eventually(committed)
    expected, dropped = await committed_context(daemon, session, provider=provider, system=system)
    run = await daemon.daemon.store.find_run_by_request_id(daemon.sandbox_id, request_id)
    assert run is not None
    call.cancel()

    async def settled() -> None:
        assert (await daemon.daemon.store.get_run(daemon.sandbox_id, run.id)).status != "running"

    await eventually(settled)
    return received, expected, dropped


# ---- 1. a refused run never reaches the provider -----------------------------------


async def assert_never_called(daemon: RunningDaemon, fake: FakeOpenAI, message: str) -> None:
    """No request to ``fake`` carried ``message``, and no call was begun and cut off;
    checked after a later turn went through, so a stray call would have arrived."""
    seen = len(fake.requests)
    await daemon.run("a later turn", end_user_id="u-later")
    await fake.wait_for_requests(seen + 1)
    sent = [m.get("content") for r in fake.requests for m in r.body["messages"]]
    assert message not in sent
    assert fake.disconnects == 0


async def test_refused_by_a_quota_never_calls_the_provider(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A Run refused by max_concurrent_runs_per_end_user sends no request to the provider."""
    await daemon.sandboxes.SetQuotas(
        sandboxes_pb2.SetQuotasRequest(
            sandbox_id=daemon.sandbox_id,
            quotas=sandboxes_pb2.Quotas(max_concurrent_runs_per_end_user=1),
        ),
        metadata=daemon.operator(),
    )
    fake_a.enqueue(Reply().text("busy").stall())
    holding = daemon.router.Run(
        router_pb2.RunRequest(end_user_id="u-1", message="long"), metadata=daemon.auth()
    )
    await holding.read()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("over the quota")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(fake_a.requests) == 1
    fake_a.enqueue(Reply().text("fine"))
    await assert_never_called(daemon, fake_a, "over the quota")
    holding.cancel()


async def test_refused_as_busy_never_calls_the_provider(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A second Run on a conversation with a turn in progress sends no request."""
    first = await daemon.run("start")
    session = first[0].run_started.session_id
    fake_a.enqueue(Reply().text("busy").stall())
    holding = daemon.router.Run(
        router_pb2.RunRequest(end_user_id="u-1", message="long", session_id=session),
        metadata=daemon.auth(),
    )
    await holding.read()
    seen = len(fake_a.requests)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("overlapping turn", session_id=session)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(fake_a.requests) == seen
    await assert_never_called(daemon, fake_a, "overlapping turn")
    holding.cancel()
    window = await daemon.window(session)
    assert "overlapping turn" not in [e.text for e in window]


async def test_unknown_session_never_calls_the_provider(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A Run naming a session that does not exist (or is another end user's) sends no request."""
    mine = (await daemon.run("mine"))[0].run_started.session_id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("to nowhere", session_id="conv_doesnotexist")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("to someone else's", session_id=mine, end_user_id="u-2")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(fake_a.requests) == 1
    await assert_never_called(daemon, fake_a, "to nowhere")
    await assert_never_called(daemon, fake_a, "to someone else's")


# ---- 2. the call's messages are the committed window's -------------------------------


async def test_a_new_conversation_sends_system_and_message(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A new conversation's call is exactly the system prompt and the user message, or the
    message alone without a system prompt."""
    events = await daemon.run("first words", system=SYSTEM)
    assert fake_a.requests[0].body["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "first words"},
    ]
    expected, dropped = await committed_context(
        daemon, events[0].run_started.session_id, system=SYSTEM
    )
    assert expected[:2] == fake_a.requests[0].body["messages"]
    assert not dropped
    await daemon.run("no system prompt")
    assert fake_a.requests[1].body["messages"] == [{"role": "user", "content": "no system prompt"}]


async def test_a_long_conversation_sends_what_assembly_gives_after_the_commit(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """With a window too small for the whole history (tool calls, results, a system
    prompt), every turn's call equals the context assembled from the store once its
    message is committed, dropped-turns note included, whatever the message's length."""
    daemon = await start_daemon(providers=providers(fake_a, fake_b, default_context_window=2048))
    budget = await budget_of(daemon, system=SYSTEM)
    # Each turn takes about a fifth of the budget: the window holds four or five.
    words = "lorem ipsum dolor sit amet " * (budget.total * 3 // 5 // 27)
    session = ""
    for turn in range(8):
        if turn % 2:
            fake_a.enqueue(
                Reply().tool_call("search_conversations", '{"query": "zzz-no-match"}'),
                Reply().text(f"answer {turn} after a search"),
            )
        else:
            fake_a.enqueue(Reply().text(f"answer {turn}"))
        events = await daemon.run(f"turn {turn}: {words}", session_id=session, system=SYSTEM)
        assert events[-1].HasField("finish")
        session = events[0].run_started.session_id
    # The turn's own message decides how many older turns fit: sweep its length across
    # more than one turn's size, so the boundary where one more drops is crossed.
    step = max(len(words) // 6, 1)
    dropped_counts: set[int] = set()
    for i in range(9):
        message = f"held {i}: " + "x" * (step * i)
        received, expected, dropped = await held_turn(
            daemon, fake_a, message, session=session, request_id=f"held-{i}", system=SYSTEM
        )
        assert dropped
        assert received == expected
        assert received[0]["content"].startswith(SYSTEM + "\n\n[Earlier turns")
        assert received[-1] == {"role": "user", "content": message}
        dropped_counts.add(sum(m["role"] == "user" for m in received))
    assert len(dropped_counts) > 1, "the sweep never changed how many turns fit"


async def test_a_conversation_continued_on_another_provider(
    daemon: RunningDaemon, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """A turn on provider B of a conversation begun on A sends A's turns, tool traffic
    included, exactly as assembled from the committed window."""
    fake_a.enqueue(
        Reply().tool_call("search_conversations", '{"query": "budget"}', call_id="call_b1"),
        Reply().text("Your budget is unknown."),
    )
    first = await daemon.run("what is my budget?", provider="fake", system=SYSTEM)
    session = first[0].run_started.session_id
    received, expected, dropped = await held_turn(
        daemon,
        fake_b,
        "and now?",
        session=session,
        request_id="other-1",
        provider="fake_b",
        system=SYSTEM,
    )
    assert not dropped
    assert received == expected
    search = {
        "id": "call_b1",
        "type": "function",
        "function": {"name": "search_conversations", "arguments": '{"query": "budget"}'},
    }
    assert [m["role"] for m in received] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert received[:3] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "what is my budget?"},
        {"role": "assistant", "content": "", "tool_calls": [search]},
    ]
    assert received[3]["tool_call_id"] == "call_b1"
    assert received[4:] == [
        {"role": "assistant", "content": "Your budget is unknown."},
        {"role": "user", "content": "and now?"},
    ]


# ---- 3. a call failing before its first event ----------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(lambda: Reply.error(503, "overloaded", type="server_error"), id="503"),
        pytest.param(lambda: Reply().disconnect(), id="closed"),
    ],
)
async def test_a_call_failing_before_its_first_event_withdraws_the_run(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI, failure: Any
) -> None:
    """A provider failing at once (no retries, so while the admission commits) gives the
    caller UNAVAILABLE, leaves the window without the message, and the same request_id
    then runs the turn with the same messages."""
    daemon = await start_daemon(providers=providers(fake_a, fake_b, max_attempts=1))
    first = await daemon.run("one", system=SYSTEM)
    session = first[0].run_started.session_id
    before = [(e.kind, e.text) for e in await daemon.window(session)]
    fake_a.enqueue(failure())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("two", session_id=session, request_id="req-2", system=SYSTEM)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "fake" in (info.value.details() or "")
    assert [(e.kind, e.text) for e in await daemon.window(session)] == before
    assert await daemon.daemon.store.find_run_by_request_id(daemon.sandbox_id, "req-2") is None
    failed = fake_a.requests[-1].body["messages"]

    fake_a.enqueue(Reply().text("done"))
    events = await daemon.run("two", session_id=session, request_id="req-2", system=SYSTEM)
    assert not events[0].run_started.replayed
    assert events[-1].HasField("finish")
    assert fake_a.requests[-1].body["messages"] == failed
    assert [m["content"] for m in failed].count("two") == 1
    window = await daemon.window(session)
    assert [e.text for e in window] == ["one", "Hello from the fake.", "two", "done"]


async def test_a_new_conversation_failing_before_its_first_event_leaves_nothing(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """A new conversation whose call fails at once is UNAVAILABLE and leaves no
    conversation; its request_id then starts one."""
    daemon = await start_daemon(providers=providers(fake_a, fake_b, max_attempts=1))
    fake_a.enqueue(Reply.error(503, "overloaded", type="server_error"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("hello?", request_id="req-new")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    listed = await daemon.conversations.ListConversations(
        cpb.ListConversationsRequest(end_user_id="u-1"), metadata=daemon.auth()
    )
    assert list(listed.conversations) == []
    events = await daemon.run("hello?", request_id="req-new")
    assert events[-1].HasField("finish")
    window = await daemon.window(events[0].run_started.session_id)
    assert [e.text for e in window] == ["hello?", "Hello from the fake."]


# ---- 4. nothing reaches the client before the commit -----------------------------------


async def test_the_first_event_arrives_after_the_run_is_committed(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """When the client reads RunStarted, the run and its user message are already
    readable from other connections, for a new and for a continued conversation."""
    session = ""
    for turn in range(3):
        message = f"message {turn}"
        fake_a.enqueue(Reply().text("first delta").stall())
        call = daemon.router.Run(
            router_pb2.RunRequest(end_user_id="u-1", message=message, session_id=session),
            metadata=daemon.auth(),
            timeout=30,
        )
        started = await call.read()
        assert started.HasField("run_started")
        # Read before anything else of the stream, from the store's reader and the API.
        run = await daemon.daemon.store.get_run(daemon.sandbox_id, started.run_id)
        assert run.status == "running"
        session = started.run_started.session_id
        window = await daemon.window(session)
        assert (window[-1].kind, window[-1].text) == (cpb.ENTRY_KIND_USER, message)
        delta = await call.read()
        assert delta.text_delta.text == "first delta"
        call.cancel()

        async def settled(run_id: str = started.run_id) -> None:
            run = await daemon.daemon.store.get_run(daemon.sandbox_id, run_id)
            assert run.status == "cancelled"

        await eventually(settled)


# ---- PostgreSQL: the commit held open by the test -------------------------------------

#: Advisory lock keys: while the test holds HOLD, a run's commit waits; while it holds
#: REFUSE, a run's commit fails.
HOLD, REFUSE = 1801, 1802

# A deferred constraint trigger runs at COMMIT: it makes the commit of begin_run wait
# for, or fail on, the test's advisory locks, without touching the daemon.
HOLD_COMMITS = f"""
CREATE FUNCTION test_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared({HOLD});
    IF NOT pg_try_advisory_xact_lock_shared({REFUSE}) THEN
        RAISE EXCEPTION 'this commit was refused by the test';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER test_hold_commit AFTER INSERT ON runs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_hold_commit();
"""


@pytest.fixture
async def held_commits(
    start_daemon: DaemonFactory, postgres_url: str
) -> AsyncIterator[tuple[RunningDaemon, asyncpg.Connection]]:
    """A daemon on PostgreSQL whose runs' commits wait on the locks the connection takes."""
    key = base64.b64encode(os.urandom(32)).decode()
    daemon = await start_daemon(store_url=postgres_url, keys={"master_key": key})
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(HOLD_COMMITS)
        yield daemon, conn
    finally:
        await conn.close()


async def test_nothing_reaches_the_client_while_the_commit_is_held(
    held_commits: tuple[RunningDaemon, asyncpg.Connection], fake_a: FakeOpenAI
) -> None:
    """The provider call begins while the admission's commit is held, and the client
    gets its first event only once the commit is done."""
    daemon, conn = held_commits
    await conn.execute("SELECT pg_advisory_lock($1)", HOLD)
    fake_a.enqueue(Reply().text("first delta").stall())
    call = daemon.router.Run(
        router_pb2.RunRequest(end_user_id="u-1", message="held", request_id="held-1"),
        metadata=daemon.auth(),
        timeout=30,
    )
    first = asyncio.ensure_future(call.read())
    try:
        await fake_a.wait_for_requests(1)
        # The provider has answered; the event must not come: a bounded wait, since
        # nothing the daemon does while it holds the event can be observed.
        done, _ = await asyncio.wait({first}, timeout=0.3)
        assert not done
        store = daemon.daemon.store
        assert await store.find_run_by_request_id(daemon.sandbox_id, "held-1") is None
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", HOLD)
    started = await first
    assert started.HasField("run_started")
    run = await daemon.daemon.store.get_run(daemon.sandbox_id, started.run_id)
    assert run.status == "running"
    assert (await call.read()).text_delta.text == "first delta"
    call.cancel()


async def test_a_commit_failing_after_the_call_began_stops_it(
    held_commits: tuple[RunningDaemon, asyncpg.Connection], fake_a: FakeOpenAI
) -> None:
    """A commit that fails once the provider call is under way ends the Run with a status,
    closes the provider's stream and stores nothing."""
    daemon, conn = held_commits
    await conn.execute("SELECT pg_advisory_lock($1)", HOLD)
    await conn.execute("SELECT pg_advisory_lock($1)", REFUSE)
    fake_a.enqueue(Reply().text("never shown").stall())
    call = daemon.router.Run(
        router_pb2.RunRequest(end_user_id="u-1", message="refused at commit"),
        metadata=daemon.auth(),
        timeout=30,
    )
    first = asyncio.ensure_future(call.read())
    try:
        await fake_a.wait_for_requests(1)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", HOLD)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await first
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "refused by the test" in (info.value.details() or "")
    await fake_a.wait_for_disconnects(1)
    await conn.execute("SELECT pg_advisory_unlock($1)", REFUSE)
    listed = await daemon.conversations.ListConversations(
        cpb.ListConversationsRequest(end_user_id="u-1"), metadata=daemon.auth()
    )
    assert list(listed.conversations) == []
    events = await daemon.run("after the refusal")
    assert events[-1].HasField("finish")
