"""The async ``interlock.Client`` against a real gRPC server on port 0."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from interlock import (
    Cancelled,
    Client,
    DeadlineExceeded,
    FieldViolation,
    InterlockError,
    Internal,
    InvalidArgument,
    MissingCredentials,
    NotFound,
    ResourceExhausted,
    RunFailed,
    RunOutcome,
    Unauthenticated,
    Unimplemented,
)
from interlock.v1 import (
    conversations_pb2,
    events_pb2,
    router_pb2,
    router_pb2_grpc,
    sandboxes_pb2,
    sandboxes_pb2_grpc,
)


@pytest.fixture
async def client(fake_daemon):
    """A client holding both keys of the test server."""
    async with Client(
        fake_daemon.address, fake_daemon.api_key, operator_key=fake_daemon.operator_key
    ) as c:
        yield c


async def test_run_text_collects_the_whole_run(client, fake_daemon):
    """run_text folds the stream into text, tool calls and results, finish and session id."""
    outcome = await client.run_text("weather?", end_user_id="u-1", provider="local")
    assert outcome.ok
    assert outcome.text == "Let me check. It is 21 °C in Paris."
    assert outcome.session_id == "ses_01test"
    assert (outcome.provider, outcome.model, outcome.run_id) == ("local", "smollm2", "run_01test")
    assert [c.name for c in outcome.tool_calls] == ["get_weather"]
    assert [r.result_json for r in outcome.tool_results] == ['{"temp_c": 21}']
    assert outcome.finish is not None
    assert outcome.finish.usage.output_tokens == 34
    outcome.raise_for_error()  # a finished run does not raise
    assert fake_daemon.router.requests[0].provider == "local"


async def test_run_yields_events_in_order(client, fake_daemon):
    """run() yields the server's events unchanged and in order."""
    received = [event async for event in client.run("hi", end_user_id="u-1")]
    assert received == fake_daemon.router.script


async def test_error_event_lands_in_the_outcome_and_raises_on_demand(client, fake_daemon, events):
    """An error event is data in RunOutcome; raise_for_error turns it into RunFailed."""
    fake_daemon.router.script = events(
        events_pb2.RunStarted(session_id="ses_1"),
        events_pb2.Error(
            code="UNAVAILABLE", message="provider went away", retryable=True, provider="openai"
        ),
    )
    outcome = await client.run_text("hi", end_user_id="u-1")
    assert not outcome.ok
    with pytest.raises(RunFailed) as caught:
        outcome.raise_for_error()
    failure = caught.value
    assert (failure.code, failure.details) == (grpc.StatusCode.UNAVAILABLE, "provider went away")
    assert failure.retryable
    assert failure.provider == "openai"
    assert str(failure) == "UNAVAILABLE: provider went away"


def test_incomplete_or_unknown_error_codes_still_raise_run_failed():
    """A stream without a terminal event, or an unknown code name, raises RunFailed UNKNOWN."""
    with pytest.raises(RunFailed) as caught:
        RunOutcome().raise_for_error()
    assert caught.value.code is grpc.StatusCode.UNKNOWN
    outcome = RunOutcome(error=events_pb2.Error(code="NOT_A_CODE", message="m"))
    with pytest.raises(RunFailed) as caught:
        outcome.raise_for_error()
    assert caught.value.code is grpc.StatusCode.UNKNOWN


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.INTERNAL, Internal),
        (grpc.StatusCode.UNIMPLEMENTED, Unimplemented),
    ],
)
async def test_status_before_first_event_maps_to_the_error_tree(
    client, fake_daemon, status, error_type
):
    """A status the router returns before any event raises the matching InterlockError."""
    fake_daemon.router.status = (status, "details from the router")
    with pytest.raises(InterlockError) as caught:
        async for _ in client.run("hi", end_user_id="u-1"):
            pass
    assert type(caught.value) is error_type
    assert (caught.value.code, caught.value.details) == (status, "details from the router")
    assert caught.value.retryable is (status is grpc.StatusCode.RESOURCE_EXHAUSTED)


async def test_wrong_key_raises_unauthenticated(fake_daemon):
    """A key the server does not accept raises Unauthenticated with the server's details."""
    async with Client(fake_daemon.address, "wrong", operator_key="wrong") as c:
        with pytest.raises(Unauthenticated, match="unknown API key"):
            await c.run_text("hi", end_user_id="u-1")
        with pytest.raises(Unauthenticated, match="unknown operator key"):
            await c.sandboxes.list()
    assert fake_daemon.router.authorization == ["Bearer wrong"]


async def test_missing_key_raises_before_anything_is_sent(fake_daemon):
    """Without a key, calls raise MissingCredentials locally and the server sees nothing."""
    async with Client(fake_daemon.address) as c:
        with pytest.raises(MissingCredentials, match="INTERLOCK_API_KEY"):
            c.run("hi", end_user_id="u-1")
        with pytest.raises(MissingCredentials, match="INTERLOCK_OPERATOR_KEY"):
            await c.sandboxes.list()
        with pytest.raises(Unauthenticated):  # MissingCredentials is an Unauthenticated
            await c.conversations.list(end_user_id="u-1")
    assert fake_daemon.router.authorization == []
    assert fake_daemon.sandboxes.requests == []


async def test_target_and_keys_come_from_the_environment(fake_daemon, monkeypatch):
    """Client() reads INTERLOCK_ADDRESS, INTERLOCK_API_KEY and INTERLOCK_OPERATOR_KEY."""
    monkeypatch.setenv("INTERLOCK_ADDRESS", fake_daemon.address)
    monkeypatch.setenv("INTERLOCK_API_KEY", fake_daemon.api_key)
    monkeypatch.setenv("INTERLOCK_OPERATOR_KEY", fake_daemon.operator_key)
    async with Client() as c:
        assert c.target == fake_daemon.address
        assert (await c.run_text("hi", end_user_id="u-1")).ok
        assert (await c.sandboxes.list()).sandboxes == []


async def test_leaving_the_stream_cancels_the_call(client, fake_daemon):
    """Leaving `async with client.run(...)` early cancels the run on the server."""
    fake_daemon.router.hold = True
    async with client.run("hi", end_user_id="u-1") as stream:
        async for _ in stream:
            break
    await asyncio.wait_for(fake_daemon.router.cancelled.wait(), 10)


async def test_cancelling_the_consuming_task_cancels_the_call(client, fake_daemon):
    """Cancelling the task iterating a run cancels the call on the server."""
    fake_daemon.router.hold = True

    async def consume() -> None:
        async for _ in client.run("hi", end_user_id="u-1"):
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(fake_daemon.router.started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fake_daemon.router.cancelled.wait(), 10)


async def test_cancel_from_another_task_raises_cancelled_in_the_loop(client, fake_daemon):
    """stream.cancel() while another task waits for the next event ends its loop with
    Cancelled (not a quiet end, not asyncio.CancelledError)."""
    fake_daemon.router.hold = True
    stream = client.run("hi", end_user_id="u-1")
    received: list[events_pb2.AgentEvent] = []
    all_in = asyncio.Event()

    async def consume() -> None:
        async for event in stream:
            received.append(event)
            if len(received) == len(fake_daemon.router.script):
                all_in.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(all_in.wait(), 10)
    assert stream.cancel()
    with pytest.raises(Cancelled) as caught:
        await asyncio.wait_for(task, 10)
    assert caught.value.code is grpc.StatusCode.CANCELLED
    await asyncio.wait_for(fake_daemon.router.cancelled.wait(), 10)
    with pytest.raises(Cancelled):  # a cancelled stream stays cancelled
        await anext(stream)


async def test_break_out_of_a_plain_loop_cancels_the_call(client, fake_daemon):
    """`async for event in client.run(...): break` cancels the run on the server at once."""
    fake_daemon.router.hold = True
    async for _ in client.run("hi", end_user_id="u-1"):
        break
    await asyncio.wait_for(fake_daemon.router.cancelled.wait(), 10)


async def test_break_out_of_a_loop_over_a_kept_stream_cancels_the_call(client, fake_daemon):
    """Leaving a loop over a stream still held in a variable cancels the call too, and the
    stream then says it was cancelled."""
    fake_daemon.router.hold = True
    stream = client.run("hi", end_user_id="u-1")
    async for _ in stream:
        break
    await asyncio.wait_for(fake_daemon.router.cancelled.wait(), 10)
    with pytest.raises(Cancelled):
        await anext(stream)


async def test_an_exception_out_of_the_loop_cancels_the_call(client, fake_daemon):
    """An exception raised in the loop body propagates as is and cancels the run."""

    async def handle() -> None:
        async for _ in client.run("hi", end_user_id="u-1"):
            raise KeyError("the caller's own failure")

    fake_daemon.router.hold = True
    with pytest.raises(KeyError):
        await handle()
    await asyncio.wait_for(fake_daemon.router.cancelled.wait(), 10)


async def test_return_from_inside_the_loop_cancels_the_call(client, fake_daemon):
    """Returning the first event from inside the loop cancels the rest of the run."""

    async def first_event() -> events_pb2.AgentEvent:
        async for event in client.run("hi", end_user_id="u-1"):
            return event
        raise AssertionError("no event")

    fake_daemon.router.hold = True
    assert (await first_event()).HasField("run_started")
    await asyncio.wait_for(fake_daemon.router.cancelled.wait(), 10)


async def test_a_run_iterated_to_its_end_is_not_cancelled(client, fake_daemon):
    """A loop that reads the whole run leaves nothing to cancel: the server completes it."""
    events = [event async for event in client.run("hi", end_user_id="u-1")]
    assert events[-1].HasField("finish")
    assert not fake_daemon.router.cancelled.is_set()


async def test_timeout_is_a_deadline_the_server_sees(client, fake_daemon):
    """run(timeout=...) ends a stalled run with DeadlineExceeded and cancels it on the server."""
    fake_daemon.router.hold = True
    with pytest.raises(DeadlineExceeded):
        await client.run_text("hi", end_user_id="u-1", timeout=0.5)
    await asyncio.wait_for(fake_daemon.router.cancelled.wait(), 10)


async def test_a_stream_never_iterated_never_reaches_the_router(client, fake_daemon):
    """run() starts the call lazily: an unused stream sends nothing."""
    client.run("never sent", end_user_id="u-1")
    await client.run_text("sent", end_user_id="u-1")
    assert [r.message for r in fake_daemon.router.requests] == ["sent"]


async def test_a_channel_passed_in_stays_open(fake_daemon):
    """close() leaves a caller's channel open: the caller owns it."""
    async with grpc.aio.insecure_channel(fake_daemon.address) as channel:
        async with Client(api_key=fake_daemon.api_key, channel=channel) as first:
            assert (await first.run_text("one", end_user_id="u-1")).ok
        async with Client(api_key=fake_daemon.api_key, channel=channel) as second:
            assert (await second.run_text("two", end_user_id="u-1")).ok


async def test_sandboxes_and_keys_round_trip(client, fake_daemon):
    """The Sandboxes wrappers send the operator key and unwrap single-field responses."""
    quotas = sandboxes_pb2.Quotas(max_concurrent_runs=2)
    sandbox = await client.sandboxes.create("acme", quotas=quotas)
    assert isinstance(sandbox, sandboxes_pb2.Sandbox)
    assert (await client.sandboxes.get(sandbox.sandbox_id)).quotas == quotas
    updated = await client.sandboxes.set_quotas(
        sandbox.sandbox_id, sandboxes_pb2.Quotas(max_tokens_per_day=10)
    )
    assert updated.quotas == sandboxes_pb2.Quotas(max_tokens_per_day=10)

    created = await client.sandboxes.create_api_key(sandbox.sandbox_id, name="ci")
    assert created.secret
    keys = await client.sandboxes.list_api_keys(sandbox.sandbox_id)
    assert [k.key_id for k in keys] == [created.api_key.key_id]
    revoked = await client.sandboxes.revoke_api_key(sandbox.sandbox_id, created.api_key.key_id)
    assert revoked.HasField("revoke_time")

    await client.sandboxes.delete(sandbox.sandbox_id)
    with pytest.raises(NotFound):
        await client.sandboxes.get(sandbox.sandbox_id)


async def test_list_all_follows_page_tokens(client, fake_daemon):
    """sandboxes.list_all fetches page after page until next_page_token is empty."""
    for name in ("a", "b", "c"):
        await client.sandboxes.create(name)
    names = [s.name async for s in client.sandboxes.list_all(page_size=1)]
    assert names == ["a", "b", "c"]
    pages = [
        r
        for r in fake_daemon.sandboxes.requests
        if isinstance(r, sandboxes_pb2.ListSandboxesRequest)
    ]
    assert [r.page_token for r in pages] == ["", "1", "2"]


async def test_conversations_round_trip(client, fake_daemon):
    """The Conversations wrappers address every call by end user with the sandbox key."""
    entry = conversations_pb2.WindowEntry(seq=1, kind=conversations_pb2.ENTRY_KIND_USER, text="hi")
    fake_daemon.conversations.add("u-1", "ses_1", [entry])
    assert [c.session_id async for c in client.conversations.list_all(end_user_id="u-1")] == [
        "ses_1"
    ]
    page = await client.conversations.get("ses_1", end_user_id="u-1")
    assert list(page.entries) == [entry]
    with pytest.raises(NotFound):
        await client.conversations.get("ses_1", end_user_id="u-2")
    await client.conversations.delete("ses_1", end_user_id="u-1")
    assert (await client.conversations.list(end_user_id="u-1")).conversations == []


def details_trailer(*details: Message, code: grpc.StatusCode) -> tuple[tuple[str, bytes]]:
    """A grpc-status-details-bin trailer carrying ``details``, as the daemon sends it."""
    status = status_pb2.Status(code=code.value[0], message="from the router")
    for detail in details:
        status.details.add().Pack(detail)
    return (("grpc-status-details-bin", status.SerializeToString()),)


async def test_a_bad_request_names_the_fields_at_fault(client, fake_daemon):
    """InvalidArgument carries the ErrorInfo reason and metadata and the BadRequest's field
    violations as typed fields, and no retry delay."""
    code = grpc.StatusCode.INVALID_ARGUMENT
    fake_daemon.router.status = (code, "end_user_id: must not be empty")
    fake_daemon.router.trailer = details_trailer(
        error_details_pb2.ErrorInfo(
            reason="INVALID_ARGUMENT", domain="interlock.dev", metadata={"field": "end_user_id"}
        ),
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="end_user_id", description="must not be empty"
                ),
                error_details_pb2.BadRequest.FieldViolation(
                    field="compute.policy", description="unknown policy"
                ),
            ]
        ),
        code=code,
    )
    with pytest.raises(InvalidArgument) as caught:
        await client.run_text("hi", end_user_id="u-1")
    error = caught.value
    assert (error.reason, error.metadata) == ("INVALID_ARGUMENT", {"field": "end_user_id"})
    assert error.field_violations == [
        FieldViolation("end_user_id", "must not be empty"),
        FieldViolation("compute.policy", "unknown policy"),
    ]
    assert (error.retryable, error.retry_delay) == (False, None)
    assert str(error) == "INVALID_ARGUMENT: end_user_id: must not be empty"


async def test_retry_info_gives_the_delay_and_makes_the_error_retryable(client, fake_daemon):
    """A RetryInfo sets retry_delay (seconds) and retryable, whatever the code's default."""
    code = grpc.StatusCode.INTERNAL
    fake_daemon.router.status = (code, "the provider failed")
    fake_daemon.router.trailer = details_trailer(
        error_details_pb2.ErrorInfo(
            reason="PROVIDER_FAILED", domain="interlock.dev", metadata={"provider": "fake"}
        ),
        error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000)
        ),
        code=code,
    )
    with pytest.raises(Internal) as caught:
        async for _ in client.run("hi", end_user_id="u-1"):
            pass
    error = caught.value
    assert (error.reason, error.metadata) == ("PROVIDER_FAILED", {"provider": "fake"})
    assert (error.retryable, error.retry_delay, error.field_violations) == (True, 2.5, [])


async def test_details_without_retry_info_say_not_retryable(client, fake_daemon):
    """With the daemon's details present, no RetryInfo means a retry will not help, even
    for a code that is retryable by default."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    fake_daemon.router.status = (code, "quota spent")
    fake_daemon.router.trailer = details_trailer(
        error_details_pb2.ErrorInfo(reason="QUOTA_EXCEEDED", domain="interlock.dev"), code=code
    )
    with pytest.raises(ResourceExhausted) as caught:
        await client.run_text("hi", end_user_id="u-1")
    assert (caught.value.reason, caught.value.retryable) == ("QUOTA_EXCEEDED", False)


async def test_a_status_without_details_falls_back_to_the_code(client, fake_daemon):
    """No details trailer (another server, a proxy): reason is the code's name, metadata and
    violations are empty, retryable is the code's default."""
    fake_daemon.router.status = (grpc.StatusCode.UNAVAILABLE, "no route")
    with pytest.raises(InterlockError) as caught:
        await client.run_text("hi", end_user_id="u-1")
    error = caught.value
    assert (error.reason, error.metadata, error.field_violations) == ("UNAVAILABLE", {}, [])
    assert (error.retryable, error.retry_delay) == (True, None)


async def test_an_unreadable_details_trailer_is_ignored(client, fake_daemon):
    """Bytes that are no google.rpc.Status leave the error as its code says."""
    fake_daemon.router.status = (grpc.StatusCode.NOT_FOUND, "no such session")
    fake_daemon.router.trailer = (("grpc-status-details-bin", b"\xff\xffnot a status"),)
    with pytest.raises(NotFound) as caught:
        await client.run_text("hi", end_user_id="u-1")
    assert (caught.value.reason, caught.value.details) == ("NOT_FOUND", "no such session")


async def test_admin_calls_send_their_timeout_as_the_deadline(client, fake_daemon):
    """timeout= on an administrative call reaches the server as the call's deadline."""
    await client.sandboxes.create("acme", timeout=30)
    await client.sandboxes.list()
    with_deadline, without = fake_daemon.sandboxes.time_remaining
    assert with_deadline is not None
    assert 0 < with_deadline < 31  # the server rounds the deadline up a little
    assert without is None


async def test_run_sends_compute_options(client, fake_daemon):
    """run(compute=...) takes the fields by name or a ComputeOptions and sends them."""
    await client.run_text(
        "hi", end_user_id="u-1", compute={"provider": "daytona", "policy": "cost-aware"}
    )
    options = router_pb2.ComputeOptions(region="us")
    await client.run_text("hi", end_user_id="u-1", compute=options)
    first, second = fake_daemon.router.requests
    assert (first.compute.provider, first.compute.policy) == ("daytona", "cost-aware")
    assert second.compute == options


async def test_raw_stubs_share_the_clients_channel_and_keys(client, fake_daemon):
    """client.channel with client.metadata() makes authorized calls with the generated stubs."""
    stub = sandboxes_pb2_grpc.SandboxesStub(client.channel)
    await stub.ListSandboxes(
        sandboxes_pb2.ListSandboxesRequest(), metadata=client.metadata(operator=True)
    )
    router = router_pb2_grpc.AgentRouterStub(client.channel)
    call = router.Run(router_pb2.RunRequest(message="raw"), metadata=client.metadata())
    assert [e.WhichOneof("event") async for e in call][-1] == "finish"
    assert fake_daemon.router.authorization == [f"Bearer {fake_daemon.api_key}"]
